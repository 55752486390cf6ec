"""Which command writes each stage's artifacts: the one map behind every "run … first" message."""

from __future__ import annotations

from src.tasks import DATASETS

STAGE_SCRIPTS = {
    "A1": "A1_preprocess.py",
    "A2": "A2_make_queries.py",
    "B1": "B1_train_encoder.py",
    "C1": "C1_extract_embeddings.py",
    "D1": "D1_train_distill.py",
    "E1": "E1_evaluate.py",
    "E2": "E2_visualize.py",
    "E3": "E3_explore.py",
}


def hint(stage: str, *flags: str) -> str:
    """The command line that (re)writes a stage's artifacts, e.g. hint("A1", "--dataset", "cub")."""
    return " ".join([STAGE_SCRIPTS[stage], *flags])


B1_HINT = hint("B1")
C1_HINT = hint("C1")


def a1_hint(dataset: str) -> str:
    """A1 for one dataset (what every processed-data reader asks for)."""
    if dataset not in DATASETS:  # your own images (A1 --dataset folder)
        return hint("A1", "--dataset", "folder", "--source", "DIR", "--name", dataset)
    return hint("A1", "--dataset", dataset)
