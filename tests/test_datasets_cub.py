"""A1 on a miniature CUB-200-2011: labels, split, quantile tag filter, layouts, --download, errors."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _fixtures_real import (
    CUB_ATTRS,
    CUB_KEPT,
    CUB_SPECIES,
    CUB_THRESHOLD,
    leftovers,
    make_cub,
    read_out,
    run_a1,
)
from sklearn.model_selection import StratifiedShuffleSplit

import src.datasets.cub as cub
from src.download import safe_extract
from src.errors import SuiteError


@pytest.fixture
def cub_src(tmp_path):
    return tmp_path / "raw", make_cub(tmp_path / "raw")


def expected_split(species: list[str]):
    sss = StratifiedShuffleSplit(n_splits=1, test_size=0.3, random_state=42)
    return next(sss.split(np.zeros(len(species)), species))


def test_labels_split_tags_and_images(tmp_path, capsys, cub_src):
    source, fx = cub_src
    data = tmp_path / "data"
    rc, out, err = run_a1(capsys, "--dataset", "cub", "--source", source, "--data-root", data)
    assert rc == 0, err
    labels, train, test, config = read_out(data, "cub")

    assert labels == {"species": sorted(CUB_SPECIES)}
    assert list(train.columns) == ["image", "species", "tags"]

    # The split is sklearn's StratifiedShuffleSplit over images.txt order, rows in its order.
    train_idx, test_idx = expected_split(fx["species"])
    assert list(train["image"]) == [f"images/{fx['paths'][i]}" for i in train_idx]
    assert list(test["image"]) == [f"images/{fx['paths'][i]}" for i in test_idx]
    assert len(test) == 9 and len(train) == 21
    assert list(train["species"]) == [fx["species"][i] for i in train_idx]

    # Tags: present attributes rarer than the 0.8-quantile (0.8 by hand) plus the species.
    assert config["tag_threshold"] == pytest.approx(CUB_THRESHOLD)
    assert config["tag_attributes_kept"] == len(CUB_KEPT)
    rows = {p: i for i, p in enumerate(fx["paths"])}
    for df in (train, test):
        for image, species, tags in df.itertuples(index=False):
            i = rows[image.removeprefix("images/")]
            want = {a for j, a in enumerate(CUB_ATTRS) if fx["present"][i, j] and a in CUB_KEPT}
            assert set(tags.split("|")) == want | {species}
            assert tags.split("|")[-1] == species
    common = set(CUB_ATTRS) - set(CUB_KEPT)
    assert not any(set(t.split("|")) & common for t in train["tags"])

    # Images kept as they are (no re-encoding): the original bytes, hard-linked, under the class folder.
    for rel in list(train["image"]) + list(test["image"]):
        original = source / "CUB_200_2011" / rel
        assert (data / "cub" / rel).read_bytes() == original.read_bytes()
        assert (data / "cub" / rel).samefile(original)  # same file system here: a hard link
    assert "tag threshold 0.8000" in out
    assert config["quirks"] == [] and config["tag_shift"] == "none"


@pytest.mark.parametrize("where", ["inside", "root"])
def test_attributes_txt_in_other_places(tmp_path, capsys, where):
    fx = make_cub(tmp_path / "raw", attributes_at=where)
    data = tmp_path / "data"
    argv = ["--dataset", "cub", "--source", tmp_path / "raw", "--data-root", data]
    rc, _, err = run_a1(capsys, *argv)
    assert rc == 0, err
    labels, train, test, config = read_out(data, "cub")
    assert len(train) + len(test) == len(fx["paths"])
    assert config["tag_threshold"] == pytest.approx(CUB_THRESHOLD)


def test_source_may_be_the_cub_folder_itself(tmp_path, capsys, cub_src):
    source, fx = cub_src
    rc, _, err = run_a1(
        capsys, "--dataset", "cub", "--source", source, "--data-root", tmp_path / "a"
    )
    assert rc == 0, err
    (source / "attributes.txt").rename(source / "CUB_200_2011" / "attributes.txt")
    argv = ["--source", source / "CUB_200_2011", "--data-root", tmp_path / "d"]
    rc, _, err = run_a1(capsys, "--dataset", "cub", *argv)
    assert rc == 0, err
    labels, train, test, config = read_out(tmp_path / "d", "cub")
    # the same dataset as from the folder above it: labels, split, tags and images
    assert labels == {"species": sorted(CUB_SPECIES)}
    train_idx, test_idx = expected_split(fx["species"])
    assert list(test["image"]) == [f"images/{fx['paths'][i]}" for i in test_idx]
    before = read_out(tmp_path / "a", "cub")
    pd.testing.assert_frame_equal(train, before[1])
    pd.testing.assert_frame_equal(test, before[2])
    assert config["tag_threshold"] == before[3]["tag_threshold"] == pytest.approx(CUB_THRESHOLD)
    assert config["tag_attributes_kept"] == len(CUB_KEPT)
    for rel in train["image"]:
        assert (tmp_path / "d" / "cub" / rel).samefile(source / "CUB_200_2011" / rel)


def test_unreadable_image_skipped_or_fatal_with_strict(tmp_path, capsys, cub_src):
    source, fx = cub_src
    bad = fx["paths"][4]
    (source / "CUB_200_2011" / "images" / bad).write_bytes(b"not a jpeg")
    data = tmp_path / "data"
    argv = ["--dataset", "cub", "--source", source, "--data-root", data]
    rc, _, err = run_a1(capsys, *argv)
    assert rc == 0, err
    _, train, test, config = read_out(data, "cub")
    assert config["skipped_images"] == 1 and bad in config["skipped_examples"][0]
    assert f"images/{bad}" not in set(train["image"]) | set(test["image"])
    assert not (data / "cub" / "images" / bad).exists()
    assert len(train) + len(test) == len(fx["paths"]) - 1

    # a truncated JPEG (a valid header, the rest missing) is caught too: every image is decoded
    good = source / "CUB_200_2011" / "images" / fx["paths"][7]
    good.write_bytes(good.read_bytes()[:200])
    rc, _, err = run_a1(capsys, *argv[:-1], tmp_path / "trunc")
    assert rc == 0, err
    _, _, _, config = read_out(tmp_path / "trunc", "cub")
    assert config["skipped_images"] == 2

    rc, _, err = run_a1(capsys, *argv[:-2], "--data-root", tmp_path / "strict", "--strict")
    assert rc == 2 and err.startswith("error: unreadable image") and bad in err
    assert leftovers(tmp_path / "strict") == []


def test_missing_pieces_name_the_file_and_leave_nothing(tmp_path, capsys, cub_src):
    source, _ = cub_src
    data = tmp_path / "data"
    base = ["--dataset", "cub", "--data-root", data]

    rc, _, err = run_a1(capsys, *base)
    assert rc == 2 and "--source" in err and "CUB_200_2011" in err

    (source / "attributes.txt").unlink()
    rc, _, err = run_a1(capsys, *base, "--source", source)
    assert rc == 2 and "attributes.txt not found" in err and "--download" in err
    assert "\n" not in err  # one line

    (source / "attributes.txt").write_text("1 has_x::y\n")
    (source / "CUB_200_2011" / "images").rename(source / "CUB_200_2011" / "imgs")
    rc, _, err = run_a1(capsys, *base, "--source", source)
    assert rc == 2 and "images (the image folder) not found" in err

    rc, _, err = run_a1(capsys, *base, "--source", tmp_path / "empty")
    assert rc == 2 and "images.txt not found" in err and "vision.caltech.edu" in err
    assert leftovers(data) == []


def test_malformed_attribute_line_names_file_and_line(tmp_path, capsys, cub_src):
    source, _ = cub_src
    labels_file = source / "CUB_200_2011" / "attributes" / "image_attribute_labels.txt"
    lines = labels_file.read_text().splitlines(keepends=True)
    lines[6] = "7 3\n"
    labels_file.write_text("".join(lines))
    rc, _, err = run_a1(
        capsys, "--dataset", "cub", "--source", source, "--data-root", tmp_path / "d"
    )
    assert rc == 2 and "image_attribute_labels.txt line 7" in err
    assert leftovers(tmp_path / "d") == []


def test_extra_fields_are_ignored_not_misread(tmp_path, monkeypatch):
    """Lines with extra fields count like any other (first three fields only), on both readers."""
    f = tmp_path / "l.txt"
    f.write_text("1 1 1 3 2.5\n1 2 0 1 0.0 7 8\n2 1 0 2 1.0\n2 2 1 4 12.0 1\n")
    images = pd.DataFrame({"id": [1, 2], "path": ["a/x.jpg", "a/y.jpg"]})
    want = [[True, False], [False, True]]
    assert cub._read_presence_lines(f, images, 2).tolist() == want

    def no_fallback(*args):
        raise AssertionError("a well-formed file should not need the line-by-line reader")

    monkeypatch.setattr(cub, "_read_presence_lines", no_fallback)
    assert cub.read_presence(f, images, 2).tolist() == want


# ---------------------------------------------------------------------------------------------
# --download against a local HTTP server


def _tgz(members: dict[str, bytes] | Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        if isinstance(members, Path):
            for name in ("CUB_200_2011", "attributes.txt"):
                tar.add(members / name, arcname=name)
        else:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_dir(tmp_path):
    """A folder served over http://127.0.0.1:<port>/ by a thread for the test's duration."""
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_download_fetches_verifies_extracts_and_proceeds(tmp_path, capsys, monkeypatch, http_dir):
    www, url = http_dir
    fx = make_cub(tmp_path / "fixture")
    archive = _tgz(tmp_path / "fixture")
    (www / "CUB_200_2011.tgz").write_bytes(archive)
    monkeypatch.setattr(cub, "CUB_MD5", hashlib.md5(archive).hexdigest())
    source, data = tmp_path / "raw", tmp_path / "data"
    argv = ["--dataset", "cub", "--source", source, "--data-root", data]
    rc, out, err = run_a1(capsys, *argv, "--download", "--download-url", f"{url}/CUB_200_2011.tgz")
    assert rc == 0, err
    assert (source / "CUB_200_2011" / "images.txt").is_file()
    assert (source / "attributes.txt").is_file()
    assert sorted(p.name for p in source.iterdir()) == ["CUB_200_2011", "attributes.txt"]
    _, train, test, _ = read_out(data, "cub")
    assert len(train) + len(test) == len(fx["paths"])

    # A second --download finds the data in place and does not fetch again.
    (www / "CUB_200_2011.tgz").unlink()
    rc, out, err = run_a1(capsys, *argv, "--download", "--download-url", f"{url}/CUB_200_2011.tgz")
    assert rc == 0, err
    assert "skipping the download" in out


def test_download_with_wrong_checksum_leaves_nothing(tmp_path, capsys, http_dir):
    www, url = http_dir
    make_cub(tmp_path / "fixture")
    (www / "CUB_200_2011.tgz").write_bytes(_tgz(tmp_path / "fixture"))
    source, data = tmp_path / "raw", tmp_path / "data"
    rc, _, err = run_a1(
        capsys,
        *["--dataset", "cub", "--source", source, "--data-root", data, "--download"],
        *["--download-url", f"{url}/CUB_200_2011.tgz"],
    )
    assert rc == 2 and "checksum mismatch" in err and cub.CUB_MD5 in err
    assert "\n" not in err
    assert not source.exists() and leftovers(data) == []


def test_download_of_broken_archive_or_missing_file_leaves_nothing(
    tmp_path, capsys, monkeypatch, http_dir
):
    www, url = http_dir
    broken = _tgz({"CUB_200_2011/images.txt": b"1 a/b.jpg\n"})[:-40]
    (www / "broken.tgz").write_bytes(broken)
    monkeypatch.setattr(cub, "CUB_MD5", hashlib.md5(broken).hexdigest())
    source = tmp_path / "raw"
    source.mkdir()
    (source / "keep.txt").write_text("user file")
    base = ["--dataset", "cub", "--source", source, "--data-root", tmp_path / "d", "--download"]

    rc, _, err = run_a1(capsys, *base, "--download-url", f"{url}/broken.tgz")
    assert rc == 2 and "not a valid archive" in err
    assert sorted(p.name for p in source.iterdir()) == ["keep.txt"]

    rc, _, err = run_a1(capsys, *base, "--download-url", f"{url}/missing.tgz")
    assert rc == 2 and "download of" in err and "failed" in err
    assert sorted(p.name for p in source.iterdir()) == ["keep.txt"]

    rc, _, err = run_a1(capsys, *base, "--download-url", "file:///etc/passwd")
    assert rc == 2 and "http" in err
    assert leftovers(tmp_path / "d") == []


def test_safe_extract_rejects_paths_escaping_the_target(tmp_path):
    evil = tmp_path / "evil.tgz"
    evil.write_bytes(_tgz({"ok.txt": b"fine", "../escaped.txt": b"bad"}))
    target = tmp_path / "target"
    with pytest.raises(SuiteError, match="unsafe"):
        safe_extract(evil, target)
    assert not (tmp_path / "escaped.txt").exists()
    assert list(target.iterdir()) == []  # all or nothing: ok.txt was not kept either

    absolute = tmp_path / "abs.tgz"
    absolute.write_bytes(_tgz({"/tmp/abs_escape_test.txt": b"bad"}))
    safe_extract(absolute, target)  # the 'data' filter strips the leading slash
    assert (target / "tmp" / "abs_escape_test.txt").is_file()


def test_safe_extract_refuses_to_overwrite(tmp_path):
    arc = tmp_path / "a.tgz"
    arc.write_bytes(_tgz({"CUB_200_2011/images.txt": b"1 a/b.jpg\n"}))
    target = tmp_path / "t"
    (target / "CUB_200_2011").mkdir(parents=True)
    with pytest.raises(SuiteError, match="already exists"):
        safe_extract(arc, target)
    assert list((target / "CUB_200_2011").iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Images kept as they are; the authors' tag shift (quirk cub-tag-shift)


def test_images_are_copied_where_hard_links_fail(tmp_path, capsys, monkeypatch, cub_src):
    source, fx = cub_src

    def no_link(src, dst):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr("src.datasets.common.os.link", no_link)
    data = tmp_path / "data"
    rc, _, err = run_a1(capsys, "--dataset", "cub", "--source", source, "--data-root", data)
    assert rc == 0, err
    _, train, _, config = read_out(data, "cub")
    rel = train["image"][0]
    original = source / "CUB_200_2011" / rel
    assert (data / "cub" / rel).read_bytes() == original.read_bytes()
    assert not (data / "cub" / rel).samefile(original)
    assert config["image_storage"].endswith(f"({len(fx['paths'])} copied)")


def test_shorter_side_is_refused_for_cub(tmp_path, capsys, cub_src):
    source, _ = cub_src
    argv = ["--dataset", "cub", "--source", source, "--data-root", tmp_path / "d"]
    rc, _, err = run_a1(capsys, *argv, "--shorter-side", "256")
    assert rc == 2 and "--shorter-side applies to wikiart only" in err and "\n" not in err
    assert leftovers(tmp_path / "d") == []


def test_authors_tag_shift_moves_attributes_up_one_image(tmp_path, capsys, cub_src):
    source, fx = cub_src
    paths, species, present = fx["paths"], fx["species"], fx["present"]
    n = len(paths)
    for flag in ("cub-tag-shift", "all"):
        data = tmp_path / flag
        argv = ["--dataset", "cub", "--source", source, "--data-root", data]
        rc, out, err = run_a1(capsys, *argv, "--authors-quirks", flag)
        assert rc == 0, err
        _, train, test, config = read_out(data, "cub")
        assert config["quirks"] == ["cub-tag-shift"]
        assert "cub-tag-shift" in out

        # N-1 images: the last one is dropped; the split is the same rule over the N-1 left.
        train_idx, test_idx = expected_split(species[:-1])
        assert list(train["image"]) == [f"images/{paths[i]}" for i in train_idx]
        assert list(test["image"]) == [f"images/{paths[i]}" for i in test_idx]
        assert len(train) + len(test) == n - 1 and len(test) == int(np.ceil(0.3 * (n - 1)))

        # The threshold is taken over the attributes the table then holds: those of images 2..N.
        shifted = present[1:]
        threshold = np.quantile(shifted.mean(axis=0), 0.8)
        assert config["tag_threshold"] == pytest.approx(threshold)
        kept = shifted.mean(axis=0) < threshold
        row = {p: i for i, p in enumerate(paths)}
        moved = 0
        for image, sp, tags in pd.concat([train, test]).itertuples(index=False):
            k = row[image.removeprefix("images/")]
            assert sp == species[k]  # the label stays the image's own
            want = {a for j, a in enumerate(CUB_ATTRS) if present[k + 1, j] and kept[j]}
            assert set(tags.split("|")) == want | {sp}  # image k+1's attributes on image k
            own = {a for j, a in enumerate(CUB_ATTRS) if present[k, j] and kept[j]}
            moved += own != want
        assert moved > n // 2  # the fixture's neighbours differ: the test can tell the two apart


def test_authors_tag_shift_follows_image_ids_not_file_order():
    images = pd.DataFrame({"id": [3, 1, 2], "path": ["a/3.jpg", "a/1.jpg", "a/2.jpg"]})
    present = np.array([[1, 1], [0, 0], [0, 1]], dtype=bool)  # rows of ids 3, 1, 2
    kept, attrs = cub.authors_tag_shift(images, present)
    assert list(kept["id"]) == [1, 2]  # id 3 = N is dropped
    assert attrs.tolist() == [[False, True], [True, True]]  # id 1 ← id 2's, id 2 ← id 3's


def test_official_counts_of_both_protocols():
    """11,788 images (ours) → 8,251 / 3,537; 11,787 (the authors' shift) → 8,250 / 3,537."""
    for n, want in ((11_788, (8_251, 3_537)), (11_787, (8_250, 3_537))):
        species = [f"{i % 200:03d}" for i in range(n)]
        train, test = expected_split(species)
        assert (len(train), len(test)) == want


def test_quirks_of_other_datasets_are_refused(tmp_path, capsys, cub_src):
    source, _ = cub_src
    argv = ["--dataset", "cub", "--source", source, "--data-root", tmp_path / "d"]
    rc, _, err = run_a1(capsys, *argv, "--authors-quirks", "wikiart-tag-cleaning")
    assert rc == 2 and "applies to wikiart, not cub" in err and "\n" not in err
    rc, _, err = run_a1(capsys, *argv, "--authors-quirks", "empty-tag-token")
    assert rc == 2 and "not a quirk of A1" in err
    assert leftovers(tmp_path / "d") == []
