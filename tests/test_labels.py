"""Class names → ids: the one lookup of A2, B1, C1, E1 and E2 (strict, or loose for typed names)."""

from __future__ import annotations

import pandas as pd
import pytest

from src.errors import SuiteError
from src.labels import class_ids

VOCAB = ["Art_Nouveau", "Baroque", "pop art", "Pop-Art"]


def test_exact_names_map_to_their_index():
    ids = class_ids(pd.Series(["Baroque", "Art_Nouveau", "Baroque"]), "style", VOCAB, "x.csv")
    assert ids.tolist() == [1, 0, 1] and ids.dtype.name == "int64"


def test_an_unknown_name_names_the_file_and_the_fix():
    with pytest.raises(SuiteError, match=r"x\.csv: style class 'art nouveau' is not in labels"):
        class_ids(["art nouveau"], "style", VOCAB, "x.csv", "re-run A1")


def test_loose_matching_ignores_case_spaces_and_separators_but_not_ambiguity():
    assert class_ids(
        ["art nouveau", "BAROQUE"], "style", VOCAB, "--condition", loose=True
    ).tolist() == [0, 1]
    assert class_ids(["pop art"], "style", VOCAB, "--condition", loose=True).tolist() == [
        2
    ]  # exact
    with pytest.raises(SuiteError, match="'popart'"):  # 'pop art' and 'Pop-Art' both fold to it
        class_ids(["popart"], "style", VOCAB, "--condition", loose=True)
