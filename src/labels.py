"""Class names → class ids (the index in labels.json): the one lookup every stage uses."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from src.errors import SuiteError


def _loose(name: str) -> str:
    """A typed class name without case, spaces, '_' or '-' ('Art Nouveau' ~ 'art_nouveau')."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


def class_ids(
    names: pd.Series | Sequence[str],
    attr: str,
    vocab: Sequence[str],
    where: str,
    fix: str = "re-run A1",
    loose: bool = False,
) -> np.ndarray:
    """Class names → int64 ids in `vocab`; an unknown name fails naming `where` and the `fix`.

    `loose` also accepts a name that matches one class once case, spaces, '_' and '-' are ignored
    (for names a person typed, e.g. E2's --condition).
    """
    index = {name: i for i, name in enumerate(vocab)}
    if loose:
        folded: dict[str, int] = {}
        for i, name in enumerate(vocab):  # a folded name shared by two classes stays ambiguous
            folded[_loose(name)] = -1 if _loose(name) in folded else i
    out = np.empty(len(names), dtype=np.int64)
    for j, name in enumerate(names):
        i = index.get(name, -1)
        if i < 0 and loose:
            i = folded.get(_loose(str(name)), -1)
        if i < 0:
            raise SuiteError(f"{where}: {attr} class {name!r} is not in labels.json; {fix}")
        out[j] = i
    return out
