"""The explorer's map: a 2-D picture of a task's database that keeps neighbours, computed once and
cached, on which new vectors (the walk's iterates, an uploaded picture) can still be placed.

t-SNE lays out the anchors — the database, or a sample of up to SAMPLE rows balanced over the
task's condition classes — by their cosine neighbourhoods (the ranking's own measure). Every other
vector, database rows outside the sample included, is drawn at the weighted median of the map
positions of its NEIGHBOURS nearest anchors (weights 1/distance² of the unit vectors): among the
images it is nearest to, so a ranked vector lands among its top-10 and an anchor on its own point.
A linear map (PCA) places new points too but keeps few neighbours: the numbers, PCA's beside this
map's, are in bench/RESULTS.md (bench/explorer_map.py). Cached in the run folder as
`projection_<task>_<database>.npz` (written atomically under the file's lock, read without pickle)
and refitted when the database's embeddings changed.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from src.artifacts import load_npz, save_npz
from src.atomic import stage_lock
from src.errors import SuiteError
from src.evaluation.space import SearchSpace
from src.hints import hint
from src.method.retrieval import cosine_topk
from src.report.drawing import tsne_2d

log = logging.getLogger(__name__)

KIND = "t-SNE anchors, weighted median of the 10 nearest"  # what a cache holds: another is stale
SAMPLE = 10_000  # anchors t-SNE lays out, at most (spread evenly over the condition classes)
NEIGHBOURS = 10  # anchors that place a vector
SEED = 0  # t-SNE's and the sample's seed: the same database always gives the same map
TINY = 1e-12  # keeps 1/distance² finite: a vector equal to an anchor outweighs all the others
E3 = hint("E3")


@dataclass(frozen=True)
class Projection:
    """The anchors' layout, and where every database row lies on it."""

    rows: np.ndarray  # (K,) the anchors' database rows
    anchors: Tensor  # K×E: their embeddings
    anchor_xy: np.ndarray  # K×2: where t-SNE put them
    xy: np.ndarray  # N×2: every database row on the map
    fingerprint: str  # of the database it was fitted on

    def project(self, z: np.ndarray | Tensor) -> np.ndarray:
        """K×E vectors (embeddings, iterates) → K×2 points of the map: each at the weighted median
        of its nearest anchors' positions."""
        z = torch.as_tensor(z).detach().to(self.anchors.device, self.anchors.dtype)
        k = min(NEIGHBOURS, len(self.rows))
        scores, nearest = cosine_topk(z, self.anchors, k)
        weights = 1.0 / (
            (2.0 - 2.0 * scores.double()).clamp_min(0.0) + TINY
        )  # |u − v|² = 2 − 2 cos
        return weighted_median(self.anchor_xy[nearest.cpu().numpy()], weights.cpu().numpy())


def weighted_median(points: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per row of points (Q×k×2) with weights (Q×k): each coordinate's weighted median."""
    out = np.empty((points.shape[0], 2))
    for axis in range(2):
        order = np.argsort(points[..., axis], axis=1, kind="stable")
        values = np.take_along_axis(points[..., axis], order, 1)
        cum = np.cumsum(np.take_along_axis(weights, order, 1), axis=1)
        at = (cum < cum[:, -1:] / 2).sum(1)  # the first point holding half the weight
        out[:, axis] = values[np.arange(len(values)), at]
    return out


def projection_path(space: SearchSpace) -> Path:
    """weights/<run>/projection_<task>_<database>.npz"""
    return space.weights / f"projection_{space.task.name}_{space.database}.npz"


def fingerprint(space: SearchSpace) -> str:
    """A digest of the database (image keys and embeddings: the partitions' SHA-256s and the
    database rows): a cached map of other data is stale."""
    h = hashlib.sha256()
    h.update("\n".join(space.images).encode())
    h.update(space.db.fingerprint.encode())
    return h.hexdigest()


def balanced_sample(space: SearchSpace, size: int = SAMPLE, seed: int = SEED) -> np.ndarray:
    """Database rows, as many of each combination of condition classes as the rarest allows up
    to size / #combinations (each combination at least one row), sorted."""
    key = np.zeros(len(space), dtype=np.int64)
    for a in space.task.conditions:
        key = key * len(space.labels[a]) + space.label_ids[a].cpu().numpy()
    groups = [np.flatnonzero(key == k) for k in np.unique(key)]
    per_group = max(1, size // len(groups))
    rng = np.random.default_rng(seed)
    picks = [rng.choice(g, size=min(per_group, len(g)), replace=False) for g in groups]
    return np.sort(np.concatenate(picks))


def layout(unit: np.ndarray) -> np.ndarray:
    """t-SNE of unit vectors (euclidean there orders pairs as cosine does); fewer than t-SNE's 4
    points go on a circle."""
    if len(unit) < 4:
        angle = 2 * np.pi * np.arange(len(unit)) / max(1, len(unit))
        return np.stack([np.cos(angle), np.sin(angle)], 1)
    return tsne_2d(unit, SEED).astype(np.float64)


def _placed(space: SearchSpace, rows: np.ndarray, anchor_xy: np.ndarray) -> Projection:
    """The projection of these anchors, every database row placed on it."""
    anchors = space.vectors(rows)
    partial = Projection(rows, anchors, anchor_xy, np.empty((0, 2)), "")
    xy = np.concatenate(  # the database streamed in tiles; 4096 rows × K anchors scored at once
        [
            partial.project(part)
            for _, z in space.db.tiles()
            for part in torch.from_numpy(z).split(4096)
        ]
    )
    return Projection(rows, anchors, anchor_xy, xy, fingerprint(space))


def fit_projection(space: SearchSpace) -> Projection:
    """t-SNE of the anchors (a class-balanced sample of at most SAMPLE rows), every row placed."""
    rows = balanced_sample(space, SAMPLE)
    z = space.vectors(rows).cpu().double().numpy()  # only the anchors' rows read
    unit = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    log.info("E3: laying out the map of %d images (t-SNE, once; then cached)", len(rows))
    return _placed(space, rows, layout(unit))


def _read(path: Path, space: SearchSpace, want: str) -> Projection | None:
    """The cached map at `path` when it is readable, of this kind and of this database, else None."""
    if not path.is_file():
        return None
    try:
        arrays = load_npz(path, E3)
        if str(arrays.get("kind")) != KIND or str(arrays["fingerprint"]) != want:
            return None  # an older kind of map, or another database's
        rows, anchor_xy, xy = arrays["rows"], arrays["anchor_xy"], arrays["xy"]
        if not (
            rows.ndim == 1 and anchor_xy.shape == (len(rows), 2) and xy.shape == (len(space), 2)
        ):
            raise KeyError("array shapes")
        if len(rows) and not (0 <= rows.min() and rows.max() < len(space)):
            raise KeyError("anchor rows")
    except (SuiteError, KeyError) as e:
        log.warning("E3: %s is unreadable (%s); fitting the map again", path, e)
        return None
    return Projection(rows, space.vectors(rows), anchor_xy, xy, want)


def load_projection(space: SearchSpace) -> Projection:
    """The cached map of the space's database, else fitted now and cached (best effort: a run
    folder that cannot be written, or another explorer writing it, only costs the cache)."""
    path = projection_path(space)
    want = fingerprint(space)
    found = _read(path, space, want)
    if found is not None:
        return found
    proj = fit_projection(space)
    try:
        with stage_lock(path):
            save_npz(
                path,
                kind=np.array(KIND),
                rows=proj.rows,
                anchor_xy=proj.anchor_xy,
                xy=proj.xy,
                fingerprint=np.array(proj.fingerprint),
            )
        log.info("E3: the map of %d images cached in %s", len(space), path)
    except (OSError, SuiteError) as e:
        log.warning("E3: the map is not cached (%s); it is fitted again next time", e)
    return proj
