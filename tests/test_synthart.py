"""SynthArt: determinism, labels, tags, splits, and that tags carry context but never the style."""

from __future__ import annotations

import importlib
import json
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.preprocessing import MultiLabelBinarizer

from src.synthart import GENRES, STYLES, draw_scene, generate, render, sample_labels
from src.tags import split_tags

A1 = importlib.import_module("A1_preprocess")


def run_a1(root, *extra: str) -> int:
    argv = ["--dataset", "synthart", "--data-root", str(root), *extra]
    return A1.run_stage(A1.main, argv)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Two A1 runs with the same seed and one with another seed (60 images of 32 px)."""
    roots = {k: tmp_path_factory.mktemp(k) for k in ("a", "b", "c")}
    for k, root in roots.items():
        seed = "1" if k == "c" else "0"
        assert run_a1(root, "--num-images", "60", "--image-size", "32", "--seed", seed) == 0
    return {k: root / "synthart" for k, root in roots.items()}


@pytest.fixture(scope="module")
def samples():
    """600 generated images (no files) with their labels and tags."""
    styles, genres = sample_labels(3, 600)
    return [
        generate(3, i, STYLES[s], GENRES[g], 32)
        for i, (s, g) in enumerate(zip(styles, genres, strict=True))
    ]


def files(folder) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "config.json"  # config.json records the time of the run
    }


def test_same_seed_gives_byte_identical_files(small):
    a, b, c = files(small["a"]), files(small["b"]), files(small["c"])
    assert len(a) == 60 + 3  # 60 PNGs, labels.json, train.csv, test.csv
    assert a == b
    assert a["train.csv"] != c["train.csv"]
    shared = set(a) & set(c) - {"labels.json", "train.csv", "test.csv"}
    assert any(a[k] != c[k] for k in shared)


def test_splits_labels_and_images(small):
    root = small["a"]
    labels = json.loads((root / "labels.json").read_text())
    assert labels == {"style": list(STYLES), "genre": list(GENRES)}
    assert len(STYLES) >= 6 and len(GENRES) >= 6
    train = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    test = pd.read_csv(root / "test.csv", dtype=str, keep_default_na=False)
    assert (len(train), len(test)) == (48, 12)
    assert list(train.columns) == ["image", "style", "genre", "tags"]
    assert not set(train["image"]) & set(test["image"])
    for split, df in (("train", train), ("test", test)):
        assert df["image"].str.startswith(f"images/{split}/").all()
        assert set(df["style"]) <= set(STYLES) and set(df["genre"]) <= set(GENRES)
        for rel in df["image"].head(5):
            with Image.open(root / rel) as im:
                assert im.format == "PNG" and im.size == (32, 32) and im.mode == "RGB"


def test_tags_are_five_to_twelve_and_name_no_style(samples):
    for s in samples:
        assert 5 <= len(s.tags) <= 12, s.tags
        assert len(set(s.tags)) == len(s.tags)
        assert s.genre in s.tags
        assert not set(s.tags) & set(STYLES)
        assert all(t and "|" not in t and t == t.strip() for t in s.tags)


def test_style_changes_pixels_but_not_tags():
    scene = draw_scene("seascape", np.random.default_rng(5), 64)
    images = [render(scene, style, np.random.default_rng(6)) for style in STYLES]
    tags = [generate(0, 7, style, "cityscape").tags for style in STYLES]
    assert all(t == tags[0] for t in tags)
    for x, y in combinations(images, 2):
        assert np.abs(x.astype(int) - y.astype(int)).mean() > 5


def test_tags_predict_the_genre_but_not_the_style(samples):
    # A linear classifier on the tag sets recovers the genre (tags carry context) but does no better
    # than chance on the style (tags are drawn before, and independently of, the style).
    X = MultiLabelBinarizer().fit_transform([s.tags for s in samples])
    style = np.array([s.style for s in samples])
    genre = np.array([s.genre for s in samples])
    clf = LogisticRegression(max_iter=500)
    genre_acc = cross_val_score(clf, X, genre, cv=3).mean()
    style_acc = cross_val_score(clf, X, style, cv=3).mean()
    majority = pd.Series(style).value_counts(normalize=True).max()
    assert genre_acc > 0.9
    assert style_acc < majority + 0.06


def test_tag_overlap_suits_the_query_protocol(samples):
    tags = [frozenset(s.tags) for s in samples[:300]]
    genre = np.array([s.genre for s in samples[:300]])
    i, j = np.triu_indices(len(tags), k=1)
    jac = np.array(
        [len(tags[a] & tags[b]) / len(tags[a] | tags[b]) for a, b in zip(i, j, strict=True)]
    )
    same = genre[i] == genre[j]
    # dissimilar targets (Jaccard < 0.1) are common, yet images of one genre share context
    assert (jac < 0.1).mean() > 0.3
    assert jac[same].mean() > 2 * jac[~same].mean()


def test_class_frequencies_are_mildly_unequal():
    styles, genres = sample_labels(0, 3000)
    for ids, k in ((styles, len(STYLES)), (genres, len(GENRES))):
        counts = np.bincount(ids, minlength=k)
        assert counts.min() > 0.6 * 3000 / k
        assert 1.3 < counts.max() / counts.min() < 3


def test_image_i_does_not_depend_on_the_image_count(small, tmp_path):
    # each image is seeded by (seed, index): a 30-image run paints the same first 30 images
    assert run_a1(tmp_path, "--num-images", "30", "--image-size", "32") == 0
    few = {p.name: p.read_bytes() for p in (tmp_path / "synthart" / "images").rglob("*.png")}
    many = {p.name: p.read_bytes() for p in (small["a"] / "images").rglob("*.png")}
    assert len(few) == 30 and all(many[name] == data for name, data in few.items())


def test_bad_sizes_fail_cleanly(tmp_path, capsys):
    """Refused when the arguments are parsed (argparse's one line, exit 2), before any work."""
    for flags, said in [
        (("--num-images", "5"), "argument --num-images: 5 is too small"),
        (("--image-size", "8", "--num-images", "20"), "argument --image-size: 8 is too small"),
    ]:
        with pytest.raises(SystemExit) as e:
            run_a1(tmp_path, *flags)
        assert e.value.code == 2 and said in capsys.readouterr().err
    assert not (tmp_path / "synthart").exists()


def test_tags_cells_round_trip(small):
    test = pd.read_csv(small["a"] / "test.csv", dtype=str, keep_default_na=False)
    for cell in test["tags"]:
        assert 5 <= len(split_tags(cell)) <= 12
