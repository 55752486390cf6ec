"""Benchmark: does the explorer's map keep neighbours? Its figures beside a PCA map's.

    python bench/explorer_map.py [--task synthart-style] [--queries 200] [--seed 0]
                                 [E3_explore.py's flags: --data-root, --weights-root, --run, --database]

On a finished run (after `make demo`), as E3 opens it (its database and λ — E1's when E1 ran):
- after a walk: --queries random database images, each with a random condition class per
  condition attribute, searched by Backward Search; the share of each top-10 found among the 30
  map points nearest the ranked vector's place on the map (target ≥ 0.8);
- database rows: the share of each row's 10 cosine neighbours (itself left out) among its 30
  nearest map points (target ≥ 0.9).
Both for the explorer's map (src/explorer/projection.py, fitted afresh and timed: the cache is
neither read nor written) and for the map it replaced, the PCA of a class-balanced sample of 4,000
rows. Prints a markdown table and the load average; writes nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import E3_explore  # noqa: E402
from src.cli import run_stage, setup_logging  # noqa: E402
from src.evaluation.methods import rank_backward_search  # noqa: E402
from src.evaluation.space import SearchSpace, file_queries  # noqa: E402
from src.explorer.projection import balanced_sample, fit_projection  # noqa: E402

NEAREST = 30  # map points looked at around a place on the map
TOP = 10


class PCAMap:
    """The explorer's map before: PCA of a class-balanced sample (4,000 rows), a linear map."""

    def __init__(self, space: SearchSpace):
        z = space.vectors(np.arange(len(space))).cpu().double().numpy()
        sample = z[balanced_sample(space, 4000)]
        self.mean = sample.mean(0)
        self.axes = np.linalg.svd(sample - self.mean, full_matrices=False)[2][:2]
        self.xy = self.project(z)

    def project(self, z: np.ndarray | torch.Tensor) -> np.ndarray:
        return (torch.as_tensor(z).double().cpu().numpy() - self.mean) @ self.axes.T


def kept(xy: np.ndarray, places: np.ndarray, wanted: np.ndarray, leave_out=None) -> float:
    """Mean share of each row of `wanted` (Q×k database rows) among the NEAREST map points of
    `xy` nearest its place (Q×2); leave_out: a database row per place not to count (itself)."""
    shares = []
    for i, (p, want) in enumerate(zip(places, wanted, strict=True)):
        d = ((xy - p) ** 2).sum(1)
        if leave_out is not None:
            d[leave_out[i]] = np.inf
        near = np.argpartition(d, NEAREST)[:NEAREST]
        shares.append(len(set(want.tolist()) & set(near.tolist())) / len(want))
    return float(np.mean(shares))


def cosine_neighbours(space: SearchSpace) -> np.ndarray:
    """Each database row's TOP nearest other rows by cosine (N×TOP)."""
    u = torch.nn.functional.normalize(space.vectors(np.arange(len(space))).double(), dim=1)
    out = []
    for part in torch.arange(len(u)).split(2048):
        s = u[part] @ u.T
        s[torch.arange(len(part)), part] = -np.inf
        out.append(s.topk(TOP, dim=1).indices.cpu().numpy())
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="synthart-style")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    own, rest = p.parse_known_args(argv)
    setup_logging()
    space, lam = E3_explore.open_space(E3_explore.parse_args(["--task", own.task, *rest]))
    load_before = os.getloadavg()
    rng = np.random.default_rng(own.seed)
    rows = rng.choice(len(space), own.queries, replace=len(space) < own.queries)
    frame = pd.DataFrame(
        {
            "query_id": np.arange(len(rows)),
            "image": space.images[rows],
            **{
                a: np.asarray(space.labels[a], dtype=object)[
                    rng.integers(len(space.labels[a]), size=len(rows))
                ]
                for a in space.task.conditions
            },
            "tags": space.tag_cells[rows],
        }
    )
    ranking = rank_backward_search(space, file_queries(space, frame), lam)
    top, ranked = ranking.indices.cpu().numpy(), ranking.z
    neighbours = cosine_neighbours(space)
    t0 = time.perf_counter()
    tsne = fit_projection(space)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pca = PCAMap(space)
    pca_s = time.perf_counter() - t0
    table = []
    for name, m, seconds in [
        ("PCA of a balanced sample (before)", pca, pca_s),
        ("t-SNE anchors + weighted median of the 10 nearest (the explorer's map)", tsne, fit_s),
    ]:
        walk = kept(m.xy, m.project(ranked), top)
        own_rows = kept(m.xy, m.xy, neighbours, leave_out=np.arange(len(space)))
        table.append((name, walk, own_rows, seconds))
    load_after = os.getloadavg()
    print(
        f"\n{space.task.name}, run {space.run}: {space.describe()}, E = {space.dim}; "
        f"Backward Search at λ = {lam:g} from {len(rows)} random database images and conditions "
        f"(seed {own.seed}); {platform.processor() or platform.machine()}, {os.cpu_count()} cores,"
        f" torch threads {torch.get_num_threads()}; load average before {load_before[0]:.2f}, "
        f"after {load_after[0]:.2f}\n"
    )
    print(
        f"| map | top-{TOP} among the {NEAREST} map points nearest the ranked vector "
        f"(target ≥ 0.8) | a row's {TOP} cosine neighbours among its {NEAREST} nearest map "
        "points (target ≥ 0.9) | fit s |"
    )
    print("|---|---|---|---|")
    for name, walk, own_rows, seconds in table:
        print(f"| {name} | {walk:.3f} | {own_rows:.3f} | {seconds:.1f} |")


if __name__ == "__main__":
    sys.exit(run_stage(main))
