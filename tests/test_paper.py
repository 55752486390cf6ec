"""The paper's numbers (src/paper.py): keyed like the registry, and consistent across tables.

The cross-checks catch transcription slips: the paper repeats several values in more than one table
(Backward Search E256 in Tables 3, 4 and 6; its E256 times in Tables 5 and 6) and prints averages.
"""

import math

import pytest

from src import paper
from src.evaluation.registry import METHODS
from src.tasks import TASKS


def test_columns_are_the_registry_paper_columns():
    registry = {t.paper_column for t in TASKS.values() if t.paper_column is not None}
    assert registry == set(paper.COLUMNS)
    for table in (paper.TABLE2, paper.TABLE4):
        for method, row in table.items():
            assert set(paper.COLUMNS) <= set(row), method
    assert set(paper.TABLE5) == set(paper.COLUMNS)
    assert set(paper.TABLE6) == set(paper.COLUMNS)
    for row in paper.TABLE3.values():
        assert set(row) == {*paper.COLUMNS, paper.AVERAGE}


def test_the_papers_rows_are_keyed_like_the_registry_of_methods():
    """Every row of the paper's tables is a method of the registry the paper has, or a peer of
    Table 4 (named as the paper names it); no peer shadows a method we run."""
    ours = {k for k, m in METHODS.items() if m.in_paper}
    rows = set(paper.TABLE2) | set(paper.TABLE4)
    rows |= {k for col in paper.TABLE6.values() for k in col if k != "retrieved_similarity"}
    assert rows <= ours | set(paper.PEERS)
    assert not set(paper.PEERS) & set(METHODS)
    assert {"backward_search", "student"} <= rows & ours


@pytest.mark.parametrize("config", sorted(paper.TABLE3, key=str))
def test_table3_average_is_the_mean_of_the_four_tasks(config):
    row = paper.TABLE3[config]
    mean = sum(row[c] for c in paper.COLUMNS) / len(paper.COLUMNS)
    assert abs(mean - row[paper.AVERAGE]) <= 0.0015, (config, mean)


@pytest.mark.parametrize("method", sorted(paper.TABLE4))
def test_table4_average_is_the_mean_of_the_four_tasks(method):
    row = paper.TABLE4[method]
    for i in range(2):
        mean = sum(row[c][i] for c in paper.COLUMNS) / len(paper.COLUMNS)
        assert abs(mean - row[paper.AVERAGE][i]) <= 0.0015, (method, i, mean)


def test_repeated_values_agree_between_tables():
    best = paper.TABLE3[("convnext_base", False, 256)]
    for col in paper.COLUMNS:
        bs_map, bs_mts = paper.TABLE4["backward_search"][col]
        assert best[col] == bs_map
        assert paper.TABLE6[col]["backward_search"][:2] == (bs_map, bs_mts)
        assert paper.TABLE6[col]["backward_search"][2] == paper.TABLE5[col][256][2]
        assert paper.TABLE2["random"][col] == paper.TABLE4["random"][col][0]
        # Table 4's Backward Search is calibrated to mTS@10 ≈ 0.15
        assert abs(bs_mts - paper.TABLE3_TARGET_MTS) < 0.005


def test_values_are_in_range():
    for table in (paper.TABLE2, paper.TABLE3):
        for row in table.values():
            assert all(0 <= v <= 1 for v in row.values())
    for row in paper.TABLE4.values():
        assert all(0 <= m <= 1 and 0 <= t <= 1 for m, t in row.values())
    for by_e in paper.TABLE5.values():
        for mean, sd, ms in by_e.values():
            assert 10 < mean < 40 and 0 < sd < mean and 0 < ms < 20


def test_fig6_grid_is_powers_of_two_from_a_sixteenth_to_64():
    assert [math.log2(v) for v in paper.FIG6_LAMBDAS] == list(range(-4, 7))
