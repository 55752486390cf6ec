"""The authors' bugs, by name: fixed by default, reproducible on request.

Each quirk belongs to the stage that owns the behaviour; that stage takes
`--authors-quirks NAME[,NAME…]|all|none`, applies the named quirks and records them under "quirks"
in its config.json (or metrics.json), so every report can say which protocol produced a number.
The deviations table in docs/deviations.md has one row per quirk.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from src.errors import SuiteError


@dataclass(frozen=True)
class Quirk:
    """One named departure of the authors' code from the correct behaviour."""

    name: str
    stage: str  # the stage that owns (and records) it
    datasets: tuple[str, ...]  # where it changes anything
    summary: str  # one line: what their code does


QUIRKS: dict[str, Quirk] = {
    q.name: q
    for q in [
        Quirk(
            "cub-tag-shift",
            "A1",
            ("cub",),
            "attribute table re-indexed 0..N-1: image k gets image k+1's attributes, the last image is dropped",
        ),
        Quirk(
            "wikiart-tag-cleaning",
            "A1",
            ("wikiart",),
            "single-pass replace(',,', ',') leaves empty items; deleting the substring 'nan' mangles words",
        ),
        Quirk(
            "empty-tag-token",
            "E1",
            ("cub", "apy"),
            "a query's tag string is split without stripping: no attributes → an empty tag in mTS",
        ),
        Quirk(
            "frozen-train-mode",
            "B1",
            ("cub", "apy", "wikiart"),
            "a frozen backbone left in train mode: stochastic depth and BN statistics stay active",
        ),
    ]
}


def parse_quirks(value: str, stage: str) -> tuple[str, ...]:
    """`--authors-quirks` → the quirk names of `stage` it selects ('all', 'none' or a comma list)."""
    own = [q.name for q in QUIRKS.values() if q.stage == stage]
    value = value.strip()
    if value in ("", "none"):
        return ()
    if value == "all":
        return tuple(own)
    names = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    for n in names:
        if n not in own:
            raise SuiteError(
                f"--authors-quirks: {n!r} is not a quirk of {stage}; choose from: "
                f"{', '.join(own) or '(none)'}, all, none"
            )
    return names


def applicable(quirks: Iterable[str], dataset: str) -> tuple[str, ...]:
    """The quirks among `quirks` that change anything on `dataset` (e.g. empty-tag-token: CUB, aPY)."""
    return tuple(q for q in quirks if dataset in QUIRKS[q].datasets)


def protocol_label(quirks: tuple[str, ...] | list[str]) -> str:
    """How a report names the protocol: 'suite (authors' bugs fixed)' or the quirks applied."""
    return "authors' quirks: " + ", ".join(quirks) if quirks else "suite (authors' bugs fixed)"
