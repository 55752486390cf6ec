"""E2's figures: the result grids (paper Figs 1/7/8/9), Fig 5's λ rows beside a t-SNE, an outside
picture's search, and the run's Fig 6 and training curves. What they show was ranked in
src/evaluation/shown.py (or read from E1's files); this module runs no model: it lays the
results out as tiles and src/report/drawing.py draws them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from src.artifacts import read_metrics
from src.evaluation.registry import METHODS, RANDOM
from src.evaluation.shown import LambdaRows, PictureSearch, QueryResults, ShownRow
from src.evaluation.space import SearchSpace
from src.hints import hint
from src.report.drawing import (
    ResultRow,
    Tile,
    TsnePanel,
    draw_grid,
    draw_sweep,
    draw_training_curves,
    draw_tsne,
    tsne_2d,
)

log = logging.getLogger(__name__)


def database_suffix(space: SearchSpace) -> str:
    """The figure-name suffix of a search space's database: '' for the paper's test split,
    '_all' for train + test, so a whole-collection grid never replaces a protocol one."""
    return "" if space.database == "test" else f"_{space.database}"


def result_tiles(space: SearchSpace, shown: ShownRow, query_image: str | None = None) -> list[Tile]:
    """Tiles for one method's results: rank, tag similarity to the query, cosine, class labels;
    a green frame where the result carries the condition. The query's own image is marked, never
    dropped (SPEC §9)."""
    tiles = []
    table = space.table
    attrs = list(space.labels)
    for r, row in enumerate(shown.rows):
        item = table.iloc[int(row)]
        head = f"#{r + 1}"
        if shown.similarity is not None:
            head += f"  TS {shown.similarity[r]:.2f}"
        if shown.scores is not None:
            head += f"  cos {shown.scores[r]:.2f}"
        caption = [head, *[str(item[a]) for a in attrs]]
        if query_image is not None and item["image"] == query_image:
            caption.append("(the query itself)")
        if item["split"] == "train":  # only in a whole-collection database (--database all)
            caption.append("(train split)")
        tiles.append(Tile(space.image_path(item["image"]), caption, bool(shown.hits[r])))
    return tiles


def ranked_row(space: SearchSpace, shown: ShownRow, query_image: str | None = None) -> ResultRow:
    """One row of a grid: the method's title and its result tiles."""
    return ResultRow(shown.title, result_tiles(space, shown, query_image))


def condition_text(conditions: Mapping[str, str]) -> str:
    return ", ".join(f"{a} = {c}" for a, c in conditions.items())


def query_tile(space: SearchSpace, query: pd.Series) -> Tile:
    """The query cell: its image, id, own labels and the condition."""
    row = space.rows_of([query["image"]])[0]
    labels = space.table.iloc[row] if row >= 0 else {}
    own = [f"{a}: {labels[a]}" for a in space.labels if isinstance(labels.get(a), str)]
    cond = {a: query[a] for a in space.task.conditions}
    return Tile(
        space.image_path(query["image"]),
        [f"query {query['query_id']}", *own, f"condition: {condition_text(cond)}"],
    )


def tsne_panel(
    space: SearchSpace,
    attr: str,
    classes: Sequence[str],
    query_z: np.ndarray,
    marks: Mapping[str, np.ndarray],
    seed: int,
    per_class: int = 250,
) -> TsnePanel:
    """t-SNE of the database embeddings of `classes` (subsampled, seeded) with the query and each
    row's top-3 mean embedded in the same fit (t-SNE cannot place new points afterwards)."""
    rng = np.random.default_rng(seed)
    picks, names = [], []
    for c in dict.fromkeys(classes):
        rows = np.flatnonzero(space.table[attr].to_numpy() == c)
        rows = rng.choice(rows, size=min(per_class, len(rows)), replace=False)
        picks.append(rows)
        names += [c] * len(rows)
    idx = np.concatenate(picks) if picks else np.zeros(0, dtype=int)
    extra = np.stack([query_z, *marks.values()])
    xy = tsne_2d(np.concatenate([space.vectors(idx).cpu().numpy(), extra]), seed)
    n = len(idx)
    return TsnePanel(
        xy[:n],
        names,
        xy[n],
        dict(zip(marks, xy[n + 1 :], strict=True)),
        title=f"t-SNE of {attr}: {' vs '.join(dict.fromkeys(classes))}",
    )


# ---------------------------------------------------------------------------------------------
# The figures of E2


def _title(space: SearchSpace, query: pd.Series, extra: str = "") -> str:
    cond = {a: query[a] for a in space.task.conditions}
    exact = space.searcher.info.kind == "exact"
    where = "" if space.database == "test" and exact else f" · database {space.describe()}"
    return (
        f"{space.task.name} · query {query['query_id']} · condition {condition_text(cond)}"
        f"{extra}{where}"
    )


def result_grids(space: SearchSpace, grids: Sequence[QueryResults], out_dir: Path) -> list[Path]:
    """results_q<K>.png per query: one row per method (src/evaluation/shown.result_grids)."""
    paths = []
    for g in grids:
        rows = [ranked_row(space, shown, g.query["image"]) for shown in g.rows]
        path = out_dir / f"results_q{g.query['query_id']}{database_suffix(space)}.png"
        draw_grid(query_tile(space, g.query), rows, path, title=_title(space, g.query))
        paths.append(path)
    return paths


def lambda_figure(space: SearchSpace, fig5: LambdaRows, path: Path, *, seed: int = 0) -> Path:
    """Fig 5: one row per λ (kNN first) beside a t-SNE of the query's class and the condition
    class (first condition attribute), marking the query and the mean of each row's top-3."""
    query = fig5.query
    attr = space.task.conditions[0]
    panel = tsne_panel(space, attr, [fig5.own, query[attr]], fig5.query_z, fig5.marks, seed)
    draw_grid(
        query_tile(space, query),
        [ranked_row(space, shown, query["image"]) for shown in fig5.rows],
        path,
        title=_title(space, query, " · effect of λ"),
        side_panel=draw_tsne(panel),
        side_width=4.2,
    )
    return path


def run_figures(results: Path, weights: Path, tasks: Sequence[str], title: str) -> list[Path]:
    """results/<run>/figures: Fig 6 over the tasks with a sweep.csv (random search dashed, from
    metrics.json) and B1's training curves (weights/<run>/train_log.csv), when they exist."""
    sweeps, baselines, out = {}, {}, []
    for t in tasks:
        if (results / t / "sweep.csv").exists():
            sweeps[t] = pd.read_csv(results / t / "sweep.csv")
            rnd = (read_metrics(results / t / "metrics.json") or {}).get("methods", {})
            rnd = rnd.get(RANDOM) or {}
            if rnd.get("paper_map@10") is not None and rnd.get("mts@10") is not None:
                baselines[t] = {METHODS[RANDOM].label: (rnd["paper_map@10"], rnd["mts@10"])}
    if sweeps:
        out.append(results / "figures" / "fig6_lambda.png")
        draw_sweep(sweeps, out[-1], baselines=baselines)
    else:
        log.info("no sweep.csv yet: Fig 6 needs %s", hint("E1", "--task T --sweep"))
    if (weights / "train_log.csv").exists():
        out.append(results / "figures" / "training_curves.png")
        draw_training_curves(pd.read_csv(weights / "train_log.csv"), out[-1], title=title)
    return out


def picture_grid(
    space: SearchSpace, image: Path, found: PictureSearch, condition: Mapping[str, str], path: Path
) -> Path:
    """An outside picture's search (`src/evaluation/shown.search_picture`): the picture, how the
    encoder sees it and the condition, beside each method's results with their cosines."""
    caption = [
        image.name,
        *[f"seen as {a}: {v}" for a, v in found.seen_as.items()],
        f"condition: {condition_text(condition)}",
    ]
    title = f"{image.name} · condition {condition_text(condition)} · database {space.describe()}"
    draw_grid(Tile(image, caption), [ranked_row(space, r) for r in found.rows], path, title=title)
    return path
