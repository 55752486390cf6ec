"""REPORT.md's statistics sections: the paired tests, the trade-off plane, λ calibration and the
spread across B1 seeds, each computed from E1's files (metrics.json, sweep*.csv, calibration.json).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from src.artifacts import read_metrics
from src.evaluation.bootstrap import p_text
from src.report import plane
from src.report.markdown import fmt_cell, md_table, method_name, with_interval
from src.report.protocol import lam_text
from src.tasks import Task

PAIRED_NAMES = {"paper_map@10": "precision@10", "mts@10": "mTS@10"}


def paired_cells(t: Mapping[str, Any]) -> tuple[str, str]:
    """One paired difference of metrics.json as text: `+0.030 [0.010, 0.050]` and its p-value."""
    return with_interval(f"{t['mean']:+.3f}", t.get("low"), t.get("high")), p_text(t["p"])


def paired_table(metrics: Mapping[str, Any]) -> pd.DataFrame | None:
    """Backward Search − each method on the same queries (metrics.json "paired"): mean difference
    with its 95 % interval and p-value per metric, and which intervals contain 0."""
    paired = ((metrics.get("paired") or {}).get("backward_search_minus")) or {}
    if not paired:
        return None
    rows = []
    for name, d in paired.items():
        summary = (metrics.get("methods") or {}).get(name)
        row: dict[str, Any] = {"Backward Search −": method_name(name, summary)}
        zero = []
        for key, shown in PAIRED_NAMES.items():
            t = d.get(key) or {}
            if "mean" not in t:
                continue
            row[f"Δ {shown}"], row[f"p ({shown})"] = paired_cells(t)
            if t["low"] <= 0.0 <= t["high"]:
                zero.append(shown)
        row["interval contains 0 (no difference shown)"] = ", ".join(zero) or "—"
        rows.append(row)
    return pd.DataFrame(rows)


def plane_sentences(
    tdir: Path, metrics: Mapping[str, Any], conditions: Sequence[str] = ()
) -> list[tuple[str, str, str | None]]:
    """Per x axis of the trade-off plane: its label, the sentence computed from sweep.csv,
    sweep_alpha.csv and metrics.json (never written by hand) and its figure's file name, or,
    where the axis has no plane, why not (figure None)."""
    methods = metrics.get("methods") or {}
    planes = plane.task_planes(tdir, methods)
    if not planes:
        return []
    out = []
    for x_metric, name in plane.FIGURES:
        p = planes.get(name)
        if p is not None:
            out.append((p.x_label, plane.dominance_sentence(p), name))
        elif x_metric == plane.CONTEXT and methods and not plane.context_attributes(methods):
            out.append((plane.X_LABELS[x_metric], plane.no_context_plane(conditions), None))
    return out


def plane_lines(
    base: Path, tdir: Path, metrics: Mapping[str, Any], conditions: Sequence[str] = ()
) -> list[str]:
    """The trade-off plane section: per x axis its sentence and E2's figure (when drawn)."""
    sentences = plane_sentences(tdir, metrics, conditions)
    if not sentences:
        return []
    out = [
        "### Trade-off plane (Backward Search's λ against the class-centroid shift's α)",
        "",
        "Not in the paper. y: paper mAP@10 (precision@10); the curves are Backward Search along "
        "λ (sweep.csv) and the class-centroid shift along α (sweep_alpha.csv); single points: "
        "the methods without a knob, the student at its λ.",
        "",
    ]
    for label, sentence, name in sentences:
        out += [f"**x = {label}.** {sentence}", ""]
        fig = tdir / "figures" / name if name else None
        if fig is not None and fig.is_file():
            out += [f"![{fig.stem}]({fig.relative_to(base).as_posix()})", ""]
    return out


def calibration_line(cal: Mapping[str, Any]) -> str:
    ci = cal.get("mts@10_ci")
    mts = fmt_cell(cal.get("mts@10"))
    mts = with_interval(mts, *ci) if isinstance(ci, list) and len(ci) == 2 else mts
    return (
        f"Target mTS@10 {fmt_cell(cal.get('target_mts'))}: λ = {lam_text(cal.get('lambda'))} gives "
        f"mTS@10 {mts} and paper mAP@10 {fmt_cell(cal.get('paper_map@10'))} "
        f"({len(cal.get('steps', []))} bisection steps)."
    )


def seed_runs(results_root: Path, run: str) -> dict[str, Path]:
    """The replicate runs of `run` trained with other B1 seeds: results/<run>-seed<N>/ folders."""
    pattern = re.compile(re.escape(run) + r"-seed\d+")  # run names hold no glob character
    return {
        d.name: d
        for d in sorted(Path(results_root).glob(f"{run}-seed*"))
        if d.is_dir() and pattern.fullmatch(d.name)
    }


def _value_and_ci(s: Mapping[str, Any], metric: str) -> tuple[Any, Any]:
    """A method's value and interval of a metric: "paper_map@10", "mts@10" or "context_<attr>"."""
    ci = s.get("ci") or {}
    if metric.startswith("context_"):
        a = metric.removeprefix("context_")
        ctx_ci = ci.get("context_preservation") or {}
        return (s.get("context_preservation") or {}).get(a), ctx_ci.get(a)
    return s.get(metric), ci.get(metric)


def seeds_table(runs: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame | None:
    """Mean ± sd across B1 seeds per method (runs: name → metrics.json of one task), beside the
    mean width of the bootstrap intervals over queries: seed-to-seed spread against query noise.

    None with fewer than two runs. Runs must share the configuration (task, λ, queries, database,
    --exclude-query): a mismatch raises ValueError naming the run.
    """
    if len(runs) < 2:
        return None
    keys = ("task", "lambda", "n_queries", "database_size", "exclude_query")
    first_name, first = next(iter(runs.items()))
    for name, m in runs.items():
        diff = [k for k in keys if m.get(k) != first.get(k)]
        if diff:
            raise ValueError(f"run {name} differs from {first_name} in {', '.join(diff)}")
    all_methods = [r.get("methods") or {} for r in runs.values()]
    methods = [m for m in all_methods[0] if all(m in ms for ms in all_methods)]
    attrs = sorted(
        {
            a
            for ms in all_methods
            for s in ms.values()
            for a in (s.get("context_preservation") or {})
        }
    )
    shown = dict(PAIRED_NAMES)
    shown |= {f"context_{a}": f"keeps query's {a}" for a in attrs}
    rows = []
    for method in methods:
        per = [ms[method] for ms in all_methods]
        row: dict[str, Any] = {"method": method_name(method), "seeds": len(per)}
        for metric, name in shown.items():
            pairs = [_value_and_ci(s, metric) for s in per]
            v = np.asarray([np.nan if x is None else x for x, _ in pairs], dtype=float)
            row[f"{name}: mean ± sd across seeds"] = f"{v.mean():.3f} ± {v.std(ddof=1):.3f}"
            widths = [c[1] - c[0] for _, c in pairs if isinstance(c, list) and len(c) == 2]
            ok = len(widths) == len(per)
            row[f"{name}: 95 % bootstrap width (mean)"] = f"{np.mean(widths):.3f}" if ok else "—"
        rows.append(row)
    return pd.DataFrame(rows)


def seeds_lines(results_root: Path, run: str, task: Task, metrics: Any) -> list[str]:
    """The across-seeds table of one task, when replicate runs results/<run>-seed<N>/ exist."""
    reps = {
        name: read_metrics(d / task.name / "metrics.json")
        for name, d in seed_runs(results_root, run).items()
    }
    reps = {n: m for n, m in reps.items() if isinstance(m, dict)}
    if not reps or not isinstance(metrics, dict):
        return []
    try:
        df = seeds_table({run: metrics, **reps})
    except ValueError as e:
        return ["### Across B1 seeds", "", f"Not shown: {e}.", ""]
    if df is None:
        return []
    return [
        "### Across B1 seeds (not in the paper)",
        "",
        f"Runs: {', '.join(f'`{n}`' for n in [run, *reps])}. Mean ± sd over the runs (sample sd); "
        "beside it, the mean width of each run's 95 % bootstrap interval over queries.",
        "",
        md_table(df),
        "",
    ]
