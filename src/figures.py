"""The paper's figures: result grids (Figs 1/7/8/9), λ rows beside a t-SNE (Fig 5), mAP@10 and
mTS@10 against λ (Fig 6) and B1's training curves.

The first half draws: callers pass images, captions and numbers. Figures are built with
matplotlib's object API on the Agg canvas (no pyplot, no display). Grid layouts are computed in
inches from a few constants, so the pixel box of every image cell is known (`GridLayout`) and
tests can check the PNG for the green frames that mark results satisfying the condition.
The second half gathers what E2 shows from the artifacts (encoder, embeddings, the test-split
database, E1's rankings) and runs kNN / Backward Search / the student where E1 has not.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageOps, UnidentifiedImageError

from src.artifacts import atomic_path, run_dir
from src.backward_search import backward_search
from src.datasets.common import read_labels, read_split, split_tags
from src.embeddings import load_embeddings
from src.encoder import image_transform, load_encoder
from src.errors import SuiteError
from src.evaluation import database_rows
from src.report import read_json_or_none
from src.retrieval import cosine_topk
from src.student import load_student
from src.tasks import Task

log = logging.getLogger("backward_search")

DPI = 100
TILE = 1.25  # image cell side, inches
PAD = 0.14  # gap between cells, inches
LABEL_W = 1.15  # row-title column, inches
TITLE_H = 0.45  # figure title band, inches
LINE_H = 0.125  # one caption line at CAPTION_PT, inches
CAPTION_PT = 7
CAPTION_CHARS = 23  # characters per caption line that fit under a tile at CAPTION_PT
MAX_CAPTION_LINES = 6
GREEN = "#00b400"  # frame of a result that carries every condition label
FRAME_LW = 3.0  # points (≈ 4 px at DPI 100)
FRAME_OFF = 3 / DPI  # the frame's centre line lies 3 px outside the image


@dataclass
class Tile:
    """One image cell: the picture, the lines under it, and whether it gets the green frame."""

    image: str | Path | np.ndarray
    caption: Sequence[str] = ()
    framed: bool = False


@dataclass
class ResultRow:
    """One row of ranked results (e.g. kNN, Backward Search λ=1, the student)."""

    title: str
    tiles: list[Tile]


@dataclass
class GridLayout:
    """Where a grid figure put things, in pixels from the top-left corner of the PNG."""

    width: int
    height: int
    query: tuple[int, int, int, int]  # (x0, y0, x1, y1) of the query image
    cells: dict[tuple[int, int], tuple[int, int, int, int]] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Images and captions


def load_tile_image(image: str | Path | np.ndarray, side: int) -> np.ndarray:
    """An image as side×side×3 uint8, padded with white to a square (the whole picture stays)."""
    if isinstance(image, np.ndarray):
        im = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
    else:
        try:
            with Image.open(image) as f:
                im = f.convert("RGB")
        except (FileNotFoundError, UnidentifiedImageError, OSError) as e:
            raise SuiteError(f"cannot read image {image}: {e}") from None
    return np.asarray(ImageOps.pad(im, (side, side), color=(255, 255, 255)))


def wrap_caption(lines: Sequence[str], width: int = CAPTION_CHARS) -> list[str]:
    """Caption lines wrapped to fit under a tile (long class names break onto the next line)."""
    out: list[str] = []
    for line in lines:
        out += textwrap.wrap(str(line), width, break_long_words=True) or [""]
    if len(out) > MAX_CAPTION_LINES:
        out = out[: MAX_CAPTION_LINES - 1] + [out[MAX_CAPTION_LINES - 1][: width - 1] + "…"]
    return out


# ---------------------------------------------------------------------------------------------
# Result grids (Figs 1, 7, 8, 9) and the λ figure (Fig 5)


def _place_tile(fig: Figure, tile: Tile, x: float, y: float, size: tuple[float, float]) -> None:
    """Draw `tile` with its top-left corner at (x, y) inches from the figure's top-left."""
    w, h = size
    ax = fig.add_axes((x / w, 1 - (y + TILE) / h, TILE / w, TILE / h))
    ax.imshow(load_tile_image(tile.image, round(TILE * DPI)), aspect="auto", interpolation="none")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color("#bbbbbb")
        spine.set_linewidth(0.5)
    if tile.framed:
        o = FRAME_OFF
        fig.add_artist(
            Rectangle(
                ((x - o) / w, 1 - (y + TILE + o) / h),
                (TILE + 2 * o) / w,
                (TILE + 2 * o) / h,
                transform=fig.transFigure,
                fill=False,
                edgecolor=GREEN,
                linewidth=FRAME_LW,
            )
        )
    lines = wrap_caption(tile.caption)
    if lines:
        fig.text(
            (x + TILE / 2) / w,
            1 - (y + TILE + 0.08) / h,
            "\n".join(lines),
            ha="center",
            va="top",
            fontsize=CAPTION_PT,
            linespacing=1.15,
        )


def _box(x: float, y: float) -> tuple[int, int, int, int]:
    return (round(x * DPI), round(y * DPI), round((x + TILE) * DPI), round((y + TILE) * DPI))


def draw_grid(
    query: Tile,
    rows: Sequence[ResultRow],
    path: str | Path,
    *,
    title: str = "",
    side_panel: Callable[[Figure, tuple[float, float, float, float]], None] | None = None,
    side_width: float = 0.0,
) -> GridLayout:
    """The query (left), then one row of ranked results per method; saves a PNG at `path`.

    `side_panel(fig, rect)` draws into an extra area of `side_width` inches on the left (Fig 5's
    t-SNE); rect is (left, bottom, width, height) in figure fractions.
    """
    if not rows:
        raise SuiteError("a result grid needs at least one row of results")
    k = max(len(r.tiles) for r in rows)
    cap_lines = max(
        [len(wrap_caption(t.caption)) for r in rows for t in r.tiles]
        + [len(wrap_caption(query.caption))]
    )
    row_h = TILE + 0.1 + cap_lines * LINE_H + PAD
    side = side_width + PAD if side_panel else 0.0
    x_query = side + PAD
    x_label = x_query + TILE + 2 * PAD
    x_first = x_label + LABEL_W
    w = x_first + k * (TILE + PAD)
    h = TITLE_H + len(rows) * row_h + PAD
    w, h = round(w * DPI) / DPI, round(h * DPI) / DPI  # whole pixels: boxes stay exact
    fig = Figure(figsize=(w, h), dpi=DPI, facecolor="white")
    if title:
        fig.text(0.5, 1 - 0.22 / h, title, ha="center", va="center", fontsize=10, weight="bold")
    layout = GridLayout(round(w * DPI), round(h * DPI), _box(x_query, TITLE_H))
    _place_tile(fig, query, x_query, TITLE_H, (w, h))
    fig.add_artist(
        Rectangle(
            ((x_label - PAD) / w, PAD / h),
            1 / DPI / w,
            (h - TITLE_H - PAD) / h,
            transform=fig.transFigure,
            color="#999999",
            linewidth=0,
        )
    )
    for i, row in enumerate(rows):
        y = TITLE_H + i * row_h
        fig.text(
            (x_first - 0.1) / w,
            1 - (y + TILE / 2) / h,
            "\n".join(textwrap.wrap(row.title, 15, break_long_words=True)),
            ha="right",
            va="center",
            fontsize=8.5,
            weight="bold",
        )
        for j, tile in enumerate(row.tiles):
            x = x_first + j * (TILE + PAD)
            _place_tile(fig, tile, x, y, (w, h))
            layout.cells[(i, j)] = _box(x, y)
    if side_panel:  # a square panel, vertically centred, with room for a legend below it
        legend_h = 0.9
        side = min(side_width - 0.3, h - TITLE_H - 0.3 - legend_h)
        bottom = (h - TITLE_H - 0.3 - legend_h - side) / 2 + legend_h
        side_panel(fig, (0.3 / w, bottom / h, side / w, side / h))
    save_figure(fig, path)
    return layout


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write a figure as PNG atomically (a reader never sees half a file)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, facecolor="white")
    return path


@dataclass
class TsnePanel:
    """Fig 5A: 2-D t-SNE points of two classes, the query and the mean of each row's top-3."""

    points: np.ndarray  # M×2
    classes: Sequence[str]  # class name of each point
    query: np.ndarray  # (2,)
    marks: dict[str, np.ndarray]  # row title → (2,) position of the mean of its top-3
    title: str = ""


MARKERS = ("s", "^", "D", "v", "P", "X", "o", "h")


def draw_tsne(panel: TsnePanel) -> Callable[[Figure, tuple[float, float, float, float]], None]:
    """A side-panel drawer for `draw_grid` that plots `panel`."""

    def draw(fig: Figure, rect: tuple[float, float, float, float]) -> None:
        ax = fig.add_axes(rect)
        classes = np.asarray(panel.classes)
        palette = ("#4477aa", "#ee6677", "#228833", "#ccbb44")
        for c, name in enumerate(dict.fromkeys(classes)):
            pts = panel.points[classes == name]
            ax.scatter(pts[:, 0], pts[:, 1], s=6, alpha=0.45, color=palette[c % 4], label=name)
        ax.scatter(*panel.query, marker="*", s=220, color="black", label="query", zorder=5)
        for m, (name, xy) in enumerate(panel.marks.items()):
            ax.plot(
                [panel.query[0], xy[0]], [panel.query[1], xy[1]], color="#555555", lw=0.7, zorder=4
            )
            ax.scatter(
                *xy,
                marker=MARKERS[m % len(MARKERS)],
                s=70,
                color="#111111" if m == 0 else f"C{m + 1}",
                edgecolor="white",
                linewidth=0.8,
                label=f"top-3 mean: {name}",
                zorder=6,
            )
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(panel.title or "t-SNE of the embeddings", fontsize=9)
        ax.legend(
            fontsize=6.5,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.01),
            ncol=2,
            frameon=False,
            markerscale=0.8,
        )

    return draw


def tsne_2d(z: np.ndarray, seed: int) -> np.ndarray:
    """scikit-learn t-SNE with its default options (seeded); perplexity capped for tiny inputs.

    Runs on one OpenMP thread: for a few hundred points that is as fast as two on a quiet
    machine and avoids a 10-20x slow-down from spinning threads on a busy one (measured).
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    n = len(z)
    if n < 4:
        raise SuiteError(f"t-SNE needs at least 4 points, got {n}")
    perplexity = min(30.0, (n - 1) / 3)
    with threadpool_limits(1):
        return TSNE(n_components=2, perplexity=perplexity, random_state=seed).fit_transform(
            np.asarray(z, dtype=np.float32)
        )


# ---------------------------------------------------------------------------------------------
# Fig 6 and training curves


def draw_sweep(
    sweeps: Mapping[str, pd.DataFrame],
    path: str | Path,
    *,
    baselines: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
) -> int:
    """Fig 6: paper mAP@10 and mTS@10 against λ (log x axis), one panel per task; returns panels.

    λ = 0 cannot sit on a log axis: it is drawn at the left edge, a quarter of the smallest
    positive λ, with the tick labelled "0". `baselines[task][method] = (map, mts)` adds dashed
    horizontal lines (e.g. random search).
    """
    sweeps = {t: df for t, df in sweeps.items() if len(df)}
    if not sweeps:
        raise SuiteError("no sweep.csv to plot: run E1_evaluate.py --task T --sweep first")
    n = len(sweeps)
    fig = Figure(figsize=(3.6 * n + 0.4, 3.7), dpi=DPI, facecolor="white")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (task, df) in zip(axes, sweeps.items(), strict=True):
        df = df.sort_values("lambda")
        lam = df["lambda"].to_numpy(dtype=float)
        pos = lam > 0
        zero_x = (lam[pos].min() if pos.any() else 1.0) / 4
        for col, style, colour, label in (
            ("paper_map@10", "o", "C0", "mAP@10 (paper's)"),
            ("mts@10", "s", "C3", "mTS@10"),
        ):
            y = df[col].to_numpy(dtype=float)
            ax.plot(lam[pos], y[pos], f"{style}-", color=colour, ms=4, label=label)
            ax.plot(np.full((~pos).sum(), zero_x), y[~pos], style, color=colour, ms=5, mfc="none")
        if (~pos).any():  # λ = 0 sits left of a dotted break
            ax.axvline(
                np.sqrt(zero_x * lam[pos].min()) if pos.any() else zero_x,
                color="#999999",
                ls=":",
                lw=0.8,
            )
        for method, (m, s) in (baselines or {}).get(task, {}).items():
            ax.axhline(m, color="C0", ls="--", lw=0.8, alpha=0.7, label=f"{method}: mAP@10")
            ax.axhline(s, color="C3", ls="--", lw=0.8, alpha=0.7, label=f"{method}: mTS@10")
        ax.set_xscale("log")
        ticks = ([zero_x] if (~pos).any() else []) + sorted(set(lam[pos].tolist()))
        ax.set_xticks(ticks)
        ax.set_xticklabels(
            ["0" if t == zero_x and (~pos).any() else f"{t:g}" for t in ticks],
            fontsize=6.5,
            rotation=60,
        )
        ax.minorticks_off()
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("λ")
        ax.set_title(task, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("score")
    handles = {}  # one legend below the panels, so no curve is hidden behind it
    for ax in axes:
        handles.update({lab: h for h, lab in zip(*ax.get_legend_handles_labels(), strict=True)})
    fig.legend(
        handles.values(), handles.keys(), loc="lower center", ncol=4, fontsize=7.5, frameon=False
    )
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    save_figure(fig, path)
    return n


def draw_training_curves(log: pd.DataFrame, path: str | Path, *, title: str = "") -> None:
    """B1's train_log.csv: loss (left) and every accuracy column (right) against epoch."""
    if "epoch" not in log.columns or not len(log):
        raise SuiteError("the training log has no epochs to plot; re-run B1_train_encoder.py")
    loss_cols = [c for c in log.columns if "loss" in c]
    acc_cols = [c for c in log.columns if "acc" in c]
    fig = Figure(figsize=(8, 3.2), dpi=DPI, facecolor="white")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for c in loss_cols:
        ax_loss.plot(log["epoch"], log[c], "o-", ms=3, label=c)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_title("loss", fontsize=10)
    subjects = list(dict.fromkeys(c.replace("train", "").replace("test", "") for c in acc_cols))
    for c in acc_cols:  # one colour per attribute; test solid, train dashed
        colour = f"C{subjects.index(c.replace('train', '').replace('test', '')) % 10}"
        ax_acc.plot(
            log["epoch"], log[c], "o-" if "test" in c else "--", color=colour, ms=3, label=c
        )
    ax_acc.set_ylim(0, 1.02)
    ax_acc.set_xlabel("epoch")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_acc.set_title("accuracy", fontsize=10)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


# ---------------------------------------------------------------------------------------------
# What the figures show, gathered from the artifacts (E2_visualize.py calls these)


@dataclass
class SearchSpace:
    """The searchable database of a task (test split, images with tags) and the trained encoder."""

    task: Task
    run: str
    data_root: Path
    labels: dict[str, list[str]]
    encoder: Any  # src.encoder.Encoder in eval mode
    config: dict[str, Any]
    table: pd.DataFrame  # database rows in database order: image, label attributes, tags
    z: torch.Tensor  # database embeddings N×E on the device
    z_all: dict[str, np.ndarray]  # image key → embedding of every train/test image
    device: torch.device

    @cached_property
    def image_row(self) -> dict[str, int]:
        """Image key → database row."""
        return {img: i for i, img in enumerate(self.table["image"])}


def load_space(
    data_root: Path, weights_root: Path, task: Task, run: str, device: torch.device
) -> SearchSpace:
    """Encoder, labels, embeddings and the database (test images with tags, as E1 uses: SPEC §7)."""
    wdir = run_dir(weights_root, run)
    emb = load_embeddings(wdir)
    encoder, config = load_encoder(wdir, device)
    labels = read_labels(data_root, task.dataset)
    test = read_split(data_root, task.dataset, "test")
    rows = database_rows(emb, test, "C1_extract_embeddings.py")
    table = test.set_index("image", drop=False).loc[emb["image"][rows]]
    z = torch.from_numpy(emb["z"][rows]).to(device)
    return SearchSpace(
        task=task,
        run=run,
        data_root=Path(data_root),
        labels=labels,
        encoder=encoder,
        config=config,
        table=table.reset_index(drop=True),
        z=z,
        z_all=dict(zip(emb["image"].tolist(), emb["z"], strict=True)),
        device=device,
    )


def query_z(space: SearchSpace, images: Sequence[str]) -> torch.Tensor:
    """The stored embeddings z0 of query images (Q×E), or a clear error when C1 lacks one."""
    missing = [i for i in images if i not in space.z_all]
    if missing:
        raise SuiteError(
            f"query image {missing[0]} is not in the embeddings of run {space.run}; "
            "the queries are newer than the embeddings: re-run C1_extract_embeddings.py"
        )
    return torch.from_numpy(np.stack([space.z_all[i] for i in images]))


def _normalise(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def class_id(labels: Mapping[str, list[str]], attr: str, name: str) -> int:
    """The id of class `name` of `attr`; exact, else ignoring case, spaces, '_' and '-'."""
    if attr not in labels:
        raise SuiteError(
            f"unknown attribute {attr!r} in --condition; the encoder has heads for: "
            f"{', '.join(labels)}"
        )
    names = labels[attr]
    if name in names:
        return names.index(name)
    loose = [i for i, n in enumerate(names) if _normalise(n) == _normalise(name)]
    if len(loose) == 1:
        return loose[0]
    raise SuiteError(f"unknown {attr} class {name!r}; valid names: {', '.join(names)}")


def parse_conditions(items: Sequence[str], labels: Mapping[str, list[str]]) -> dict[str, int]:
    """`["style=Baroque", "genre=portrait"]` → {attr: class id}, checked against labels.json."""
    out: dict[str, int] = {}
    for item in items:
        attr, sep, name = item.partition("=")
        if not sep or not attr.strip() or not name.strip():
            raise SuiteError(f"--condition {item!r} is not ATTR=CLASS (e.g. style=Baroque)")
        attr = attr.strip()
        if attr in out:
            raise SuiteError(f"--condition gives {attr!r} twice")
        out[attr] = class_id(labels, attr, name.strip())
    if not out:
        raise SuiteError("--image needs at least one --condition ATTR=CLASS (e.g. style=Baroque)")
    return out


def embed_image(space: SearchSpace, path: Path) -> torch.Tensor:
    """Embed a picture file with the trained encoder and the test transform (1×E)."""
    try:
        with Image.open(path) as f:
            im = f.convert("RGB")
    except (FileNotFoundError, UnidentifiedImageError, OSError) as e:
        raise SuiteError(f"cannot read image {path}: {e}") from None
    x = image_transform(space.config, train=False)(im).unsqueeze(0).to(space.device)
    with torch.no_grad():
        return space.encoder.embed(x)


def rank(space: SearchSpace, z: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosine top-k database rows of each query vector: (scores Q×k, rows Q×k) as numpy."""
    with torch.no_grad():
        scores, idx = cosine_topk(z.detach().to(space.device), space.z, k=min(k, len(space.z)))
    return scores.cpu().numpy(), idx.cpu().numpy()


def search(
    space: SearchSpace,
    z0: torch.Tensor,
    conditions: Mapping[str, int | torch.Tensor],
    lam: float | torch.Tensor,
) -> torch.Tensor:
    """Backward Search of the rows of z0; a condition is one class id for all rows or one per row,
    λ a float or one per row."""
    n = len(z0)
    conds = {
        a: torch.as_tensor(c, dtype=torch.long).expand(n).to(space.device)
        for a, c in conditions.items()
    }
    if isinstance(lam, torch.Tensor):
        lam = lam.to(space.device, z0.dtype)
    return backward_search(space.encoder.heads, z0.to(space.device), conds, lam).z


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
        tiles.append(Tile(space.data_root / space.task.dataset / item["image"], caption, ok))
    return tiles


def condition_text(conditions: Mapping[str, str]) -> str:
    return ", ".join(f"{a} = {c}" for a, c in conditions.items())


def query_tile(space: SearchSpace, query: pd.Series) -> Tile:
    """The query cell: its image, id, own labels and the condition."""
    labels = space.table.set_index("image").reindex([query["image"]]).iloc[0]
    own = [f"{a}: {labels[a]}" for a in space.labels if isinstance(labels[a], str)]
    cond = {a: query[a] for a in space.task.conditions}
    return Tile(
        space.data_root / space.task.dataset / query["image"],
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
    """results_q<K>.png per query: kNN, Backward Search (λ) and the student (when trained) in rows.

    Rankings come from E1's retrievals_<method>.csv in `e1_results` when given (E1 ran at this λ),
    else they are computed here, all queries at once.
    """
    z0 = query_z(space, queries["image"])
    conds = {
        a: torch.tensor([class_id(space.labels, a, c) for c in queries[a]])
        for a in space.task.conditions
    }
    methods: dict[str, tuple[str, Callable[[], torch.Tensor]]] = {
        "knn": ("k-nearest (kNN)", lambda: z0),
        "backward_search": (f"Backward Search λ={lam:g}", lambda: search(space, z0, conds, lam)),
    }
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
        else:
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


def student_search(path: Path, space: SearchSpace, z0: torch.Tensor, conds) -> torch.Tensor:
    """The distilled student's answer for z0 under `conds` (D1's file at `path`)."""
    student, _ = load_student(path, space.device)
    with torch.no_grad():
        return student.search(
            z0.to(space.device), {a: c.to(space.device) for a, c in conds.items()}
        )


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
        log.info("no sweep.csv yet: Fig 6 needs E1_evaluate.py --task T --sweep")
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
    conditions: Mapping[str, int],
    lam: float,
    path: Path,
    *,
    top_k: int = 10,
) -> PictureSearch:
    """Embed a picture (test transform), run Backward Search towards `conditions`, rank the
    database and draw kNN and Backward Search rows into `path`."""
    names = {a: space.labels[a][c] for a, c in conditions.items()}
    z0 = embed_image(space, image)
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
    caption = [
        image.name,
        *[f"seen as {a}: {v}" for a, v in seen.items()],
        f"condition: {condition_text(names)}",
    ]
    draw_grid(
        Tile(image, caption), rows, path, title=f"{image.name} · condition {condition_text(names)}"
    )
    return PictureSearch(seen, found)
