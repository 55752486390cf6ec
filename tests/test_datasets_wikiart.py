"""A1 on a miniature WikiArt: parquet shards and style folders, the seed-777 split, tags, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _fixtures_real import (
    WIKI_ARTISTS,
    WIKI_GENRES,
    WIKI_STYLES,
    hf_metadata,
    leftovers,
    make_wikiart_folders,
    make_wikiart_parquet,
    read_out,
    run_a1,
)
from PIL import Image

from src.datasets.wikiart import authors_tag_items, split_indices, tag_items
from src.tags import join_tags, split_tags


def argv(source, data, *extra):
    return ["--dataset", "wikiart", "--source", source, "--data-root", data, *extra]


def expected_rel(rows):
    """images/<Style>/<file>.jpg, the file named after image.path or the row number."""
    out = []
    for n, r in enumerate(rows):
        name = r["image"]["path"] or f"{n:06d}.jpg"
        out.append(f"images/{WIKI_STYLES[r['style']]}/{Path(name).stem}.jpg")
    return out


def test_split_sizes_match_the_paper():
    train, test = split_indices(81_444)
    assert (len(train), len(test)) == (65_155, 16_289)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(81_444))
    np.random.seed(777)  # the authors' code: global seed, shuffle an arange
    idx = np.arange(100)
    np.random.shuffle(idx)
    assert np.array_equal(np.concatenate(split_indices(100)), idx)


def test_parquet_labels_split_images_and_fallback_tags(tmp_path, capsys):
    rows = make_wikiart_parquet(tmp_path / "hf")
    data = tmp_path / "data"
    rc, out, err = run_a1(capsys, *argv(tmp_path / "hf", data))
    assert rc == 0, err
    labels, train, test, config = read_out(data, "wikiart")

    # Class names come from the schema metadata, in id order (registry attributes style, genre).
    assert labels == {"style": WIKI_STYLES, "genre": WIKI_GENRES}
    assert list(train.columns) == ["image", "style", "genre", "tags"]

    # Rows in source order (shard by shard), permuted with numpy seed 777, first floor(0.8 n).
    n = len(rows)
    perm = np.random.RandomState(777).permutation(n)
    rel = expected_rel(rows)
    assert len(train) == int(0.8 * n) == 16 and len(test) == n - 16
    assert list(train["image"]) == [rel[i] for i in perm[:16]]
    assert list(test["image"]) == [rel[i] for i in perm[16:]]
    assert list(train["style"]) == [WIKI_STYLES[rows[i]["style"]] for i in perm[:16]]
    assert list(test["genre"]) == [WIKI_GENRES[rows[i]["genre"]] for i in perm[16:]]

    # Without --attributions: tags = genre + style + artist, lower-cased, spaces removed; said loudly.
    for df, idx in ((train, perm[:16]), (test, perm[16:])):
        for tags, i in zip(df["tags"], idx, strict=True):
            r = rows[i]
            want = [
                WIKI_GENRES[r["genre"]].lower().replace(" ", ""),
                WIKI_STYLES[r["style"]].lower(),
                WIKI_ARTISTS[r["artist"]].lower().replace(" ", ""),
            ]
            assert tags.split("|") == want
    assert config["tag_source"].startswith("genre+style+artist")
    assert "far less informative" in config["warning"] and "far less informative" in out

    for image in list(train["image"])[:4]:
        with Image.open(data / "wikiart" / image) as im:
            assert min(im.size) == 256


def test_parquet_with_attributions_table(tmp_path, capsys):
    rows = make_wikiart_parquet(tmp_path / "hf", sizes=(7, 6))
    rel = expected_rel(rows)
    keys = [f"{WIKI_STYLES[r['style']]}/{r['image']['path']}" for r in rows if r["image"]["path"]]
    table = pd.DataFrame(
        {
            "path": [f"./data/wikiart/images/{k}" for k in keys],  # matched on the last 2 parts
            "Genre": ["portrait"] * len(keys),
            "Style": ["Post Impressionism"] * len(keys),
            "Media": ["oil, canvas"] + [""] * (len(keys) - 1),  # missing values are empty
            "tag": ["Banana, Nanny Goat,, Portraits"] + ["Sea"] * (len(keys) - 1),
        }
    )
    table.iloc[2, 1:] = ""  # a row with nothing at all: empty tags
    dup = table.iloc[[1]].assign(tag="Second Row", Media="", Genre="", Style="")
    table = pd.concat([table, dup])  # a repeated path: the last row wins (as in the authors' dict)
    table.to_csv(tmp_path / "wikiart_attributions.csv", index=False)
    data = tmp_path / "data"
    rc, out, err = run_a1(
        capsys,
        *argv(tmp_path / "hf", data, "--shorter-side", "0"),
        *["--attributions", tmp_path / "wikiart_attributions.csv"],
    )
    assert rc == 0, err
    _, train, test, config = read_out(data, "wikiart")
    both = pd.concat([train, test])
    tags = dict(zip(both["image"], both["tags"], strict=True))

    first = next(i for i, r in enumerate(rows) if r["image"]["path"])
    # tag items, media items, genre, style; lower-cased, spaces removed, no 'nan' mangling
    assert tags[rel[first]].split("|") == [
        "banana",
        "nannygoat",
        "portraits",
        "oil",
        "canvas",
        "portrait",
        "postimpressionism",
    ]
    third = [i for i, r in enumerate(rows) if r["image"]["path"]][2]
    assert tags[rel[third]] == ""
    second = [i for i, r in enumerate(rows) if r["image"]["path"]][1]
    assert tags[rel[second]] == "secondrow"
    # rows without a path in the parquet have no table row: empty tags, counted
    no_path = [i for i, r in enumerate(rows) if not r["image"]["path"]]
    assert all(tags[rel[i]] == "" for i in no_path)
    assert config["attributions_matched"] == len(keys)
    assert config["tag_source"] == "attributions" and "warning" not in config
    assert f"{len(no_path)} of {len(rows)} images have no attributions row" in out


def test_tag_items_rule():
    assert tag_items("Nan Goldin, banana", "", "Unknown Genre", "Art_Nouveau") == [
        "nangoldin",
        "banana",
        "unknowngenre",
        "art_nouveau",
    ]


def test_style_folders_with_and_without_attributions(tmp_path, capsys):
    keys = make_wikiart_folders(tmp_path / "folders")
    data = tmp_path / "data"
    rc, out, err = run_a1(capsys, *argv(tmp_path / "folders", data, "--shorter-side", "0"))
    assert rc == 0, err
    labels, train, test, config = read_out(data, "wikiart")
    assert labels == {"style": sorted(WIKI_STYLES), "genre": ["Unknown Genre"]}
    assert "wikiart-multi task is meaningless" in out
    perm = np.random.RandomState(777).permutation(len(keys))
    n_train = int(0.8 * len(keys))
    assert list(train["image"]) == [f"images/{keys[i]}" for i in perm[:n_train]]
    assert list(test["image"]) == [f"images/{keys[i]}" for i in perm[n_train:]]
    artist = keys[perm[0]].split("/")[1].split("_")[0]
    assert train["tags"][0].split("|") == [
        "unknowngenre",
        keys[perm[0]].split("/")[0].lower(),
        artist,
    ]
    with (
        Image.open(data / "wikiart" / train["image"][0]) as im,
        Image.open(tmp_path / "folders" / keys[perm[0]]) as src,
    ):
        assert im.size == src.size

    # With the table the genre comes from its Genre column.
    genres = ["landscape" if i % 2 else "portrait" for i in range(len(keys))]
    pd.DataFrame({"path": keys, "Genre": genres, "Style": "x", "Media": "", "tag": "t"}).to_csv(
        tmp_path / "attr.csv", index=False
    )
    rc, out, err = run_a1(
        capsys,
        *argv(tmp_path / "folders", data, "--shorter-side", "0"),
        *["--attributions", tmp_path / "attr.csv"],
    )
    assert rc == 0, err
    labels, train, _, _ = read_out(data, "wikiart")
    assert labels["genre"] == ["landscape", "portrait"]
    assert list(train["genre"]) == [genres[i] for i in perm[:n_train]]
    assert "meaningless" not in out


def test_unreadable_bytes_skipped_or_fatal_with_strict(tmp_path, capsys):
    from _fixtures_real import wiki_rows, write_shard

    rows = wiki_rows(10)
    rows[3]["image"]["bytes"] = b"garbage"
    write_shard(tmp_path / "hf" / "train-00000-of-00001.parquet", rows, hf_metadata())
    data = tmp_path / "data"
    rc, _, err = run_a1(capsys, *argv(tmp_path / "hf", data, "--shorter-side", "0"))
    assert rc == 0, err
    _, train, test, config = read_out(data, "wikiart")
    assert config["skipped_images"] == 1 and len(train) + len(test) == 9
    bad = expected_rel(rows)[3]
    assert bad not in set(train["image"]) | set(test["image"])
    # the split is over all source rows: the others keep their place
    perm = np.random.RandomState(777).permutation(10)
    assert list(train["image"]) == [expected_rel(rows)[i] for i in perm[:8] if i != 3]

    rc, _, err = run_a1(capsys, *argv(tmp_path / "hf", tmp_path / "strict", "--strict"))
    assert rc == 2 and "unreadable image" in err and Path(bad).name in err
    assert leftovers(tmp_path / "strict") == []


@pytest.mark.parametrize(
    "metadata, message",
    [
        ({}, "lacks the 'huggingface' metadata"),
        (hf_metadata({"style": {"names": WIKI_STYLES}}), "lacks the 'huggingface' metadata"),
    ],
)
def test_parquet_without_class_names_fails_cleanly(tmp_path, capsys, metadata, message):
    make_wikiart_parquet(tmp_path / "hf", sizes=(4,), metadata=metadata)
    data = tmp_path / "data"
    rc, _, err = run_a1(capsys, *argv(tmp_path / "hf", data))
    assert rc == 2 and message in err and "huggan/wikiart" in err
    assert leftovers(data) == []


def test_bad_input_messages(tmp_path, capsys):
    data = tmp_path / "data"
    rc, _, err = run_a1(capsys, "--dataset", "wikiart", "--download", "--data-root", data)
    assert rc == 2
    assert "huggingface-cli download huggan/wikiart --repo-type dataset --local-dir DIR" in err

    rc, _, err = run_a1(capsys, "--dataset", "wikiart", "--data-root", data)
    assert rc == 2 and "--source" in err

    (tmp_path / "empty").mkdir()
    rc, _, err = run_a1(capsys, *argv(tmp_path / "empty", data))
    assert rc == 2 and "neither *.parquet shards nor" in err

    make_wikiart_folders(tmp_path / "folders")
    rc, _, err = run_a1(
        capsys, *argv(tmp_path / "folders", data, "--attributions", tmp_path / "no.csv")
    )
    assert rc == 2 and "no.csv not found" in err

    pd.DataFrame({"path": ["a/b.jpg"], "Genre": ["g"]}).to_csv(tmp_path / "t.csv", index=False)
    rc, _, err = run_a1(
        capsys, *argv(tmp_path / "folders", data, "--attributions", tmp_path / "t.csv")
    )
    assert rc == 2 and "expected columns path, Genre, Style, Media, tag" in err

    full = {"Genre": ["g"], "Style": ["s"], "Media": [""], "tag": [""]}
    pd.DataFrame({"path": ["nowhere/b.jpg"], **full}).to_csv(tmp_path / "u.csv", index=False)
    rc, _, err = run_a1(
        capsys, *argv(tmp_path / "folders", data, "--attributions", tmp_path / "u.csv")
    )
    assert rc == 2 and "no row of the attributions table matches" in err
    assert "\n" not in err
    assert leftovers(data) == []


# ---------------------------------------------------------------------------------------------
# The authors' tag cleaning (quirk wikiart-tag-cleaning)


# The suite's tags of genre "Portrait", style "Post Impressionism", media "oil, canvas" and tag
# "Banana,,, Nanny Goat" (in tag, media, genre, style order)
OURS_BANANA = ["banana", "nannygoat", "oil", "canvas", "portrait", "postimpressionism"]


def test_tag_cleaning_ours_and_the_authors():
    genre, style, media, tag = (
        "Portrait",
        "Post Impressionism",
        "oil, canvas",
        "banana,,, nanny goat",
    )
    # ours: every word survives, empty items are dropped
    assert tag_items(tag, media, genre, style) == OURS_BANANA
    # theirs: "nan" deleted inside words, one pass of ',,' → ',' leaves an empty item from ',,,'
    assert authors_tag_items(genre, style, media, tag) == [
        "portrait",
        "postimpressionism",
        "oil",
        "canvas",
        "baa",
        "",
        "nygoat",
    ]
    # "Nan" is deleted only in lower case (they lower-case afterwards); missing fields are left
    # out (no empty item from them); ',,' becomes ','; outer commas are stripped
    assert authors_tag_items("Nan Goldin", "", "a,,b", ",x,") == ["nangoldin", "a", "b", "x"]


def test_an_empty_tag_survives_the_csv_cell():
    assert join_tags(["a", "", "b", "a"]) == "a|b"  # ours: dropped
    assert join_tags(["a", "", "b", "a"], keep_empty=True) == "a|b|"
    assert split_tags("a|b|") == {"a", "b", ""}
    assert join_tags([""], keep_empty=True) == "|" and split_tags("|") == {""}
    assert split_tags("a|b") == {"a", "b"} and split_tags("") == frozenset()


def test_attributions_with_the_authors_cleaning(tmp_path, capsys):
    rows = make_wikiart_parquet(tmp_path / "hf", sizes=(6,))
    rel = expected_rel(rows)
    named = [i for i, r in enumerate(rows) if r["image"]["path"]]
    keys = [f"{WIKI_STYLES[rows[i]['style']]}/{rows[i]['image']['path']}" for i in named]
    table = pd.DataFrame(
        {
            "path": keys,
            "Genre": ["portrait"] * len(keys),
            "Style": ["Post Impressionism"] * len(keys),
            "Media": ["oil, canvas", "NaN"] + [""] * (len(keys) - 2),
            "tag": ["Banana,,, Nanny Goat", "sea"] + ["x"] * (len(keys) - 2),
        }
    )
    table.to_csv(tmp_path / "attr.csv", index=False)
    base = argv(tmp_path / "hf", tmp_path / "d", "--attributions", tmp_path / "attr.csv")

    def tags_by_image(data):
        _, train, test, config = read_out(data, "wikiart")
        both = pd.concat([train, test])
        return dict(zip(both["image"], both["tags"], strict=True)), config

    rc, _, err = run_a1(capsys, *base)
    assert rc == 0, err
    ours, config = tags_by_image(tmp_path / "d")
    assert config["quirks"] == [] and config["tag_cleaning"] == "suite"
    assert split_tags(ours[rel[named[0]]]) == set(OURS_BANANA)
    assert split_tags(ours[rel[named[1]]]) == {"sea", "nan", "portrait", "postimpressionism"}

    for flag in ("wikiart-tag-cleaning", "all"):
        data = tmp_path / flag
        rc, _, err = run_a1(
            capsys, *base[:-4], "--data-root", data, *base[-2:], "--authors-quirks", flag
        )
        assert rc == 0, err
        theirs, config = tags_by_image(data)
        assert config["quirks"] == ["wikiart-tag-cleaning"]
        assert split_tags(theirs[rel[named[0]]]) == {
            "baa",
            "",
            "nannygoat",  # "Nan" survives: the deletion runs before lower-casing
            "oil",
            "canvas",
            "portrait",
            "postimpressionism",
        }
        # pandas read the string "NaN" as missing in their code: left out, no empty item
        assert split_tags(theirs[rel[named[1]]]) == {"sea", "portrait", "postimpressionism"}


# ---------------------------------------------------------------------------------------------
# --split-from: the authors' split membership


def authors_split_files(tmp_path, keys: list[str], seed: int = 5) -> tuple[list[str], list[str]]:
    """Their preprocessed_wikiart_{train,test}.csv: the seed-777 permutation of THEIR row order
    (here: `keys` shuffled), paths under ./data/wikiart/images, integer labels."""
    order = [keys[i] for i in np.random.default_rng(seed).permutation(len(keys))]
    perm = np.random.RandomState(777).permutation(len(order))
    n_train = int(0.8 * len(order))
    train, test = [order[i] for i in perm[:n_train]], [order[i] for i in perm[n_train:]]
    for name, part in (("train", train), ("test", test)):
        pd.DataFrame(
            {
                "path": [f"./data/wikiart/images/{k}" for k in part],
                "artist": 0,
                "genre": 1,
                "style": 2,
            }
        ).to_csv(tmp_path / f"preprocessed_wikiart_{name}.csv", index=False)
    return train, test


def test_split_from_the_authors_files(tmp_path, capsys):
    keys = make_wikiart_folders(tmp_path / "folders")
    their_train, their_test = authors_split_files(tmp_path, keys)
    train_csv = tmp_path / "preprocessed_wikiart_train.csv"
    test_csv = tmp_path / "preprocessed_wikiart_test.csv"

    # the default split differs from theirs (their permutation ran over another row order)
    rc, _, err = run_a1(capsys, *argv(tmp_path / "folders", tmp_path / "default"))
    assert rc == 0, err
    _, train, _, _ = read_out(tmp_path / "default", "wikiart")
    assert set(train["image"]) != {f"images/{k}" for k in their_train}

    # the train file alone: their train rows in their order, every other image is test
    rc, _, err = run_a1(
        capsys, *argv(tmp_path / "folders", tmp_path / "one", "--split-from", train_csv)
    )
    assert rc == 0, err
    _, train, test, config = read_out(tmp_path / "one", "wikiart")
    assert list(train["image"]) == [f"images/{k}" for k in their_train]
    assert list(test["image"]) == [f"images/{k}" for k in keys if k not in their_train]
    assert config["split"].startswith("the authors' split files")
    assert config["split_unmatched"] == 0 and config["split_left_out"] == 0

    # both files: their test order too; an extra source image in neither file is left out
    extra = tmp_path / "folders" / "Cubism" / "zz_extra.jpg"
    extra.write_bytes((tmp_path / "folders" / keys[0]).read_bytes())
    data = tmp_path / "both"
    rc, out, err = run_a1(
        capsys, *argv(tmp_path / "folders", data, "--split-from", train_csv, test_csv)
    )
    assert rc == 0, err
    _, train, test, config = read_out(data, "wikiart")
    assert list(train["image"]) == [f"images/{k}" for k in their_train]
    assert list(test["image"]) == [f"images/{k}" for k in their_test]
    assert config["split_left_out"] == 1 and "Cubism/zz_extra.jpg" in out


def test_split_from_bad_files(tmp_path, capsys):
    keys = make_wikiart_folders(tmp_path / "folders")
    authors_split_files(tmp_path, keys)
    train_csv = tmp_path / "preprocessed_wikiart_train.csv"
    data = tmp_path / "d"
    base = argv(tmp_path / "folders", data, "--split-from")

    rc, _, err = run_a1(capsys, *base, train_csv, train_csv)
    assert rc == 2 and "in both the train and the test file" in err

    pd.DataFrame({"file": keys}).to_csv(tmp_path / "nopath.csv", index=False)
    rc, _, err = run_a1(capsys, *base, tmp_path / "nopath.csv")
    assert rc == 2 and "nopath.csv" in err and "preprocessed_wikiart_train.csv" in err

    pd.DataFrame({"path": ["Elsewhere/none.jpg"]}).to_csv(tmp_path / "nomatch.csv", index=False)
    rc, _, err = run_a1(capsys, *base, tmp_path / "nomatch.csv")
    assert rc == 2 and "no listed image matches" in err

    rc, _, err = run_a1(capsys, *base, tmp_path / "missing.csv")
    assert rc == 2 and "missing.csv not found" in err
    assert "\n" not in err
    assert leftovers(data) == []
