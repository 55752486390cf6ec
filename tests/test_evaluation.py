"""E1 end to end on a tiny hand-made pipeline (tests/_pipeline.py): metrics, tables, sweep,
calibration, the query protocol, the student, and the error paths.

The fixture's heads are accurate and its embedding space keeps context (genre, scene tags) but
not style, so kNN rarely satisfies a style condition while Backward Search at λ = 0 does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import D1_train_distill
import E1_evaluate
from src import paper
from src.cli import run_stage
from src.evaluation import methods as ev
from src.evaluation import task_eval
from src.evaluation.methods import BackwardSearches
from src.evaluation.registry import METHODS as REGISTRY
from src.evaluation.registry import Setting, rank
from src.evaluation.scoring import score
from src.evaluation.space import Queries, SearchSpace, file_queries, load_space
from src.evaluation.sweeps import calibrate, evaluate_lambda
from src.evaluation.timing import REPEATS
from src.queries import read_queries
from src.report import tables
from src.tags import split_tags
from src.tasks import get_task
from tests._pipeline import build_pipeline

ROOT = Path(__file__).resolve().parents[1]
FIG6 = [0.0, *paper.FIG6_LAMBDAS]


def load(p, task: str, exclude_query: bool = False) -> tuple[SearchSpace, Queries]:
    """The search space of a fixture and its query file's queries, as E1 loads them."""
    space = load_space(p.data_root, p.weights_root, get_task(task), p.run, torch.device("cpu"))
    q = file_queries(space, read_queries(p.data_root, task), exclude_query=exclude_query)
    return space, q


def e1(p, *args: str) -> Path:
    """Run E1 in-process on a fixture; return its results folder for the task given."""
    rc = run_stage(E1_evaluate.main, p.argv(*args))
    assert rc == 0
    task = args[args.index("--task") + 1]
    return p.results_root / p.run / task


def e1_error(p, capsys, *args: str) -> str:
    capsys.readouterr()
    assert run_stage(E1_evaluate.main, p.argv(*args)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    return err


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    return build_pipeline(tmp_path_factory.mktemp("synth"), "synthart")


@pytest.fixture(scope="session")
def wiki(tmp_path_factory):
    return build_pipeline(tmp_path_factory.mktemp("wiki"), "wikiart")


@pytest.fixture(scope="session")
def synth_style(synth):
    """E1 --task synthart-style --sweep, once for the session."""
    return e1(synth, "--task", "synthart-style", "--sweep", "--device", "cpu")


@pytest.fixture(scope="session")
def wiki_style(wiki):
    return e1(wiki, "--task", "wikiart-style", "--device", "cpu")


def read_metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def copy_pipeline(p, dest: Path):
    shutil.copytree(p.root, dest / "copy", ignore=shutil.ignore_patterns("results"))
    return type(p)(
        dest / "copy",
        *(dest / "copy" / x for x in ("data", "weights", "results")),
        p.dataset,
        p.run,
    )


# ---------------------------------------------------------------------------------------------
# metrics.json and the retrievals


def test_fixture_heads_are_accurate(synth):
    acc = json.loads((synth.weights_root / synth.run / "metrics.json").read_text())
    assert min(acc["test_accuracy"].values()) >= 0.95


def test_metrics_json_fields_and_ranges(synth_style):
    m = read_metrics(synth_style)
    task = get_task("synthart-style")
    assert m["task"] == task.name and m["run"] == "tiny_e18"
    assert m["lambda"] == task.default_lambda
    assert (m["n_queries"], m["database_size"], m["exclude_query"]) == (40, 96, False)
    baselines = {"filtered_knn", "centroid_shift"}
    assert set(m["methods"]) == {"random", "knn", "backward_search"} | baselines  # no student
    assert m["retrieved_similarity"] is None
    fields = {
        "paper_map@10",
        "map@10",
        "mts@10",
        "context_preservation",
        "iterations_mean",
        "iterations_sd",
        "satisfied_at_mean",
        "ms_per_query",
        "queries_per_s",
        "lambda",
    }
    for method, s in m["methods"].items():
        assert fields <= set(s), method
        for key in ("paper_map@10", "map@10", "mts@10"):
            assert 0.0 <= s[key] <= 1.0, (method, key)
        assert set(s["context_preservation"]) == {"genre"}  # the label attribute not conditioned
        assert 0.0 <= s["context_preservation"]["genre"] <= 1.0
        # every metric has its 95 % bootstrap interval, around the mean
        ci = s["ci"]
        for key in ("paper_map@10", "map@10", "mts@10"):
            assert 0.0 <= ci[key][0] <= s[key] <= ci[key][1] <= 1.0, (method, key)
        lo, hi = ci["context_preservation"]["genre"]
        assert lo <= s["context_preservation"]["genre"] <= hi
    for method in ("random", "knn", *baselines):
        s = m["methods"][method]
        assert s["iterations_mean"] is None and s["ms_per_query"] is None and s["lambda"] is None
    assert m["methods"]["centroid_shift"]["alpha"] == m["alpha"] == 1.0
    # Backward Search against every other method, paired on the same queries
    paired = m["paired"]["backward_search_minus"]
    assert set(paired) == {"random", "knn", *baselines}
    for method, d in paired.items():
        for key in ("paper_map@10", "mts@10"):
            diff = m["methods"]["backward_search"][key] - m["methods"][method][key]
            assert d[key]["mean"] == pytest.approx(diff)
            assert d[key]["low"] <= d[key]["mean"] <= d[key]["high"] and 0 < d[key]["p"] <= 1
    bs = m["methods"]["backward_search"]
    assert 1 <= bs["iterations_mean"] <= 100 and bs["iterations_sd"] >= 0
    assert 0 <= bs["satisfied_at_mean"] <= bs["iterations_mean"]
    assert bs["ms_per_query"] > 0 and bs["queries_per_s"] > 0
    assert bs["ms_per_query"] * bs["queries_per_s"] == pytest.approx(1000)
    # the timing pass: median of ≥ 3 repeats, with its min and max (src/evaluation/timing.py)
    assert bs["timing_repeats"] >= 3
    assert bs["ms_per_query_min"] <= bs["ms_per_query"] <= bs["ms_per_query_max"]
    assert bs["lambda"] == task.default_lambda
    # the query image stays in the database: kNN's first result is the query itself
    knn = pd.read_csv(synth_style / "retrievals_knn.csv")
    assert (knn["rank_1"] == knn["image"]).all()


def test_retrievals_csv_agrees_with_the_labels_and_tags(synth, synth_style):
    test = pd.read_csv(synth.data_root / "synthart" / "test.csv", keep_default_na=False)
    style_of = dict(zip(test["image"], test["style"], strict=True))
    tags_of = {k: split_tags(t) for k, t in zip(test["image"], test["tags"], strict=True)}
    m = read_metrics(synth_style)
    for method in m["methods"]:
        df = pd.read_csv(synth_style / f"retrievals_{method}.csv")
        ranks = [f"rank_{i}" for i in range(1, 11)]
        assert list(df.columns) == [
            "query_id",
            "image",
            "style",
            *ranks,
            "precision",
            "tag_similarity",
        ]
        assert list(df["query_id"]) == list(range(40))
        for _, row in df.iterrows():
            assert len(set(row[ranks])) == 10
            hits = [style_of[row[r]] == row["style"] for r in ranks]
            assert row["precision"] == pytest.approx(np.mean(hits))
            q = tags_of[row["image"]]
            jac = [len(q & tags_of[row[r]]) / len(q | tags_of[row[r]]) for r in ranks]
            assert row["tag_similarity"] == pytest.approx(np.mean(jac))
        s = m["methods"][method]
        assert s["paper_map@10"] == pytest.approx(df["precision"].mean())
        assert s["mts@10"] == pytest.approx(df["tag_similarity"].mean())


def test_backward_search_at_lambda_0_beats_knn(synth_style):
    t2 = pd.read_csv(synth_style / "table2.csv").set_index("method")
    bs0 = t2.loc["Backward Search", "mAP@10 (ours)"]
    knn = t2.loc["k-nearest search", "mAP@10 (ours)"]
    rnd = t2.loc["random search", "mAP@10 (ours)"]
    assert bs0 >= knn + 0.4 and bs0 >= rnd + 0.2
    sweep = pd.read_csv(synth_style / "sweep.csv")
    assert sweep.loc[sweep["lambda"] == 0, "paper_map@10"].item() == pytest.approx(bs0)


def test_alpha_sweep_beside_the_lambda_sweep(synth_style):
    alpha = pd.read_csv(synth_style / "sweep_alpha.csv")
    assert list(alpha["alpha"]) == [0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2]
    m = read_metrics(synth_style)["methods"]
    for key in ("paper_map@10", "mts@10"):  # α = 0 is kNN; α = 1 is the method's own row
        assert alpha[key].iloc[0] == pytest.approx(m["knn"][key])
        assert alpha.loc[alpha["alpha"] == 1, key].item() == pytest.approx(m["centroid_shift"][key])
    # the fixture's space does not keep style: moving to the class centroid brings it
    assert alpha["paper_map@10"].iloc[-1] >= alpha["paper_map@10"].iloc[0] + 0.3


def test_baselines_have_rows_of_their_own_marked_not_in_the_paper(synth_style):
    names = [
        "head-filtered kNN (not in the paper)",
        "class-centroid shift at α = 1 (not in the paper)",
    ]
    for name in ("table2", "table4"):
        t = pd.read_csv(synth_style / f"{name}.csv").set_index("method")
        assert set(names) <= set(t.index)
        md = (synth_style / f"{name}.md").read_text()
        assert all(n in md for n in names)
        # value and 95 % interval in one cell: "0.608 [0.525, 0.690]"
        row = t.loc["k-nearest search"]
        cell = f"{row['mAP@10 (ours)']:.3f} [{row['mAP@10 (ours) 95% low']:.3f}, "
        assert cell in md and "95% low" not in md
    for m in (k for k, r in REGISTRY.items() if not r.in_paper):
        assert (synth_style / f"retrievals_{m}.csv").is_file()


def test_sweep_trends_from_lambda_0_to_64(synth_style):
    sweep = pd.read_csv(synth_style / "sweep.csv")
    assert list(sweep["lambda"]) == FIG6
    assert {"paper_map@10", "map@10", "mts@10", "context_genre"} <= set(sweep.columns)
    first, last = sweep.iloc[0], sweep.iloc[-1]
    assert first["paper_map@10"] >= last["paper_map@10"] + 0.2  # condition fades as λ grows
    assert last["mts@10"] >= first["mts@10"] + 0.1  # context comes back
    assert last["context_genre"] >= first["context_genre"] + 0.1
    # the task's own λ (1.0) is on the grid: same numbers as the main evaluation
    bs = read_metrics(synth_style)["methods"]["backward_search"]
    assert sweep.loc[sweep["lambda"] == 1.0, "mts@10"].item() == pytest.approx(bs["mts@10"])


def test_exclude_query_drops_the_query_image(synth):
    out = e1(synth, "--task", "synthart-style", "--exclude-query", "--device", "cpu")
    m = read_metrics(out)
    assert m["exclude_query"] is True
    for method in m["methods"]:
        df = pd.read_csv(out / f"retrievals_{method}.csv")
        ranks = df[[f"rank_{i}" for i in range(1, 11)]].to_numpy()
        assert not (ranks == df["image"].to_numpy()[:, None]).any(), method


def test_two_conditions(wiki):
    out = e1(wiki, "--task", "wikiart-multi", "--device", "cpu")
    m = read_metrics(out)
    for s in m["methods"].values():
        assert s["context_preservation"] == {}  # both label attributes are conditioned
    df = pd.read_csv(out / "retrievals_backward_search.csv")
    assert {"style", "genre"} <= set(df.columns)
    t2 = pd.read_csv(out / "table2.csv").set_index("method")
    assert t2.loc["Backward Search", "mAP@10 (ours)"] > t2.loc["k-nearest search", "mAP@10 (ours)"]


def test_random_is_seeded(synth):
    space, q = load(synth, "synthart-style", exclude_query=True)
    a, b, c = ev.rank_random(space, q, 0), ev.rank_random(space, q, 0), ev.rank_random(space, q, 1)
    assert torch.equal(a.indices, b.indices) and not torch.equal(a.indices, c.indices)
    assert not (a.indices == q.exclude[:, None]).any()


def test_random_search_is_the_top_k_of_one_seeded_draw_of_keys(synth, monkeypatch):
    """rank_random drawn a few queries at a time ≡ its definition: the top K of one Q×N
    torch.rand draw, the excluded rows' keys below every other."""
    space, q = load(synth, "synthart-style", exclude_query=True)
    monkeypatch.setattr(ev, "RANDOM_BUDGET", 3 * len(space) + 1)  # 3 queries a chunk, a short last
    keys = torch.rand(len(q), len(space), generator=torch.Generator().manual_seed(5))
    keys[torch.arange(len(q)), q.exclude] = -1.0
    assert torch.equal(ev.rank_random(space, q, 5).indices, keys.topk(10, dim=1).indices)


def test_only_the_reported_lambda_is_timed(synth, monkeypatch):
    space, q = load(synth, "synthart-style")
    searches = BackwardSearches(space, q)
    calls = []
    search = ev.backward_search
    monkeypatch.setattr(ev, "backward_search", lambda *a, **k: calls.append(1) or search(*a, **k))
    swept = evaluate_lambda(searches, 0.5)  # a sweep or calibration step: one search, no timing
    assert len(calls) == 1 and swept["ms_per_query"] is None
    timed = searches(0.5, timed=True)  # the reported λ: warm-up + repeats
    assert len(calls) == 1 + 1 + REPEATS and timed.timing is not None
    assert score(space, q, timed).summary["paper_map@10"] == swept["paper_map@10"]
    assert searches(0.5, timed=True) is timed  # cached, not re-timed
    assert len(calls) == 1 + 1 + REPEATS


# ---------------------------------------------------------------------------------------------
# Calibration (Table 3 protocol)


def test_calibration_reaches_a_reachable_target(synth):
    searches = BackwardSearches(*load(synth, "synthart-style"))
    low, high = (evaluate_lambda(searches, 2.0**x)["mts@10"] for x in (-8, 8))
    assert high > low + 0.05
    target = (low + high) / 2
    cal = calibrate(searches, target, tolerance=0.01)
    assert cal["reached"] and abs(cal["mts@10"] - target) <= 0.01
    assert 2.0**-8 <= cal["lambda"] <= 2.0**8 and len(cal["steps"]) <= 14
    assert cal["paper_map@10"] == evaluate_lambda(searches, cal["lambda"])["paper_map@10"]
    lo, hi = cal["mts@10_ci"]  # the calibrated mTS@10 comes with its interval
    assert lo <= cal["mts@10"] <= hi and hi - lo > 0
    unreachable = calibrate(searches, 0.99)
    assert not unreachable["reached"] and unreachable["lambda"] == 2.0**8


def test_target_mts_writes_calibration_json(synth, tmp_path):
    p = copy_pipeline(synth, tmp_path)
    out = e1(
        p,
        "--task",
        "synthart-style",
        "--methods",
        "backward_search",
        "--target-mts",
        "0.4",
        "--device",
        "cpu",
    )
    cal = json.loads((out / "calibration.json").read_text())
    assert {"target_mts", "lambda", "paper_map@10", "mts@10", "steps"} <= set(cal)
    assert cal["target_mts"] == 0.4 and cal["steps"]
    best = min(cal["steps"], key=lambda s: abs(s["mts@10"] - 0.4))
    assert cal["lambda"] == best["lambda"]
    t4 = pd.read_csv(out / "table4.csv")
    assert t4["method"].str.contains("calibrated").any()
    t3 = pd.read_csv(out / "table3.csv")
    assert t3.loc[0, "mAP@10"] == pytest.approx(cal["paper_map@10"])
    assert tables.NOT_PAPER in (out / "table3.md").read_text()
    # the calibrated mTS@10 with its interval, in calibration.json and Table 3
    lo, hi = cal["mts@10_ci"]
    assert lo <= cal["mts@10"] <= hi
    assert (t3.loc[0, "mTS@10 95% low"], t3.loc[0, "mTS@10 95% high"]) == (lo, hi)
    assert f"{cal['mts@10']:.3f} [{lo:.3f}, {hi:.3f}]" in (out / "table3.md").read_text()
    assert set(read_metrics(out)["methods"]) == {"backward_search"}


# ---------------------------------------------------------------------------------------------
# Tables


def test_paper_task_tables_hold_the_papers_values(wiki_style):
    col = "WikiArt-style"
    t2 = pd.read_csv(wiki_style / "table2.csv").set_index("method")
    for method in ("random", "knn", "backward_search"):
        row = t2.loc[REGISTRY[method].label]
        assert row["mAP@10 (paper)"] == paper.TABLE2[method][col]
        assert row["Δ mAP@10"] == pytest.approx(row["mAP@10 (ours)"] - row["mAP@10 (paper)"])
    t4 = pd.read_csv(wiki_style / "table4.csv").set_index("method")
    for method in ("random", "searle", "pic2word", "covr", "clip4cir", "backward_search"):
        row = t4.loc[REGISTRY[method].label if method in REGISTRY else paper.PEERS[method]]
        assert (row["mAP@10 (paper)"], row["mTS@10 (paper)"]) == paper.TABLE4[method][col]
    assert np.isnan(t4.loc["k-nearest search", "mAP@10 (paper)"])  # not in the paper's Table 4
    t5 = pd.read_csv(wiki_style / "table5.csv").set_index("source")
    for e in (128, 256):
        row = t5.loc[f"paper (E{e})"]
        cols = [tables.SINGLE_MEAN, tables.SINGLE_SD, "ms/query"]
        assert tuple(row[cols]) == paper.TABLE5[col][e]
        assert np.isnan(row[tables.BATCH_MEAN])  # the paper's counts are the single-query rule's
    t6 = pd.read_csv(wiki_style / "table6.csv").set_index("source")
    p6 = t6.loc["paper (E256)"]
    assert p6["teacher mAP@10"] == paper.TABLE6[col]["backward_search"][0]
    assert p6["retrieved similarity"] == paper.TABLE6[col]["retrieved_similarity"]
    md = (wiki_style / "table2.md").read_text()
    assert "0.837" in md and "column WikiArt-style" in md and "n/a" not in md


def test_table3_compares_with_the_papers_row_for_the_same_encoder():
    cal = {"lambda": 1.5, "paper_map@10": 0.5, "mts@10": 0.151}
    cfg = {"backbone": "convnext_base", "frozen": False, "embedding_size": 256}
    t3 = tables.table3(get_task("wikiart-style"), cfg, cal).set_index("source")
    assert t3.loc["paper", "mAP@10"] == paper.TABLE3[("convnext_base", False, 256)]["WikiArt-style"]
    assert t3.loc["Δ (ours − paper)", "mAP@10"] == pytest.approx(0.5 - 0.595)
    frozen = tables.table3(get_task("cub-bird"), {**cfg, "frozen": True, "embedding_size": 64}, cal)
    assert frozen.set_index("source").loc["paper", "mAP@10"] == 0.129
    other = tables.table3(get_task("cub-bird"), {**cfg, "backbone": "convnext_atto"}, cal)
    assert "no row" in other["source"].iloc[1]


def test_synthart_tables_mark_the_paper_columns_na(synth_style):
    for name in ("table2", "table4", "table5", "table6"):
        md = (synth_style / f"{name}.md").read_text()
        assert tables.NOT_PAPER in md, name
        df = pd.read_csv(synth_style / f"{name}.csv")
        paper_cols = [c for c in df.columns if "(paper)" in c]
        assert all(df[c].isna().all() for c in paper_cols), name
        rows = [line.strip("|").split("|") for line in md.splitlines() if line.startswith("| ")]
        header, body = [c.strip() for c in rows[0]], rows[1:]
        for j in (j for j, h in enumerate(header) if "(paper)" in h):
            assert all(r[j].strip() == "n/a" for r in body), (name, header[j])


def test_table5_reports_our_iterations_under_both_rules(synth_style):
    t5 = pd.read_csv(synth_style / "table5.csv")
    bs = read_metrics(synth_style)["methods"]["backward_search"]
    ours = t5.iloc[0]
    assert ours[tables.BATCH_MEAN] == pytest.approx(bs["iterations_mean"])
    assert ours[tables.SINGLE_MEAN] == pytest.approx(bs["single_iterations_mean"])
    assert ours[tables.SINGLE_SD] == pytest.approx(bs["single_iterations_sd"])
    assert ours["embedding size"] == 18 and ours["device"] == "cpu"
    md = (synth_style / "table5.md").read_text()
    assert "Iterations are comparable" not in md and "single-query `compute()` rule" in md


def test_table5_single_rule_counts_come_from_stop_rule_single(wiki):
    """The single-query column is StopRule.SINGLE on the same queries, not the batched count."""
    from src.method.backward_search import StopRule, backward_search

    space, q = load(wiki, "wikiart-style")
    lam = 1.0
    res = task_eval.evaluate(space, q, ["backward_search"], lam)
    bs = res.summary["backward_search"]
    single = backward_search(space.heads, q.z0, q.conditions, lam, rule=StopRule.SINGLE)
    batch = backward_search(space.heads, q.z0, q.conditions, lam)
    assert bs["single_iterations_mean"] == pytest.approx(float(single.iterations.double().mean()))
    assert bs["iterations_mean"] == pytest.approx(float(batch.iterations.double().mean()))
    assert bs["single_iterations_mean"] != pytest.approx(bs["iterations_mean"])
    t5 = tables.build_tables(res)["table5"]
    assert list(t5.columns[3:7]) == [
        tables.SINGLE_MEAN,
        tables.SINGLE_SD,
        tables.BATCH_MEAN,
        tables.BATCH_SD,
    ]
    assert t5.loc[0, tables.SINGLE_MEAN] == pytest.approx(bs["single_iterations_mean"])
    paper_rows = t5[t5["source"].str.startswith("paper")]
    assert len(paper_rows) == 2 and paper_rows[tables.BATCH_MEAN].isna().all()
    assert paper_rows[tables.SINGLE_MEAN].tolist() == [
        m for m, _, _ in paper.TABLE5["WikiArt-style"].values()
    ]


# ---------------------------------------------------------------------------------------------
# The student


def test_student_is_evaluated_when_trained(synth, tmp_path, capsys):
    p = copy_pipeline(synth, tmp_path)
    err = e1_error(p, capsys, "--task", "synthart-style", "--methods", "student")
    assert "run D1_train_distill.py --task synthart-style --lambda 1 first" in err
    d1 = [
        "--data-root",
        str(p.data_root),
        "--weights-root",
        str(p.weights_root),
        "--run",
        p.run,
        "--task",
        "synthart-style",
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--device",
        "cpu",
    ]
    assert run_stage(D1_train_distill.main, d1) == 0
    out = e1(p, "--task", "synthart-style", "--device", "cpu")
    m = read_metrics(out)
    assert set(m["methods"]) == set(REGISTRY)  # every method, the student once D1 trained it
    st = m["methods"]["student"]
    assert st["ms_per_query"] > 0 and st["iterations_mean"] is None and st["lambda"] == 1.0
    assert 0 <= m["retrieved_similarity"] <= 1
    teacher = pd.read_csv(out / "retrievals_backward_search.csv")
    student = pd.read_csv(out / "retrievals_student.csv")
    ranks = [f"rank_{i}" for i in range(1, 11)]
    jac = [
        len(set(a) & set(b)) / len(set(a) | set(b))
        for a, b in zip(teacher[ranks].to_numpy(), student[ranks].to_numpy(), strict=True)
    ]
    assert m["retrieved_similarity"] == pytest.approx(np.mean(jac))
    t6 = pd.read_csv(out / "table6.csv")
    assert t6.loc[0, "student mAP@10"] == pytest.approx(st["paper_map@10"])


# ---------------------------------------------------------------------------------------------
# Bad input


def test_unknown_class_name_lists_the_valid_ones(synth, tmp_path, capsys):
    p = copy_pipeline(synth, tmp_path)
    qfile = p.data_root / "synthart" / "queries_synthart-style.csv"
    q = pd.read_csv(qfile)
    q.loc[3, "style"] = "Cubism"
    q.to_csv(qfile, index=False)
    err = e1_error(p, capsys, "--task", "synthart-style")
    assert "'Cubism'" in err and "flat, dots, hatch, mosaic" in err


def test_query_image_without_embedding_is_reported(synth, tmp_path, capsys):
    p = copy_pipeline(synth, tmp_path)
    qfile = p.data_root / "synthart" / "queries_synthart-multi.csv"
    q = pd.read_csv(qfile)
    q.loc[0, "image"] = "images/test/not_embedded.png"
    q.to_csv(qfile, index=False)
    err = e1_error(p, capsys, "--task", "synthart-multi")
    assert "images/test/not_embedded.png" in err and "C1_extract_embeddings.py" in err


def test_nan_in_embeddings_is_reported(synth, tmp_path, capsys):
    p = copy_pipeline(synth, tmp_path)
    path = p.weights_root / p.run / "embeddings.npz"
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["z"][5, 2] = np.nan
    np.savez(path, **arrays)
    err = e1_error(p, capsys, "--task", "synthart-style")
    assert "NaN" in err and arrays["image"][5] in err


def test_condition_without_a_head_is_an_error(synth, tmp_path, capsys):
    p = copy_pipeline(synth, tmp_path)
    path = p.weights_root / p.run / "encoder.pt"
    blob = torch.load(path, weights_only=True)
    blob["config"]["num_classes"].pop("genre")
    blob["config"]["attributes"].remove("genre")
    blob["model"] = {k: v for k, v in blob["model"].items() if not k.startswith("heads.genre.")}
    torch.save(blob, path)
    err = e1_error(p, capsys, "--task", "synthart-multi")
    assert "'genre'" in err and "no head" in err


def test_missing_stages_say_which_to_run(synth, tmp_path, capsys):
    p = copy_pipeline(synth, tmp_path)
    (p.data_root / "synthart" / "queries_synthart-style.csv").unlink()
    err = e1_error(p, capsys, "--task", "synthart-style")
    assert "A2_make_queries.py --task synthart-style" in err
    # no --run: the dataset's only run (the fixture's run has no B1 config.json naming it)
    args = [
        "--data-root",
        str(p.data_root),
        "--weights-root",
        str(p.weights_root),
        "--results-root",
        str(p.results_root),
        "--task",
        "synthart-multi",
    ]
    assert run_stage(E1_evaluate.main, args) == 2
    assert "B1_train_encoder.py --dataset synthart first, or give --run" in capsys.readouterr().err
    (p.weights_root / p.run / "embeddings.npz").unlink()
    err = e1_error(p, capsys, "--task", "synthart-multi")
    assert f"run C1_extract_embeddings.py --run {p.run} first" in err
    assert not list((p.results_root / p.run).rglob("*.*"))  # nothing written, not even a log


def test_command_line_exit_code_and_one_line_error(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "E1_evaluate.py",
            "--task",
            "synthart-style",
            "--data-root",
            str(tmp_path / "data"),
            "--weights-root",
            str(tmp_path / "w"),
            "--results-root",
            str(tmp_path / "r"),
            "--device",
            "cpu",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and "first" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").rglob("metrics.json"))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_gives_the_cpu_numbers(synth, synth_style, tmp_path):
    p = copy_pipeline(synth, tmp_path)
    out = e1(p, "--task", "synthart-style", "--device", "cuda")
    gpu, cpu = read_metrics(out), read_metrics(synth_style)
    assert gpu["device"].startswith("cuda")
    for method in ("random", "knn", "backward_search"):
        for key in ("paper_map@10", "mts@10"):
            assert gpu["methods"][method][key] == pytest.approx(
                cpu["methods"][method][key], abs=0.02
            ), (method, key)


# ---------------------------------------------------------------------------------------------
# The authors' E1 protocol on imported runs (tests/_fixtures_release.py)


def imported_cub(tmp_path: Path, student_lambda: str | None = "0.51"):
    """A CUB-like release imported into tmp_path; its student renamed (λ) or removed (None)."""
    from src.release.convert import import_release
    from tests._fixtures_release import write_cub_like

    fx = write_cub_like(tmp_path / "release")
    sdir = fx["folder"] / "knowledge_distill_model_lambda0.51_reg0.0"
    if student_lambda is None:
        shutil.rmtree(sdir)
    elif student_lambda != "0.51":
        sdir.rename(sdir.with_name(f"knowledge_distill_model_lambda{student_lambda}_reg0.0"))
    (run,) = import_release(tmp_path / "release", "cub", tmp_path / "data", tmp_path / "weights")
    roots = [(f"--{x}-root", str(tmp_path / x)) for x in ("data", "weights", "results")]
    argv = ["--task", "cub-bird", "--run", run, "--device", "cpu", *sum(roots, ())]
    return run, argv


def without_attributes(tmp_path: Path, picks: list[int]) -> list[int]:
    """Strip the attributes of some query images (test.csv and queries), leaving their species."""
    data = tmp_path / "data" / "cub"
    q = pd.read_csv(data / "queries_cub-bird.csv", dtype=str, keep_default_na=False)
    test = pd.read_csv(data / "test.csv", dtype=str, keep_default_na=False)
    species = dict(zip(test["image"], test["species"], strict=True))
    for i in picks:
        img = q.loc[i, "image"]
        q.loc[i, "tags"] = species[img]
        test.loc[test["image"] == img, "tags"] = species[img]
    q.to_csv(data / "queries_cub-bird.csv", index=False)
    test.to_csv(data / "test.csv", index=False)
    bare = [i for i, t in enumerate(q["tags"]) if "|" not in t]
    assert set(picks) <= set(bare)
    return bare


def test_empty_tag_token_lowers_mts_only_for_queries_without_attributes(tmp_path):
    run, argv = imported_cub(tmp_path)
    bare = without_attributes(tmp_path, [0, 1, 4])
    out = tmp_path / "results" / run / "cub-bird"
    assert run_stage(E1_evaluate.main, argv) == 0
    fixed = {m: pd.read_csv(out / f"retrievals_{m}.csv") for m in REGISTRY}
    m_fixed = read_metrics(out)
    assert m_fixed["quirks"] == [] and m_fixed["source"] == "authors-release"
    assert run_stage(E1_evaluate.main, [*argv, "--authors-quirks", "empty-tag-token"]) == 0
    m_quirk = read_metrics(out)
    assert m_quirk["quirks"] == ["empty-tag-token"]
    assert json.loads((out / "config.json").read_text())["quirks"] == ["empty-tag-token"]
    lowered = 0
    for m in REGISTRY:
        quirk = pd.read_csv(out / f"retrievals_{m}.csv")
        same = [c for c in quirk.columns if c != "tag_similarity"]
        pd.testing.assert_frame_equal(quirk[same], fixed[m][same])  # ranks, precision unchanged
        others = ~quirk.index.isin(bare)
        np.testing.assert_array_equal(
            quirk.loc[others, "tag_similarity"], fixed[m].loc[others, "tag_similarity"]
        )
        before, after = fixed[m].loc[bare, "tag_similarity"], quirk.loc[bare, "tag_similarity"]
        assert (after <= before + 1e-12).all()
        lowered += int((after < before - 1e-12).sum())
        for key in ("paper_map@10", "map@10", "context_preservation", "iterations_mean"):
            assert m_quirk["methods"][m][key] == m_fixed["methods"][m][key], (m, key)
        assert m_quirk["methods"][m]["mts@10"] <= m_fixed["methods"][m]["mts@10"]
    assert lowered > 0  # kNN retrieves the query's own species: the empty token shows
    assert m_quirk["methods"]["knn"]["mts@10"] < m_fixed["methods"]["knn"]["mts@10"]


def test_empty_tag_token_changes_nothing_on_wikiart_and_unknown_quirks_fail(wiki, capsys):
    out = e1(wiki, "--task", "wikiart-style", "--device", "cpu", "--authors-quirks", "all")
    assert read_metrics(out)["quirks"] == []
    err = e1_error(wiki, capsys, "--task", "wikiart-style", "--authors-quirks", "cub-tag-shift")
    assert "not a quirk of E1" in err


def test_imported_run_uses_its_students_lambda(tmp_path):
    run, argv = imported_cub(tmp_path, student_lambda="0.75")
    assert run_stage(E1_evaluate.main, argv) == 0
    out = tmp_path / "results" / run / "cub-bird"
    m = read_metrics(out)
    assert m["lambda"] == 0.75 and m["methods"]["student"]["lambda"] == 0.75
    assert m["student_file"] == "student_cub-bird_lam0.75.pt"
    cfg = json.loads((out / "config.json").read_text())
    assert "student_cub-bird_lam0.75.pt" in cfg["lambda_source"]
    assert cfg["resolved"] == {"lambda": 0.75} and cfg["quirks"] == []  # each recorded once
    assert "student_cub-bird_lam0.75.pt (λ = 0.75)" in (out / "E1.log").read_text()


def test_imported_run_without_a_student_says_so(tmp_path):
    run, argv = imported_cub(tmp_path, student_lambda=None)
    assert run_stage(E1_evaluate.main, argv) == 0
    out = tmp_path / "results" / run / "cub-bird"
    m = read_metrics(out)
    assert "student" not in m["methods"] and m["student_file"] is None and m["lambda"] == 0.51
    assert "no student: the release has none for cub-bird" in (out / "E1.log").read_text()
    t6 = pd.read_csv(out / "table6.csv")
    assert np.isnan(t6.loc[0, "student mAP@10"])


# ---------------------------------------------------------------------------------------------
# The two baselines on a hand-made database (no pipeline): 3-d embeddings whose head is the
# identity, so an image's predicted style is the index of its largest coordinate.


def reader(rows: slice, dim: int) -> torch.nn.Linear:
    """A head whose logits are the coordinates `rows` of z: its class is the largest of them."""
    head = torch.nn.Linear(dim, rows.stop - rows.start, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.eye(dim)[rows])
    return head


def hand_made(
    db_z: list[list[float]],
    z0: list[list[float]],
    cond: list[int] | dict[str, list[int]],
    exclude=None,
    heads: dict[str, torch.nn.Module] | None = None,
):
    """A search space over a hand-made database and its queries. Default: one attribute, style,
    whose head is the identity on 3-d z (classes a, b, c); centroids: class c's is 2·e_c."""
    from src.method import metrics
    from src.method.index import in_memory_search
    from src.tasks import Task

    db = torch.tensor(db_z)
    searcher = in_memory_search(db)
    heads = heads or {"style": reader(slice(0, 3), 3)}
    cond = cond if isinstance(cond, dict) else {"style": cond}
    with torch.no_grad():
        label_ids = {a: h(db).argmax(1) for a, h in heads.items()}
    sizes = {a: h.out_features for a, h in heads.items()}
    n_db, n_q = len(db_z), len(z0)
    encoder = SimpleNamespace(heads=heads)
    space = SearchSpace(
        task=Task("hand", "synthart", tuple(heads), 1.0, None),
        run="hand",
        weights=Path("."),
        data_root=Path("."),
        config={},
        labels={
            a: ["a", "b", "c"][:n] if a == "style" else [str(c) for c in range(n)]
            for a, n in sizes.items()
        },  # fmt: skip
        encoder=encoder,
        device=torch.device("cpu"),
        database="test",
        images=np.asarray([f"d{i}" for i in range(n_db)]),
        split=np.full(n_db, "test"),
        db=searcher.db,
        searcher=searcher,
        label_ids=label_ids,
        tag_cells=np.full(n_db, ""),
        tags=sp.csr_matrix((n_db, 1)),
        vocab=pd.Index(["t"]),
        embedded=pd.Index([]),
        store=searcher.db.store,
        embedded_labels={},
        centroids={a: 2 * torch.eye(n, db.shape[1]) for a, n in sizes.items()},
    )
    conditions = {a: torch.tensor(c) for a, c in cond.items()}
    ex = None if exclude is None else torch.tensor(exclude)
    q = Queries(
        z0=torch.tensor(z0),
        conditions=conditions,
        own={a: torch.zeros(n_q, dtype=torch.long) for a in heads},
        tags=sp.csr_matrix((n_q, 1)),
        exclude=ex,
        n_relevant=metrics.count_relevant(space.label_ids, conditions, ex),
    )
    return space, q


def test_filtered_knn_keeps_condition_images_while_enough_exist_then_pads_by_similarity():
    rng = np.random.default_rng(0)
    # 14 rows predicted b (index 1), 4 predicted c (index 2), 12 predicted a
    rows = [[0.2, 1.0, 0.0]] * 14 + [[0.1, 0.0, 1.0]] * 4 + [[1.0, 0.0, 0.1]] * 12
    db_z = (np.asarray(rows) + rng.uniform(0, 0.05, (30, 3))).tolist()
    q = [1.0, 0.2, 0.2]  # closest to class a: kNN would return the a rows
    space, queries = hand_made(db_z, [q, q], [1, 2])
    got = ev.rank_filtered_knn(space, queries).indices.numpy()
    pred = np.asarray(db_z).argmax(1)
    sim = (np.asarray(db_z) @ np.asarray(q)) / np.linalg.norm(db_z, axis=1)
    # condition b: 14 exist, so all 10 are b, the 10 most similar b rows in order
    b_rows = np.flatnonzero(pred == 1)
    assert (pred[got[0]] == 1).all()
    assert got[0].tolist() == b_rows[np.argsort(-sim[b_rows], kind="stable")][:10].tolist()
    # condition c: only 4 exist: those first (by similarity), then the rest by similarity
    c_rows = np.flatnonzero(pred == 2)
    assert got[1][:4].tolist() == c_rows[np.argsort(-sim[c_rows])].tolist()
    rest = np.flatnonzero(pred != 2)
    assert got[1][4:].tolist() == rest[np.argsort(-sim[rest])][:6].tolist()
    # plain kNN returns no b at all here: the filter does the work
    assert not (pred[ev.rank(space, queries.z0)[1].numpy()[0]] == 1).any()


def test_filtered_knn_on_two_conditions_puts_every_match_first_even_pointing_away():
    # z = (style 0, style 1, genre 0, genre 1): each head reads its two coordinates. The query
    # points away from the (style 0, genre 1) rows (cosine ≈ −0.7) and towards the (style 1,
    # genre 0) rows (≈ +0.7) — the pair whose combination would be taken for (0, 1) if the two
    # classes were added rather than combined one-to-one.
    rng = np.random.default_rng(2)
    kinds = {(0, 1): [1, 0, 0, 0.3], (1, 0): [0, 0.3, 1, 0], (0, 0): [1, 0, 0.3, 0],
             (1, 1): [0, 0.3, 0, 1]}  # fmt: skip
    counts = {(0, 1): 4, (1, 0): 8, (0, 0): 4, (1, 1): 4}
    db = np.concatenate([np.tile(kinds[k], (n, 1)) for k, n in counts.items()])
    db += rng.uniform(0, 0.05, db.shape)
    q = [-1.0, 0.0, 1.0, 0.0]
    heads = {"style": reader(slice(0, 2), 4), "genre": reader(slice(2, 4), 4)}
    cond = {"style": [0, 1, 1], "genre": [1, 0, 1]}
    space, queries = hand_made(db.tolist(), [q] * 3, cond, heads=heads)
    got = ev.rank_filtered_knn(space, queries).indices.numpy()
    # brute force: the rows whose (style, genre) is the condition, by cosine; then the rest
    pred = np.stack([db[:, :2].argmax(1), db[:, 2:].argmax(1)], 1)
    sim = db @ np.asarray(q) / np.linalg.norm(db, axis=1)
    for i in range(3):
        match = (pred == [cond["style"][i], cond["genre"][i]]).all(1)
        order = [np.flatnonzero(m)[np.argsort(-sim[m], kind="stable")] for m in (match, ~match)]
        assert got[i].tolist() == np.concatenate(order)[:10].tolist(), i
    assert sim[got[0][:4]].max() < -0.6  # the four matches, though every other row is nearer


def test_filtered_knn_never_returns_the_excluded_row():
    db_z = [[0.0, 1.0, 0.0]] * 11 + [[1.0, 0.0, 0.0]] * 5
    space, q = hand_made(db_z, [[0.0, 1.0, 0.0]], [1], exclude=[3])
    got = ev.rank_filtered_knn(space, q).indices.numpy()[0]
    assert 3 not in got and (np.asarray(db_z)[got].argmax(1) == 1).all()


def test_centroid_shift_at_alpha_0_is_knn_and_moves_towards_the_condition():
    rng = np.random.default_rng(1)
    db_z = rng.normal(size=(40, 3)).tolist()
    z0 = [[1.0, 0.1, 0.0], [0.0, 0.2, 1.0], [0.3, 1.0, 0.1]]
    space, q = hand_made(db_z, z0, [1, 0, 2])
    at_0 = rank(Setting(space, q, 1.0, alpha=0.0), ["centroid_shift", "knn"])
    assert torch.equal(at_0["centroid_shift"].indices, at_0["knn"].indices)
    # z0 predicted a, b... shifted by α (μ[cond] − μ[pred]) = α · 2 (e_cond − e_pred)
    z = ev.centroid_shift(space, q, 0.5)
    expected = torch.tensor(z0) + torch.tensor(
        [[-1.0, 1.0, 0.0], [1.0, 0.0, -1.0], [0.0, -1.0, 1.0]]
    )
    assert torch.allclose(z, expected)
    assert (
        rank(Setting(space, q, 1.0, alpha=0.5), ["centroid_shift"])["centroid_shift"].alpha == 0.5
    )


def test_the_papers_peer_rows_only_on_the_papers_datasets(synth_style, wiki_style):
    peers = list(paper.PEERS.values())
    assert peers == ["SEARLE", "Pic2Word", "CoVR", "CLIP4CIR"]
    synth4 = pd.read_csv(synth_style / "table4.csv")
    assert not set(peers) & set(synth4["method"])  # SynthArt: the paper has no such numbers
    md = (synth_style / "table4.md").read_text()
    assert not any(p in md for p in peers) and "paper's Backward Search row" not in md
    wiki4 = pd.read_csv(wiki_style / "table4.csv")
    rows = list(wiki4["method"])
    assert rows[2:6] == peers  # after random and kNN, before Backward Search, as in the paper
    assert "this suite does not run them" in (wiki_style / "table4.md").read_text()
    ours = {"backward_search": {"paper_map@10": 0.5, "mts@10": 0.15, "lambda": 1.0}}
    for task, shown in (("cub-bird", True), ("synthart-multi", False), ("synthart-style", False)):
        t4 = tables.table4(get_task(task), ours)
        assert (set(peers) <= set(t4["method"])) is shown, task


def test_report_summary_from_e1s_files(synth, synth_style):
    from src.report import plane
    from src.report.document import build_report
    from src.report.markdown import METRIC_NOTE

    text = build_report(
        synth.results_root, synth.weights_root, synth.data_root, synth.run, "synthart"
    )
    m = read_metrics(synth_style)  # read with the report: whatever E1 ran last on the fixture
    methods = m["methods"]
    summary = text.split("## Summary")[1].split("\n## ")[0].split("**[synthart-multi]")[0]

    def shown(s: dict, key: str) -> str:
        lo, hi = s["ci"][key]
        return f"{s[key]:.3f} [{lo:.3f}, {hi:.3f}]"

    bs = methods["backward_search"]
    assert (
        f"- Backward Search at λ = {m['lambda']:g}: precision@10 {shown(bs, 'paper_map@10')}; "
        f"mTS@10 {shown(bs, 'mts@10')}; {bs['ms_per_query']:.3g} ms/query."
    ) in summary
    baselines = ("random", "knn", "filtered_knn", "centroid_shift")
    best = max(baselines, key=lambda k: methods[k]["paper_map@10"])
    d = m["paired"]["backward_search_minus"][best]["paper_map@10"]
    assert f"precision@10 {shown(methods[best], 'paper_map@10')}" in summary
    assert f"paired over the same queries: precision@10 {d['mean']:+.3f} [{d['low']:.3f}" in summary
    assert "(paper " not in summary
    for name, p in plane.task_planes(synth_style).items():
        assert plane.dominance_sentence(p) in summary, name
    # E1's notes under every table, said once; no Source line per table
    assert text.count(METRIC_NOTE) == 1 and "Queries: " not in text
    assert text.count("[low, high]") == 1 and text.count("Paper values: ") == 1
    assert text.count("Source: `") == text.count("## Task `")  # one per task


def test_e1_imports_no_torchvision_until_a_backbone_is_built():
    """torchvision takes a second or more to import; E1 on embeddings never needs it (a run
    imported without its backbone never does), so only building a backbone or a transform
    imports it."""
    code = (
        "import sys\nimport E1_evaluate\nfrom src.method.encoder import BACKBONES\n"
        "print('torchvision' in sys.modules)\n"
        "BACKBONES['convnext_atto'].build()\n"
        "print('torchvision' in sys.modules)"
    )
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]


def test_each_ranking_names_the_method_and_knob_that_made_it():
    rng = np.random.default_rng(2)
    space, q = hand_made(rng.normal(size=(30, 3)).tolist(), [[1.0, 0.1, 0.0]] * 2, [1, 2])
    shifts = ev.rank_centroid_shifts(space, q, [0.5, 0.0, 0.5])
    assert [(r.method, r.alpha) for r in shifts] == [("centroid_shift", a) for a in (0.5, 0, 0.5)]
    searches = ev.BackwardSearches(space, q)
    searches.prefetch([2.0, 0.5])
    assert [(lam, r.method, r.lam) for lam, r in searches.done.items()] == [
        (2.0, "backward_search", 2.0), (0.5, "backward_search", 0.5)]  # fmt: skip


def test_backward_search_is_timed_only_when_asked_and_traced_only_when_asked():
    rng = np.random.default_rng(3)
    space, q = hand_made(rng.normal(size=(30, 3)).tolist(), [[1.0, 0.1, 0.0]] * 2, [1, 2])
    plain = ev.rank_backward_search(space, q, 0.5)
    assert plain.timing is None and plain.search.trace is None and plain.lam == 0.5
    timed = ev.rank_backward_search(space, q, 0.5, timed=True, trace=True)
    assert timed.timing is not None and timed.timing.repeats == REPEATS
    assert len(timed.search.trace) == len(q)  # one walk per query
    assert torch.equal(timed.indices, plain.indices) and torch.equal(timed.search.z, plain.search.z)
