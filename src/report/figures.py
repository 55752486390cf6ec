"""What E2's figures show: the result grids (paper Figs 1/7/8/9), Fig 5's λ rows beside a t-SNE,
an outside picture's search, and the run's Fig 6 and training curves, assembled from a task's
search space and ranked by the same methods as E1 (src/evaluation); src/report/drawing.py draws.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from src.artifacts import read_metrics
from src.evaluation.methods import (
    Ranking,
    rank,
    rank_backward_search,
    rank_knn,
    rank_student,
    search,
)
from src.evaluation.space import Queries, SearchSpace, file_queries, picture_query
from src.hints import hint
from src.method.metrics import tag_jaccard
from src.paper import NOT_IN_PAPER
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


# E1's baselines beyond the paper, shown in the result grids when E1 wrote their rankings
BASELINE_ROWS = {m: f"{name} (not in the paper)" for m, name in NOT_IN_PAPER.items()}


def database_suffix(space: SearchSpace) -> str:
    """The figure-name suffix of a search space's database: '' for the paper's test split,
    '_all' for train + test, so a whole-collection grid never replaces a protocol one."""
    return "" if space.database == "test" else f"_{space.database}"


def result_tiles(
    space: SearchSpace,
    rows: Sequence[int],
    conditions: Mapping[str, str],
    similarity: Sequence[float] | None = None,
    query_image: str | None = None,
    scores: Sequence[float] | None = None,
) -> list[Tile]:
    """Tiles for ranked database rows: rank, tag similarity to the query, cosine, class labels;
    green frame if every condition label matches. The query's own image is marked, never
    dropped (SPEC §9)."""
    tiles = []
    table = space.table
    attrs = list(space.labels)
    for r, row in enumerate(rows):
        item = table.iloc[int(row)]
        head = f"#{r + 1}"
        if similarity is not None:
            head += f"  TS {similarity[r]:.2f}"
        if scores is not None:
            head += f"  cos {scores[r]:.2f}"
        caption = [head, *[str(item[a]) for a in attrs]]
        if query_image is not None and item["image"] == query_image:
            caption.append("(the query itself)")
        if item["split"] == "train":  # only in a whole-collection database (--database all)
            caption.append("(train split)")
        ok = all(item[a] == name for a, name in conditions.items())
        tiles.append(Tile(space.image_path(item["image"]), caption, ok))
    return tiles


def ranked_row(
    title: str,
    space: SearchSpace,
    q: Queries,
    indices: Tensor,
    i: int,
    cosine: Tensor | None = None,
) -> ResultRow:
    """Query i's row of a ranking: the tag similarity of each result to the query (when it has
    tags), its cosine (when given) and the query's own image marked."""
    rows = indices[i].cpu().numpy()
    sim = None if q.tags is None else tag_jaccard(q.tags[[i]], space.tags, rows[None])[0]
    cond = {a: space.labels[a][int(c[i])] for a, c in q.conditions.items()}
    image = None if q.frame is None else q.frame["image"].iloc[i]
    cos = None if cosine is None else cosine[i].cpu().numpy()
    return ResultRow(title, result_tiles(space, rows, cond, sim, image, cos))


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
    where = "" if space.database == "test" else f" · database {space.describe()}"
    return (
        f"{space.task.name} · query {query['query_id']} · condition {condition_text(cond)}"
        f"{extra}{where}"
    )


def e1_ranking(space: SearchSpace, results: Path, method: str, q: Queries) -> Tensor | None:
    """The top-10 database rows E1 wrote for these queries (retrievals_<method>.csv), or None when
    the file, one of the queries or one of the images is missing."""
    path = results / f"retrievals_{method}.csv"
    if not path.exists():
        return None
    df = pd.read_csv(path, dtype=str, keep_default_na=False).set_index("query_id")
    cols = sorted((c for c in df.columns if c.startswith("rank_")), key=lambda c: int(c[5:]))
    wanted = [str(i) for i in q.frame["query_id"]]
    if not cols or not set(wanted) <= set(df.index):
        return None
    rows = space.rows_of(df.loc[wanted, cols].to_numpy().ravel()).reshape(len(wanted), -1)
    return None if (rows < 0).any() else torch.from_numpy(rows)


def result_grids(
    space: SearchSpace,
    queries: pd.DataFrame,
    lam: float,
    out_dir: Path,
    *,
    e1_results: Path | None = None,
) -> list[Path]:
    """results_q<K>.png per query: kNN, the baselines (when E1 ran them), Backward Search (λ) and
    the student (when trained) in rows.

    Rankings come from E1's retrievals_<method>.csv in `e1_results` when given (E1 ran at this λ),
    else they are computed here with E1's methods, all queries at once.
    """
    q = file_queries(space, queries)
    student = space.student(lam)
    methods: dict[str, tuple[str, Callable[[], Ranking] | None]] = {
        "knn": ("k-nearest (kNN)", lambda: rank_knn(space, q))
    }
    for m, title in BASELINE_ROWS.items():  # only from E1's files: E1 owns their settings (α)
        if e1_results is not None and (e1_results / f"retrievals_{m}.csv").exists():
            methods[m] = (title, None)
    methods["backward_search"] = (
        f"Backward Search λ={lam:g}",
        lambda: rank_backward_search(space, q, lam),
    )
    e1_student = e1_results is not None and (e1_results / "retrievals_student.csv").exists()
    if e1_student or student is not None:
        methods["student"] = (f"student λ={lam:g}", lambda: rank_student(space, q, student, lam))
    ranks: dict[str, Tensor] = {}
    for method, (title, compute) in methods.items():
        found = e1_ranking(space, e1_results, method, q) if e1_results else None
        if found is not None:
            ranks[title] = found
            log.info("%s: ranking read from E1's retrievals_%s.csv", title, method)
        elif compute is not None:
            ranks[title] = compute().indices
    paths = []
    for i, (_, query) in enumerate(q.frame.iterrows()):
        rows = [ranked_row(title, space, q, r, i) for title, r in ranks.items()]
        path = out_dir / f"results_q{query['query_id']}{database_suffix(space)}.png"
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
    q = file_queries(space, query.to_frame().T)
    searched = [lam for lam in lams if lam is not None]
    zs = {}
    if searched:  # one batched search, λ per row
        z_b = search(space, q.select([0] * len(searched)), torch.tensor(searched)).z
        zs = dict(zip(searched, z_b, strict=True))
    batch = torch.stack([q.z0[0] if lam is None else zs[lam] for lam in lams])
    rows = rank(space, batch, k=top_k)[1]
    z_db = space.z.cpu().numpy()
    names = ["kNN" if lam is None else f"λ={lam:g}" for lam in lams]
    marks = {n: z_db[r[:3].cpu().numpy()].mean(0) for n, r in zip(names, rows, strict=True)}
    attr = space.task.conditions[0]
    own = space.labels[attr][int(q.own[attr][0])]
    cond = query[attr]
    panel = tsne_panel(space, attr, [own, cond], q.z0[0].cpu().numpy(), marks, seed)
    qs = q.select([0] * len(lams))
    grid_rows = [
        ranked_row(
            "k-nearest (kNN)" if lam is None else f"Backward Search λ={lam:g}", space, qs, rows, i
        )
        for i, lam in enumerate(lams)
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
            rnd = (read_metrics(results / t / "metrics.json") or {}).get("methods", {})
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
    z0: Tensor,
    conditions: Mapping[str, int],
    lam: float,
    path: Path,
) -> PictureSearch:
    """Run Backward Search from the picture's embedding z0 (`embed_image`) towards `conditions`,
    rank the database and draw kNN, Backward Search and (when D1 trained it) student rows."""
    q = picture_query(space, z0, conditions)
    names = {a: space.labels[a][c] for a, c in conditions.items()}
    bs = rank_backward_search(space, q, lam)
    with torch.no_grad():
        seen = {a: space.labels[a][int(h(q.z0).argmax(1))] for a, h in space.heads.items()}
    rankings = {"k-nearest (kNN)": rank_knn(space, q), f"Backward Search λ={lam:g}": bs}
    student = space.student(lam)
    if student is not None and set(student.num_classes) != set(conditions):
        log.info(
            "the student of %s takes every condition (%s) at once: the picture is searched by "
            "Backward Search alone (give each --condition for the student's row)",
            space.task.name,
            ", ".join(student.num_classes),
        )
        student = None
    if student is not None:
        rankings[f"student λ={lam:g}"] = rank_student(space, q, student, lam)
    rows = [ranked_row(t, space, q, r.indices, 0, r.scores) for t, r in rankings.items()]
    split = ["split"] if space.database != "test" else []  # which split each result is from
    found = space.table.iloc[bs.indices[0].cpu().numpy()][["image", *space.labels, *split]]
    found = found.reset_index(drop=True)
    found.insert(0, "cosine", bs.scores[0].cpu().numpy())
    found.insert(0, "rank", np.arange(1, len(found) + 1))
    found["satisfies"] = np.all([found[a] == n for a, n in names.items()], axis=0)
    caption = [
        image.name,
        *[f"seen as {a}: {v}" for a, v in seen.items()],
        f"condition: {condition_text(names)}",
    ]
    title = f"{image.name} · condition {condition_text(names)} · database {space.describe()}"
    draw_grid(Tile(image, caption), rows, path, title=title)
    return PictureSearch(seen, found)
