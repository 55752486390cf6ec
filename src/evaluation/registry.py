"""The registry of ranking methods: one record per method — its key, its one label, whether the
paper has it, its knob (λ, α or none), how it ranks and, when E1 sweeps it, its sweep.

E1 (its runs and tables), REPORT.md, the trade-off plane, E2's figures and the explorer (through
/api/meta) all iterate `METHODS`, in its order (the tables' order). To add a method: write its
ranking function in src/evaluation/methods.py and one `Method` below; nothing else names it.
The constants name the four methods the paper's own tables give a role (its Table 2 rows, the
teacher and student of Table 6): the rest are never named outside this file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from src.errors import SuiteError
from src.evaluation.methods import (
    BackwardSearches,
    Ranking,
    centroid_shift,
    centroids_missing,
    rank_centroid_shifts,
    rank_cosine,
    rank_filtered_knn,
    rank_random,
    student_search,
)
from src.evaluation.space import Queries, SearchSpace
from src.hints import hint
from src.paper import FIG6_LAMBDAS

RANDOM, KNN, BACKWARD_SEARCH, STUDENT = "random", "knn", "backward_search", "student"


@dataclass(frozen=True)
class Knob:
    """A method's one setting: its name in metrics.json and the sweeps' columns, its symbol, and
    the `Setting` field that holds it."""

    key: str
    symbol: str
    attr: str


LAMBDA, ALPHA = Knob("lambda", "λ", "lam"), Knob("alpha", "α", "alpha")


@dataclass
class Setting:
    """One query set and what a method may take besides it: λ, α, the random seed; `measure` (E1:
    time the search, count the single-query rule's iterations), `trace` (the explorer's walk).
    Backward Search's answers are kept per λ (`searches`): whoever asks for a λ first searches."""

    space: SearchSpace
    q: Queries
    lam: float
    alpha: float = 1.0
    seed: int = 0
    measure: bool = False
    trace: bool = False
    searches: BackwardSearches = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.searches = BackwardSearches(self.space, self.q, trace=self.trace)

    def value(self, knob: Knob | None) -> float | None:
        """The value of a knob here (None for a method without one)."""
        return None if knob is None else getattr(self, knob.attr)


Vectors = tuple[Tensor, dict[str, Any]]  # Q×E query vectors and the Ranking's other fields


@dataclass(frozen=True)
class Sweep:
    """E1 --sweep of a method along its knob: the file it is written to (results/<run>/<task>/),
    the grid, and its rankings at every step of a grid (scored by src/evaluation/sweeps.py)."""

    file: str
    grid: tuple[float, ...]
    rankings: Callable[[Setting, Sequence[float]], list[Ranking]]


@dataclass(frozen=True)
class Method:
    """One ranking method. It ranks either by cosine of `vectors` (ranked together with the other
    methods' in one database pass) or by its own `ranks`."""

    key: str  # metrics.json, retrievals_<key>.csv, E1 --methods, the explorer's API
    label: str  # its one name: tables, REPORT.md, the plane, E2's figures, the explorer
    in_paper: bool
    knob: Knob | None = None
    vectors: Callable[[Setting], Vectors] | None = None
    ranks: Callable[[Setting], Ranking] | None = None
    trained: bool = False  # a network trained per λ (D1): it exists only at the λ it was trained at
    sweep: Sweep | None = None
    missing: Callable[[SearchSpace], str | None] | None = None  # what a space may lack for it

    def cannot_rank(self, space: SearchSpace) -> str | None:
        """Why it cannot rank in `space` (e.g. no train embeddings), or None when it can."""
        return None if self.missing is None else self.missing(space)

    def title(self, value: float | None = None) -> str:
        """Its name where it stands among others: the label, its knob's value when given, and
        "(not in the paper)" for a method the paper does not have."""
        step = f" at {self.knob.symbol} = {value:.4g}" if self.knob and value is not None else ""
        return f"{self.label}{step}" + ("" if self.in_paper else " (not in the paper)")


def _searched(s: Setting, grid: Sequence[float]) -> list[Ranking]:
    """Backward Search at every λ of the grid, each searched once, in one database pass."""
    s.searches.prefetch(grid)
    return [s.searches(lam) for lam in grid]


def _student(s: Setting) -> Vectors:
    student = s.space.student(s.lam)
    if student is None:
        task = s.space.task.name
        raise SuiteError(
            f"no student of {task} at λ = {s.lam:g}: D1 distils one per λ "
            f"({hint('D1', '--task', task)} --lambda {s.lam:g})"
        )
    z, timing = student_search(s.space, s.q, student)
    return z, {"timing": timing, "lam": s.lam}


METHODS: dict[str, Method] = {
    m.key: m
    for m in (
        Method(RANDOM, "random search", True, ranks=lambda s: rank_random(s.space, s.q, s.seed)),
        Method(KNN, "k-nearest search", True, vectors=lambda s: (s.q.z0, {})),
        Method(
            "filtered_knn",
            "head-filtered kNN",
            False,
            ranks=lambda s: rank_filtered_knn(s.space, s.q),
        ),
        Method(
            "centroid_shift",
            "class-centroid shift",
            False,
            ALPHA,
            vectors=lambda s: (centroid_shift(s.space, s.q, s.alpha), {"alpha": float(s.alpha)}),
            sweep=Sweep(
                "sweep_alpha.csv",
                tuple(i / 4 for i in range(9)),  # 0, 0.25, …, 2
                lambda s, grid: rank_centroid_shifts(s.space, s.q, grid),
            ),
            missing=centroids_missing,
        ),
        Method(
            BACKWARD_SEARCH,
            "Backward Search",
            True,
            LAMBDA,
            ranks=lambda s: s.searches(s.lam, single=s.measure, timed=s.measure),
            sweep=Sweep("sweep.csv", (0.0, *FIG6_LAMBDAS), _searched),  # Fig 6
        ),
        Method(STUDENT, "Student (distilled)", True, LAMBDA, vectors=_student, trained=True),
    )
}


def method(key: Any) -> Method:
    """The method of `key`; an unknown one is refused in one line listing the known."""
    if not isinstance(key, str) or key not in METHODS:
        raise SuiteError(f"unknown method {key!r}: choose one of {', '.join(METHODS)}")
    return METHODS[key]


def rankable(space: SearchSpace, keys: Iterable[str]) -> tuple[list[str], dict[str, str]]:
    """The methods of `keys` that `space` can rank, and why each other cannot (`Method.missing`)."""
    why = {k: r for k in keys if (r := method(k).cannot_rank(space))}
    return [k for k in keys if k not in why], why


def rank(s: Setting, keys: Iterable[str]) -> dict[str, Ranking]:
    """The rankings of the methods `keys` for the queries of `s`: every cosine-ranked method's
    vectors in one pass over the database, each other method its own way."""
    keys = [method(k).key for k in keys]
    vectors = {k: METHODS[k].vectors(s) for k in keys if METHODS[k].vectors is not None}
    cosine = rank_cosine(s.space, s.q, vectors)
    return {k: cosine[k] if k in cosine else METHODS[k].ranks(s) for k in keys}


def baselines() -> list[str]:
    """Every method but Backward Search and its student, in the tables' order."""
    return [k for k in METHODS if k not in (BACKWARD_SEARCH, STUDENT)]
