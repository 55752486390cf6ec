"""A1 on a miniature aPY: one sample per object, crops (sizes, content), clamping, tags, errors."""

from __future__ import annotations

import numpy as np
import pytest
from _fixtures_real import APY_NAMES, leftovers, make_apy, read_out, run_a1
from PIL import Image


@pytest.fixture
def apy(tmp_path):
    return make_apy(tmp_path / "raw")


def argv(fx, data, *extra):
    base = ["--dataset", "apy", "--source", fx["source"], "--images", fx["images"]]
    return [*base, "--data-root", data, *extra]


def clamp(box, size):
    w, h = size
    x0, y0, x1, y1 = box
    return max(0, x0), max(0, y0), min(w, x1), min(h, y1)


def test_objects_crops_split_and_tags(tmp_path, capsys, apy):
    data = tmp_path / "data"
    rc, out, err = run_a1(capsys, *argv(apy, data))
    assert rc == 0, err
    labels, train, test, config = read_out(data, "apy")

    cats = {o[1] for o in apy["train"] + apy["test"]}
    assert labels == {"category": sorted(cats)}
    # One row per object line, in file order; the box entirely outside its image is skipped.
    assert list(train["image"]) == [
        "images/train/2008_000001_0.png",
        "images/train/2008_000001_1.png",
        "images/train/2008_000001_2.png",
        "images/train/2008_000002_0.png",
    ]
    assert list(test["image"]) == [
        "images/test/2008_000004_0.png",
        "images/test/2008_000004_1.png",
        "images/test/2008_000001_0.png",
    ]
    assert config["empty_boxes"] == 1 and config["objects"] == {"train": 5, "test": 3}
    assert list(train["category"]) == [o[1] for o in apy["train"][:4]]

    for df, objs in ((train, apy["train"][:4]), (test, apy["test"])):
        for (image, category, tags), (src, cat, box, on) in zip(
            df.itertuples(index=False), objs, strict=True
        ):
            # crop size = the box clamped to the image (img[ymin:ymax, xmin:xmax])
            x0, y0, x1, y1 = clamp(box, apy["sizes"][src])
            with Image.open(data / "apy" / image) as im:
                assert im.size == (x1 - x0, y1 - y0)
            # tags: names of the attributes set to 1 (in file order), then the category
            assert tags.split("|") == [APY_NAMES[k] for k in sorted(on)] + [cat]
            assert category == cat
    assert "Jet engine" in train["tags"][0].split("|")  # names with spaces survive

    # Content: the first object lies in the red left half, the second in the blue right half.
    with Image.open(data / "apy" / train["image"][0]) as im:
        r, g, b = np.asarray(im, dtype=float).reshape(-1, 3).mean(0)
        assert r > 150 and b < 80
    with Image.open(data / "apy" / train["image"][1]) as im:
        r, g, b = np.asarray(im, dtype=float).reshape(-1, 3).mean(0)
        assert b > 150 and r < 80


def test_crops_are_lossless_at_full_resolution(tmp_path, capsys, apy):
    data = tmp_path / "data"
    rc, _, err = run_a1(capsys, *argv(apy, data))
    assert rc == 0, err
    _, train, test, config = read_out(data, "apy")
    assert config["quirks"] == []
    for df, objs in ((train, apy["train"][:4]), (test, apy["test"])):
        for image, (src, _, box, _) in zip(df["image"], objs, strict=True):
            x0, y0, x1, y1 = clamp(box, apy["sizes"][src])
            with Image.open(apy["images"] / src) as im:
                want = np.asarray(im.convert("RGB"))[y0:y1, x0:x1]  # img[ymin:ymax, xmin:xmax]
            with Image.open(data / "apy" / image) as im:
                assert im.format == "PNG"
                assert np.array_equal(np.asarray(im.convert("RGB")), want)  # pixel for pixel


def test_shorter_side_and_foreign_quirks_are_refused(tmp_path, capsys, apy):
    data = tmp_path / "data"
    rc, _, err = run_a1(capsys, *argv(apy, data, "--shorter-side", "256"))
    assert rc == 2 and "--shorter-side applies to wikiart only" in err
    rc, _, err = run_a1(capsys, *argv(apy, data, "--authors-quirks", "cub-tag-shift"))
    assert rc == 2 and "applies to cub, not apy" in err and "\n" not in err
    rc, _, err = run_a1(capsys, *argv(apy, data, "--split-from", tmp_path / "x.csv"))
    assert rc == 2 and "--split-from applies to wikiart only" in err
    assert leftovers(data) == []
    # 'all' means the quirks of this dataset: none for aPY
    rc, _, err = run_a1(capsys, *argv(apy, data, "--authors-quirks", "all"))
    assert rc == 0, err
    assert read_out(data, "apy")[3]["quirks"] == []


@pytest.mark.parametrize(
    "line_no, bad, why",
    [
        (2, "2008_000001.jpg person 22 1 38\n", "fields"),  # too few fields
        (
            3,
            "2008_000001.jpg person 1 x 3 4 " + "0 " * 64 + "\n",
            "malformed",
        ),  # non-int coordinate
        (1, "2008_000001.jpg person 1 2 3 4 " + "2 " * 64 + "\n", "0 or 1"),  # value not 0/1
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, capsys, apy, line_no, bad, why):
    f = apy["source"] / "apascal_train.txt"
    lines = f.read_text().splitlines(keepends=True)
    lines[line_no - 1] = bad
    f.write_text("".join(lines))
    data = tmp_path / "data"
    rc, _, err = run_a1(capsys, *argv(apy, data))
    assert rc == 2 and f"apascal_train.txt line {line_no}:" in err and why in err
    assert "\n" not in err
    assert leftovers(data) == []


def test_unreadable_image_skipped_or_fatal_with_strict(tmp_path, capsys, apy):
    (apy["images"] / "2008_000004.jpg").write_bytes(b"\xff\xd8 truncated")
    data = tmp_path / "data"
    rc, _, err = run_a1(capsys, *argv(apy, data))
    assert rc == 0, err
    _, _, test, config = read_out(data, "apy")
    assert list(test["image"]) == ["images/test/2008_000001_0.png"]
    assert config["skipped_images"] == 2  # both objects of the unreadable image

    rc, _, err = run_a1(capsys, *argv(apy, tmp_path / "strict", "--strict"))
    assert rc == 2 and "unreadable image" in err and "2008_000004.jpg" in err
    assert leftovers(tmp_path / "strict") == []


def test_bad_input_messages(tmp_path, capsys, apy):
    data = tmp_path / "data"
    rc, _, err = run_a1(capsys, "--dataset", "apy", "--data-root", data, "--download")
    assert rc == 2
    assert "attribute_data" in err and "VOC2008" in err and "--images" in err

    rc, _, err = run_a1(capsys, "--dataset", "apy", "--source", apy["source"], "--data-root", data)
    assert rc == 2 and "--images" in err

    rc, _, err = run_a1(capsys, *argv(apy, data)[:-2], "--images", tmp_path, "--data-root", data)
    assert rc == 2 and "none of the" in err and "JPEGImages" in err

    (apy["source"] / "apascal_test.txt").unlink()
    rc, _, err = run_a1(capsys, *argv(apy, data))
    assert rc == 2 and "apascal_test.txt not found" in err and "vision.cs.uiuc.edu" in err
    assert leftovers(data) == []
