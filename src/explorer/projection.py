"""The explorer's map: one fixed 2-D projection of a task's database, computed once and cached.

A linear map (PCA of a class-balanced sample) rather than t-SNE: the walk's iterates and the
answers of every method are new points, and only a linear map places new points where the
database's own points are drawn. The sample is balanced over the task's condition classes so that
the axes show how those classes lie apart (the walk goes from one to another), not the largest
class. Cached in the run folder as `projection_<task>_<database>.npz` (written atomically under
the file's lock, read without pickle) and refitted when the database's embeddings changed.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from src.artifacts import load_npz, save_npz
from src.atomic import stage_lock
from src.errors import SuiteError
from src.evaluation.space import SearchSpace
from src.hints import hint

log = logging.getLogger(__name__)

SAMPLE = 4000  # rows the axes are fitted on, at most (spread evenly over the condition classes)
SEED = 0  # the sample's seed: the map is the same every time for the same database
E3 = hint("E3")


@dataclass(frozen=True)
class Projection:
    """z ↦ (z − mean) · axesᵀ, and where it puts the database's rows."""

    mean: np.ndarray  # (E,)
    axes: np.ndarray  # 2×E, orthonormal
    xy: np.ndarray  # N×2: the database rows on the map
    fingerprint: str  # of the database it was fitted on

    def project(self, z: np.ndarray | torch.Tensor) -> np.ndarray:
        """K×E vectors (embeddings, iterates) → K×2 points of the map."""
        if isinstance(z, torch.Tensor):
            z = z.detach().cpu().numpy()
        return (np.asarray(z, dtype=np.float64) - self.mean) @ self.axes.T


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


def fit_projection(space: SearchSpace) -> Projection:
    """PCA of a class-balanced sample of the database; each axis's sign fixed (largest loading
    positive), so the same data always gives the same picture."""
    sample = space.db.take(balanced_sample(space)).astype(np.float64)
    mean = sample.mean(0)
    _, _, vt = np.linalg.svd(sample - mean, full_matrices=False)
    axes = vt[:2]
    if len(axes) < 2:  # E = 1: the second axis is flat
        axes = np.vstack([axes, np.zeros_like(axes)])
    signs = np.sign(axes[np.arange(2), np.abs(axes).argmax(1)])
    axes = axes * np.where(signs == 0, 1.0, signs)[:, None]
    xy = np.concatenate([(z.astype(np.float64) - mean) @ axes.T for _, z in space.db.tiles()])
    return Projection(mean, axes, xy, fingerprint(space))


def _read(path: Path, want: str) -> Projection | None:
    """The cached map at `path` when it is readable and of this database, else None."""
    if not path.is_file():
        return None
    try:
        arrays = load_npz(path, E3)
        found = Projection(arrays["mean"], arrays["axes"], arrays["xy"], str(arrays["fingerprint"]))
    except (SuiteError, KeyError) as e:
        log.warning("E3: %s is unreadable (%s); fitting the map again", path, e)
        return None
    return found if found.fingerprint == want else None


def load_projection(space: SearchSpace) -> Projection:
    """The cached map of the space's database, else fitted now and cached (best effort: a run
    folder that cannot be written, or another explorer writing it, only costs the cache)."""
    path = projection_path(space)
    want = fingerprint(space)
    found = _read(path, want)
    if found is not None:
        return found
    proj = fit_projection(space)
    try:
        with stage_lock(path):
            save_npz(
                path,
                mean=proj.mean,
                axes=proj.axes,
                xy=proj.xy,
                fingerprint=np.array(proj.fingerprint),
            )
        log.info("E3: the map of %d images cached in %s", len(space), path)
    except (OSError, SuiteError) as e:
        log.warning("E3: the map is not cached (%s); it is fitted again next time", e)
    return proj
