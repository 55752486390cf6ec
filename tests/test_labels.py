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


CUB_LIKE = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "008.Digit_seven"]


@pytest.mark.parametrize(
    "typed, expected",
    [
        ("Digit_seven", 2),
        ("digit seven", 2),
        ("seven", 2),
        ("008", 2),
        ("8", 2),
        ("Laysan_Albatross", 1),
        ("black-footed albatross", 0),
        ("footed_Albatross", 0),
        ("1", 0),
    ],
)
def test_loose_names_without_cubs_numeric_prefix(typed, expected):
    assert class_ids([typed], "species", CUB_LIKE, "--condition", loose=True).tolist() == [expected]


@pytest.mark.parametrize("typed", ["Albatross", "009", "Digit"])
def test_loose_names_shared_by_two_classes_or_unknown_are_refused(typed):
    with pytest.raises(SuiteError, match=f"species class '{typed}' is not in labels.json"):
        class_ids([typed], "species", CUB_LIKE, "--condition", loose=True)
    with pytest.raises(SuiteError):  # strict mode (files written by the stages) stays exact
        class_ids(["Digit_seven"], "species", CUB_LIKE, "train.csv")
