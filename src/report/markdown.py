"""Markdown for people: tables of numbers with their 95 % intervals in the same cell, how each
method is named, and the cell formats every table and REPORT.md share.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from src import paper
from src.evaluation.registry import LAMBDA, METHODS
from src.tasks import Task

NOT_PAPER = "n/a (not a dataset of the paper: SynthArt or your own images)"
METRIC_NOTE = (  # under every E1 table; REPORT.md says it once
    "mAP@10 is the paper's metric (precision@10); true mAP@10 is AP@10 / min(10, #relevant)."
)
LOW, HIGH = " 95% low", " 95% high"  # companion columns of a metric: its bootstrap interval
RANDOM_BY_NATURE = "random: unseeded in the authors' code, differs by nature"
TITLES = {  # E1's tables, as E1 and REPORT.md title them
    "table2": "Table 2 — mAP@10 at λ = 0",
    "table3": "Table 3 — mAP@10 at the λ calibrated to mTS@10 ≈ {target:g}",
    "table4": "Table 4 — mAP@10 and mTS@10",
    "table5": "Table 5 — Backward Search iterations and time per query",
    "table6": "Table 6 — teacher (Backward Search) vs student",
}


def method_name(method: str, summary: Mapping[str, Any] | None = None) -> str:
    """A method's name in tables: the registry's title (the methods the paper does not have say
    so), the paper's peers by their names there. λ has a column of its own; another knob's value
    (the α of its metrics.json summary) goes in the name."""
    m = METHODS.get(method)
    if m is None:
        return paper.PEERS.get(method, method)
    shown = (summary or {}).get(m.knob.key) if m.knob not in (None, LAMBDA) else None
    return m.title(shown)


def with_ci(row: dict[str, Any], header: str, value: Any, ci: Any) -> None:
    """Set row[header] and, when the interval is known, its LOW / HIGH companion columns."""
    row[header] = value
    lo, hi = ci if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None)
    row[header + LOW], row[header + HIGH] = lo, hi


def _fmt(v: Any, header: str, signed: bool) -> str:
    """One table cell: metrics to 3 decimals, iterations to 2, times and λ to 4 significant digits."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if not isinstance(v, float):
        return str(v)
    sign = "+" if signed or header.startswith("Δ") else ""
    if "ms/query" in header or header == "λ":
        return f"{v:{sign}.4g}"
    if header == "embedding size":
        return f"{v:g}"
    if "iterations" in header or "satisfied" in header:
        return f"{v:{sign}.2f}"
    return f"{v:{sign}.3f}"


def _number(v: Any) -> float | None:
    return None if v is None or isinstance(v, str) or pd.isna(v) else float(v)


def with_interval(text: str, low: Any, high: Any) -> str:
    """A formatted value followed by its 95 % interval, `0.816 [0.800, 0.830]` (as is if unknown)."""
    lo, hi = _number(low), _number(high)
    if lo is None or hi is None or text == "—":
        return text
    return f"{text} [{lo:.3f}, {hi:.3f}]"


def _shown(headers: Sequence[str]) -> list[str]:
    """The headers a table shows: LOW / HIGH companions merge into their metric's cell."""
    return [
        h for h in headers if not (h.endswith((LOW, HIGH)) and h.rsplit(" 95% ", 1)[0] in headers)
    ]


def md_table(df: pd.DataFrame, cell: Any = None) -> str:
    """A DataFrame as a GitHub markdown table; `cell(value, header)` formats each cell.

    The default writes floats to 3 decimals and λ columns as written (e.g. 0.0625); a column with
    LOW / HIGH companions shows its interval in the same cell.
    """
    cell = cell or _plain
    headers = [str(c) for c in df.columns]
    shown = _shown(headers)
    body = []
    for row in df.itertuples(False):
        values = dict(zip(headers, row, strict=True))
        body.append(
            [
                with_interval(cell(values[h], h), values.get(h + LOW), values.get(h + HIGH))
                for h in shown
            ]
        )
    return "\n".join(_grid(shown, body))


def fmt_cell(v: Any) -> str:
    """A number in prose or a plain table: 3 decimals; missing as '—'."""
    return _fmt(v, "", False)


def _plain(v: Any, header: str) -> str:
    if header in ("lambda", "λ") and isinstance(v, float):
        return f"{v:g}"
    return fmt_cell(v)


def _grid(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return lines + ["| " + " | ".join(cells) + " |" for cells in rows]


def paper_values(task: Task) -> str:
    """Where a task's paper columns come from: the paper's column, or n/a (SynthArt, your images)."""
    if task.paper_column is None:
        return f"Paper values: {NOT_PAPER}."
    return f"Paper values: column {task.paper_column} of the paper (SPEC §8)."


def markdown(df: pd.DataFrame, title: str, task: Task, notes: Iterable[str] = ()) -> str:
    """A table as markdown with a title and its notes; paper columns say n/a for tasks without a
    paper column."""
    headers = _shown([str(c) for c in df.columns])
    body = []
    for _, row in df.iterrows():
        cells = []
        signed = str(row.iloc[0]).startswith("Δ")  # a difference row
        for h in headers:
            v = row[h]
            if task.paper_column is None and "(paper)" in h:
                cells.append("n/a")
            elif isinstance(v, str):
                cells.append(v)
            else:
                text = _fmt(None if pd.isna(v) else float(v), h, signed)
                cells.append(with_interval(text, row.get(h + LOW), row.get(h + HIGH)))
        body.append(cells)
    lines = [f"### {title}", "", *_grid(headers, body), "", *notes]
    return "\n".join(lines) + "\n"
