"""Where artifacts live, how they are written (atomically) and read (safely, with clear errors).

Formats a person can open: JSON and CSV for metadata and tables, `.npz` (no pickle) for arrays,
`torch.save` state dicts loaded with `weights_only=True`. Every file goes through
src/atomic.py's `atomic_path` (a temporary name, renamed into place).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib.metadata
import json
import math
import os
import pickle
import platform
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from src.argtypes import check_run_name
from src.atomic import atomic_path
from src.errors import SuiteError
from src.threads import in_use
from src.wait_policy import CHOSEN as WAIT_POLICY

# ---------------------------------------------------------------------------------------------
# Paths


def not_a_link(path: Path, root_flag: str) -> Path:
    """`path`, a folder the suite keeps inside a root (data/<dataset>, weights/<run>,
    results/<run>[/<task>][/figures]), unless it is a symbolic link: the one rule for links. A
    root may be a link (you named it); a link inside one is refused, so nothing is written
    outside the roots and no whole-folder swap replaces a link."""
    if path.is_symlink():
        raise SuiteError(
            f"{path} is a symbolic link to {os.readlink(path)}; the suite does not follow links "
            f"inside its roots: put the folder itself there (not a link), or point {root_flag} "
            "at a folder that holds it"
        )
    return path


def dataset_dir(data_root: str | Path, dataset: str) -> Path:
    """data/<dataset>: the processed dataset written by A1 (not a link: see not_a_link)."""
    return not_a_link(Path(data_root) / dataset, "--data-root")


def queries_path(data_root: str | Path, dataset: str, task: str) -> Path:
    """data/<dataset>/queries_<task>.csv: the query file written by A2."""
    return dataset_dir(data_root, dataset) / f"queries_{task}.csv"


RELEASE_SOURCE = "authors-release"  # config.json "source" of artifacts imported from their release


def is_release(record: Any) -> bool:
    """Whether artifacts came from the authors' release: a record (a config.json or metrics.json,
    its "source") or that source itself. The one test every stage and the report ask."""
    source = record.get("source") if isinstance(record, dict) else record
    return source == RELEASE_SOURCE


def run_name(dataset: str, backbone: str, embedding_size: int, frozen: bool) -> str:
    """The encoder configuration's name, e.g. `cub_convnext_base_e256_ft`."""
    return f"{dataset}_{backbone}_e{embedding_size}_{'frozen' if frozen else 'ft'}"


def run_dir(weights_root: str | Path, run: str) -> Path:
    """weights/<run>: encoder, checkpoints, embeddings and students of one configuration."""
    return not_a_link(Path(weights_root) / check_run_name(run), "--weights-root")


def results_dir(results_root: str | Path, run: str, task: str | None = None) -> Path:
    """results/<run>[/<task>]: metrics, tables and figures (none of these folders a link)."""
    out = Path(results_root) / check_run_name(run)
    folders = [out, out / "figures"]  # E2 writes both figures/ folders; E1 carries the task's
    if task:
        out = out / check_run_name(task, "task")
        folders += [out, out / "figures"]
    for folder in folders:
        not_a_link(folder, "--results-root")
    return out


def require(path: str | Path, stage: str, what: str = "") -> Path:
    """Return `path` if it is a file, else fail saying which stage writes it."""
    path = Path(path)
    thing = f"{what} " if what else ""
    if not path.exists():
        raise SuiteError(f"{thing}{path} not found: run {stage} first")
    if not path.is_file():  # reading a pipe or a device would block forever
        raise SuiteError(
            f"{thing}{path} is not a regular file (a folder, pipe or device); re-run {stage}"
        )
    return path


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
    """A JSON artifact; an unreadable, truncated or non-UTF-8 file fails naming `stage` to re-run."""
    path = require(path, stage)
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except PermissionError:  # the machine's, not the file's: run_stage says so
        raise
    except (ValueError, OSError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise SuiteError(
            f"{path} is not readable JSON ({_first_line(e)}); re-run {stage}"
        ) from None


def read_metrics(path: str | Path, stage: str = "E1_evaluate.py") -> dict[str, Any] | None:
    """E1's metrics.json, or None when there is none yet; a damaged one (truncated, not an object,
    `methods` not a table of methods) fails in one line naming the file and `stage` to re-run."""
    path = Path(path)
    if not path.exists():
        return None
    metrics = read_json(path, stage)
    methods = metrics.get("methods", {}) if isinstance(metrics, dict) else None
    if not isinstance(methods, dict) or not all(isinstance(m, dict) for m in methods.values()):
        raise SuiteError(f"{path} is damaged (not E1's table of methods); re-run {stage}")
    bad = _bad_metric(metrics, "") or next(
        (b for m, v in methods.items() if (b := _bad_metric(v, f"methods.{m}."))), None
    )
    if bad:
        raise SuiteError(f"{path} is damaged ({bad}); re-run {stage}")
    return metrics


KNOBS = ("lambda", "alpha")  # E1's settings in metrics.json: the stages after it search with them


def _bad_metric(record: dict[str, Any], where: str) -> str | None:
    """What is wrong with one level of metrics.json, or None: its knobs (λ, α) must be finite
    numbers ≥ 0 or null, and a method's values numbers or null (lists and tables of them)."""
    for key in KNOBS:
        v = record.get(key)
        if v is not None and not (_is_number(v) and math.isfinite(v) and v >= 0):
            return f"{where}{key} is {v!r}, not a finite number ≥ 0"
    if not where:  # the top level also holds words (task, run, device) and tables of them
        v = record.get("retrieved_similarity")
        return None if v is None or _is_number(v) else f"retrieved_similarity is {v!r}"
    for key, v in record.items():
        stack = [v]
        while stack:  # the leaves of its intervals ("ci": lists, tables of lists)
            x = stack.pop()
            if isinstance(x, dict | list):
                stack.extend(x.values() if isinstance(x, dict) else x)
            elif x is not None and not _is_number(x):
                return f"{where}{key} holds {x!r}, not a number"
    return None


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def read_json_or_none(path: str | Path) -> Any:
    """A JSON file's content, or None when it is missing or unreadable (REPORT.md and E2 say so)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _first_line(e: BaseException) -> str:
    """`Type: first line of the message`, short: error text fit for a one-line message."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__


def read_table(
    path: str | Path, required: list[str] | tuple[str, ...], stage: str, only: bool = False
):
    """A CSV artifact (every cell a string) with its required columns and at least one row;
    `only`: those columns alone (a table of millions of rows holds what its reader needs).

    The one place a table's schema is checked: a missing, empty, header-only, undecodable file or
    a missing column fails with the file, the column and the stage to re-run.
    """
    import pandas as pd

    path = require(path, stage)
    wanted = set(required)
    try:
        df = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            usecols=(lambda c: c in wanted) if only else None,
        )
    except pd.errors.EmptyDataError:
        raise SuiteError(f"{path} is empty; re-run {stage}") from None
    except PermissionError:  # the machine's, not the file's: run_stage says so
        raise
    except (ValueError, OSError, pd.errors.ParserError) as e:
        raise SuiteError(
            f"{path} is not a readable CSV ({_first_line(e)}); re-run {stage}"
        ) from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise SuiteError(f"{path} lacks column(s) {', '.join(missing)}; re-run {stage}")
    if df.empty:
        raise SuiteError(f"{path} has a header but no rows; re-run {stage}")
    return df


def write_csv(path: str | Path, df: Any) -> None:
    """Write a pandas DataFrame as CSV, atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def load_npz(path: str | Path, stage: str) -> dict[str, np.ndarray]:
    """Load every array of an .npz file (never unpickling objects); a corrupt file fails in one line."""
    path = require(path, stage)
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except PermissionError:  # the machine's, not the file's: run_stage says so
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, AttributeError) as e:
        # every way numpy/zipfile report a truncated, empty, bit-flipped or pickled array
        raise SuiteError(
            f"{path} is not a readable .npz file ({_first_line(e)}); re-run {stage}"
        ) from None


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """One array as .npy (memory-mappable; an object array is refused, never pickled), atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)


def load_npy(path: str | Path, stage: str, mmap: bool = False) -> np.ndarray:
    """One .npy array (never unpickling), memory-mapped read-only when `mmap`; a missing or
    damaged file fails in one line naming `stage` to re-run."""
    path = require(path, stage)
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except PermissionError:  # the machine's, not the file's: run_stage says so
        raise
    except (ValueError, OSError, EOFError) as e:  # truncated, empty, bit-flipped or pickled
        raise SuiteError(
            f"{path} is not a readable .npy file ({_first_line(e)}); re-run {stage}"
        ) from None


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks (a fingerprint of an artifact)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_torch(path: str | Path, obj: Any) -> None:
    """torch.save, atomically; a full disk is reported as ENOSPC (torch says 'unexpected pos')."""
    import torch

    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as e:  # the zip writer's only report of a short write
            if "unexpected pos" in str(e) or "failed writing" in str(e):
                raise OSError(errno.ENOSPC, "No space left on device", str(path)) from None
            raise


def _check_crc(path: Path, stage: str) -> None:
    """Fail on a bit-flipped torch zip: torch reads tensor data without checking the zip CRCs."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return  # not a whole zip: torch.load reports it
    if bad is not None:
        raise SuiteError(f"{path} is damaged ({bad} fails its CRC check); re-run {stage}")


def load_torch(path: str | Path, stage: str, map_location: Any = "cpu") -> Any:
    """Load a torch file with `weights_only=True` (tensors and plain containers, no pickle code)."""
    import torch

    path = require(path, stage)
    _check_crc(path, stage)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except PermissionError:  # the machine's, not the file's: run_stage says so
        raise
    except pickle.UnpicklingError:  # weights_only refused a class: the unsafe file
        raise SuiteError(
            f"{path} cannot be loaded safely (it holds Python objects, not only weights); "
            f"re-run {stage}"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile, KeyError) as e:
        raise SuiteError(
            f"{path} cannot be loaded safely ({_first_line(e)}); re-run {stage}"
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


def stage_config(args: Any, resolved: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """What produced an artifact, saved as config.json: the command line, the arguments as given
    (`args`, never changed after parsing), the values the stage resolved from defaults and the
    registry (`resolved`, e.g. λ when --lambda was not given), versions and time."""
    arg_dict = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    return {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "args": arg_dict,
        "resolved": resolved or {},
        **extra,
        "cpu_threads": {**in_use(), "wait_policy": WAIT_POLICY.record()},
        "versions": versions(),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
