"""E1's inputs for one task: the queries and the retrieval database (test images with tags,
SPEC §7) as tensors on one device, with the condition ids, labels and tag matrices scoring needs;
every mismatch between A1, A2, B1 and C1 artifacts fails here with the stage to re-run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from src import metrics
from src.artifacts import dataset_dir, read_json, require, run_dir
from src.datasets.common import read_labels, read_split
from src.embeddings import load_embeddings
from src.errors import SuiteError
from src.hints import hint
from src.labels import class_ids
from src.queries import read_queries
from src.quirks import QUIRKS
from src.tasks import Task, default_run

if TYPE_CHECKING:
    from src.evaluation import Ranking

K = 10  # the paper's top-k (mAP@10, mTS@10)


@dataclass
class EvalData:
    """One task's queries and database as tensors on the device, plus what scoring needs."""

    task: Task
    run: str
    config: dict[str, Any]  # the encoder's
    labels: dict[str, list[str]]  # labels.json
    heads: Mapping[str, nn.Module]
    device: torch.device
    queries: pd.DataFrame  # the queries file, as read
    z0: Tensor  # Q×E query embeddings
    conditions: dict[str, Tensor]  # attr → (Q,) target class ids
    query_labels: dict[str, Tensor]  # attr → (Q,) the query image's own class ids
    db_images: np.ndarray  # (N,) image keys
    db_z: Tensor  # N×E
    db_labels: dict[str, Tensor]  # attr → (N,)
    query_tags: Any  # csr Q×T
    db_tags: Any  # csr N×T
    exclude: Tensor | None  # (Q,) database row of each query (-1 none), under --exclude-query
    quirks: tuple[str, ...] = ()  # the authors' E1 quirks applied (src/quirks.py)
    source: str | None = None  # data/<ds>/config.json "source" ("authors-release": imported)
    centroids: dict[str, Tensor] = field(default_factory=dict)  # attr → C×E train-class means
    n_relevant: Tensor = field(init=False)  # (Q,) database rows carrying every condition label
    cache: dict[float, Ranking] = field(default_factory=dict)  # Backward Search per λ

    def __post_init__(self) -> None:
        self.n_relevant = metrics.count_relevant(self.db_labels, self.conditions, self.exclude)


def _stage_hint(stage: str, task: Task, run: str) -> str:
    """How to re-run a per-run stage: by dataset for the default run, else by run name."""
    if run == default_run(task.dataset):
        return hint(stage, "--dataset", task.dataset)
    return hint(stage, "--run", run)


def _rows_of(keys: Iterable[str], index: Mapping[str, int], what: str, fix: str) -> np.ndarray:
    rows = [index.get(k, -1) for k in keys]
    missing = [k for k, r in zip(keys, rows, strict=True) if r < 0]
    if missing:
        raise SuiteError(f"{len(missing)} {what} not in the embeddings (e.g. {missing[0]}); {fix}")
    return np.asarray(rows, dtype=np.int64)


def _check_conditions(task, run, heads, config, labels, queries, emb, c1: str) -> None:
    """Every condition attribute needs a head of the right size, a queries column and labels."""
    for a in task.conditions:
        if a not in heads:
            raise SuiteError(
                f"task {task.name} conditions on {a!r} but the encoder of run {run} has no head "
                f"for it (heads: {', '.join(heads)}); train it with B1_train_encoder.py"
            )
        if a not in queries.columns:
            raise SuiteError(f"the queries of {task.name} lack the {a!r} column; re-run A2")
        n_cls = int(config["num_classes"][a])
        if n_cls != len(labels.get(a, ())):
            raise SuiteError(
                f"the {a} head of run {run} has {n_cls} classes but labels.json lists "
                f"{len(labels.get(a, ()))}; the encoder was trained on other data: re-run B1, C1"
            )
        if f"label_{a}" not in emb:
            raise SuiteError(f"embeddings.npz of run {run} has no label_{a}; re-run {c1}")


def database_rows(emb: Mapping[str, np.ndarray], test: pd.DataFrame, c1: str) -> np.ndarray:
    """Rows of the embeddings that form the retrieval database: test images with tags (SPEC §7)."""
    tags_of = dict(zip(test["image"], test["tags"], strict=True))
    images = emb["image"].astype(str)
    test_rows = np.flatnonzero(emb["split"] == "test")
    unknown = [k for k in images[test_rows] if k not in tags_of]
    if unknown:
        raise SuiteError(
            f"embeddings.npz holds test images missing from test.csv (e.g. {unknown[0]}); "
            f"the data changed after C1: re-run {c1}"
        )
    return np.asarray([r for r in test_rows if tags_of[images[r]]], dtype=np.int64)


def class_centroids(z: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """C×E mean embedding per class (the centroid shift's μ); a class without rows gets the mean
    of all rows, so that shifting to or from it moves nothing class-specific."""
    labels = np.asarray(labels, dtype=np.int64)
    sums = np.zeros((n_classes, z.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, z)
    counts = np.bincount(labels, minlength=n_classes)[:, None]
    overall = z.mean(0, keepdims=True) if len(z) else np.zeros((1, z.shape[1]))
    return np.where(counts > 0, sums / np.maximum(counts, 1), overall).astype(np.float32)


def effective_quirks(quirks: Iterable[str], dataset: str) -> tuple[str, ...]:
    """The E1 quirks that change anything on `dataset` (empty-tag-token: CUB and aPY only)."""
    return tuple(q for q in quirks if dataset in QUIRKS[q].datasets)


def load_eval_data(
    data_root: Path,
    weights_root: Path,
    task: Task,
    run: str,
    device: torch.device,
    exclude_query: bool = False,
    quirks: Iterable[str] = (),
) -> EvalData:
    """Read queries, labels, embeddings and the encoder's heads; check they fit together.

    quirks: the authors' E1 quirks to apply (those that do nothing on the dataset are dropped).
    """
    from src.encoder import load_encoder

    quirks = effective_quirks(quirks, task.dataset)
    queries = read_queries(data_root, task.name)
    labels = read_labels(data_root, task.dataset)
    rdir = run_dir(weights_root, run)
    c1 = _stage_hint("C1", task, run)
    require(rdir / "embeddings.npz", c1)
    emb = load_embeddings(rdir)
    require(rdir / "encoder.pt", _stage_hint("B1", task, run))
    encoder, config = load_encoder(rdir, device)
    heads = dict(encoder.heads.items())

    _check_conditions(task, run, heads, config, labels, queries, emb, c1)
    label_attrs = [a for a in labels if f"label_{a}" in emb]

    z = emb["z"]
    images = emb["image"].astype(str)
    bad = ~np.isfinite(z).all(axis=1)
    if bad.any():
        raise SuiteError(
            f"{rdir / 'embeddings.npz'} has {int(bad.sum())} rows with NaN or inf "
            f"(e.g. {images[bad][0]}); the encoder may have diverged: re-train B1, re-run C1"
        )

    test = read_split(data_root, task.dataset, "test")
    tags_of = dict(zip(test["image"], test["tags"], strict=True))
    db_rows = database_rows(emb, test, c1)
    if len(db_rows) < K + int(exclude_query):
        raise SuiteError(
            f"the database has {len(db_rows)} tagged test images; retrieval needs more than {K}"
        )

    fix = f"the queries are newer than the embeddings: re-run {c1}"
    q_rows = _rows_of(queries["image"], {k: i for i, k in enumerate(images)}, "query images", fix)
    db_pos = {k: i for i, k in enumerate(images[db_rows])}
    where = f"queries_{task.name}.csv"
    conditions = {
        a: class_ids(
            queries[a].astype(str), a, labels[a], where, f"valid names: {', '.join(labels[a])}"
        )
        for a in task.conditions
    }
    q_list: list[Any] = queries["tags"].fillna("").astype(str).tolist()
    if "empty-tag-token" in quirks:  # their E1: a query without attributes gets an empty tag
        own = [[labels[a][int(emb[f"label_{a}"][r])] for a in label_attrs] for r in q_rows]
        q_list = metrics.authors_query_tags(q_list, own)
    q_tags, db_tags = metrics.tag_matrices(q_list, [tags_of[k] for k in images[db_rows]])
    cfg_path = dataset_dir(data_root, task.dataset) / "config.json"
    data_cfg = (
        read_json(cfg_path, hint("A1", "--dataset", task.dataset)) if cfg_path.is_file() else {}
    )
    exclude = None
    if exclude_query:
        exclude = np.asarray([db_pos.get(k, -1) for k in queries["image"]], dtype=np.int64)

    train = emb["split"] == "train"
    centroids = {
        a: class_centroids(z[train], emb[f"label_{a}"][train], len(labels[a]))
        for a in task.conditions
    }

    def dev(x: np.ndarray) -> Tensor:
        return torch.tensor(np.asarray(x), device=device)  # a copy: pandas arrays are read-only

    return EvalData(
        task=task,
        run=run,
        config=config,
        labels=labels,
        heads=heads,
        device=device,
        queries=queries,
        z0=dev(z[q_rows].astype(np.float32)),
        conditions={a: dev(v) for a, v in conditions.items()},
        query_labels={a: dev(emb[f"label_{a}"][q_rows]) for a in label_attrs},
        db_images=images[db_rows],
        db_z=dev(z[db_rows].astype(np.float32)),
        db_labels={a: dev(emb[f"label_{a}"][db_rows]) for a in label_attrs},
        query_tags=q_tags,
        db_tags=db_tags,
        exclude=None if exclude is None else dev(exclude),
        quirks=quirks,
        source=data_cfg.get("source") if isinstance(data_cfg, dict) else None,
        centroids={a: dev(c) for a, c in centroids.items()},
    )
