"""The trade-off plane: context kept (x: mTS@10, or context preservation) against condition met
(y: the paper's mAP@10, precision@10). A single λ cannot say which method is better; the plane
can: one curve per method E1 swept along its knob (Backward Search's λ, the class-centroid
shift's α: the registry's sweeps), and one point per other method of metrics.json (those without
a knob, the student at its λ).

`plane` gathers the data from E1's sweep files and metrics.json; `draw_plane` draws it (pure
matplotlib, no models); `dominance_sentence` says from the numbers which method has the higher
precision at equal context.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from src.artifacts import read_metrics
from src.evaluation.registry import BACKWARD_SEARCH, METHODS, Method
from src.report.drawing import save_figure

log = logging.getLogger(__name__)
MTS, CONTEXT = "mts@10", "context"  # the two x axes
X_LABELS = {MTS: "mTS@10", CONTEXT: "context preservation"}
Y_LABEL = "paper mAP@10 (precision@10)"
BS = METHODS[BACKWARD_SEARCH].label  # the curve every other is compared with
TOLERANCE = 0.01  # "equal x" when comparing the curves
CONTEXT_FIGURE = "plane_context.png"
FIGURES = ((MTS, "plane_mts.png"), (CONTEXT, CONTEXT_FIGURE))  # in <task>/figures/


@dataclass
class Curve:
    """One method along its knob: the knob's name (λ, α), its values and the (x, y) they give."""

    name: str
    knob: str
    steps: np.ndarray
    x: np.ndarray
    y: np.ndarray


@dataclass
class Point:
    """One method at its one setting."""

    name: str
    x: float
    y: float


@dataclass
class Plane:
    """What a plane figure shows: its x metric, the curves and the points."""

    x_metric: str  # MTS or CONTEXT
    x_label: str
    curves: list[Curve] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)

    def curve(self, name: str) -> Curve | None:
        return next((c for c in self.curves if c.name == name), None)


def _context_columns(df: pd.DataFrame) -> list[str]:
    return sorted(c for c in df.columns if c.startswith("context_"))


def _x_of_frame(df: pd.DataFrame, x_metric: str) -> np.ndarray | None:
    """A sweep's x values: mTS@10, or the mean context preservation over the free attributes."""
    if x_metric == MTS:
        return df["mts@10"].to_numpy(dtype=float)
    cols = _context_columns(df)
    return df[cols].to_numpy(dtype=float).mean(1) if cols else None


def _x_of_method(s: Mapping[str, Any], x_metric: str) -> float | None:
    if x_metric == MTS:
        return s.get("mts@10")
    ctx = s.get("context_preservation") or {}
    return float(np.mean([ctx[a] for a in sorted(ctx)])) if ctx else None


def swept() -> list[Method]:
    """The methods E1 sweeps along their knob (the plane's curves), Backward Search first."""
    return sorted((m for m in METHODS.values() if m.sweep), key=lambda m: m.key != BACKWARD_SEARCH)


def plane(
    sweeps: Mapping[str, pd.DataFrame | None],
    methods: Mapping[str, Mapping[str, Any]],
    x_metric: str = MTS,
) -> Plane | None:
    """The plane's data from E1's files (`sweeps`: method → its sweep, metrics.json's `methods`);
    None when there is nothing to put on x (a context plane for a task whose every label
    attribute is conditioned)."""
    attrs = context_attributes(methods)
    label = X_LABELS[MTS] if x_metric == MTS else f"{X_LABELS[CONTEXT]} ({', '.join(attrs)})"
    if x_metric == CONTEXT and not attrs:
        return None
    out = Plane(x_metric, label)
    curves = set()
    for m in swept():
        df = sweeps.get(m.key)
        x = None if df is None or not len(df) else _x_of_frame(df, x_metric)
        if x is not None:
            y = df["paper_map@10"].to_numpy(dtype=float)
            steps = df[m.knob.key].to_numpy(dtype=float)
            out.curves.append(Curve(m.label, m.knob.symbol, steps, x, y))
            curves.add(m.key)
    for key, m in METHODS.items():  # every other method of metrics.json: one point
        s = methods.get(key)
        x = _x_of_method(s, x_metric) if s and key not in curves else None
        if x is not None:
            shown = m.title(s.get(m.knob.key) if m.knob else None)
            out.points.append(Point(shown, float(x), float(s["paper_map@10"])))
    if not out.curves and not out.points:
        return None
    return out


def draw_plane(p: Plane, path: str | Path, title: str = "") -> Path:
    """Draw the plane to a PNG (atomically) and return its path."""
    return save_figure(plane_figure(p, title), path)


def plane_figure(p: Plane, title: str = "") -> Figure:
    """The plane as a figure: curves with each step marked by its λ / α, points labelled."""
    fig = Figure(figsize=(6.4, 5.0), facecolor="white")
    ax = fig.subplots()
    for i, c in enumerate(p.curves):
        colour = f"C{i}"
        order = np.argsort(c.steps)
        ax.plot(
            c.x[order], c.y[order], "o-", color=colour, ms=4, lw=1.2, label=f"{c.name} ({c.knob})"
        )
        for s, x, y in zip(c.steps, c.x, c.y, strict=True):
            ax.annotate(
                f"{c.knob}={s:g}",
                (x, y),
                xytext=(3, 3),
                textcoords="offset points",
                fontsize=6,
                color=colour,
            )
    markers = ("s", "D", "^", "v", "P", "X")
    for i, pt in enumerate(p.points):
        ax.plot(
            [pt.x],
            [pt.y],
            markers[i % len(markers)],
            color="black",
            ms=6,
            mfc="none",
            label=pt.name,
        )
        ax.annotate(pt.name, (pt.x, pt.y), xytext=(4, -9), textcoords="offset points", fontsize=7)
    ax.set_xlabel(p.x_label)
    ax.set_ylabel(Y_LABEL)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def _interpolate(c: Curve, x: float) -> float | None:
    """The curve's precision at x (linear between neighbouring steps sorted by x), or None
    outside the x range it covers."""
    order = np.argsort(c.x, kind="stable")
    xs, ys = c.x[order], c.y[order]
    if not xs[0] - TOLERANCE <= x <= xs[-1] + TOLERANCE:
        return None
    return float(np.interp(x, xs, ys))


def dominance_sentence(p: Plane, tolerance: float = TOLERANCE) -> str:
    """One sentence, from the numbers: at equal x (± tolerance) which curve has the higher
    precision@10 at how many matched points, and which single points lie above the λ curve."""
    x_name = p.x_label.split(" (")[0]
    bs = p.curve(BS)
    if bs is None:
        return f"No λ sweep of {BS} (E1 --sweep): the {x_name} plane has no curve to compare."
    parts = []
    for cs in p.curves:
        if cs is bs:
            continue
        better = worse = tied = 0
        for x, y in zip(cs.x, cs.y, strict=True):
            gap = np.abs(bs.x - x)
            if gap.min() > tolerance:
                continue
            d = bs.y[int(gap.argmin())] - y
            better, worse, tied = better + (d > 1e-9), worse + (d < -1e-9), tied + (abs(d) <= 1e-9)
        matched = better + worse + tied
        if matched == 0:
            parts.append(
                f"no {cs.knob} point of the {cs.name} lies within ±{tolerance:g} {x_name} of a "
                f"{bs.knob} point of {BS}"
            )
        else:
            lead = (
                BS if better > worse else f"the {cs.name}" if worse > better else "neither method"
            )
            parts.append(
                f"at equal {x_name} (±{tolerance:g}), {BS} has the higher precision@10 at "
                f"{better} of {matched} matched points and the {cs.name} at {worse}"
                + (f" (equal at {tied})" if tied else "")
                + f", so {lead} leads there"
            )
    groups: dict[str, list[str]] = {"above": [], "on or below": [], "beyond its range": []}
    for pt in p.points:
        y = _interpolate(bs, pt.x)
        where = "beyond its range" if y is None else "above" if pt.y > y + 1e-9 else "on or below"
        groups[where].append(pt.name)
    if p.points:
        parts.append(
            f"against the λ curve at their own {x_name}: "
            + "; ".join(f"{w}: {', '.join(names)}" for w, names in groups.items() if names)
        )
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def _csv(path: Path) -> pd.DataFrame | None:
    """A sweep CSV, or None when it is missing or unreadable (the plane is then left out, and the
    log says why)."""
    try:
        return pd.read_csv(path) if path.is_file() else None
    except (OSError, ValueError) as e:
        log.warning("%s is unreadable (%s): the trade-off plane leaves it out", path, e)
        return None


def context_attributes(methods: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The label attributes a task leaves unconditioned (E1 measures their preservation)."""
    return sorted({a for s in methods.values() for a in (s.get("context_preservation") or {})})


def no_context_plane(conditions: Sequence[str] = ()) -> str:
    """Why a task has no context plane: it conditions on every label attribute (a multi-condition
    task, or a dataset with one attribute), so no attribute is left whose preservation to plot."""
    which = f" ({', '.join(conditions)})" if conditions else ""
    return (
        f"No context plane ({CONTEXT_FIGURE}): the task conditions on every label attribute"
        f"{which}, so none is left unconditioned to preserve; mTS@10 is its only measure of context."
    )


def _methods(task_dir: Path) -> dict[str, Any] | None:
    """The methods of a task's metrics.json, or None before E1 wrote it."""
    path = task_dir / "metrics.json"
    if not path.is_file():
        return None
    return (read_metrics(path) or {}).get("methods") or {}


def task_planes(
    task_dir: str | Path, methods: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Plane]:
    """The planes of one E1 results folder (its sweep files and the methods of its metrics.json,
    read when not given), by the file name each is drawn to (FIGURES); empty when E1 ran without
    --sweep."""
    task_dir = Path(task_dir)
    sweeps = {m.key: _csv(task_dir / m.sweep.file) for m in swept()}
    methods = _methods(task_dir) if methods is None else methods
    if all(df is None for df in sweeps.values()) or methods is None:
        return {}
    planes = {name: plane(sweeps, methods, x) for x, name in FIGURES}
    return {name: p for name, p in planes.items() if p is not None}


def draw_task_planes(task_dir: str | Path, title: str = "") -> list[Path]:
    """E2: draw <task_dir>/figures/plane_mts.png (and plane_context.png where a label attribute
    is not conditioned) from E1's files; returns the paths written. Its log says why a task has
    no context plane, rather than leaving the figure silently out."""
    task_dir = Path(task_dir)
    methods = _methods(task_dir)
    planes = task_planes(task_dir, methods)
    if planes and methods and not context_attributes(methods):
        log.info("E2: %s", no_context_plane())
    return [draw_plane(p, task_dir / "figures" / name, title) for name, p in planes.items()]
