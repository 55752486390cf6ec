"""Which encoder run a stage uses: the `--run` given, else the dataset's only run on disk.

Runs are found, not guessed: B1 names its folder `<dataset>_<backbone>_e<E>_<ft|frozen>`, so a
later stage cannot know the name from the dataset alone once the backbone or E differ from the
preset. It looks under --weights-root instead, and when it cannot choose, it lists what is there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from src.artifacts import run_dir
from src.errors import SuiteError
from src.hints import hint


@dataclass(frozen=True)
class RunInfo:
    """One encoder run on disk, as its config.json describes it."""

    name: str
    dataset: str | None
    backbone: str
    embedding_size: str
    created: str

    def describe(self) -> str:
        """`name (backbone, E=…, trained …)`: one candidate in an error message."""
        return f"{self.name} ({self.backbone}, E={self.embedding_size}, trained {self.created})"


def _read_config(path: Path) -> dict:
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def run_info(folder: Path) -> RunInfo:
    """A run's facts from its config.json (B1's or the release importer's); '?' where unknown."""
    cfg = _read_config(folder / "config.json")
    enc = cfg.get("encoder") if isinstance(cfg.get("encoder"), dict) else {}
    return RunInfo(
        name=folder.name,
        dataset=enc.get("dataset"),
        backbone=str(enc.get("backbone", "?")),
        embedding_size=str(enc.get("embedding_size", "?")),
        created=str(cfg.get("created", "?")),
    )


def find_runs(weights_root: str | Path, dataset: str | None = None) -> list[RunInfo]:
    """The runs under `weights_root` (folders with encoder.pt), of `dataset` when given, by name.

    A run without a readable config.json counts for the dataset its name starts with.
    """
    root = Path(weights_root)
    try:
        folders = sorted(p for p in root.iterdir() if (p / "encoder.pt").is_file())
    except OSError:  # no weights root yet: no runs
        return []
    runs = [run_info(p) for p in folders]
    if dataset is None:
        return runs
    return [
        r
        for r in runs
        if r.dataset == dataset or (r.dataset is None and r.name.startswith(f"{dataset}_"))
    ]


def _candidates(runs: list[RunInfo]) -> str:
    return "; ".join(r.describe() for r in runs)


def resolve_run(weights_root: str | Path, dataset: str | None, run_flag: str | None) -> str:
    """The run a stage uses: `run_flag` when given (it must hold encoder.pt), else the dataset's
    only run; several or none fail in one line naming `--run` and the candidates."""
    if run_flag:
        if (run_dir(weights_root, run_flag) / "encoder.pt").is_file():
            return run_flag
        runs = find_runs(weights_root, dataset)
        where = f"runs of {dataset}" if dataset else "runs"
        found = f"{where} under {weights_root}: {_candidates(runs)}" if runs else f"no {where} "
        if not runs:
            found += f"under {weights_root}"
        b1 = hint("B1", "--dataset", dataset or "<dataset>")
        raise SuiteError(
            f"--run {run_flag}: {Path(weights_root) / run_flag / 'encoder.pt'} not found; "
            f"{found}; give one of them with --run, or run {b1} first"
        )
    if dataset is None:
        raise SuiteError("give --dataset or --run")
    runs = find_runs(weights_root, dataset)
    if len(runs) == 1:
        return runs[0].name
    if not runs:
        raise SuiteError(
            f"no run of {dataset} under {weights_root} (no folder with encoder.pt trained on "
            f"{dataset}): run {hint('B1', '--dataset', dataset)} first, or give --run NAME"
        )
    raise SuiteError(
        f"{len(runs)} runs of {dataset} under {weights_root}: {_candidates(runs)}; "
        "choose one with --run NAME"
    )


RUN_HELP = (
    "encoder run: a folder under --weights-root that B1 names <dataset>_<backbone>_e<E>_<ft|frozen> "
    "(default: the dataset's only run there; with several, the error lists them)"
)
