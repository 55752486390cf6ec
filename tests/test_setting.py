"""REPORT.md compares like with like, or says it does not: the setting banner and the Δ marks."""

from __future__ import annotations

import json
import re

import pandas as pd

from src.artifacts import RELEASE_SOURCE as RELEASE
from src.artifacts import write_json, write_text
from src.paper import TABLE4, TABLE6
from src.report.document import write_report
from src.report.markdown import md_table
from src.report.setting import MARK, mark_deltas, setting_differences
from src.tasks import get_task
from tests._fixtures_real import make_cub, run_a1

CUB = get_task("cub-bird")
RUN = "cub_convnext_atto_e64_ft"


def cub_encoder(
    backbone: str, e: int, epochs: int, pretrained: str, size: int, species: int
) -> dict:
    """B1's config.json for a CUB encoder: its recipe and the encoder it built."""
    return {
        "recipe": {
            "backbone": backbone,
            "embedding_size": e,
            "epochs": epochs,
            "pretrained": pretrained,
            "image_size": size,
        },
        "encoder": {
            "dataset": "cub",
            "backbone": backbone,
            "embedding_size": e,
            "num_classes": {"species": species},
            "image_size": size,
            "frozen": False,
        },
    }


def paper_cub() -> tuple[dict, dict, dict]:
    """data config, B1 config and metrics of a run in the paper's CUB setting."""
    data = {"counts": {"train": 8251, "test": 3537}}
    enc = cub_encoder("convnext_base", 256, 30, "imagenet", 224, species=200)
    return data, enc, {"n_queries": 1000}


def small_cub(tmp_path, capsys) -> tuple[dict, dict, dict]:
    """The facts of a small non-paper setting: A1 on a CUB-layout miniature, convnext_atto, 32 px."""
    make_cub(tmp_path / "raw")
    data_root = tmp_path / "data"
    rc, _, err = run_a1(
        capsys, "--dataset", "cub", "--source", tmp_path / "raw", "--data-root", data_root
    )
    assert rc == 0, err
    data = json.loads((data_root / "cub" / "config.json").read_text())
    enc = cub_encoder("convnext_atto", 64, 2, "none", 32, species=3)
    return data, enc, {"n_queries": 9}


def test_the_papers_setting_has_no_differences():
    assert setting_differences(CUB, *paper_cub()) == []
    data, enc, q = paper_cub()
    data["counts"]["train"] = 8250  # the authors' alignment bug drops one image: same data
    assert setting_differences(CUB, data, enc, q) == []


def test_a_small_cub_layout_setting_lists_every_difference(tmp_path, capsys):
    diff = setting_differences(CUB, *small_cub(tmp_path, capsys))
    assert diff == [
        "30 images (paper: 11,788)",
        "train split 21 (paper: 8,251)",
        "test split 9 (paper: 3,537)",
        "3 classes of species (paper: 200)",
        "backbone convnext_atto (paper: convnext_base)",
        "E = 64 (paper: 256)",
        "pretrained none (paper: imagenet weights)",
        "32 px input (paper: 224 px)",
        "2 epochs (paper: 30)",
        "9 queries (paper: 1,000)",
    ]


def test_an_imported_run_differs_only_in_its_encoder_configuration():
    data, enc, _ = paper_cub()
    data = {"source": RELEASE, "counts": {"train": 10, "test": 5}}
    enc = {"source": RELEASE, **enc}
    enc["recipe"] = {**enc["recipe"], "epochs": 49}  # their checkpoint's epoch: still theirs
    assert setting_differences(CUB, data, enc, {"n_queries": 3}) == []
    enc["encoder"] = {**enc["encoder"], "embedding_size": 128}
    assert setting_differences(CUB, data, enc, None) == ["E = 128 (paper: 256)"]


def test_synthart_has_no_paper_setting():
    assert setting_differences(get_task("synthart-style"), {}, {}, {"n_queries": 3}) == []


def test_mark_deltas_marks_delta_columns_and_rows_only():
    md = md_table(
        pd.DataFrame(
            [
                {"source": "ours", "E": 256, "mAP@10": "0.792", "Δ mAP@10": "+0.159"},
                {"source": "Δ (ours − paper E256)", "E": 256, "mAP@10": "-0.010", "Δ mAP@10": None},
            ]
        )
    )
    lines = mark_deltas(md).splitlines()
    assert lines[0] == md.splitlines()[0] and lines[1] == md.splitlines()[1]
    assert "0.792 |" in lines[2] and f"+0.159 {MARK}" in lines[2] and lines[2].count(MARK) == 1
    assert f"-0.010 {MARK}" in lines[3]
    assert lines[3].count(MARK) == 1  # the Δ row's E (a setting, unsigned) and empty cell stay


def _report(tmp_path, data: dict, enc: dict, metrics: dict) -> str:
    """The section of task cub-bird in the REPORT.md of a run with these records."""
    return _full_report(tmp_path, data, enc, metrics).split("## Task `cub-bird`")[1]


def _full_report(tmp_path, data: dict, enc: dict, metrics: dict) -> str:
    roots = {k: tmp_path / k for k in ("data", "weights", "results")}
    write_json(roots["data"] / "cub" / "config.json", data)
    write_json(roots["weights"] / RUN / "config.json", enc)
    tdir = roots["results"] / RUN / "cub-bird"
    write_json(tdir / "metrics.json", {"methods": {}, "lambda": 0.51, **metrics})
    table = pd.DataFrame(
        [{"method": "Backward Search", "mAP@10": 0.792, "paper": 0.633, "Δ mAP@10": "+0.159"}]
    )
    write_text(tdir / "table2.md", md_table(table))
    return write_report(roots["results"], roots["weights"], roots["data"], RUN, "cub").read_text()


def test_report_banner_and_marks_on_a_non_paper_setting(tmp_path, capsys):
    data, enc, q = small_cub(tmp_path / "a1", capsys)
    section = _report(tmp_path, data, enc, q)
    first = section.lstrip().splitlines()[0]
    assert first.startswith(f"> **{MARK} Not the paper's setting**: 30 images (paper: 11,788);")
    assert "32 px input (paper: 224 px)" in first and "pretrained none" in first
    row = [line for line in section.splitlines() if line.startswith("| Backward Search")][0]
    assert row.rstrip(" |").endswith(f"| +0.159 {MARK}") and "0.633 |" in row


def test_report_in_the_papers_setting_has_no_banner_and_no_marks(tmp_path):
    section = _report(tmp_path, *paper_cub())
    assert "Not the paper's setting" not in section and MARK not in section
    assert "| +0.159 |" in section


def test_summary_sets_the_paper_beside_and_marks_every_delta_where_the_setting_differs(
    tmp_path, capsys
):
    bs = {"paper_map@10": 0.5, "mts@10": 0.16, "lambda": 0.51}
    student = {"paper_map@10": 0.4, "mts@10": 0.2, "lambda": 0.51}
    numbers = {"methods": {"backward_search": bs, "student": student}}
    numbers["retrieved_similarity"] = 0.6
    (p_map, p_mts), p6 = TABLE4["backward_search"]["CUB"], TABLE6["CUB"]
    data, enc, q = paper_cub()
    same = _full_report(tmp_path / "paper", data, enc, q | numbers)
    summary = same.split("## Summary")[1].split("\n## ")[0]
    assert "beside the paper's column CUB (Δ = ours − paper)." in summary
    assert (
        f"- Backward Search at λ = 0.51: precision@10 0.500 (paper {p_map:.3f}, Δ "
        f"{0.5 - p_map:+.3f}); mTS@10 0.160 (paper {p_mts:.3f}, Δ {0.16 - p_mts:+.3f})."
    ) in summary
    s_map, s_mts, _ = p6["student"]
    assert (
        f"- Student (distilled) at λ = 0.51: precision@10 0.400 (paper {s_map:.3f}, Δ "
        f"{0.4 - s_map:+.3f}); mTS@10 0.200 (paper {s_mts:.3f}, Δ {0.2 - s_mts:+.3f}); "
        f"retrieved similarity with Backward Search 0.600 (paper "
        f"{p6['retrieved_similarity']:.3f}, Δ {0.6 - p6['retrieved_similarity']:+.3f})."
    ) in summary
    assert MARK not in summary and "Best baseline" not in summary  # the paper's setting
    data, enc, q = small_cub(tmp_path / "a1", capsys)
    other = _full_report(tmp_path / "small", data, enc, q | numbers)
    summary = other.split("## Summary")[1].split("\n## ")[0]
    assert (
        f"every Δ is marked {MARK}: not the paper's setting (30 images (paper: 11,788);" in summary
    )
    deltas = re.findall(r"Δ [+-]\d\.\d{3}( †)?", summary)
    assert len(deltas) == 5 and all(deltas)  # Backward Search ×2, student ×2, similarity
    assert "Best baseline" not in summary
