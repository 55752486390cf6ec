"""The authors' release importer: safe loading, discovery, conversion, and E1 on the result."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import A1_preprocess
import E1_evaluate
import E2_visualize
from src.cli import run_stage
from src.errors import SuiteError
from src.method.encoder import load_encoder
from src.method.student import load_student, student_input
from src.release.convert import import_release
from src.release.reader import find_release
from src.release.tables import tag_cell
from src.release.unpickle import load_npy, load_pickle, load_pth
from src.report import drawing, figures
from src.tags import split_tags
from tests._fixtures_release import write_cub_like, write_wikiart_like

# ---------------------------------------------------------------------------------------------
# Malicious payloads: each would create `marker` if anything ran.


class MkdirPayload:
    """Unpickling calls os.mkdir(marker) (a __reduce__ to an os function)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


class ExecPayload:
    """Unpickling calls builtins.exec with code that writes the marker."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


class UnknownClass:
    """A class outside the allowlist; restoring its state would write the marker."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __setstate__(self, state):
        Path(state["marker"]).touch()


class EvilStorage:
    """A tensor storage whose torch.save bytes carry a payload (for _load_from_bytes)."""

    def __init__(self, marker: Path):
        buf = io.BytesIO()
        torch.save(MkdirPayload(marker), buf, _use_new_zipfile_serialization=False)
        self.data = buf.getvalue()

    def __reduce__(self):
        return (torch.storage._load_from_bytes, (self.data,))


class OversizedTensor:
    """A tensor whose size reaches past its 2-element storage (would read foreign memory)."""

    def __init__(self, marker: Path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # TypedStorage deprecation notice
            self.storage = torch.tensor([1, 2]).storage()

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, (self.storage, 0, (1000,), (1,), False, {}))


PAYLOADS = [MkdirPayload, ExecPayload, UnknownClass, EvilStorage, OversizedTensor]


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda c: c.__name__)
def test_pkl_with_payload_is_refused_and_nothing_runs(tmp_path, payload):
    marker = tmp_path / "marker"
    path = tmp_path / "classes.label2num.pkl"
    with open(path, "wb") as f:
        pickle.dump({"birds": {"num2label": {0: "a"}, "x": payload(marker)}}, f)
    with pytest.raises(SuiteError, match="classes.label2num.pkl") as e:
        load_pickle(path)
    assert "\n" not in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda c: c.__name__)
def test_npy_object_array_with_payload_is_refused(tmp_path, payload):
    marker = tmp_path / "marker"
    path = tmp_path / "inference_CUB_test_embedding_epoch30.npy"
    np.save(path, {0: {"path": "a/b.jpg", "feature": [0.1], "birds_id": payload(marker)}})
    with pytest.raises(SuiteError, match="inference_CUB_test_embedding_epoch30.npy"):
        load_npy(path)
    assert not marker.exists()


def test_pth_with_payload_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "model_30.pth"
    torch.save({"model_state_dict": {"w": torch.zeros(2)}, "x": MkdirPayload(marker)}, path)
    with pytest.raises(SuiteError, match="model_30.pth"):
        load_pth(path)
    assert not marker.exists()


def test_restricted_unpickler_reads_what_their_code_writes(tmp_path):
    """Tensors (0-d), numpy integers/strings/arrays, sets, NaN and nested dicts come back intact."""
    obj = {
        0: {
            "birds_id": torch.tensor(7),
            "category_id": np.int64(3),
            "name": np.str_("aeroplane"),
            "ids": np.array(["3"]),
            "feature": [0.5, -0.25],
            "media": float("nan"),
            "set": {1, 2},
        }
    }
    path = tmp_path / "x.npy"
    np.save(path, obj)
    back = load_npy(path)[0]
    assert isinstance(back["birds_id"], torch.Tensor) and int(back["birds_id"]) == 7
    assert back["category_id"] == 3 and back["name"] == "aeroplane"
    assert back["ids"].tolist() == ["3"] and back["feature"] == [0.5, -0.25]
    assert np.isnan(back["media"]) and back["set"] == {1, 2}
    plain = tmp_path / "plain.npy"
    np.save(plain, np.arange(4.0))
    assert load_npy(plain).tolist() == [0.0, 1.0, 2.0, 3.0]


# ---------------------------------------------------------------------------------------------
# Discovery and conversion


def _import(tmp_path: Path, dataset: str, src: Path) -> list[str]:
    return import_release(src, dataset, tmp_path / "data", tmp_path / "weights")


def test_cub_like_release_becomes_the_suites_artifacts(tmp_path):
    fx = write_cub_like(tmp_path / "release")
    runs = _import(tmp_path, "cub", tmp_path / "release")
    assert runs == ["cub_convnext_base_e16_ft"]
    data = tmp_path / "data" / "cub"
    assert json.loads((data / "labels.json").read_text()) == {"species": fx["species"]}
    test = pd.read_csv(data / "test.csv", dtype=str, keep_default_na=False)
    assert list(test.columns) == ["image", "species", "tags"] and len(test) == 16
    for row in test.itertuples():
        key = row.image.removeprefix("images/")
        cls, attrs = fx["tags"][key]
        assert row.species == cls
        assert row.tags.split("|") == [a for a in attrs.split(",") if a] + [cls]
    q = pd.read_csv(data / "queries_cub-bird.csv", dtype=str, keep_default_na=False)
    assert q["query_id"].astype(int).tolist() == list(fx["queries"])
    theirs = list(fx["queries"].values())
    assert q["image"].tolist() == [f"images/{v['candidate']}" for v in theirs]
    assert q["species"].tolist() == [v["condition"]["birds"] for v in theirs]
    assert q["authors_tags"].tolist() == [v["candidate_tags"] for v in theirs]
    cfg = json.loads((data / "config.json").read_text())
    assert cfg["source"] == "authors-release" and cfg["release"] == str(tmp_path / "release")

    wdir = tmp_path / "weights" / runs[0]
    with np.load(wdir / "embeddings.npz", allow_pickle=False) as f:
        emb = {k: f[k] for k in f.files}
    train = pd.read_csv(data / "train.csv", dtype=str)
    assert emb["image"].tolist() == train["image"].tolist() + test["image"].tolist()
    for img, z in zip(emb["image"], emb["z"], strict=True):
        np.testing.assert_array_equal(z, np.float32(fx["features"][img[7:]]))
    ids = [fx["species"].index(s) for s in train["species"].tolist() + test["species"].tolist()]
    assert emb["label_species"].tolist() == ids
    run_cfg = json.loads((wdir / "config.json").read_text())
    assert run_cfg["source"] == "authors-release" and run_cfg["release_run"] == fx["folder"].name


def test_converted_encoder_gives_the_authors_head_logits(tmp_path):
    fx = write_cub_like(tmp_path / "release")
    (run,) = _import(tmp_path, "cub", tmp_path / "release")
    encoder, config = load_encoder(tmp_path / "weights" / run)
    assert config["backbone_absent"] and config["feature_size"] == 24
    theirs = fx["model"].eval()
    feats = torch.randn(5, 24)
    z = torch.tanh(torch.randn(5, 16))
    with torch.no_grad():
        torch.testing.assert_close(encoder.heads["species"](z), theirs.attr_clssifiers["birds"](z))
        torch.testing.assert_close(encoder.reduction(feats), theirs.encode(feats))
    with pytest.raises(SuiteError, match="without its backbone"):
        encoder.embed(torch.zeros(2, 3, 8, 8))


def test_converted_student_gives_the_authors_outputs(tmp_path):
    fx = write_cub_like(tmp_path / "release")
    (run,) = _import(tmp_path, "cub", tmp_path / "release")
    student, cfg = load_student(tmp_path / "weights" / run / "student_cub-bird_lam0.51.pt")
    assert cfg["lambda"] == 0.51 and cfg["epochs"] == 49 and cfg["source"] == "authors-release"
    z0, y = torch.tanh(torch.randn(6, 16)), torch.tensor([0, 1, 2, 3, 1, 0])
    theirs = fx["student"].eval()
    with torch.no_grad():
        want = theirs(torch.cat([z0, F.one_hot(y, 4).float()], 1))
        torch.testing.assert_close(student.search(z0, {"species": y}), want)
        torch.testing.assert_close(student(student_input(z0, {"species": y}, {"species": 4})), want)


def test_wikiart_like_release_discovers_runs_students_and_both_tasks(tmp_path):
    fx = write_wikiart_like(tmp_path / "release")
    release = find_release(tmp_path / "release", "wikiart")
    assert sorted(release.queries) == ["wikiart-multi", "wikiart-style"]
    runs = _import(tmp_path, "wikiart", tmp_path / "release")
    assert sorted(runs) == ["wikiart_resnet50_e16_ft", "wikiart_vit_b_16_e8_frozen"]
    data = tmp_path / "data" / "wikiart"
    assert json.loads((data / "labels.json").read_text()) == {
        "style": ["Baroque", "Cubism", "Impressionism"],
        "genre": ["landscape", "portrait"],
    }
    test = pd.read_csv(data / "test.csv", dtype=str, keep_default_na=False)
    assert len(test) == 12
    tags = dict(zip(test["image"].str.removeprefix("images/"), test["tags"], strict=True))
    for key, cell in tags.items():
        genre, style, media, tag = fx["tags"][key]
        want = []
        for field in (tag, media, genre, style):
            if isinstance(field, str):
                want += [t.lower().replace(" ", "") for t in field.split(",")]
        assert cell.split("|") == [t for t in dict.fromkeys(want) if t]
        assert "nan" not in cell.split("|")
    multi = pd.read_csv(data / "queries_wikiart-multi.csv", dtype=str)
    theirs = list(fx["queries"]["style-genre"].values())
    assert multi[["style", "genre"]].values.tolist() == [
        [v["condition"]["style"], v["condition"]["genre"]] for v in theirs
    ]
    frozen = tmp_path / "weights" / "wikiart_vit_b_16_e8_frozen"
    encoder, config = load_encoder(frozen)
    assert config["frozen"] and config["backbone"] == "vit_b_16" and config["embedding_size"] == 8
    theirs = fx["runs"][("vit_b", 8)]
    z = torch.tanh(torch.randn(4, 8))
    with torch.no_grad():
        for a in ("style", "genre"):
            torch.testing.assert_close(
                encoder.heads[a](z), theirs["model"].eval().attr_clssifiers[a](z)
            )
    multi_student, cfg = load_student(frozen / "student_wikiart-multi_lam3.2.pt")
    assert cfg["conditions"] == ["style", "genre"]
    s, g = torch.tensor([0, 2, 1, 1]), torch.tensor([1, 0, 0, 1])
    x = torch.cat([z, F.one_hot(s, 3).float(), F.one_hot(g, 2).float()], 1)
    with torch.no_grad():
        want = theirs["students"]["wikiart-multi"].eval()(x)
        torch.testing.assert_close(multi_student.search(z, {"style": s, "genre": g}), want)


def test_wikiart_tag_cleaning_quirk_applies_their_string_cleaning(tmp_path):
    write_wikiart_like(tmp_path / "release")
    import_release(
        tmp_path / "release", "wikiart", tmp_path / "d", tmp_path / "w", ["wikiart-tag-cleaning"]
    )
    quirky = pd.read_csv(tmp_path / "d" / "wikiart" / "train.csv", dtype=str)["tags"]
    _import(tmp_path, "wikiart", tmp_path / "release")
    fixed = pd.read_csv(tmp_path / "data" / "wikiart" / "train.csv", dtype=str)["tags"]
    assert fixed.str.contains("banana").any() and not quirky.str.contains("banana").any()
    assert quirky.str.contains("baa").any()  # "banana" minus "nan" twice: their bug
    cfg = json.loads((tmp_path / "d" / "wikiart" / "config.json").read_text())
    assert cfg["quirks"] == ["wikiart-tag-cleaning"]


@pytest.mark.parametrize(
    "remove, message",
    [
        ("data/CUB/attributes/filename.tag.pkl", "filename.tag.pkl"),
        ("data/CUB/attributes/preprocessed_CUB_test.csv", "preprocessed_CUB_test.csv"),
        ("data/CUB/attributes/query_birds_CUB_test_random.pkl", "query_<attrs>_CUB"),
        ("RUN/inference_CUB_train_embedding_epoch30.npy", "inference_CUB_train_embedding"),
        ("RUN/model_30.pth", "model_30.pth"),
        ("model", "no run folder"),
    ],
)
def test_missing_pieces_fail_in_one_line_and_write_nothing(tmp_path, remove, message):
    fx = write_cub_like(tmp_path / "release")
    target = (
        tmp_path
        / "release"
        / remove.replace("RUN", str(fx["folder"].relative_to(tmp_path / "release")))
    )
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(SuiteError, match=message) as e:
        _import(tmp_path, "cub", tmp_path / "release")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.csv"))
    assert not (tmp_path / "weights").exists() or not any((tmp_path / "weights").rglob("*.pt"))


def test_failed_import_keeps_earlier_artifacts(tmp_path):
    """A run that fails to convert leaves the data folder of a previous import untouched."""
    fx = write_cub_like(tmp_path / "release")
    _import(tmp_path, "cub", tmp_path / "release")
    before = (tmp_path / "data" / "cub" / "test.csv").read_text()
    np.save(
        fx["folder"] / "inference_CUB_test_embedding_epoch30.npy",
        {0: {"path": "x/y.jpg", "feature": [0.0]}},
    )
    with pytest.raises(SuiteError, match="no embedding for"):
        _import(tmp_path, "cub", tmp_path / "release")
    assert (tmp_path / "data" / "cub" / "test.csv").read_text() == before
    assert (tmp_path / "weights" / "cub_convnext_base_e16_ft" / "encoder.pt").is_file()


def test_e1_runs_on_imported_artifacts_with_their_student(tmp_path):
    write_cub_like(tmp_path / "release")
    (run,) = _import(tmp_path, "cub", tmp_path / "release")
    E1_evaluate.main(
        [
            "--task",
            "cub-bird",
            "--run",
            run,
            "--device",
            "cpu",
            "--data-root",
            str(tmp_path / "data"),
            "--weights-root",
            str(tmp_path / "weights"),
            "--results-root",
            str(tmp_path / "results"),
        ]
    )
    metrics = json.loads((tmp_path / "results" / run / "cub-bird" / "metrics.json").read_text())
    methods = {"random", "knn", "filtered_knn", "centroid_shift", "backward_search", "student"}
    assert set(metrics["methods"]) == methods  # the two baselines run on imported runs too
    assert metrics["n_queries"] == 8 and metrics["lambda"] == 0.51


def test_tags_as_their_e1_builds_them_for_cub_and_apy(tmp_path):
    where = tmp_path / "filename.tag.pkl"
    cub = tag_cell(
        "001.Black_footed_Albatross/a_1.jpg", ["001.Black_footed_Albatross", ""], "cub", (), where
    )
    assert cub == "001.Black_footed_Albatross"  # no attributes: the class alone, no empty tag
    apy = tag_cell(
        "images_crop/2008_000123_diningtable_7.jpg", [np.int64(10), "Wood,Leg"], "apy", (), where
    )
    assert apy == "Wood|Leg|diningtable"  # aPY: category from the file name, as their E1
    with pytest.raises(SuiteError, match="filename.tag.pkl"):
        tag_cell("x/y.jpg", ["only one field"], "cub", (), where)


def test_wikiart_tag_cleaning_quirk_keeps_their_empty_tag_as_the_a1_reader_does(tmp_path):
    where = tmp_path / "filename.tag.pkl"
    fields = ["a", "b", ",,x", float("nan")]  # Genre, Style, Media, tag; their "a,b,,,x" → one ',,'
    quirky = tag_cell("S/x.jpg", fields, "wikiart", ("wikiart-tag-cleaning",), where)
    assert split_tags(quirky) == {"a", "b", "", "x"}  # their split(',') keeps the empty item
    assert split_tags(tag_cell("S/x.jpg", fields, "wikiart", (), where)) == {"a", "b", "x"}


def test_one_folder_with_every_dataset_keeps_them_apart(tmp_path):
    """Unpacked together, each dataset takes the files below its own data/<DS> folder."""
    write_cub_like(tmp_path / "release")
    write_wikiart_like(tmp_path / "release")
    assert _import(tmp_path, "cub", tmp_path / "release") == ["cub_convnext_base_e16_ft"]
    assert len(_import(tmp_path, "wikiart", tmp_path / "release")) == 2
    labels = json.loads((tmp_path / "data" / "cub" / "labels.json").read_text())
    assert list(labels) == ["species"] and len(labels["species"]) == 4
    with pytest.raises(SuiteError, match="not a quirk of A1"):
        import_release(
            tmp_path / "release", "cub", tmp_path / "d", tmp_path / "w", ["empty-tag-token"]
        )


# ---------------------------------------------------------------------------------------------
# The entry points: A1 --source-type authors-release → E1 → E2, and make reproduce-release

REPO = Path(__file__).resolve().parents[1]


def _roots(tmp_path: Path) -> list[str]:
    return ["--data-root", str(tmp_path / "data"), "--weights-root", str(tmp_path / "weights"),
            "--results-root", str(tmp_path / "results")]  # fmt: skip


def _a1_import(tmp_path: Path, dataset: str, *extra: str) -> list[str]:
    """A1 --source-type authors-release; returns the runs it recorded in data/<ds>/config.json."""
    A1_preprocess.main(["--dataset", dataset, "--source-type", "authors-release",
                        "--source", str(tmp_path / "release"), *extra, *_roots(tmp_path)])  # fmt: skip
    return json.loads((tmp_path / "data" / dataset / "config.json").read_text())["runs"]


def _e1(tmp_path: Path, task: str, run: str, *extra: str) -> None:
    quirks = ["--authors-quirks", "empty-tag-token"]
    E1_evaluate.main(["--task", task, "--run", run, "--device", "cpu", "--sweep", *quirks,
                      *extra, *_roots(tmp_path)])  # fmt: skip


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> tuple[Path, str]:
    """The CUB-like fixture release through A1 (import) and E1 (with the sweep), once."""
    root = tmp_path_factory.mktemp("a1_release")
    write_cub_like(root / "release")
    (run,) = _a1_import(root, "cub")
    _e1(root, "cub-bird", run, "--lambda", "0.51")
    return root, run


def test_a1_imports_the_release_and_e1_e2_run_on_it(imported, capsys):
    root, run = imported
    assert run == "cub_convnext_base_e16_ft"
    cfg = json.loads((root / "data" / "cub" / "config.json").read_text())
    assert cfg["source"] == "authors-release" and cfg["runs"] == [run]
    metrics = json.loads((root / "results" / run / "cub-bird" / "metrics.json").read_text())
    assert "student" in metrics["methods"] and metrics["lambda"] == 0.51
    capsys.readouterr()
    E2_visualize.main(["--task", "cub-bird", "--run", run, "--device", "cpu", *_roots(root)])
    out = capsys.readouterr().out
    figs = root / "results" / run / "cub-bird" / "figures"
    assert (root / "results" / run / "figures" / "fig6_lambda.png").is_file()  # needs no images
    assert (figs / "plane_mts.png").is_file()  # the trade-off plane needs only E1's numbers
    assert not (figs / "plane_context.png").exists()  # CUB's one attribute is the condition...
    assert (
        "No context plane (plane_context.png)" in (figs / "E2.log").read_text()
    )  # ...and E2 says so
    assert not list(figs.glob("results_q*.png")) and not list(figs.glob("fig5_q*.png"))
    assert out.count("need the dataset's images") == 1 and "--images DIR" in out
    assert "need the dataset's images" in (figs / "E2.log").read_text()
    notes = json.loads((figs / "config.json").read_text())["not_drawn"]
    assert len(notes) == 1 and "--images DIR" in notes[0]
    assert f"report: {root / 'results' / run / 'REPORT.md'}" in out
    assert (root / "results" / run / "REPORT.md").is_file()


def test_e2_images_dir_draws_the_grids_from_test_csv_paths(imported, tmp_path, monkeypatch):
    root, run = imported
    pictures = tmp_path / "their_images"  # the authors' data/CUB/images: <class>/<file>
    test = pd.read_csv(root / "data" / "cub" / "test.csv", dtype=str)
    for i, key in enumerate(test["image"]):
        path = pictures / key.removeprefix("images/")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (24, 20), (i * 15 % 256, 80, 160)).save(path)
    drawn = []
    real = drawing.draw_grid
    monkeypatch.setattr(
        figures,
        "draw_grid",
        lambda q, rows, p, **kw: drawn.append((q, rows)) or real(q, rows, p, **kw),
    )
    results = tmp_path / "results"
    shutil.copytree(root / "results", results)
    argv = ["--task", "cub-bird", "--run", run, "--device", "cpu", "--query-id", "3",
            "--images", str(pictures), "--data-root", str(root / "data"),
            "--weights-root", str(root / "weights"), "--results-root", str(results)]  # fmt: skip
    E2_visualize.main(argv)
    figs = results / run / "cub-bird" / "figures"
    assert (figs / "results_q3.png").is_file() and (figs / "fig5_q3.png").is_file()
    query, rows = drawn[0]
    q = pd.read_csv(root / "data" / "cub" / "queries_cub-bird.csv", dtype=str)
    q = q.set_index("query_id").loc["3"]
    assert query.image == pictures / q["image"].removeprefix("images/")
    titles = [r.title.split()[0] for r in rows]  # the baselines come from E1's rankings
    assert titles == ["k-nearest", "head-filtered", "class-centroid", "Backward", "Student"]
    assert all(Path(t.image).is_relative_to(pictures) for r in rows for t in r.tiles)
    assert json.loads((figs / "config.json").read_text())["not_drawn"] == []


def test_e2_images_dir_without_the_pictures_is_one_line(imported, tmp_path, capsys):
    root, run = imported
    argv = ["--task", "cub-bird", "--run", run, "--device", "cpu", "--images", str(tmp_path),
            *_roots(root)[:4], "--results-root", str(tmp_path / "r")]  # fmt: skip
    assert run_stage(E2_visualize.main, argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--images {tmp_path}: no picture" in err


def test_e2_cannot_search_a_new_picture_on_an_imported_run(imported, tmp_path, capsys):
    root, run = imported
    pic = tmp_path / "bird.jpg"
    Image.new("RGB", (32, 32), (10, 200, 30)).save(pic)
    argv = ["--task", "cub-bird", "--run", run, "--image", str(pic), "--condition",
            "species=001.Black_footed_Albatross", "--device", "cpu",
            *_roots(root)[:4], "--results-root", str(tmp_path / "r")]  # fmt: skip
    assert run_stage(E2_visualize.main, argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "without its backbone" in err and "B1_train_encoder" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--images", "x"], "--images cannot go with --source-type authors-release"),
        (["--split-from", "a.csv"], "--split-from cannot go with"),
        (["--strict", "--attributions", "t.csv"], "--attributions, --strict cannot go with"),
        (["--authors-quirks", "cub-tag-shift"], "already carries their shifted CUB tags"),
        (["--authors-quirks", "wikiart-tag-cleaning"], "applies to wikiart, not cub"),
    ],
)
def test_a1_refuses_raw_source_flags_with_a_release(extra, said, tmp_path, capsys):
    write_cub_like(tmp_path / "release")
    argv = ["--dataset", "cub", "--source-type", "authors-release", "--source",
            str(tmp_path / "release"), *extra, *_roots(tmp_path)]  # fmt: skip
    assert run_stage(A1_preprocess.main, argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and said in err
    assert not (tmp_path / "data").exists() and not (tmp_path / "weights").exists()


def test_a1_release_needs_source(tmp_path, capsys):
    argv = ["--dataset", "apy", "--source-type", "authors-release", *_roots(tmp_path)]
    assert run_stage(A1_preprocess.main, argv) == 2
    assert "needs --source DIR" in capsys.readouterr().err


@pytest.mark.parametrize("quirks", ["wikiart-tag-cleaning", "all"])
def test_a1_passes_wikiart_tag_cleaning_to_the_importer(quirks, tmp_path):
    write_wikiart_like(tmp_path / "release")
    runs = _a1_import(tmp_path, "wikiart", "--authors-quirks", quirks)
    assert sorted(runs) == ["wikiart_resnet50_e16_ft", "wikiart_vit_b_16_e8_frozen"]
    cfg = json.loads((tmp_path / "data" / "wikiart" / "config.json").read_text())
    assert cfg["quirks"] == ["wikiart-tag-cleaning"]
    train = pd.read_csv(tmp_path / "data" / "wikiart" / "train.csv", dtype=str)
    assert train["tags"].str.contains("baa").any()  # their cleaning: "banana" lost its "nan"s


def test_make_reproduce_release_runs_every_stage(tmp_path):
    write_cub_like(tmp_path / "release")
    script = REPO / "scripts" / "reproduce_release.sh"
    env = {**os.environ, "DATASET": "cub", "RELEASE": str(tmp_path / "release"),
           "DATA_ROOT": str(tmp_path / "data"), "WEIGHTS_ROOT": str(tmp_path / "weights"),
           "RESULTS_ROOT": str(tmp_path / "results")}  # fmt: skip
    proc = subprocess.run(["bash", str(script), sys.executable], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = "cub_convnext_base_e16_ft"
    assert proc.stdout.strip().splitlines()[-1] == f"report: {tmp_path}/results/{run}/REPORT.md"
    e1 = json.loads((tmp_path / "results" / run / "cub-bird" / "config.json").read_text())
    assert e1["args"]["lam"] == 0.51  # their student's λ, from student_cub-bird_lam0.51.pt
    assert e1["args"]["sweep"] and e1["args"]["target_mts"] == 0.15
    assert e1["args"]["authors_quirks"] == "empty-tag-token"
    assert (tmp_path / "results" / run / "figures" / "fig6_lambda.png").is_file()
    assert (tmp_path / "results" / run / "REPORT.md").is_file()


def test_reproduce_release_refuses_a_dataset_without_a_release(tmp_path):
    env = {**os.environ, "DATASET": "synthart", "RELEASE": str(tmp_path)}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "reproduce_release.sh"), sys.executable],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and "DATASET must be one of cub, apy, wikiart" in proc.stderr
