"""A2: the query protocol of SPEC §3 (balance, ≥ 10 targets, Jaccard rule, uniqueness, determinism)."""

from __future__ import annotations

import importlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.datasets.common import Processed, write_processed
from src.errors import SuiteError
from src.paper import QUERIES
from src.paper import QUERY_MAX_JACCARD as MAX_JACCARD
from src.paper import QUERY_MIN_TARGETS as MIN_TARGETS
from src.queries import load_test_split, make_queries, read_queries
from src.tags import split_tags

A2 = importlib.import_module("A2_make_queries")


def table(classes: dict[str, list[str]], tags: list[str]) -> pd.DataFrame:
    """A test split: one row per image, the given class names and '|'-joined tags."""
    n = len(tags)
    return pd.DataFrame(
        {"image": [f"images/test/{i:05d}.png" for i in range(n)], **classes, "tags": tags}
    )


def random_tags(rng: np.random.Generator, n: int, vocab: int = 60) -> list[str]:
    return ["|".join(f"t{j}" for j in sorted(set(rng.integers(0, vocab, 6)))) for _ in range(n)]


def skewed(n: int = 600, seed: int = 0) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Style A holds 80 % of the images, B/C/D the rest; genres independent and also skewed."""
    rng = np.random.default_rng(seed)
    style = rng.choice(["A", "B", "C", "D"], size=n, p=[0.8, 0.1, 0.06, 0.04])
    genre = rng.choice(["g", "h", "k"], size=n, p=[0.7, 0.2, 0.1])
    labels = {"style": ["A", "B", "C", "D"], "genre": ["g", "h", "k"]}
    return table({"style": style, "genre": genre}, random_tags(rng, n)), labels


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b)


def check_rules(test: pd.DataFrame, q: pd.DataFrame, conditions: list[str]) -> None:
    """Brute force, one query at a time: every accepted pair obeys the ≥ 10 targets and Jaccard rules."""
    by_image = test.set_index("image")
    for _, row in q.iterrows():
        own = by_image.loc[row["image"]]
        carries = np.logical_and.reduce([test[a] == row[a] for a in conditions])
        targets = test[carries & (test["image"] != row["image"]) & (test["tags"] != "")]
        assert len(targets) >= MIN_TARGETS
        qt = split_tags(own["tags"])
        assert qt, "a query without tags was accepted"
        assert min(jaccard(qt, split_tags(t)) for t in targets["tags"]) < MAX_JACCARD


def test_candidates_are_class_balanced_on_a_skewed_split():
    test, labels = skewed()
    draw = make_queries(test, labels, ["style"], 300, seed=1)
    own = test.iloc[draw.rows]["style"].value_counts(normalize=True)
    # uniform sampling would give A ≈ 0.8; the 1/frequency weights give each class ≈ 0.25
    assert set(own.index) == {"A", "B", "C", "D"}
    assert own.max() < 0.35 and own.min() > 0.15
    assert (draw.queries["image"].to_numpy() == test["image"].to_numpy()[draw.rows]).all()


def test_multi_condition_balances_class_tuples():
    test, labels = skewed(1500)
    draw = make_queries(test, labels, ["style", "genre"], 400, seed=2)
    own = test.iloc[draw.rows]
    pairs = Counter(zip(own["style"], own["genre"], strict=True))
    # 12 (style, genre) tuples; uniform sampling would put ~56 % of queries on (A, g)
    assert len(pairs) == 12
    assert max(pairs.values()) / len(own) < 0.2
    check_rules(test, draw.queries, ["style", "genre"])


def test_conditions_are_uniform_and_may_equal_the_own_class():
    test, labels = skewed()
    draw = make_queries(test, labels, ["style"], 400, seed=3)
    cond = draw.queries["style"].value_counts(normalize=True)
    assert cond.max() < 0.35 and cond.min() > 0.15
    own = test.iloc[draw.rows]["style"].to_numpy()
    same = (own == draw.queries["style"].to_numpy()).mean()
    assert 0.1 < same < 0.45  # ≈ 1/4 when the condition ignores the candidate's class


def test_fewer_than_ten_targets_are_skipped():
    rng = np.random.default_rng(4)
    # D has exactly 10 images: a D candidate sees 9 other D's (skip), any other sees 10 (keep);
    # E has 5 images and can never be a condition.
    style = ["A"] * 60 + ["B"] * 40 + ["D"] * 10 + ["E"] * 5
    test = table({"style": style}, random_tags(rng, len(style)))
    labels = {"style": ["A", "B", "D", "E"]}
    draw = make_queries(test, labels, ["style"], 150, seed=5)
    q, own = draw.queries, test.iloc[draw.rows]["style"].to_numpy()
    assert "E" not in set(q["style"])
    assert (q["style"] == "D").sum() > 0
    assert not ((q["style"] == "D").to_numpy() & (own == "D")).any()
    assert draw.skipped["few_targets"] > 0
    check_rules(test, q, ["style"])


def test_untagged_candidates_and_targets_are_skipped():
    rng = np.random.default_rng(6)
    tags = random_tags(rng, 200)
    for i in range(0, 200, 3):
        tags[i] = ""
    test = table({"style": ["A", "B"] * 100}, tags)
    draw = make_queries(test, {"style": ["A", "B"]}, ["style"], 100, seed=7)
    assert (draw.queries["tags"] != "").all()
    assert draw.skipped["no_tags"] > 0
    check_rules(test, draw.queries, ["style"])


def test_a_pair_needs_a_target_with_little_context_in_common():
    # Every B and C image carries the same tags; A images carry unique tags. A query conditioned on
    # B or C only has a dissimilar target when the query image itself is an A image.
    n_a, n_b, n_c = 40, 30, 30
    style = ["A"] * n_a + ["B"] * n_b + ["C"] * n_c
    tags = [f"u{i}|v{i}" for i in range(n_a)] + ["x|y|z"] * (n_b + n_c)
    test = table({"style": style}, tags)
    draw = make_queries(test, {"style": ["A", "B", "C"]}, ["style"], 80, seed=8)
    q, own = draw.queries, test.iloc[draw.rows]["style"].to_numpy()
    assert draw.skipped["no_dissimilar_target"] > 0
    assert (own[q["style"].to_numpy() != "A"] == "A").all()
    assert (own != "A").any()  # B/C images are still fine queries when conditioned on A
    check_rules(test, q, ["style"])


def test_a_target_at_exactly_the_jaccard_limit_is_not_dissimilar():
    # A images: 'c' and `own_a` tags of their own; B images: 'c', 'b' and 4 of their own. With
    # own_a = 4 an A candidate shares 1 of 10 tags with each B target: Jaccard exactly 0.1, which
    # is not < 0.1 (A–A pairs: 1 of 9, B–B: 2 of 10): no pair qualifies at all.
    def split(own_a: int) -> pd.DataFrame:
        tags = ["|".join(["c", *(f"a{i}_{j}" for j in range(own_a))]) for i in range(11)]
        tags += ["|".join(["c", "b", *(f"b{i}_{j}" for j in range(4))]) for i in range(11)]
        return table({"style": ["A"] * 11 + ["B"] * 11}, tags)

    labels = {"style": ["A", "B"]}
    with pytest.raises(SuiteError, match="found only 0 of 1 queries after 2000 draws"):
        make_queries(split(4), labels, ["style"], 1, seed=0, max_draws=2000)
    # one more tag of their own puts the A images at 1/11 from every other image but a B's
    # from a B: every pair but (B image, condition B) qualifies
    draw = make_queries(split(5), labels, ["style"], 20, seed=0)
    own = split(5)["style"].to_numpy()[draw.rows]
    assert not ((own == "B") & (draw.queries["style"].to_numpy() == "B")).any()
    assert set(zip(own, draw.queries["style"], strict=True)) == {("A", "A"), ("A", "B"), ("B", "A")}


@pytest.mark.parametrize("tagged_b, untagged_b", [(10, 1), (9, 3)])
def test_untagged_images_are_no_targets(tagged_b, untagged_b):
    # Every tagged image carries the same tags, so no tagged target is dissimilar; the untagged B
    # images would be (Jaccard 0 to anything), and would make up the 10 targets with 9 tagged —
    # but they are not in the retrieval database, so they are no targets: no pair qualifies.
    def split(untagged: str) -> pd.DataFrame:
        tags = ["x|y"] * (11 + tagged_b) + [untagged.format(i) for i in range(untagged_b)]
        return table({"style": ["A"] * 11 + ["B"] * (tagged_b + untagged_b)}, tags)

    labels = {"style": ["A", "B"]}
    with pytest.raises(SuiteError, match="found only 0 of 1 queries"):
        make_queries(split(""), labels, ["style"], 1, seed=0, max_draws=2000)
    # the same images with a tag of their own are targets: A candidates conditioned on B qualify
    draw = make_queries(split("z{}"), labels, ["style"], 10, seed=0)
    own = split("z{}")["style"].to_numpy()[draw.rows]
    assert ((own == "A") & (draw.queries["style"] == "B").to_numpy()).any()


def test_pairs_are_unique_even_when_draws_repeat():
    rng = np.random.default_rng(9)
    test = table({"style": ["A"] * 12 + ["B"] * 12}, random_tags(rng, 24, vocab=200))
    # 24 images × 2 conditions = at most 48 pairs: asking for 40 forces many repeated draws
    draw = make_queries(test, {"style": ["A", "B"]}, ["style"], 40, seed=10)
    pairs = list(zip(draw.queries["image"], draw.queries["style"], strict=True))
    assert len(set(pairs)) == 40
    assert draw.skipped["duplicate"] > 0
    assert draw.queries["query_id"].tolist() == list(range(40))


def test_same_seed_same_queries_other_seed_other_queries():
    test, labels = skewed()
    a = make_queries(test, labels, ["style", "genre"], 100, seed=11).queries
    b = make_queries(test, labels, ["style", "genre"], 100, seed=11).queries
    c = make_queries(test, labels, ["style", "genre"], 100, seed=12).queries
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_too_small_a_split_fails_with_the_count_found():
    rng = np.random.default_rng(13)
    test = table({"style": ["A"] * 11 + ["B"] * 9}, random_tags(rng, 20, vocab=200))
    with pytest.raises(SuiteError, match=r"found only \d+ of 30 queries after \d+ draws"):
        make_queries(test, {"style": ["A", "B"]}, ["style"], 30, seed=0, max_draws=5000)


def test_every_draw_is_accepted_or_skipped_for_one_reason():
    test, labels = skewed(300, seed=3)
    for n in (1, 50):
        draw = make_queries(test, labels, ["style", "genre"], n, seed=4)
        assert draw.draws == n + sum(draw.skipped.values())
        assert set(draw.skipped) == {"no_tags", "duplicate", "few_targets", "no_dissimilar_target"}
    rng = np.random.default_rng(5)  # every image a valid query of every condition: no skip
    easy = table({"style": ["A", "B"] * 20}, random_tags(rng, 40, vocab=500))
    draw = make_queries(easy, {"style": ["A", "B"]}, ["style"], 3, seed=6)
    assert draw.draws == 3 and draw.skipped == dict.fromkeys(draw.skipped, 0)


def test_a_class_no_test_image_carries_is_never_a_query_condition_that_qualifies():
    # labels.json lists C but the test split has none: a C condition has no targets
    rng = np.random.default_rng(7)
    test = table({"style": ["A"] * 30 + ["B"] * 30}, random_tags(rng, 60, vocab=300))
    draw = make_queries(test, {"style": ["A", "B", "C"]}, ["style"], 40, seed=8)
    assert "C" not in set(draw.queries["style"]) and draw.skipped["few_targets"] > 0


def test_as_many_queries_as_there_are_pairs_may_be_asked():
    rng = np.random.default_rng(9)
    test = table({"style": ["A"] * 12 + ["B"] * 12}, random_tags(rng, 24, vocab=500))
    draw = make_queries(test, {"style": ["A", "B"]}, ["style"], 48, seed=10)  # 24 × 2 pairs
    assert len(set(zip(draw.queries["image"], draw.queries["style"], strict=True))) == 48
    with pytest.raises(SuiteError) as e:
        make_queries(test, {"style": ["A", "B"]}, ["style"], 49, seed=10)
    assert str(e.value) == (
        "--num-queries 49 is more than the 48 (test image, condition) pairs the test split "
        "(24 images) has; lower --num-queries"
    )


def test_the_draw_budget_grows_with_the_queries_asked():
    # 50 draws per query asked, at least 20,000: a split that cannot supply says how many it drew
    test = table({"style": ["A"] * 11 + ["B"] * 11}, ["x|y"] * 22)  # no dissimilar target at all
    labels = {"style": ["A", "B"]}
    for n, draws in ((10, 20_000), (44, 20_000)):
        with pytest.raises(SuiteError, match=f"found only 0 of {n} queries after {draws} draws"):
            make_queries(test, labels, ["style"], n, seed=0)
    big = table({"style": ["A"] * 300 + ["B"] * 300}, ["x|y"] * 600)
    with pytest.raises(SuiteError, match="found only 0 of 500 queries after 25000 draws"):
        make_queries(big, labels, ["style"], 500, seed=0)


NO_GENRE = "the test split has no 'genre' labels; re-run A1 for this dataset"


@pytest.mark.parametrize(
    "change, said",
    [
        (lambda t, lab: (t.drop(columns="genre"), lab, 1), NO_GENRE),
        (lambda t, lab: (t, {"style": lab["style"]}, 1), NO_GENRE),
        (lambda t, lab: (t, lab, 0), "--num-queries must be at least 1 (got 0)"),
        (
            lambda t, lab: (t.iloc[:0], lab, 1),
            "the test split is empty; re-run A1 for this dataset",
        ),
        (
            lambda t, lab: (t.assign(tags=""), lab, 1),
            "none of the 300 test images has tags (the tags column is empty), and a query needs "
            "tags (SPEC §3); re-run A1 with tags for this dataset",
        ),
        (
            lambda t, lab: (t, {**lab, "genre": ["g", "h"]}, 1),
            "the test split: genre class 'k' is not in labels.json; re-run A1",
        ),
    ],
)
def test_a_split_queries_cannot_be_drawn_from_is_one_line(change, said):
    test, labels, n = change(*skewed(300, seed=1))
    with pytest.raises(SuiteError) as e:
        make_queries(test, labels, ["style", "genre"], n, seed=0)
    assert str(e.value) == said


def test_a_single_image_split_is_not_empty():
    test = table({"style": ["A"]}, ["x"])
    with pytest.raises(SuiteError, match="found only 0 of 1 queries"):  # too small, not empty
        make_queries(test, {"style": ["A"]}, ["style"], 1, seed=0, max_draws=100)


# ---------------------------------------------------------------------------------------------
# The stage script


def write_dataset(data_root, n: int = 400) -> pd.DataFrame:
    """A processed synthart-format dataset (tables only: A2 never opens images)."""
    test, labels = skewed(n, seed=14)
    test["style"] = test["style"].map(
        dict(zip("ABCD", ["flat", "mosaic", "sketch", "hatching"], strict=True))
    )
    test["genre"] = test["genre"].map({"g": "portrait", "h": "landscape", "k": "abstract"})
    labels = {
        "style": ["flat", "mosaic", "sketch", "hatching"],
        "genre": ["portrait", "landscape", "abstract"],
    }
    train = test.head(20).assign(image=lambda d: d["image"].str.replace("test", "train"))
    out = data_root / "synthart"
    out.mkdir(parents=True)
    write_processed(out, Processed(labels, train, test))
    return test


def test_a2_writes_the_query_file_and_its_config(tmp_path):
    test = write_dataset(tmp_path)
    argv = ["--data-root", str(tmp_path), "--task", "synthart-multi", "--num-queries", "60"]
    assert A2.run_stage(A2.main, argv) == 0
    path = tmp_path / "synthart" / "queries_synthart-multi.csv"
    first = path.read_bytes()
    q = read_queries(tmp_path, "synthart-multi")
    assert list(q.columns) == ["query_id", "image", "style", "genre", "tags"]
    assert q["query_id"].tolist() == list(range(60))
    assert set(q["image"]) <= set(test["image"])
    tags_of = dict(zip(test["image"], test["tags"], strict=True))
    assert (q["tags"] == q["image"].map(tags_of)).all()
    assert (tmp_path / "synthart" / "queries_synthart-multi.json").exists()
    check_rules(test, q, ["style", "genre"])
    # the default seed (777) again → the same bytes
    assert A2.run_stage(A2.main, argv) == 0
    assert path.read_bytes() == first


def test_a2_before_a1_says_to_run_a1(tmp_path, capsys):
    assert A2.run_stage(A2.main, ["--data-root", str(tmp_path), "--task", "synthart-style"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "run A1_preprocess.py --dataset synthart first" in err
    assert not (tmp_path / "synthart").exists()


def test_read_queries_before_a2_says_to_run_a2(tmp_path):
    write_dataset(tmp_path)
    with pytest.raises(SuiteError, match="run A2_make_queries.py --task synthart-style first"):
        read_queries(tmp_path, "synthart-style")


def test_a2_failure_leaves_no_query_file(tmp_path, capsys):
    write_dataset(tmp_path, n=40)
    argv = ["--data-root", str(tmp_path), "--task", "synthart-multi", "--num-queries", "400"]
    assert A2.run_stage(A2.main, argv) == 2
    assert "found only" in capsys.readouterr().err
    assert not list((tmp_path / "synthart").glob("queries_*"))


# ---------------------------------------------------------------------------------------------
# The default: the protocol's 1,000, or every valid pair of a split that has fewer (issue 30)


def all_valid_pairs(test: pd.DataFrame, labels: dict[str, list[str]], attr: str) -> set:
    """Brute force, independent of src/queries.py: every (image, condition) pair SPEC §3 allows."""
    tags = [split_tags(t) for t in test["tags"]]
    out = set()
    for i, image in enumerate(test["image"]):
        for cls in labels[attr]:
            targets = [
                j for j in range(len(test)) if j != i and test[attr].iloc[j] == cls and tags[j]
            ]
            if (
                tags[i]
                and len(targets) >= MIN_TARGETS
                and min(jaccard(tags[i], tags[j]) for j in targets) < MAX_JACCARD
            ):
                out.add((image, cls))
    return out


def test_default_takes_every_valid_pair_of_a_small_split_with_a_note():
    rng = np.random.default_rng(21)
    # 4 classes × 60 images = 240 pairs < 1,000; D (8 images) is never a condition
    style = ["A"] * 20 + ["B"] * 18 + ["C"] * 14 + ["D"] * 8
    test = table({"style": style}, random_tags(rng, len(style), vocab=40))
    labels = {"style": ["A", "B", "C", "D"]}
    draw = make_queries(test, labels, ["style"], seed=3)
    got = set(zip(draw.queries["image"], draw.queries["style"], strict=True))
    expected = all_valid_pairs(test, labels, "style")
    assert got == expected and len(draw.queries) == len(expected) < QUERIES
    assert draw.queries["query_id"].tolist() == list(range(len(expected)))
    assert draw.note.startswith(f"{len(expected)} queries, not the protocol's {QUERIES}")
    # 240 pairs < 1,000: no draw was made, none skipped (the valid pairs were taken directly)
    assert draw.draws == 0 and draw.skipped == dict.fromkeys(draw.skipped, 0)
    # the order is the protocol's: rare classes' images come early (p ∝ 1/frequency)
    first = test.iloc[draw.rows[: len(expected) // 4]]["style"]
    assert (first != "A").mean() > 0.7
    check_rules(test, draw.queries, ["style"])


def test_default_order_of_a_small_splits_pairs_is_a_seeded_random_draw():
    # the same valid pairs each time; their order is drawn (∝ 1/frequency, so not sorted by it):
    # the same seed gives the same order, other seeds other orders
    rng = np.random.default_rng(21)
    style = ["A"] * 20 + ["B"] * 18 + ["C"] * 14
    test = table({"style": style}, random_tags(rng, len(style), vocab=40))
    labels = {"style": ["A", "B", "C"]}
    orders = [make_queries(test, labels, ["style"], seed=s).queries for s in (3, 3, 4, 5)]
    pd.testing.assert_frame_equal(orders[0], orders[1])
    pairs = [list(zip(o["image"], o["style"], strict=True)) for o in orders]
    assert all(sorted(p) == sorted(pairs[0]) for p in pairs)
    assert pairs[0] != pairs[2] and pairs[0] != pairs[3] and pairs[2] != pairs[3]
    # an image of the most frequent class A ahead of one of the rarest, C: drawn, not sorted
    own = [test.set_index("image").loc[[i for i, _ in p], "style"].tolist() for p in pairs]
    assert any(o.index("A") < len(o) - 1 - o[::-1].index("C") for o in own)


def test_default_takes_a_class_of_exactly_ten_images_as_a_condition_of_the_others():
    # B has exactly 10 tagged images: a B image sees 9 other B's (not a B query), any A image
    # sees all 10 (an A image conditioned on B is valid); every tag set its own (Jaccard 0)
    style = ["A"] * 15 + ["B"] * 10
    test = table({"style": style}, [f"u{i}" for i in range(len(style))])
    labels = {"style": ["A", "B"]}
    draw = make_queries(test, labels, ["style"], seed=0)
    got = set(zip(draw.queries["image"], draw.queries["style"], strict=True))
    assert got == all_valid_pairs(test, labels, "style")
    assert len(got) == 15 + 15 + 10


def test_default_falls_back_to_every_valid_pair_and_takes_the_protocols_1000():
    # 1,020 pairs, every one valid (each image its own tag); the draws stop at max_draws, so the
    # default takes 1,000 of the valid pairs and says so
    style = ["A"] * 255 + ["B"] * 255
    test = table({"style": style}, [f"u{i}" for i in range(len(style))])
    draw = make_queries(test, {"style": ["A", "B"]}, ["style"], seed=0, max_draws=10)
    assert len(draw.queries) == QUERIES and draw.draws == 10
    assert len(set(zip(draw.queries["image"], draw.queries["style"], strict=True))) == QUERIES
    assert draw.note == (
        "the protocol's 1000 queries, drawn among the 1020 valid pairs of all 1020 "
        "(image, condition) pairs"
    )


def test_default_draws_as_the_protocol_when_the_split_allows_its_1000():
    test, labels = skewed(600, seed=1)
    draw = make_queries(test, labels, ["style"], seed=777)
    asked = make_queries(test, labels, ["style"], QUERIES, seed=777)
    pd.testing.assert_frame_equal(draw.queries, asked.queries)  # the same stream, byte for byte
    assert draw.note is None and len(draw.queries) == QUERIES


def test_default_names_the_rules_when_no_pair_is_valid():
    rng = np.random.default_rng(22)
    test = table({"style": ["A"] * 9 + ["B"] * 9}, random_tags(rng, 18))
    with pytest.raises(SuiteError) as e:
        make_queries(test, {"style": ["A", "B"]}, ["style"])
    assert str(e.value) == (
        f"no valid query in the test split (18 images): a condition needs {MIN_TARGETS} other "
        f"tagged test images that carry it, one of them with tag-Jaccard < {MAX_JACCARD} to the "
        "query (SPEC §3); give the collection more test images (labels.csv's split column) or "
        "more tags"
    )


def test_a2_default_on_a_small_split_records_the_note_and_the_test_classes(tmp_path, caplog):
    write_dataset(tmp_path, n=60)
    argv = ["--data-root", str(tmp_path), "--task", "synthart-style"]
    with caplog.at_level("INFO"):
        assert A2.run_stage(A2.main, argv) == 0
    meta = json.loads((tmp_path / "synthart" / "queries_synthart-style.json").read_text())
    q = read_queries(tmp_path, "synthart-style")
    assert len(q) == meta["num_queries"] == meta["resolved"]["num_queries"] < QUERIES
    assert meta["args"]["num_queries"] is None and meta["note"] in caplog.text
    assert sum(meta["test_class_counts"]["style"].values()) == meta["test_images"] == 60
    # --num-queries still asks exactly, and is refused when the split cannot give it
    assert A2.run_stage(A2.main, [*argv, "--num-queries", str(len(q) + 1)]) == 2
    assert A2.run_stage(A2.main, [*argv, "--num-queries", str(len(q))]) == 0


# ---------------------------------------------------------------------------------------------
# Reading a query file back


def write_query_file(data_root, ids: list, images: list[str]) -> Path:
    """A synthart-style query file with these query ids and images (style flat, tags t)."""
    path = data_root / "synthart" / "queries_synthart-style.csv"
    rows = "".join(f"{i},{im},flat,t\n" for i, im in zip(ids, images, strict=True))
    path.write_text("query_id,image,style,tags\n" + rows)
    return path


@pytest.mark.parametrize("bad", ["x", "1.5", "-3", str(2**53), "1e30"])
def test_a_query_id_that_is_not_an_integer_from_0_to_2_to_the_53_is_refused(tmp_path, bad):
    test = write_dataset(tmp_path)
    path = write_query_file(tmp_path, [0, bad, 2], list(test["image"][:3]))
    with pytest.raises(SuiteError) as e:
        read_queries(tmp_path, "synthart-style")
    assert str(e.value) == (
        f"{path} has a query_id that is not an integer ≥ 0; "
        "re-run A2_make_queries.py --task synthart-style"
    )


def test_query_ids_up_to_2_to_the_53_are_read_as_integers(tmp_path):
    test = write_dataset(tmp_path)
    ids = [0, 200, 2**53 - 1]
    write_query_file(tmp_path, ids, list(test["image"][:3]))
    q = read_queries(tmp_path, "synthart-style")
    assert q["query_id"].dtype == np.int64 and q["query_id"].tolist() == ids


def test_a_repeated_query_id_is_named(tmp_path):
    test = write_dataset(tmp_path)
    path = write_query_file(tmp_path, [0, 1, 1, 2, 2], list(test["image"][:5]))
    with pytest.raises(SuiteError) as e:
        read_queries(tmp_path, "synthart-style")
    assert str(e.value) == (
        f"{path} has query_id 1 twice; re-run A2_make_queries.py --task synthart-style"
    )


def test_query_images_of_the_train_split_are_refused_and_others_left_to_the_stages(tmp_path):
    test = write_dataset(tmp_path)
    train = pd.read_csv(tmp_path / "synthart" / "train.csv")["image"]
    images = [test["image"][0], train[3], "images/elsewhere.png", train[5]]
    path = write_query_file(tmp_path, [0, 1, 2, 3], images)
    with pytest.raises(SuiteError) as e:
        read_queries(tmp_path, "synthart-style")
    assert str(e.value) == (
        f"{path} has 2 query image(s) of the train split (e.g. {train[3]}); "
        "re-run A2_make_queries.py --task synthart-style"
    )
    # an image in neither split is no train image: E1 and E2 say it has no embedding
    write_query_file(tmp_path, [0, 1], [test["image"][0], "images/elsewhere.png"])
    assert read_queries(tmp_path, "synthart-style")["image"].tolist()[1] == "images/elsewhere.png"


def test_a_user_datasets_queries_and_test_split_are_read(tmp_path):
    labels = {"colour": ["red", "blue"]}
    test = table({"colour": ["red", "blue"] * 6}, ["a|b"] * 12)
    out = tmp_path / "mine"
    out.mkdir()
    write_processed(
        out, Processed(labels, test.head(4).assign(image=lambda d: "tr" + d["image"]), test)
    )
    (out / "dataset.json").write_text(json.dumps({"attributes": ["colour"], "classes": labels}))
    (out / "queries_mine:colour.csv").write_text(
        f"query_id,image,colour,tags\n0,{test['image'][1]},red,a|b\n"
    )
    q = read_queries(tmp_path, "mine:colour")
    assert q["image"].tolist() == [test["image"][1]] and q["colour"].tolist() == ["red"]
    split, got_labels = load_test_split(tmp_path, "mine:colour")
    assert got_labels == labels and split["image"].tolist() == test["image"].tolist()
