"""REPORT.md: holds the tables E1 wrote, links only figures that exist, settings and caveats."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from src.report.document import build_report, metrics_table, write_report
from src.report.setting import MARK
from src.report.stats import seeds_table

RUN = "wikiart_convnext_base_e256_ft"


def method(pm, m, mts, **extra):
    return {
        "paper_map@10": pm,
        "map@10": m,
        "mts@10": mts,
        "context_preservation": {"genre": 0.25},
        "iterations_mean": None,
        "iterations_sd": None,
        "satisfied_at_mean": None,
        "ms_per_query": None,
        "queries_per_s": None,
        "lambda": None,
        **extra,
    }


def metrics(task: str, exclude: bool = False) -> dict:
    return {
        "task": task,
        "run": RUN,
        "lambda": 1.1,
        "n_queries": 1000,
        "database_size": 16289,
        "exclude_query": exclude,
        "methods": {
            "random": method(0.031, 0.012, 0.0347),
            "knn": method(0.041, 0.02, 0.2),
            "backward_search": method(
                0.8123, 0.7, 0.15, iterations_mean=21.5, iterations_sd=4.25, ms_per_query=0.0123
            ),
        },
        "retrieved_similarity": None,
    }


def config(command: str, seed: int, **args) -> dict:
    return {
        "command": command,
        "args": {"seed": seed, **args},
        "versions": {"python": "3.12.1", "torch": "9.9.9-test"},
        "created": "2026-01-01 00:00:00",
    }


def write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(obj, str):
        path.write_text(obj)
    else:
        path.write_text(json.dumps(obj))


def tiny_png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)


def make_tree(root: Path, tag_fallback: bool) -> dict[str, Path]:
    roots = {k: root / k for k in ("data", "weights", "results")}
    a1 = config("A1_preprocess.py --dataset wikiart", 777)
    a1["tag_source"] = "genre+style+artist (fallback)" if tag_fallback else "attributions"
    write(roots["data"] / "wikiart" / "config.json", a1)
    b1 = config("B1_train_encoder.py --dataset wikiart", 5, backbone=None, embedding_size=None)
    b1["recipe"] = {"backbone": "resnet50", "embedding_size": 256, "epochs": 30}
    b1["encoder"] = {"frozen": True}
    b1.update(device="cuda", precision="bf16", result={"seconds": 1234.0})
    write(roots["weights"] / RUN / "config.json", b1)
    a2 = config("A2_make_queries.py --task wikiart-style", 1234)
    write(roots["data"] / "wikiart" / "queries_wikiart-style.json", a2)
    d1 = config("D1_train_distill.py --task wikiart-style", 49)
    write(roots["weights"] / RUN / "student_wikiart-style_lam1.1.json", d1)
    (roots["weights"] / RUN / "student_wikiart-style_lam1.1.pt").write_bytes(b"")  # D1 writes both
    c1 = {"test_accuracy": {"style": 0.61, "genre": 0.7}, "train_transform": "train"}
    c1 |= config("C1_extract_embeddings.py --dataset wikiart", 3)
    write(roots["weights"] / RUN / "metrics.json", c1 | {"augmentation_seed": 3})
    base = roots["results"] / RUN
    t = base / "wikiart-style"
    write(t / "metrics.json", metrics("wikiart-style"))
    write(t / "config.json", config("E1_evaluate.py --task wikiart-style", 11, device="cuda"))
    write(t / "figures" / "config.json", config("E2_visualize.py --task wikiart-style", 12))
    write(
        t / "table2.md",
        "| method | ours | paper | diff |\n|---|---|---|---|\n| BS | 0.812 | 0.837 | -0.025 |",
    )
    write(t / "table6.md", "| source | teacher mAP@10 |\n|---|---|\n| ours | 0.812 |")
    write(
        t / "table5.md",
        "### E1's own title\n\n| task | iterations |\n|---|---|\n| WikiArt-style | 21.50 |",
    )
    pd.DataFrame(
        {
            "lambda": [0, 1, 4],
            "paper_map@10": [0.9, 0.6, 0.2],
            "map@10": [0.8, 0.5, 0.1],
            "mts@10": [0.05, 0.1, 0.2],
        }
    ).to_csv(t / "sweep.csv", index=False)
    write(
        t / "calibration.json",
        {
            "target_mts": 0.15,
            "lambda": 2.5,
            "paper_map@10": 0.55,
            "mts@10": 0.149,
            "steps": [1, 2, 3],
        },
    )
    tiny_png(t / "figures" / "results_q0.png")
    tiny_png(t / "figures" / "fig5_q0.png")
    tiny_png(base / "figures" / "fig6_lambda.png")
    # wikiart-multi was never evaluated: no folder, no section
    return roots


def links(text: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)


def test_report_holds_tables_links_settings_and_caveats(tmp_path):
    r = make_tree(tmp_path, tag_fallback=True)
    path = write_report(r["results"], r["weights"], r["data"], RUN, "wikiart")
    assert path == r["results"] / RUN / "REPORT.md"
    text = path.read_text()
    base = path.parent
    # every table E1 wrote, verbatim (ours beside the paper's with the difference)
    assert "| BS | 0.812 | 0.837 | -0.025 |" in text
    assert "| WikiArt-style | 21.50 |" in text
    assert "Table 4" not in text  # E1 wrote no table4.md here: no empty section
    assert text.count("### E1's own title") == 1 and "Table 5 —" not in text  # no double title
    # our numbers from metrics.json, sweep and calibration
    assert "0.812" in text and "21.50 ± 4.25" in text and "0.0123" in text
    assert "| 4 | 0.200 | 0.100 | 0.200 |" in text
    assert "λ = 2.5 gives" in text and "0.149" in text
    # figures: each existing PNG linked with a path that resolves from REPORT.md's folder
    found = links(text)
    assert {Path(p).name for p in found} == {"results_q0.png", "fig5_q0.png", "fig6_lambda.png"}
    assert all((base / p).is_file() for p in found)
    # only evaluated tasks get a section
    assert "wikiart-style" in text and "## Task `wikiart-multi`" not in text
    # settings, seeds, versions from the config.json files
    assert "seed 777" in text and "seed 5" in text and "seed 11" in text
    assert "- A2 wikiart-style: `A2_make_queries.py --task wikiart-style` (seed 1234" in text
    assert "- D1 student_wikiart-style_lam1.1: `D1_train_distill.py" in text and "seed 49" in text
    assert "9.9.9-test" in text and "style 0.610" in text
    # what cannot be compared
    assert "attribution table" in text  # WikiArt without wikiart_attributions.csv
    assert "backbone resnet50 (paper: convnext_base)" in text and "backbone frozen" in text
    assert "epochs 30 (paper" not in text  # same as the paper's: not listed as a difference
    assert "backbone = resnet50" in text and "B1 took 1234 s on cuda (bf16" in text
    assert "RTX 3090" in text
    # the protocol behind the numbers, and where each table comes from
    assert "- B1 encoder: precision: bf16; quirks: not recorded" in text
    assert "- C1 embeddings: train split with the train transform; augmentation seed: 3" in text
    assert "- A1 data: quirks: not recorded" in text and "--exclude-query: no" in text
    assert "distilled on C1's train-split embeddings made with the train transform" in text
    cmd = "written by `E1_evaluate.py --task wikiart-style`"
    files = "metrics.json, table2.md, table5.md, table6.md, sweep.csv, calibration.json"
    assert f"Source: `{RUN}/wikiart-style/`: {files}, {cmd}." in text
    assert text.count("Source: `") == 1  # once per task, not under every table
    assert "these are the authors' own" not in text and "not the authors' random" in text
    assert "SynthArt" not in text.split("## Settings")[0].split("What cannot be compared")[1]
    settings = text.split("## Settings")[1]  # every stage's command, C1 and E2 included
    assert "- C1 embeddings: `C1_extract_embeddings.py --dataset wikiart` (seed 3" in settings
    assert "- E2 wikiart-style: `E2_visualize.py --task wikiart-style` (seed 12" in settings


def test_tag_caveat_only_without_the_attribution_table(tmp_path):
    r = make_tree(tmp_path, tag_fallback=False)
    text = build_report(r["results"], r["weights"], r["data"], RUN, "wikiart")
    assert "attribution table" not in text


def test_synthart_report_says_it_is_not_comparable_and_what_is_missing(tmp_path):
    base = tmp_path / "results" / "synthart_convnext_atto_e64_ft"
    (base / "synthart-style").mkdir(parents=True)  # E2 ran, E1 did not
    # A1 records every flag, --attributions among them, even for SynthArt: no tag caveat for that
    write(tmp_path / "d" / "synthart" / "config.json", config("A1", 0, attributions=None))
    text = build_report(tmp_path / "results", tmp_path / "w", tmp_path / "d", base.name, "synthart")
    assert "cannot be compared with any column of the paper" in text
    assert "run `E1_evaluate.py --task synthart-style` first" in text
    assert "B1 encoder: no config.json found" in text and "seed 0" in text
    assert "attribution table" not in text
    assert links(text) == []


def test_metrics_table_orders_methods_and_lists_context():
    df = metrics_table(metrics("x"))
    assert list(df["method"]) == ["random search", "k-nearest search", "Backward Search"]
    assert "keeps query's genre" in df.columns
    assert df.loc[2, "iterations, batched rule (mean ± sd)"] == "21.50 ± 4.25"


def test_report_from_the_authors_release_names_its_protocol_and_sets_the_paper_beside(tmp_path):
    """Fixture release → import → E1 (empty-tag-token) → REPORT.md (issue 15's report)."""
    import E1_evaluate
    from src.cli import run_stage
    from src.paper import TABLE2, TABLE4
    from src.release.convert import import_release
    from tests._fixtures_release import write_cub_like

    write_cub_like(tmp_path / "release")
    roots = {k: tmp_path / k for k in ("data", "weights", "results")}
    (run,) = import_release(tmp_path / "release", "cub", roots["data"], roots["weights"])
    argv = ["--task", "cub-bird", "--run", run, "--device", "cpu"]
    argv += ["--authors-quirks", "empty-tag-token"]
    argv += [a for k, p in roots.items() for a in (f"--{k}-root", str(p))]
    assert run_stage(E1_evaluate.main, argv) == 0
    text = write_report(roots["results"], roots["weights"], roots["data"], run, "cub").read_text()
    section = text.split("## Task `cub-bird`")[1].split("## Settings")[0]
    # an imported run has the paper's setting except its recorded encoder configuration (E=16)
    banner, rest = section.lstrip().split("\n\n", 1)
    assert banner == (
        "> **† Not the paper's setting**: E = 16 (paper: 256). Every Δ marked † sets numbers "
        "from a different setting beside the paper's: read it as context, not as a reproduction gap."
    )
    assert rest.startswith("**Computed by our E1 from the authors' released artifacts**")
    protocol = section.split("### Protocol")[1].split("###")[0]
    assert "- A1 data: imported from the authors' release" in protocol
    assert "quirks added on import: suite (authors' bugs fixed)" in protocol
    assert "the cub-tag-shift quirk is in their files" in protocol
    assert "the authors' trained heads" in protocol and "precision: not recorded" in protocol
    assert "- E1: mTS@10 authors' quirks: empty-tag-token; --exclude-query: no" in protocol
    assert "The student is the authors' own" in section.split("### Table 6")[1]
    assert "λ = 0.51" in protocol and "`student_cub-bird_lam0.51.pt`" in protocol
    # the paper's values beside ours, with Δ
    table2 = section.split("### Table 2")[1].split("###")[0]
    t2 = [line for line in table2.splitlines() if line.startswith("| Backward Search |")][0]
    assert f"| {TABLE2['backward_search']['CUB']:.3f} |" in t2
    assert t2.rstrip(" |").split("| ")[-2].strip()[0] in "+-"  # Δ beside it
    assert "Δ mAP@10" in section and "Δ mTS@10" in section
    paper_map, paper_mts = TABLE4["searle"]["CUB"]
    assert f"{paper_map:.3f}" in section and f"{paper_mts:.3f}" in section
    # random search is marked; the queries are theirs; no claim about encoder training (what
    # cannot be compared is said once, after the Summary)
    assert section.count("random: unseeded in the authors' code, differs by nature") >= 3
    caveats = text.split("## What cannot be compared")[1].split("\n## ")[0]
    assert "these are the authors' own 8 queries" in caveats
    assert "not the authors' random streams" not in text
    assert "The encoder differs" not in text
    assert "the authors' own trained encoder, but not the configuration" in caveats
    assert "embedding_size 16 (paper: 256)" in caveats
    assert "has no student" not in text
    # the task's tables name their artifacts and the E1 command, once
    files = "metrics.json, table2.md, table4.md, table5.md, table6.md"
    assert f"Source: `{run}/cub-bird/`: {files}, written by `" in section
    assert section.count("Source: `") == 1
    assert "B1 encoder: `import_release(" in text.split("## Settings")[1]
    # the Summary: imported, beside the paper, every Δ marked; E1's release note said once
    summary = summary_of(text)
    assert "computed by our E1 from the authors' released artifacts; beside the paper's " in summary
    bs_map = TABLE4["backward_search"]["CUB"][0]
    assert f"(paper {bs_map:.3f}, Δ " in summary
    assert re.findall(r"Δ [+-]\d\.\d{3}( †)?", summary).count(" †") >= 4
    assert "From the authors' released artifacts" not in text  # the section's bold line says it


def test_report_on_an_imported_run_without_a_student_says_so(tmp_path):
    import shutil

    import E1_evaluate
    from src.cli import run_stage
    from src.release.convert import import_release
    from tests._fixtures_release import write_cub_like

    fx = write_cub_like(tmp_path / "release")
    shutil.rmtree(fx["folder"] / "knowledge_distill_model_lambda0.51_reg0.0")
    roots = {k: tmp_path / k for k in ("data", "weights", "results")}
    (run,) = import_release(tmp_path / "release", "cub", roots["data"], roots["weights"])
    argv = ["--task", "cub-bird", "--run", run, "--device", "cpu"]
    argv += [a for k, p in roots.items() for a in (f"--{k}-root", str(p))]
    assert run_stage(E1_evaluate.main, argv) == 0
    text = build_report(roots["results"], roots["weights"], roots["data"], run, "cub")
    assert "The release has no student for this task" in text and "student: none" in text


def test_protocol_block_reads_each_stage_and_says_what_is_not_recorded():
    from src.report.protocol import protocol_block

    data = {"quirks": ["cub-tag-shift"], "split": "StratifiedShuffleSplit by species"}
    enc = {"precision": "fp32", "quirks": []}
    c1 = {"train_transform": "train", "augmentation_seed": 0}
    e1 = {
        "quirks": ["empty-tag-token"],
        "args": {"exclude_query": True},
        "lambda_source": "--lambda",
    }
    lines = "\n".join(protocol_block(data, enc, c1, e1, {"lambda": 0.51}))
    assert "quirks: authors' quirks: cub-tag-shift; split: StratifiedShuffleSplit" in lines
    assert "precision: fp32; quirks: suite (authors' bugs fixed)" in lines
    assert "train split with the train transform; augmentation seed: 0" in lines
    assert "authors' quirks: empty-tag-token; --exclude-query: yes; λ = 0.51 (--lambda)" in lines
    old = "\n".join(protocol_block({}, {}, {}, {}, {}))
    assert old.count("not recorded") == 9


# ---------------------------------------------------------------------------------------------
# Beyond the paper: intervals, paired tests, the trade-off plane, seeds


def with_statistics(m: dict) -> dict:
    """metrics() with intervals, the two baselines and the paired tests E1 writes."""
    m = json.loads(json.dumps(m))
    m["methods"]["filtered_knn"] = method(0.95, 0.9, 0.12)
    m["methods"]["centroid_shift"] = method(0.5, 0.4, 0.1, alpha=1.0)
    for s in m["methods"].values():
        s["ci"] = {
            "paper_map@10": [s["paper_map@10"] - 0.01, s["paper_map@10"] + 0.02],
            "map@10": [s["map@10"] - 0.01, s["map@10"] + 0.01],
            "mts@10": [s["mts@10"] - 0.005, s["mts@10"] + 0.005],
            "context_preservation": {"genre": [0.2, 0.3]},
        }
    diff = {"mean": 0.03, "low": 0.01, "high": 0.05, "p": 1 / 1001}
    near = {"mean": 0.004, "low": -0.01, "high": 0.02, "p": 0.61}
    m["paired"] = {
        "backward_search_minus": {
            "knn": {"paper_map@10": diff, "mts@10": near},
            "centroid_shift": {"paper_map@10": near, "mts@10": near},
        }
    }
    m["bootstrap"] = {"resamples": 1000, "seed": 0}
    return m


def test_report_shows_intervals_baselines_and_marks_paired_differences_containing_0(tmp_path):
    r = make_tree(tmp_path, tag_fallback=False)
    t = r["results"] / RUN / "wikiart-style"
    write(t / "metrics.json", with_statistics(metrics("wikiart-style")))
    cal = json.loads((t / "calibration.json").read_text()) | {"mts@10_ci": [0.14, 0.158]}
    write(t / "calibration.json", cal)
    text = build_report(r["results"], r["weights"], r["data"], RUN, "wikiart")
    assert "| Backward Search | — | 0.812 [0.802, 0.832] |" in text
    assert "head-filtered kNN (not in the paper)" in text
    assert "class-centroid shift at α = 1 (not in the paper)" in text
    assert "0.250 [0.200, 0.300]" in text  # context preservation with its interval
    assert "95% low" not in text
    paired = text.split("(paired bootstrap over the same queries)")[1].split("###")[0]
    assert (
        "| k-nearest search | +0.030 [0.010, 0.050] | < 0.001 | +0.004 [-0.010, 0.020] | 0.61 | mTS@10 |"
        in paired
    )
    assert "| precision@10, mTS@10 |" in paired  # centroid shift: neither interval excludes 0
    assert "mTS@10 0.149 [0.140, 0.158]" in text  # the calibrated mTS@10's interval


def test_report_states_the_plane_from_the_sweeps_and_links_its_figures(tmp_path):
    r = make_tree(tmp_path, tag_fallback=False)
    t = r["results"] / RUN / "wikiart-style"
    write(t / "metrics.json", with_statistics(metrics("wikiart-style")))
    sweep = pd.DataFrame(
        {"lambda": [0, 1, 4], "paper_map@10": [0.9, 0.6, 0.2], "mts@10": [0.05, 0.1, 0.2]}
    )
    sweep.assign(context_genre=[0.1, 0.3, 0.5]).to_csv(t / "sweep.csv", index=False)
    alpha = pd.DataFrame(
        {"alpha": [0, 1, 2], "paper_map@10": [0.04, 0.5, 0.7], "mts@10": [0.2, 0.1, 0.05]}
    )
    alpha.assign(context_genre=[0.6, 0.3, 0.1]).to_csv(t / "sweep_alpha.csv", index=False)
    tiny_png(t / "figures" / "plane_mts.png")
    text = build_report(r["results"], r["weights"], r["data"], RUN, "wikiart")
    section = text.split("### Trade-off plane")[1].split("\n### ")[0]
    # BS 0.2 vs CS 0.04 at mTS 0.2, 0.6 vs 0.5 at 0.1, 0.9 vs 0.7 at 0.05: BS higher at all 3
    assert (
        "**x = mTS@10.** At equal mTS@10 (±0.01), Backward Search has the higher precision@10 "
        "at 3 of 3 matched points and the class-centroid shift at 0" in section
    )
    assert "**x = context preservation (genre).**" in section
    assert "![plane_mts](wikiart-style/figures/plane_mts.png)" in section
    assert "plane_context" not in section  # E2 drew no such figure here: no dead link
    assert text.count("plane_mts.png") == 1  # not repeated in the generic figure list
    files = "metrics.json, table2.md, table5.md, table6.md, sweep.csv, sweep_alpha.csv"
    assert f"Source: `{RUN}/wikiart-style/`: {files}, calibration.json, written by" in text


def test_seeds_table_gives_mean_and_sd_across_runs(tmp_path):
    r = make_tree(tmp_path, tag_fallback=False)
    base = with_statistics(metrics("wikiart-style"))
    for i, pm in enumerate((0.70, 0.74), start=1):
        m = json.loads(json.dumps(base))
        m["methods"]["backward_search"]["paper_map@10"] = pm
        write(r["results"] / f"{RUN}-seed{i}" / "wikiart-style" / "metrics.json", m)
    write(r["results"] / f"{RUN}-seedx" / "wikiart-style" / "metrics.json", base)  # not a seed
    write(r["results"] / RUN / "wikiart-style" / "metrics.json", base)
    text = build_report(r["results"], r["weights"], r["data"], RUN, "wikiart")
    section = text.split("### Across B1 seeds")[1].split("\n### ")[0]
    assert f"`{RUN}`, `{RUN}-seed1`, `{RUN}-seed2`" in section and "seedx" not in section
    # precision@10 of Backward Search over 0.8123, 0.70, 0.74: mean 0.751, sd 0.057
    assert "| Backward Search | 3 | 0.751 ± 0.057 | 0.030 |" in section


def test_seeds_table_refuses_runs_of_another_configuration():
    a = with_statistics(metrics("x"))
    b = json.loads(json.dumps(a)) | {"lambda": 2.0}
    with pytest.raises(ValueError, match="run b differs from a in lambda"):
        seeds_table({"a": a, "b": b})
    assert seeds_table({"a": a}) is None


# ---------------------------------------------------------------------------------------------
# The Summary, the notes said once, the plane of a task that conditions on every attribute


def summary_of(text: str) -> str:
    return text.split("## Summary")[1].split("\n## ")[0]


def test_best_baseline_is_the_baselines_highest_precision():
    from src.report.summary import best_baseline

    precision = {"random": 0.1, "knn": 0.3, "centroid_shift": 0.3, "filtered_knn": 0.2}
    precision |= {"backward_search": 0.9, "student": 0.95}  # never a baseline
    methods = {m: {"paper_map@10": v} for m, v in precision.items()}
    assert best_baseline(methods) == "knn"  # tie with the centroid shift: the tables' order
    methods["filtered_knn"]["paper_map@10"] = 0.31
    assert best_baseline(methods) == "filtered_knn"
    assert best_baseline({"backward_search": {"paper_map@10": 0.9}}) is None


def synthart_report(tmp_path: Path, m: dict) -> str:
    run = "synthart_convnext_atto_e64_ft"
    write(tmp_path / "data" / "synthart" / "config.json", config("A1", 0))
    write(tmp_path / "results" / run / "synthart-style" / "metrics.json", m)
    return build_report(tmp_path / "results", tmp_path / "w", tmp_path / "data", run, "synthart")


def test_summary_without_a_paper_column_sets_the_best_baseline_beside(tmp_path):
    m = with_statistics(metrics("synthart-style"))
    m["methods"]["student"] = method(0.7, 0.6, 0.16, ms_per_query=0.0005)  # λ: the task's
    m["methods"]["student"]["ci"] = {"paper_map@10": [0.68, 0.72], "mts@10": [0.15, 0.17]}
    m["methods"]["backward_search"]["lambda"] = 1.1
    best = {"mean": -0.138, "low": -0.15, "high": -0.12, "p": 1 / 1001}
    m["paired"]["backward_search_minus"]["filtered_knn"] = {
        "paper_map@10": best,
        "mts@10": {"mean": 0.03, "low": 0.02, "high": 0.04, "p": 0.042},
    }
    summary = summary_of(synthart_report(tmp_path, m))
    bs, st, fk = (m["methods"][k] for k in ("backward_search", "student", "filtered_knn"))

    def shown(s: dict, key: str) -> str:  # a number of metrics.json as the Summary writes it
        lo, hi = s["ci"][key]
        return f"{s[key]:.3f} [{lo:.3f}, {hi:.3f}]"

    assert "no paper column (SynthArt), so beside the best baseline" in summary
    assert (
        f"- Backward Search at λ = 1.1: precision@10 {shown(bs, 'paper_map@10')}; "
        f"mTS@10 {shown(bs, 'mts@10')}; 0.0123 ms/query."
    ) in summary
    assert (
        f"- Student (distilled) at λ = 1.1: precision@10 {shown(st, 'paper_map@10')}; "
        f"mTS@10 {shown(st, 'mts@10')}; 0.0005 ms/query."
    ) in summary
    # head-filtered kNN (0.95) beats the centroid shift (0.5), kNN and random; the paired Δ is E1's
    assert (
        "- Best baseline by precision@10: head-filtered kNN (not in the paper), "
        f"precision@10 {shown(fk, 'paper_map@10')}; mTS@10 {shown(fk, 'mts@10')}. "
        "Backward Search − it, paired over the same queries: precision@10 -0.138 [-0.150, "
        "-0.120] (p < 0.001); mTS@10 +0.030 [0.020, 0.040] (p = 0.042)."
    ) in summary
    assert "(paper " not in summary and "Δ" not in summary and MARK not in summary


def test_report_states_e1s_table_notes_once_and_captions_short(tmp_path):
    from src.report.markdown import METRIC_NOTE, markdown
    from src.report.tables import table_notes
    from src.tasks import get_task

    r = make_tree(tmp_path, tag_fallback=False)
    t = r["results"] / RUN / "wikiart-style"
    m = with_statistics(metrics("wikiart-style")) | {"device": "cuda", "quirks": []}
    write(t / "metrics.json", m)
    notes = table_notes(get_task("wikiart-style"), m).lines()
    df = pd.DataFrame([{"method": "Backward Search", "mAP@10 (ours)": 0.8123}])
    for stem in ("table2", "table4"):
        title = f"Table {stem[-1]} — E1's caption — wikiart-style, run {RUN}"
        write(t / f"{stem}.md", markdown(df, title, get_task("wikiart-style"), [*notes, "Own."]))
    text = build_report(r["results"], r["weights"], r["data"], RUN, "wikiart")
    assert "### Table 2 — E1's caption\n" in text and f", run {RUN}" not in text
    assert text.count("Own.") == 2  # a table's own note stays under it
    assert text.count(METRIC_NOTE) == 1  # in "Reading the tables"
    assert "Paper values:" not in text and "Queries: 1000" not in text
    assert text.count("[low, high]") == 1 and "(1000 resamples, seed 0)" in text
    assert (
        "paper column: WikiArt-style (SPEC §8) · λ = 1.1 · 1000 queries · database 16289 tagged "
        "test images · query image kept in the database · device cuda"
    ) in text


def test_a_task_conditioning_on_every_attribute_says_why_it_has_no_context_plane(tmp_path):
    r = make_tree(tmp_path, tag_fallback=False)
    t = r["results"] / RUN / "wikiart-multi"
    m = with_statistics(metrics("wikiart-multi"))
    for s in m["methods"].values():  # style and genre are both conditions: no context left
        s["context_preservation"] = {}
        s["ci"].pop("context_preservation")
    write(t / "metrics.json", m)
    pd.DataFrame(
        {"lambda": [0, 1, 4], "paper_map@10": [0.9, 0.6, 0.2], "mts@10": [0.05, 0.1, 0.2]}
    ).to_csv(t / "sweep.csv", index=False)
    text = build_report(r["results"], r["weights"], r["data"], RUN, "wikiart")
    why = (
        "No context plane (plane_context.png): the task conditions on every label attribute "
        "(style, genre), so none is left unconditioned to preserve; mTS@10 is its only measure "
        "of context."
    )
    section = text.split("## Task `wikiart-multi`")[1].split("### Trade-off plane")[1]
    assert f"**x = context preservation.** {why}" in section.split("\n### ")[0]
    assert f"- Trade-off plane, x = context preservation: {why}" in summary_of(text)
    style = text.split("## Task `wikiart-style`")[1].split("## Task `wikiart-multi`")[0]
    assert "No context plane" not in style  # genre is free there


def test_the_summary_says_when_the_test_split_is_small():
    """Issue 30: how many test images per class, the classes never a condition, A2's note."""
    from src.report.summary import small_split_lines

    meta = {
        "num_queries": 412,
        "test_images": 148,
        "note": "412 queries, not the protocol's 1000: the test split (148 images) has only 412 "
        "valid (image, condition) pairs",
        "test_class_counts": {"artist": {"a": 43, "b": 30, "c": 9, "d": 66}},
    }
    (line,) = small_split_lines(meta)
    assert line.startswith("- Small test split: 148 images, 9–66 per class of artist (artist c: ")
    assert meta["note"] in line and "412 queries" in line and "intervals" in line
    large = {**meta, "num_queries": 1000, "note": None}
    assert small_split_lines(large)  # still small: class c can never be a condition
    large["test_class_counts"] = {"artist": {"a": 400, "b": 200}}
    assert small_split_lines(large) == [] and small_split_lines(None) == []
