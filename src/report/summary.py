"""REPORT.md's Summary: per task, a few lines — Backward Search and the student beside the paper's
values where the task has a paper column, beside the best baseline otherwise — and the trade-off
plane's sentences. Every number is read from E1's files (metrics.json, calibration.json, the
sweeps) and src/paper.py, never typed by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from src.artifacts import is_release, read_json_or_none
from src.evaluation.registry import BACKWARD_SEARCH, METHODS, STUDENT, baselines
from src.hints import hint
from src.paper import QUERIES, QUERY_MIN_TARGETS, TABLE4, TABLE6
from src.report.markdown import fmt_cell, method_name, with_interval
from src.report.protocol import lam_text
from src.report.setting import MARK
from src.report.stats import PAIRED_NAMES, paired_cells, plane_sentences
from src.tasks import Task


def best_baseline(methods: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The baseline with the highest precision@10 (the paper's mAP@10); on a tie the first in the
    tables' order; None when E1 ran none."""
    scored = [m for m in baselines() if (methods.get(m) or {}).get("paper_map@10") is not None]
    return max(scored, key=lambda m: methods[m]["paper_map@10"]) if scored else None


def _value(v: Any, ci: Any) -> str:
    """`0.822 [0.806, 0.838]`: a metric with its 95 % interval when E1 recorded one."""
    lo, hi = ci if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None)
    return with_interval(fmt_cell(v), lo, hi)


def _at(method: str, s: Mapping[str, Any], lam: Any) -> str:
    """`Backward Search at λ = 1`: a method with the λ it ran at (else the task's, `lam`)."""
    own = s.get("lambda")
    return METHODS[method].title(lam if own is None else own)


def _ours(s: Mapping[str, Any]) -> str:
    """A method's precision@10 and mTS@10 with their intervals."""
    ci = s.get("ci") or {}
    return (
        f"precision@10 {_value(s.get('paper_map@10'), ci.get('paper_map@10'))}; "
        f"mTS@10 {_value(s.get('mts@10'), ci.get('mts@10'))}"
    )


def _beside(shown: str, ours: Any, theirs: float, mark: str) -> str:
    """Ours as shown, then the paper's value and the difference as the tables compute it (ours −
    paper, marked where the setting differs)."""
    delta = f", Δ {ours - theirs:+.3f}{mark}" if isinstance(ours, (int, float)) else ""
    return f"{shown} (paper {theirs:.3f}{delta})"


def _versus_paper(s: Mapping[str, Any], theirs: tuple[float, ...], mark: str) -> str:
    """precision@10 and mTS@10 of one of our rows beside the paper's (mAP@10, mTS@10, …)."""
    ci = s.get("ci") or {}
    cells = [
        f"{shown} " + _beside(_value(s.get(key), ci.get(key)), s.get(key), paper_value, mark)
        for (key, shown), paper_value in zip(PAIRED_NAMES.items(), theirs[:2], strict=True)
    ]
    return "; ".join(cells)


def _paper_lines(task: Task, metrics: Mapping[str, Any], cal: Any, mark: str) -> list[str]:
    """Backward Search (at the task's λ and calibrated) and the student beside the paper's."""
    col, lam = task.paper_column, metrics.get("lambda")
    methods = metrics.get("methods") or {}
    paper_bs, paper6 = TABLE4[BACKWARD_SEARCH][col], TABLE6[col]
    out = []
    bs = methods.get(BACKWARD_SEARCH)
    if bs:
        out.append(f"- {_at(BACKWARD_SEARCH, bs, lam)}: {_versus_paper(bs, paper_bs, mark)}.")
    if isinstance(cal, dict) and cal.get("paper_map@10") is not None:
        missed = "" if cal.get("reached", True) else ", not reached"
        ci = {"paper_map@10": cal.get("paper_map@10_ci"), "mts@10": cal.get("mts@10_ci")}
        out.append(
            f"- Backward Search at the λ calibrated to mTS@10 ≈ {cal.get('target_mts', 0):g} "
            f"(the paper's protocol for its Backward Search row; λ = "
            f"{lam_text(cal.get('lambda'))}{missed}): "
            f"{_versus_paper({**cal, 'ci': ci}, paper_bs, mark)}."
        )
    student = methods.get(STUDENT)
    if student:
        line = f"- {_at(STUDENT, student, lam)}: {_versus_paper(student, paper6[STUDENT], mark)}"
        rs = metrics.get("retrieved_similarity")
        if rs is not None:
            similar = _beside(fmt_cell(rs), rs, paper6["retrieved_similarity"], mark)
            line += f"; retrieved similarity with Backward Search {similar}"
        out.append(line + ".")
    return out


def _p(p: str) -> str:
    return f"p {p}" if p.startswith("<") else f"p = {p}"


def _baseline_lines(metrics: Mapping[str, Any]) -> list[str]:
    """Backward Search and the student, then the best baseline and the paired difference."""
    methods = metrics.get("methods") or {}
    out = []
    for m in (BACKWARD_SEARCH, STUDENT):  # the paper's method and its distillation
        s = methods.get(m)
        if s:
            ms = s.get("ms_per_query")
            cost = f"; {ms:.3g} ms/query" if ms is not None else ""
            out.append(f"- {_at(m, s, metrics.get('lambda'))}: {_ours(s)}{cost}.")
    best = best_baseline(methods)
    if best is None:
        return out
    line = f"- Best baseline by precision@10: {method_name(best, methods[best])}, {_ours(methods[best])}"
    paired = ((metrics.get("paired") or {}).get("backward_search_minus") or {}).get(best) or {}
    deltas = []
    for key, shown in PAIRED_NAMES.items():
        if "mean" in (paired.get(key) or {}):
            delta, p = paired_cells(paired[key])
            deltas.append(f"{shown} {delta} ({_p(p)})")
    if deltas:
        line += ". Backward Search − it, paired over the same queries: " + "; ".join(deltas)
    return [*out, line + "."]


def small_split_lines(queries_meta: Any) -> list[str]:
    """A line saying the test split is small, from A2's queries_<task>.json: when it gave fewer
    than the protocol's queries or holds a conditioned class too small to be a condition."""
    if not isinstance(queries_meta, dict):
        return []
    counts = queries_meta.get("test_class_counts")
    n_q, n_test = queries_meta.get("num_queries"), queries_meta.get("test_images")
    if not isinstance(counts, dict) or not isinstance(n_q, int) or not isinstance(n_test, int):
        return []
    per_class, never = [], []
    for attr, c in counts.items():
        if isinstance(c, dict) and c:
            lo, hi = min(c.values()), max(c.values())
            per_class.append(f"{lo}{'' if lo == hi else f'–{hi}'} per class of {attr}")
            never += [f"{attr} {k}" for k, v in c.items() if v <= QUERY_MIN_TARGETS]
    if n_q >= QUERIES and not never:
        return []
    line = f"- Small test split: {n_test:,} images, {'; '.join(per_class)}"
    if never:
        line += (
            f" ({', '.join(never)}: {QUERY_MIN_TARGETS} or fewer, never a query's condition, "
            "so these numbers say nothing of them)"
        )
    if queries_meta.get("note"):
        line += f"; A2: {queries_meta['note']}"
    return [
        line + f". Every number here rests on {n_q:,} queries among these few images: the 95 % "
        "intervals in the tables are wide, a difference inside them is noise, and one class's "
        "handful of images can sway a precision@10."
    ]


def task_summary(
    tdir: Path, task: Task, metrics: Any, differs: list[str], queries_meta: Any = None
) -> list[str]:
    """The Summary's lines for one task: a heading line, the numbers, the plane's sentences and,
    for a small test split, what that means (A2's queries_<task>.json)."""
    link = f"**[{task.name}](#task-{task.name})**"
    if not isinstance(metrics, dict):
        return [f"{link}: no numbers yet; run `{hint('E1', '--task', task.name)}` first.", ""]
    head = (
        f"{link} — conditions: {', '.join(task.conditions)}; λ = {lam_text(metrics.get('lambda'))}"
    )
    if is_release(metrics):
        head += "; computed by our E1 from the authors' released artifacts"
    if task.paper_column:
        head += f"; beside the paper's column {task.paper_column} (Δ = ours − paper)"
        if differs:
            head += f"; every Δ is marked {MARK}: not the paper's setting ({'; '.join(differs)})"
        mark = f" {MARK}" if differs else ""
        cal = read_json_or_none(tdir / "calibration.json")
        lines = _paper_lines(task, metrics, cal, mark)
    else:
        where = "your own images" if task.user else "SynthArt"
        head += f"; no paper column ({where}), so beside the best baseline"
        lines = _baseline_lines(metrics)
    planes = [
        f"- Trade-off plane, x = {label}: {sentence}"
        for label, sentence, _ in plane_sentences(tdir, metrics, task.conditions)
    ]
    return [head + ".", *lines, *planes, *small_split_lines(queries_meta), ""]
