"""Where artifacts live, how they are written (atomically) and read (safely, with clear errors).

Formats a person can open: JSON and CSV for metadata and tables, `.npz` (no pickle) for arrays,
`torch.save` state dicts loaded with `weights_only=True`. Every file is written to a temporary
name beside its destination and renamed into place, so an interrupted stage never leaves a
half-written artifact behind.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from src.errors import SuiteError

# ---------------------------------------------------------------------------------------------
# Paths


def dataset_dir(data_root: str | Path, dataset: str) -> Path:
    """data/<dataset>: the processed dataset written by A1."""
    return Path(data_root) / dataset


def queries_path(data_root: str | Path, dataset: str, task: str) -> Path:
    """data/<dataset>/queries_<task>.csv: the query file written by A2."""
    return dataset_dir(data_root, dataset) / f"queries_{task}.csv"


def run_name(dataset: str, backbone: str, embedding_size: int, frozen: bool) -> str:
    """The encoder configuration's name, e.g. `cub_convnext_base_e256_ft`."""
    return f"{dataset}_{backbone}_e{embedding_size}_{'frozen' if frozen else 'ft'}"


def run_dir(weights_root: str | Path, run: str) -> Path:
    """weights/<run>: encoder, checkpoints, embeddings and students of one configuration."""
    return Path(weights_root) / run


def results_dir(results_root: str | Path, run: str, task: str | None = None) -> Path:
    """results/<run>[/<task>]: metrics, tables and figures."""
    base = Path(results_root) / run
    return base / task if task else base


def require(path: str | Path, stage: str, what: str = "") -> Path:
    """Return `path` if it exists, else fail saying which stage writes it."""
    path = Path(path)
    if not path.exists():
        thing = f"{what} " if what else ""
        raise SuiteError(f"{thing}{path} not found: run {stage} first")
    return path


# ---------------------------------------------------------------------------------------------
# Atomic writes


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o644)  # mkstemp makes 0600; artifacts are ordinary readable files
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str | Path, stage: str) -> Any:
    path = require(path, stage)
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SuiteError(f"{path} is not valid JSON ({e}); re-run {stage}") from None


def write_csv(path: str | Path, df: Any) -> None:
    """Write a pandas DataFrame as CSV, atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def load_npz(path: str | Path, stage: str) -> dict[str, np.ndarray]:
    """Load every array of an .npz file (never unpickling objects)."""
    path = require(path, stage)
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (ValueError, OSError) as e:
        raise SuiteError(f"{path} is not a readable .npz file ({e}); re-run {stage}") from None


def save_torch(path: str | Path, obj: Any) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path: str | Path, stage: str, map_location: Any = "cpu") -> Any:
    """Load a torch file with `weights_only=True` (tensors and plain containers, no pickle code)."""
    import torch

    path = require(path, stage)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt or foreign file
        raise SuiteError(
            f"{path} cannot be loaded safely ({type(e).__name__}: {e}); re-run {stage}"
        ) from None


# ---------------------------------------------------------------------------------------------
# Provenance


def versions() -> dict[str, str]:
    """Versions of Python and the packages that shape results (read from metadata: no imports)."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ["torch", "torchvision", "numpy", "pandas", "scikit-learn", "scipy", "pillow"]:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out


def stage_config(args: Any, **extra: Any) -> dict[str, Any]:
    """What produced an artifact: command line, arguments, versions, time; saved as config.json."""
    arg_dict = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    return {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "args": arg_dict,
        **extra,
        "versions": versions(),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
