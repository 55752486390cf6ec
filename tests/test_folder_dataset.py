"""Your own images: A1 --dataset folder (labels.csv), tasks declared in data, and the whole chain."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

import A1_preprocess as a1
import A2_make_queries as a2
import B1_train_encoder as b1
import C1_extract_embeddings as c1
import D1_train_distill as d1
import E1_evaluate as e1
import E2_visualize as e2
from src.cli import run_stage
from src.errors import SuiteError
from src.synthart import GENRES, STYLES, generate
from src.tasks import default_run, describe_tasks, get_dataset, get_task, tasks_of

NAME = "mine"
RUN = "mine_convnext_atto_e16_ft"
N_STYLES, N_GENRES, PER_PAIR = 3, 3, 20  # 12 test images per style: A2 needs 10 targets


def make_source(root: Path, n_per_pair: int = PER_PAIR, size: int = 32) -> Path:
    """SynthArt pictures in nested folders, their labels as labels.csv (no tags, no split)."""
    rows = []
    for s, style in enumerate(STYLES[:N_STYLES]):
        for g, genre in enumerate(GENRES[:N_GENRES]):
            for k in range(n_per_pair):
                rel = f"pics/{style}/{genre}_{k}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                sample = generate(7, (s * N_GENRES + g) * n_per_pair + k, style, genre, size)
                Image.fromarray(sample.image).save(root / rel)
                rows.append({"image": rel, "style": style, "genre": genre})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


def a1_argv(source: Path, data: Path, *extra: str) -> list[str]:
    return ["--dataset", "folder", "--source", str(source), "--name", NAME,
            "--data-root", str(data), *extra]  # fmt: skip


def roots(root: Path) -> list[str]:
    return ["--data-root", str(root / "data"), "--weights-root", str(root / "weights"),
            "--results-root", str(root / "results")]  # fmt: skip


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Path:
    """A1 → A2 → B1 (tiny) → C1 → D1 → E1 → E2 on a folder dataset, through the stages' mains."""
    root = tmp_path_factory.mktemp("folder")
    source = make_source(root / "src")
    a1.main(a1_argv(source, root / "data"))
    a2.main(["--task", "mine:style", "--num-queries", "20", *roots(root)])
    b1.main(["--dataset", NAME, "--backbone", "convnext_atto", "--pretrained", "none",
             "--image-size", "32", "--embedding-size", "16", "--epochs", "1", "--batch-size", "8",
             "--device", "cpu", *roots(root)])  # fmt: skip
    run = ["--run", RUN, "--device", "cpu", *roots(root)]  # the run the overrides named
    c1.main(run)
    d1.main(["--task", "mine:style", "--epochs", "2", *run])
    e1.main(["--task", "mine:style", *run])
    e2.main(["--task", "mine-style", *run])  # the file-safe name of the same task
    return root


def test_a1_writes_the_processed_format_and_the_registry_entry(chain):
    data = chain / "data" / NAME
    entry = json.loads((data / "dataset.json").read_text())
    assert entry["attributes"] == ["style", "genre"]
    assert entry["classes"]["style"] == sorted(STYLES[:N_STYLES])
    assert entry["split"].startswith("stratified 80%/20% on style, seed 0")
    assert "label values" in entry["tags"]
    test = pd.read_csv(data / "test.csv", dtype=str)
    train = pd.read_csv(data / "train.csv", dtype=str)
    assert len(test) + len(train) == N_STYLES * N_GENRES * PER_PAIR
    # stratified on the first attribute: 20 % of each style's 60 images
    assert test["style"].value_counts().tolist() == [12] * N_STYLES
    assert (data / test["image"][0]).is_file() and test["image"][0].startswith("images/pics/")
    row = test.iloc[0]
    assert set(row["tags"].split("|")) == {f"style={row['style']}", f"genre={row['genre']}"}
    cfg = json.loads((data / "config.json").read_text())
    assert cfg["folder"]["skipped_unreadable"] == 0


def test_the_chain_writes_every_artifact_and_a_report(chain):
    run = default_run(NAME)
    assert run == "mine_convnext_base_e256_ft"  # B1's default recipe names the run...
    trained = RUN  # ...this one used the overrides
    wdir = chain / "weights" / trained
    assert (wdir / "encoder.pt").is_file() and (wdir / "embeddings" / "manifest.json").is_file()
    assert list(wdir.glob("student_mine-style_lam1.pt"))  # λ 1.0: one condition
    assert len(pd.read_csv(chain / "data" / NAME / "queries_mine-style.csv")) == 20
    metrics = json.loads((chain / "results" / trained / "mine-style" / "metrics.json").read_text())
    assert metrics["lambda"] == 1.0
    report = (chain / "results" / trained / "REPORT.md").read_text()
    assert "Task `mine-style`" in report
    assert "your own images" in report and "cannot be compared with the paper" in report
    assert "split: stratified 80%/20% on style, seed 0" in report  # A1's rule, from config.json
    assert "paper column: none (your images)" in report


@pytest.fixture
def src_dir(tmp_path) -> Path:
    return make_source(tmp_path / "src", n_per_pair=10, size=16)


def edit_csv(source: Path, fn) -> None:
    df = pd.read_csv(source / "labels.csv", dtype=str, keep_default_na=False)
    fn(df).to_csv(source / "labels.csv", index=False)


def _refused(source: Path, tmp_path: Path, match: str, *extra: str) -> None:
    data = tmp_path / "data"
    with pytest.raises(SuiteError, match=match):
        a1.main(a1_argv(source, data, *extra))
    assert not data.exists() or list(data.iterdir()) == []  # nothing written (no lock, no temp)


def test_missing_image_column(src_dir, tmp_path):
    edit_csv(src_dir, lambda df: df.rename(columns={"image": "file"}))
    _refused(src_dir, tmp_path, "has no 'image' column")


def test_attribute_with_one_class(src_dir, tmp_path):
    edit_csv(src_dir, lambda df: df.assign(genre="portrait"))
    _refused(src_dir, tmp_path, r"attribute 'genre' has one class \('portrait'\)")


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside.png", "pics/../../x.png"])
def test_image_path_outside_the_folder(src_dir, tmp_path, path):
    def outside(df):
        df.loc[0, "image"] = path
        return df

    edit_csv(src_dir, outside)
    _refused(src_dir, tmp_path, "is outside")


def test_duplicate_image_rows(src_dir, tmp_path):
    edit_csv(src_dir, lambda df: pd.concat([df, df.iloc[[3]]]))
    _refused(src_dir, tmp_path, "is listed twice")


def test_empty_csv(src_dir, tmp_path):
    (src_dir / "labels.csv").write_text("")
    _refused(src_dir, tmp_path, "is empty")
    (src_dir / "labels.csv").write_text("image,style\n")
    _refused(src_dir, tmp_path, "header but no rows")


def test_a_class_with_fewer_than_two_test_images(src_dir, tmp_path):
    # 5 images of one style: round(20 % of 5) = 1 test image
    edit_csv(
        src_dir, lambda df: pd.concat([df[df["style"] != "flat"], df[df["style"] == "flat"][:5]])
    )
    _refused(src_dir, tmp_path, r"class 'flat' of style has 1 readable test image")


def test_bad_split_and_unsafe_column_names(src_dir, tmp_path):
    edit_csv(src_dir, lambda df: df.assign(split="val"))
    _refused(src_dir, tmp_path, "split 'val' is not train or test")
    edit_csv(src_dir, lambda df: df.drop(columns="split").rename(columns={"genre": "gen re"}))
    _refused(src_dir, tmp_path, "attribute column 'gen re' is not a usable name")
    edit_csv(src_dir, lambda df: df.rename(columns={"gen re": "g" * 29}))  # task names ≤ 100
    _refused(src_dir, tmp_path, "is not a usable name: use 1-28")
    edit_csv(src_dir, lambda df: df.rename(columns={"g" * 29: "query_id"}))  # A2's own column
    _refused(src_dir, tmp_path, "attribute column 'query_id' is A2's query id column")


def test_folder_goes_with_name_only(src_dir, tmp_path):
    with pytest.raises(SuiteError, match="--dataset folder needs --name NAME"):
        a1.main(["--dataset", "folder", "--source", str(src_dir), "--data-root", str(tmp_path)])
    with pytest.raises(SuiteError, match="other datasets take no --name"):
        a1.main(["--dataset", "synthart", "--name", "x", "--data-root", str(tmp_path)])
    with pytest.raises(SuiteError, match="takes cub, apy or wikiart"):
        a1.main([*a1_argv(src_dir, tmp_path), "--source-type", "authors-release"])


@pytest.mark.parametrize("name", ["cub", "synthart", "folder", "../x", "My-Set", "a.b", ""])
def test_reserved_and_unsafe_names_are_refused(src_dir, tmp_path, name):
    argv = a1_argv(src_dir, tmp_path / "data")
    argv[argv.index("--name") + 1] = name
    with pytest.raises(SuiteError, match="reserved|not a dataset name"):
        a1.main(argv)
    assert not (tmp_path / "data").exists() or not list((tmp_path / "data").glob("*/dataset.json"))


def test_given_split_and_tags_columns_and_unreadable_images(src_dir, tmp_path):
    def given(df):
        df["split"] = ["test" if i % 4 == 0 else "train" for i in range(len(df))]
        df["tags"] = "red|round|"
        return df

    edit_csv(src_dir, given)
    (src_dir / "pics" / "flat" / "portrait_1.png").write_bytes(b"not an image")  # a train row
    a1.main(a1_argv(src_dir, tmp_path / "data"))
    data = tmp_path / "data" / NAME
    test = pd.read_csv(data / "test.csv", dtype=str)
    train = pd.read_csv(data / "train.csv", dtype=str)
    assert len(test) == 23 and len(train) == 90 - 23 - 1  # the unreadable one skipped
    assert set(test["tags"]) == {"red|round"}
    cfg = json.loads((data / "config.json").read_text())
    assert cfg["folder"]["skipped_unreadable"] == 1
    assert "'split' column" in json.loads((data / "dataset.json").read_text())["split"]


def test_task_names_resolve_from_the_data(src_dir, tmp_path, capsys):
    data = tmp_path / "data"
    a1.main(a1_argv(src_dir, data))
    one, two = get_task("mine:genre", data), get_task("mine:style+genre", data)
    assert (one.name, one.conditions, one.default_lambda) == ("mine-genre", ("genre",), 1.0)
    assert (two.name, two.conditions, two.default_lambda) == (
        "mine-style-genre",
        ("style", "genre"),
        2.0,
    )
    assert get_task("mine-style-genre", data) == two  # the file-safe name is the same task
    assert get_dataset(NAME, data).attributes == ("style", "genre")
    assert [t.name for t in tasks_of(NAME, data)] == [
        "mine-style", "mine-genre", "mine-style-genre", "mine-genre-style"
    ]  # fmt: skip
    with pytest.raises(SuiteError, match=r"no attribute 'colour'; its attributes: style, genre"):
        get_task("mine:colour", data)
    with pytest.raises(SuiteError, match="one attribute or two different ones"):
        get_task("mine:style+style", data)
    with pytest.raises(SuiteError, match=r"unknown task 'nope:style'; .*cub-bird.*mine:style"):
        get_task("nope:style", data)
    with pytest.raises(SuiteError, match="unknown task 'mine:style'"):
        get_task("mine:style")  # no data root: built-ins only
    assert get_task("cub-bird", data).default_lambda == 0.51
    listing = describe_tasks(data)
    assert "mine: " in listing and "style (3 classes), genre (3 classes)" in listing
    assert "cub: CUB-200-2011 birds, 200 species — attributes: species\n" in listing  # no data yet
    a1.main(["--dataset", "synthart", "--num-images", "40", "--image-size", "16",
             "--data-root", str(data)])  # fmt: skip
    assert "style (6 classes), genre (6 classes)" in describe_tasks(data).split("mine:")[0]
    assert a2.main(["--list-tasks", "--data-root", str(data)]) is None
    out = capsys.readouterr().out
    assert "mine:style+genre" in out and "wikiart-multi" in out
    argv = ["--task", "mine:shape", "--data-root", str(data)]
    assert run_stage(a2.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "its attributes: style, genre" in err[0]
