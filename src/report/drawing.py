"""Drawing the paper's figures: result grids (Figs 1/7/8/9), the λ rows' t-SNE panel (Fig 5),
mAP@10 and mTS@10 against λ (Fig 6) and B1's training curves.

Callers pass images, captions and numbers; nothing here loads a model. Figures are built with
matplotlib's object API on the Agg canvas (no pyplot, no display). Grid layouts are computed in
inches from a few constants, so the pixel box of every image cell is known (`GridLayout`) and
tests can check the PNG for the green frames that mark results satisfying the condition.
src/report/figures.py gathers what they show from the artifacts.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageOps, UnidentifiedImageError

from src.atomic import atomic_path
from src.errors import SuiteError
from src.hints import B1_HINT, hint

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
    z = np.asarray(z, dtype=np.float32).reshape(n, -1)
    # its PCA initialisation needs two features: a 1-d embedding (--embedding-size 1) gets a zero
    # one, which changes no distance (the map is then a line, as the data is)
    z = np.pad(z, ((0, 0), (0, max(0, 2 - z.shape[1]))))
    with threadpool_limits(1):
        return TSNE(n_components=2, perplexity=perplexity, random_state=seed).fit_transform(z)


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
        raise SuiteError(f"no sweep.csv to plot: run {hint('E1', '--task T --sweep')} first")
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
    # at most 2 legend columns per panel, so a one-panel figure's legend fits its width; the
    # rows it then needs get their own strip below the panels
    ncol = max(1, min(4, 2 * n, len(handles)))
    rows = math.ceil(len(handles) / ncol)
    fig.set_figheight(3.7 + 0.16 * (rows - 1))
    fig.legend(
        handles.values(), handles.keys(), loc="lower center", ncol=ncol, fontsize=7.5, frameon=False
    )
    fig.tight_layout(rect=(0, (0.1 + 0.17 * rows) / fig.get_figheight(), 1, 1))
    save_figure(fig, path)
    return n


def draw_training_curves(log: pd.DataFrame, path: str | Path, *, title: str = "") -> None:
    """B1's train_log.csv: loss (left) and every accuracy column (right) against epoch."""
    if "epoch" not in log.columns or not len(log):
        raise SuiteError(f"the training log has no epochs to plot; re-run {B1_HINT}")
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
