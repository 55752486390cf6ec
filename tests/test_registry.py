"""The registry of methods (src/evaluation/registry.py) is the one place a method lives: a method
registered there, and nowhere else, is ranked and scored by E1, shown in its tables, REPORT.md and
the trade-off plane, drawn in E2's result grids and offered by the explorer; and no module but
the registry and its ranking functions names a baseline the paper does not have."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from starlette.testclient import TestClient

import E1_evaluate
import E2_visualize
from src.cli import run_stage
from src.evaluation import methods, registry
from src.evaluation.space import file_queries, load_space
from src.explorer import projection
from src.explorer.app import create_app
from src.explorer.session import Explorer
from src.queries import read_queries
from src.report import figures, plane
from src.tasks import get_task
from tests._pipeline import build_pipeline

ROOT = Path(__file__).resolve().parents[1]
TASK = "synthart-style"
NEW = registry.Method(  # ranks the vector opposite the query: the farthest images first
    "farthest", "farthest search", False, vectors=lambda s: (-s.q.z0, {})
)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    torch.manual_seed(0)
    return build_pipeline(tmp_path_factory.mktemp("registry"))


def test_a_method_registered_once_is_ranked_scored_tabled_reported_plotted_and_explored(
    pipe, monkeypatch
):
    monkeypatch.setitem(registry.METHODS, NEW.key, NEW)  # the one change: a record in the registry
    drawn = []
    real = figures.draw_grid
    monkeypatch.setattr(
        figures,
        "draw_grid",
        lambda q, rows, path, **kw: drawn.append(rows) or real(q, rows, path, **kw),
    )
    common = pipe.argv("--task", TASK, "--device", "cpu")
    assert run_stage(E1_evaluate.main, [*common, "--sweep"]) == 0
    out = pipe.results_root / pipe.run / TASK

    # E1 ranked it (the opposite vector's cosine ranking) and scored it
    space = load_space(pipe.data_root, pipe.weights_root, get_task(TASK), pipe.run, "cpu")
    frame = read_queries(pipe.data_root, TASK)
    q = file_queries(space, frame)
    want = space.images[methods.rank(space, -q.z0)[1].numpy()]
    got = pd.read_csv(out / "retrievals_farthest.csv")
    assert got[[f"rank_{r}" for r in range(1, 11)]].to_numpy().tolist() == want.tolist()
    scored = json.loads((out / "metrics.json").read_text())["methods"]["farthest"]
    assert scored["paper_map@10"] == pytest.approx(got["precision"].mean())
    assert list(json.loads((out / "metrics.json").read_text())["methods"])[-1] == "farthest"

    # E1's tables: its row, named once, marked as not in the paper
    name = "farthest search (not in the paper)"
    for table in ("table2", "table4"):
        rows = pd.read_csv(out / f"{table}.csv").set_index("method")
        assert rows.loc[name, "mAP@10 (ours)"] == pytest.approx(scored["paper_map@10"])
        assert name in (out / f"{table}.md").read_text()
    bs_minus = json.loads((out / "metrics.json").read_text())["paired"]["backward_search_minus"]
    assert "farthest" in bs_minus  # Backward Search tested against it too

    # the trade-off plane: a point of its own
    points = {pt.name: (pt.x, pt.y) for pt in plane.task_planes(out)["plane_mts.png"].points}
    assert points[name] == (scored["mts@10"], scored["paper_map@10"])

    # E2: REPORT.md's tables and the plane's sentence name it; the result grids show its row
    argv = [*common, "--query-id", "0", "--lambdas", "knn"]
    assert run_stage(E2_visualize.main, argv) == 0
    report = (pipe.results_root / pipe.run / "REPORT.md").read_text()
    ours = report.split("### Our numbers (metrics.json)")[1].split("###")[0]
    assert f"| {name} |" in ours and f"{scored['paper_map@10']:.3f}" in ours
    assert "Backward Search − | Δ precision@10" in report and f"| {name} |" in report
    assert name in report.split("**x = mTS@10.**")[1].split("\n")[0]
    titles = [r.title for r in drawn[0]]
    assert name in titles
    grid = drawn[0][titles.index(name)]
    assert [str(t.image.relative_to(pipe.data_root / "synthart")) for t in grid.tiles] == list(
        want[0]
    )

    # the explorer offers it and answers with its ranking
    explorer = Explorer(space, projection.load_projection(space), space.task.default_lambda)
    with TestClient(create_app(explorer), base_url="http://127.0.0.1") as client:
        meta = client.get("/api/meta").json()
        assert meta["methods"]["farthest"] == {"label": name, "knob": None, "trained": False}
        row = int(space.rows_of(frame["image"].astype(str))[0])
        cond = {"style": space.labels["style"].index(frame["style"][0])}
        r = client.post("/api/search", json={"row": row, "conditions": cond, "method": "farthest"})
        assert r.status_code == 200, r.text
        one = file_queries(space, frame.iloc[[0]])
        assert [x["row"] for x in r.json()["results"]] == methods.rank(space, -one.z0)[1][
            0
        ].tolist()


def test_only_the_registry_and_its_ranking_functions_name_a_baseline_the_paper_lacks():
    baselines = [k for k, m in registry.METHODS.items() if not m.in_paper]
    assert baselines  # the suite has some: head-filtered kNN, the class-centroid shift
    allowed = {Path(registry.__file__), Path(methods.__file__)}
    for key in baselines:
        named = {
            p
            for p in (ROOT / "src").rglob("*")
            if p.is_file() and p.suffix in (".py", ".js", ".html") and key in p.read_text()
        }
        assert named <= allowed, (key, sorted(str(p.relative_to(ROOT)) for p in named - allowed))
        assert re.search(rf'"{key}"', Path(registry.__file__).read_text())


def test_an_unknown_method_is_refused_in_one_line():
    from src.errors import SuiteError

    with pytest.raises(SuiteError, match=r"unknown method 'nope': choose one of random, knn"):
        registry.method("nope")
    with pytest.raises(SuiteError, match="unknown method"):
        registry.method(["knn"])  # not a name at all (a JSON list from the page)
