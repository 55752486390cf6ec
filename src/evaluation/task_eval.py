"""One task, end to end (E1): run and score the chosen methods of the registry, test Backward
Search against each over the same queries, Table 2's λ = 0, and optionally every method's sweep
along its knob (λ, α) and the mTS calibration, into `TaskResults` that src/report/tables.py writes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from src.evaluation import bootstrap, sweeps
from src.evaluation.methods import Ranking
from src.evaluation.registry import BACKWARD_SEARCH, LAMBDA, METHODS, STUDENT, Setting, rank
from src.evaluation.scoring import Scores, score
from src.evaluation.space import Queries, SearchSpace
from src.evaluation.sweeps import CALIBRATION_RANGE, calibrate, evaluate_lambda
from src.method import metrics

log = logging.getLogger(__name__)

PAIRED_METRICS = ("paper_map@10", "mts@10")  # Backward Search vs each method, per query


def paired_tests(scores: dict[str, Scores]) -> dict[str, dict[str, dict[str, float]]]:
    """Backward Search − each other method, per query: paired bootstrap of precision@10, mTS@10."""
    if BACKWARD_SEARCH not in scores:
        return {}
    bs = scores[BACKWARD_SEARCH].per_query
    return {
        m: {k: bootstrap.paired(bs[k], s.per_query[k]).as_dict() for k in PAIRED_METRICS}
        for m, s in scores.items()
        if m != BACKWARD_SEARCH
    }


@dataclass
class TaskResults:
    """Everything E1 computed for a task, ready to be written."""

    space: SearchSpace
    queries: Queries
    lam: float
    rankings: dict[str, Ranking]
    scores: dict[str, Scores]
    lambda0: dict[str, Any] | None = None  # Backward Search at λ = 0, scored (Table 2)
    similarity: float | None = None  # teacher vs student (Table 6)
    sweeps: dict[str, pd.DataFrame] = field(default_factory=dict)  # method → its sweep (--sweep)
    calibration: dict[str, Any] | None = None
    student_file: str | None = None  # the student's file name (its λ is in it), when evaluated
    alpha: float = 1.0  # the centroid shift's α
    paired: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # vs BS
    unreachable: dict[str, Any] | None = None  # queries no database image can satisfy, if any

    @property
    def summary(self) -> dict[str, dict[str, Any]]:
        return {m: s.summary for m, s in self.scores.items()}


def evaluate(
    space: SearchSpace,
    q: Queries,
    methods: Iterable[str],
    lam: float,
    *,
    seed: int = 0,
    sweep: bool = False,
    target_mts: float | None = None,
    alpha: float = 1.0,
) -> TaskResults:
    """Run and score the methods (the registry's), test Backward Search against each, Table 2's
    λ = 0; optionally every method's sweep along its knob and the mTS calibration."""
    methods = list(methods)
    s = Setting(space, q, lam, alpha=alpha, seed=seed, measure=True)
    swept = [m for m in METHODS.values() if sweep and m.sweep and not m.cannot_rank(space)]
    # every λ known now in one database pass: the reported one, Table 2's 0, the λ sweeps' grids
    # and the calibration's two ends; the cosine-ranked methods in another
    lams = [lam, 0.0] if BACKWARD_SEARCH in methods else []
    lams += [
        *(x for m in swept if m.knob is LAMBDA for x in m.sweep.grid),
        *([2.0**x for x in CALIBRATION_RANGE] if target_mts is not None else []),
    ]
    s.searches.prefetch(lams)
    rankings = rank(s, methods)
    scores = {m: score(space, q, r) for m, r in rankings.items()}
    res = TaskResults(space, q, lam, rankings, scores, alpha=float(alpha))
    n, names = q.unreachable(space.labels)
    res.unreachable = {"queries": n, "conditions": names} if n else None  # metrics.json, REPORT
    res.paired = paired_tests(res.scores)
    if BACKWARD_SEARCH in rankings:
        res.lambda0 = evaluate_lambda(s.searches, 0.0)
    if STUDENT in rankings:
        teacher = s.searches(lam).indices
        sim = metrics.retrieved_similarity(teacher, rankings[STUDENT].indices)
        res.similarity = float(sim.double().mean())
    for m in swept:
        log.info("%s sweep (%s):", m.knob.symbol, m.label)
        steps = m.sweep.grid
        knob = (m.knob.key, m.knob.symbol)
        res.sweeps[m.key] = sweeps.sweep(space, q, knob, steps, m.sweep.rankings(s, steps))
    if target_mts is not None:
        res.calibration = cal = calibrate(s.searches, target_mts)
        log.info(
            "calibration: λ=%.4g gives mTS@10 %.3f (target %.3f%s), mAP@10 %.3f",
            cal["lambda"],
            cal["mts@10"],
            target_mts,
            "" if cal["reached"] else ", NOT reached",
            cal["paper_map@10"],
        )
    return res


def summary_lines(res: TaskResults) -> list[str]:
    """A short human summary: per method the paper's mAP@10, true mAP@10, mTS@10, ms/query."""
    lines = []
    for m, s in res.summary.items():
        ms = s["ms_per_query"]
        lines.append(
            f"  {m:<16} mAP@10 {s['paper_map@10']:.3f}  true mAP@10 {s['map@10']:.3f}  "
            f"mTS@10 {s['mts@10']:.3f}" + (f"  {ms:.4g} ms/query" if ms is not None else "")
        )
    for m, d in res.paired.items():
        p, t = d["paper_map@10"], d["mts@10"]
        lines.append(
            f"  Backward Search − {m:<15} Δ mAP@10 {p['mean']:+.3f} (p {bootstrap.p_text(p['p'])})  "
            f"Δ mTS@10 {t['mean']:+.3f} (p {bootstrap.p_text(t['p'])})"
        )
    if res.similarity is not None:
        lines.append(f"  retrieved similarity (teacher vs student): {res.similarity:.3f}")
    return lines
