"""What E2's figures show: the result grids (paper Figs 1/7/8/9), Fig 5's λ rows beside a t-SNE,
an outside picture's search, and the run's Fig 6 and training curves, assembled from a task's
search space (src/search_space.py) and E1's files; src/drawing.py draws them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from src.artifacts import read_json_or_none
from src.cli import LOGGER
from src.datasets.common import split_tags
from src.drawing import (
    ResultRow,
    Tile,
    TsnePanel,
    draw_grid,
    draw_sweep,
    draw_training_curves,
    draw_tsne,
    tsne_2d,
)
from src.evaluation import NOT_IN_PAPER
from src.hints import hint
from src.search_space import SearchSpace, class_id, query_z, rank, search, student_search

log = logging.getLogger(LOGGER)


# E1's baselines beyond the paper, shown in the result grids when E1 wrote their rankings
BASELINE_ROWS = {m: f"{name} (not in the paper)" for m, name in NOT_IN_PAPER.items()}


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


def result_tiles(
    space: SearchSpace,
    rows: Sequence[int],
    conditions: Mapping[str, str],
    query_tags: frozenset[str] | None,
    query_image: str | None = None,
    scores: Sequence[float] | None = None,
) -> list[Tile]:
    """Tiles for ranked database rows: rank, tag similarity, class labels; green frame if every
    condition label matches. The query's own image is marked, never dropped (SPEC §9)."""
    tiles = []
    attrs = list(space.labels)
    for r, row in enumerate(rows):
        item = space.table.iloc[int(row)]
        head = f"#{r + 1}"
        if query_tags is not None:
            head += f"  TS {jaccard(query_tags, split_tags(item['tags'])):.2f}"
        if scores is not None:
            head += f"  cos {scores[r]:.2f}"
        caption = [head, *[str(item[a]) for a in attrs]]
        if query_image is not None and item["image"] == query_image:
            caption.append("(the query itself)")
        ok = all(item[a] == name for a, name in conditions.items())
        tiles.append(Tile(space.image_path(item["image"]), caption, ok))
    return tiles


def condition_text(conditions: Mapping[str, str]) -> str:
    return ", ".join(f"{a} = {c}" for a, c in conditions.items())


def query_tile(space: SearchSpace, query: pd.Series) -> Tile:
    """The query cell: its image, id, own labels and the condition."""
    labels = space.table.set_index("image").reindex([query["image"]]).iloc[0]
    own = [f"{a}: {labels[a]}" for a in space.labels if isinstance(labels[a], str)]
    cond = {a: query[a] for a in space.task.conditions}
    return Tile(
        space.image_path(query["image"]),
        [f"query {query['query_id']}", *own, f"condition: {condition_text(cond)}"],
    )


def read_rankings(results: Path, method: str, query_ids: Sequence[int]) -> list[list[str]] | None:
    """The ranked image keys E1 wrote for these queries (retrievals_<method>.csv), or None when
    the file or one of the queries is missing."""
    path = results / f"retrievals_{method}.csv"
    if not path.exists():
        return None
    df = pd.read_csv(path, dtype=str, keep_default_na=False).set_index("query_id")
    cols = sorted((c for c in df.columns if c.startswith("rank_")), key=lambda c: int(c[5:]))
    wanted = [str(q) for q in query_ids]
    if not cols or not set(wanted) <= set(df.index):
        return None
    return df.loc[wanted, cols].values.tolist()


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
    z_db = space.z.cpu().numpy()
    picks, names = [], []
    for c in dict.fromkeys(classes):
        rows = np.flatnonzero(space.table[attr].to_numpy() == c)
        rows = rng.choice(rows, size=min(per_class, len(rows)), replace=False)
        picks.append(rows)
        names += [c] * len(rows)
    idx = np.concatenate(picks) if picks else np.zeros(0, dtype=int)
    extra = np.stack([query_z, *marks.values()])
    xy = tsne_2d(np.concatenate([z_db[idx], extra]), seed)
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
    return (
        f"{space.task.name} · query {query['query_id']} · condition {condition_text(cond)}{extra}"
    )


def result_grids(
    space: SearchSpace,
    queries: pd.DataFrame,
    lam: float,
    out_dir: Path,
    *,
    e1_results: Path | None = None,
    student_file: Path | None = None,
    top_k: int = 10,
) -> list[Path]:
    """results_q<K>.png per query: kNN, the baselines (when E1 ran them), Backward Search (λ) and
    the student (when trained) in rows.

    Rankings come from E1's retrievals_<method>.csv in `e1_results` when given (E1 ran at this λ),
    else they are computed here, all queries at once.
    """
    z0 = query_z(space, queries["image"])
    conds = {
        a: torch.tensor([class_id(space.labels, a, c) for c in queries[a]])
        for a in space.task.conditions
    }
    methods: dict[str, tuple[str, Callable[[], torch.Tensor] | None]] = {
        "knn": ("k-nearest (kNN)", lambda: z0)
    }
    for m, title in BASELINE_ROWS.items():  # only from E1's files: E1 owns their settings (α)
        if e1_results is not None and (e1_results / f"retrievals_{m}.csv").exists():
            methods[m] = (title, None)
    methods["backward_search"] = (
        f"Backward Search λ={lam:g}",
        lambda: search(space, z0, conds, lam),
    )
    e1_student = e1_results is not None and (e1_results / "retrievals_student.csv").exists()
    if e1_student or (student_file is not None and student_file.exists()):
        methods["student"] = (
            f"student λ={lam:g}",
            lambda: student_search(student_file, space, z0, conds),
        )
    ranks = {}
    for method, (title, compute) in methods.items():
        keys = read_rankings(e1_results, method, queries["query_id"]) if e1_results else None
        rows = space.image_row
        if keys is not None and all(i in rows for k in keys for i in k[:top_k]):
            ranks[title] = np.array([[rows[i] for i in k[:top_k]] for k in keys])
            log.info("%s: ranking read from E1's retrievals_%s.csv", title, method)
        elif compute is not None:
            ranks[title] = rank(space, compute(), top_k)[1]
    paths = []
    for q, (_, query) in enumerate(queries.iterrows()):
        cond = {a: query[a] for a in space.task.conditions}
        tags = split_tags(query["tags"])
        rows = [
            ResultRow(t, result_tiles(space, r[q], cond, tags, query["image"]))
            for t, r in ranks.items()
        ]
        path = out_dir / f"results_q{query['query_id']}.png"
        draw_grid(query_tile(space, query), rows, path, title=_title(space, query))
        paths.append(path)
    return paths


def lambda_figure(
    space: SearchSpace,
    query: pd.Series,
    lams: Sequence[float | None],
    path: Path,
    *,
    seed: int = 0,
    top_k: int = 5,
) -> Path:
    """Fig 5: one row per λ (None = kNN) beside a t-SNE of the query's class and the condition
    class (first condition attribute), marking the query and the mean of each row's top-3."""
    z0 = query_z(space, [query["image"]])
    cond = {a: query[a] for a in space.task.conditions}
    ids = {a: class_id(space.labels, a, c) for a, c in cond.items()}
    searched = [lam for lam in lams if lam is not None]
    zs = {}
    if searched:  # one batched search, λ per row
        z_b = search(space, z0.repeat(len(searched), 1), ids, torch.tensor(searched))
        zs = dict(zip(searched, z_b, strict=True))
    batch = torch.stack([z0[0].to(space.device) if lam is None else zs[lam] for lam in lams])
    rows = rank(space, batch, top_k)[1]
    z_db = space.z.cpu().numpy()
    names = ["kNN" if lam is None else f"λ={lam:g}" for lam in lams]
    marks = {n: z_db[r[:3]].mean(0) for n, r in zip(names, rows, strict=True)}
    attr = space.task.conditions[0]
    own = space.table.set_index("image").reindex([query["image"]]).iloc[0][attr]
    panel = tsne_panel(space, attr, [own, cond[attr]], z0[0].numpy(), marks, seed)
    tags = split_tags(query["tags"])
    grid_rows = [
        ResultRow(
            "k-nearest (kNN)" if lam is None else f"Backward Search λ={lam:g}",
            result_tiles(space, r, cond, tags, query["image"]),
        )
        for lam, r in zip(lams, rows, strict=True)
    ]
    draw_grid(
        query_tile(space, query),
        grid_rows,
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
            rnd = (read_json_or_none(results / t / "metrics.json") or {}).get("methods", {})
            rnd = rnd.get("random") or {}
            if rnd.get("paper_map@10") is not None and rnd.get("mts@10") is not None:
                baselines[t] = {"random": (rnd["paper_map@10"], rnd["mts@10"])}
    if sweeps:
        out.append(results / "figures" / "fig6_lambda.png")
        draw_sweep(sweeps, out[-1], baselines=baselines)
    else:
        log.info("no sweep.csv yet: Fig 6 needs %s", hint("E1", "--task T --sweep"))
    if (weights / "train_log.csv").exists():
        out.append(results / "figures" / "training_curves.png")
        draw_training_curves(pd.read_csv(weights / "train_log.csv"), out[-1], title=title)
    return out


@dataclass
class PictureSearch:
    """What `search_picture` found: the encoder's reading of the picture and the ranked results."""

    seen_as: dict[str, str]  # attr → predicted class of the picture
    results: pd.DataFrame  # rank, cosine, image, one column per label attribute, satisfies


def search_picture(
    space: SearchSpace,
    image: Path,
    z0: torch.Tensor,
    conditions: Mapping[str, int],
    lam: float,
    path: Path,
    *,
    top_k: int = 10,
    student_file: Path | None = None,
) -> PictureSearch:
    """Run Backward Search from the picture's embedding z0 (`embed_image`) towards `conditions`,
    rank the database and draw kNN, Backward Search and (when D1 trained it) student rows."""
    names = {a: space.labels[a][c] for a, c in conditions.items()}
    z = search(space, z0, conditions, lam)
    with torch.no_grad():
        seen = {a: space.labels[a][int(h(z0).argmax(1))] for a, h in space.encoder.heads.items()}
    (knn_s, knn_r), (bs_s, bs_r) = rank(space, z0, top_k), rank(space, z, top_k)
    found = space.table.iloc[bs_r[0]][["image", *space.labels]].reset_index(drop=True)
    found.insert(0, "cosine", bs_s[0])
    found.insert(0, "rank", np.arange(1, len(found) + 1))
    found["satisfies"] = np.all([found[a] == n for a, n in names.items()], axis=0)
    rows = [
        ResultRow("k-nearest (kNN)", result_tiles(space, knn_r[0], names, None, None, knn_s[0])),
        ResultRow(
            f"Backward Search λ={lam:g}", result_tiles(space, bs_r[0], names, None, None, bs_s[0])
        ),
    ]
    if student_file is not None and student_file.exists():
        conds = {a: torch.tensor([c]) for a, c in conditions.items()}
        st_s, st_r = rank(space, student_search(student_file, space, z0, conds), top_k)
        rows.append(
            ResultRow(
                f"student λ={lam:g}", result_tiles(space, st_r[0], names, None, None, st_s[0])
            )
        )
    caption = [
        image.name,
        *[f"seen as {a}: {v}" for a, v in seen.items()],
        f"condition: {condition_text(names)}",
    ]
    draw_grid(
        Tile(image, caption), rows, path, title=f"{image.name} · condition {condition_text(names)}"
    )
    return PictureSearch(seen, found)
