"""The explorer's server side (E3, src/explorer/) on the tiny pipeline: every answer is E1/E2's for
the same query, condition and λ; the walk ends at the searched z; bad uploads and requests are
refused in one line while the server keeps answering; pictures only from under the data root;
the map cached once in the run folder and nothing else written."""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from starlette.testclient import TestClient

import E3_explore
from src.artifacts import save_torch, write_json
from src.errors import SuiteError
from src.evaluation import methods
from src.evaluation.registry import METHODS as REGISTRY
from src.evaluation.space import embed_image, file_queries, load_space, picture_query
from src.explorer import app as app_module
from src.explorer import projection as proj
from src.explorer import session
from src.explorer.app import create_app
from src.explorer.session import Explorer
from src.hints import STAGE_SCRIPTS
from src.method import metrics
from src.method.index import in_memory_search
from src.method.student import Student, student_path
from src.queries import read_queries
from src.tasks import get_task
from src.threads import use_threads
from tests._pipeline import build_pipeline

REPO = Path(__file__).resolve().parents[1]
TASK = "synthart-style"


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    p = build_pipeline(tmp_path_factory.mktemp("explorer"))
    torch.manual_seed(0)  # a student (untrained: only its answer's equality is tested) at λ = 1
    cfg = {"embedding_size": 18, "conditions": ["style"], "num_classes": {"style": 4}}
    weights = p.weights_root / p.run
    save_torch(
        student_path(weights, TASK, 1.0),
        {"config": cfg, "model": Student(18, {"style": 4}).state_dict()},
    )
    return p


@pytest.fixture(scope="module")
def space(pipe):
    task = get_task(TASK, pipe.data_root)
    return load_space(pipe.data_root, pipe.weights_root, task, pipe.run, torch.device("cpu"))


@pytest.fixture(scope="module")
def explorer(space):
    return Explorer(space, proj.load_projection(space), space.task.default_lambda)


@pytest.fixture(scope="module")
def client(explorer):
    with TestClient(create_app(explorer), base_url="http://127.0.0.1") as c:
        yield c


def query_rows(pipe, space, n=3):
    """The first n queries of the task's query file, and their database rows."""
    frame = read_queries(pipe.data_root, TASK).iloc[:n].reset_index(drop=True)
    return frame, space.rows_of(frame["image"].astype(str))


def ask(client, **body):
    r = client.post("/api/search", json=body)
    return r.status_code, r.json()


def expected(space, q, method: str, lam: float, alpha: float) -> torch.Tensor:
    """The top-10 rows E1/E2's ranking of `method` gives the queries q, from the ranking functions
    (the searched or shifted vector ranked by the one cosine `rank`), not through the registry."""
    if method == "backward_search":
        return methods.rank_backward_search(space, q, lam).indices
    if method == "filtered_knn":
        return methods.rank_filtered_knn(space, q).indices
    if method == "random":
        return methods.rank_random(space, q, 0).indices
    if method == "student":
        with torch.no_grad():
            z = space.student(lam).eval().search(q.z0, q.conditions)
    else:
        z = {"knn": q.z0, "centroid_shift": methods.centroid_shift(space, q, alpha)}[method]
    return methods.rank(space, z)[1]


def style_id(space, name: str) -> int:
    return space.labels["style"].index(name)


# ---------------------------------------------------------------------------------------------
# Answers are E1/E2's


@pytest.mark.parametrize(
    "method, extra",
    [
        ("backward_search", {"lam": 1.0}),
        ("backward_search", {"lam": 0.0}),
        ("backward_search", {"lam": 16.0}),
        ("student", {"lam": 1.0}),
        ("centroid_shift", {"alpha": 0.75}),
        ("filtered_knn", {}),
        ("knn", {}),
        ("random", {}),
    ],
)
def test_every_method_answers_what_the_methods_rank(pipe, space, client, method, extra):
    frame, rows = query_rows(pipe, space)
    for i in range(len(frame)):
        cond = {"style": style_id(space, frame["style"][i])}
        status, got = ask(client, row=int(rows[i]), conditions=cond, method=method, **extra)
        assert status == 200, got
        q = file_queries(space, frame.iloc[[i]])  # the query file's row, as E1 and E2 read it
        lam, alpha = extra.get("lam", 1.0), extra.get("alpha", 1.0)
        want = expected(space, q, method, lam, alpha)
        assert [r["row"] for r in got["results"]] == want[0].tolist()
        hits = metrics.condition_hits(want, space.label_ids, q.conditions)
        assert [r["hit"] for r in got["results"]] == hits[0].tolist()
        assert got["precision"] == pytest.approx(float(metrics.precision_at_k(hits)[0]))
        jac = metrics.tag_jaccard(q.tags, space.tags, want)[0]
        assert got["mean_jaccard"] == pytest.approx(float(jac.mean()))
        assert got["condition"] == {"style": frame["style"][i]}


def test_a_two_condition_task_gets_one_control_per_attribute_and_e2s_answer(pipe):
    task = get_task("synthart-multi", pipe.data_root)
    space = load_space(pipe.data_root, pipe.weights_root, task, pipe.run, torch.device("cpu"))
    ex = Explorer(space, proj.load_projection(space), task.default_lambda)
    frame = read_queries(pipe.data_root, task.name).iloc[:2].reset_index(drop=True)
    with TestClient(create_app(ex), base_url="http://127.0.0.1") as c:
        assert c.get("/api/meta").json()["conditions"] == ["style", "genre"]
        for i, row in enumerate(space.rows_of(frame["image"].astype(str))):
            cond = {a: space.labels[a].index(frame[a][i]) for a in ("style", "genre")}
            body = {"row": int(row), "conditions": cond, "method": "backward_search", "lam": 2.0}
            status, got = ask(c, **body)
            assert status == 200
            want = methods.rank_backward_search(space, file_queries(space, frame.iloc[[i]]), 2.0)
            assert [r["row"] for r in got["results"]] == want.indices[0].tolist()
            assert got["condition"] == {a: frame[a][i] for a in ("style", "genre")}


def test_the_walk_runs_from_z0_through_every_iterate_to_the_searched_z(
    pipe, space, explorer, client
):
    frame, rows = query_rows(pipe, space, 1)
    cond = {"style": style_id(space, frame["style"][0])}
    status, got = ask(client, row=int(rows[0]), conditions=cond, method="backward_search", lam=0.5)
    assert status == 200
    result = methods.search(space, file_queries(space, frame), 0.5, trace=True)
    walk = np.array(got["walk"])
    assert len(walk) == len(result.trace[0]) > 2  # z0, the iterates, the answer
    want = explorer.projection.project(result.trace[0])
    np.testing.assert_allclose(walk, want, atol=1e-4)
    np.testing.assert_allclose(walk[-1], explorer.projection.project(result.z)[0], atol=1e-4)
    np.testing.assert_allclose(walk[0], explorer.projection.xy[rows[0]], atol=1e-4)
    assert got["iterations"] == int(result.iterations[0])
    assert got["satisfied_at"] == int(result.satisfied_at[0])
    assert got["answer_as"]["style"] == frame["style"][0]  # λ = 0.5 reaches the condition
    assert list(got["answer_as"]) == list(space.heads)  # how every head sees the answer


def test_moving_lambda_changes_the_walk_and_the_grid(pipe, space, client):
    _, rows = query_rows(pipe, space, 1)
    own = space.table["style"][int(rows[0])]
    cond = {"style": (style_id(space, own) + 1) % len(space.labels["style"])}
    answers = [
        ask(client, row=int(rows[0]), conditions=cond, method="backward_search", lam=lam)[1]
        for lam in (0.0, 64.0)
    ]
    assert answers[0]["walk"][0] == answers[1]["walk"][0]  # both walks leave the query's z0 …
    assert answers[0]["walk"][-1] != answers[1]["walk"][-1]  # … and end apart
    assert [r["row"] for r in answers[0]["results"]] != [r["row"] for r in answers[1]["results"]]
    assert answers[0]["precision"] >= answers[1]["precision"]  # no pull back: the condition wins
    other = (cond["style"] + 1) % len(space.labels["style"])  # same query, a new condition
    status, got = ask(client, row=int(rows[0]), conditions={"style": other}, method="knn")
    assert status == 200 and got["condition"] == {"style": space.labels["style"][other]}
    styles = space.table["style"].to_numpy()
    assert [r["hit"] for r in got["results"]] == [
        styles[r["row"]] == space.labels["style"][other] for r in got["results"]
    ]


def test_the_query_itself_and_shared_tags_are_marked(pipe, space, client):
    _, rows = query_rows(pipe, space, 1)
    row = int(rows[0])
    status, got = ask(client, row=row, conditions={"style": 0}, method="knn")
    assert status == 200
    first = got["results"][0]  # kNN's nearest is the query's own image, kept (the protocol)
    assert first["row"] == row and first["is_query"] and first["jaccard"] == 1.0
    own = set(space.tag_cells[row].split("|"))
    for r in got["results"]:
        assert set(r["shared"]) == own & set(r["tags"])
        assert r["is_query"] == (r["row"] == row)
    assert got["query"]["row"] == row and set(got["query"]["tags"]) == own


def test_student_missing_at_that_lambda_is_said(space, client):
    status, got = ask(client, row=0, conditions={"style": 1}, method="student", lam=2.0)
    assert status == 400 and "no student of synthart-style at λ = 2" in got["error"]
    assert client.get("/api/meta").json()["student_lambdas"] == [1.0]


# ---------------------------------------------------------------------------------------------
# Uploads


def picture(fmt="PNG", mode="RGB", size=(24, 24)) -> bytes:
    b = io.BytesIO()
    Image.new(mode, size, 90).save(b, fmt)
    return b.getvalue()


@pytest.mark.parametrize(
    "fmt, mode", [("PNG", "RGBA"), ("PNG", "I;16"), ("PNG", "P"), ("JPEG", "CMYK"), ("WEBP", "L")]
)
def test_an_uploaded_picture_of_any_mode_is_searched_like_e2_searches_it(space, client, fmt, mode):
    data = picture(fmt, mode)
    r = client.post("/api/upload", content=data, headers={"X-Filename": "my%20photo.png"})
    assert r.status_code == 200, r.text
    up = r.json()
    assert up["name"] == "my photo.png" and list(up["seen_as"]) == list(space.heads)
    status, got = ask(
        client, upload=up["token"], conditions={"style": 2}, method="backward_search", lam=1.0
    )
    assert status == 200
    z0 = embed_image(space, io.BytesIO(data))  # E2 --image's embedding
    want = methods.rank_backward_search(space, picture_query(space, z0, {"style": 2}), 1.0)
    assert [x["row"] for x in got["results"]] == want.indices[0].tolist()
    assert got["mean_jaccard"] is None and got["query"] == {}  # a picture has no tags


@pytest.mark.parametrize(
    "data, message",
    [
        (b"not a picture at all", "cannot read image bad.png (it must be PNG, JPEG, WEBP)"),
        (picture("GIF", "P"), "cannot read image bad.png (it must be PNG, JPEG, WEBP)"),
        (picture()[:60], "cannot read image bad.png"),  # truncated
        (b"", "the upload is empty"),
    ],
)
def test_a_bad_upload_is_refused_in_one_line_and_the_server_goes_on(client, data, message):
    r = client.post("/api/upload", content=data, headers={"X-Filename": "../../bad.png"})
    assert r.status_code == 400 and message in r.json()["error"]
    assert "\n" not in r.json()["error"]
    assert client.get("/api/meta").status_code == 200


def test_a_decompression_bomb_is_refused(client, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 24×24 = 576 > 2 × 100: PIL's error
    r = client.post("/api/upload", content=picture(), headers={"X-Filename": "bomb.png"})
    assert r.status_code == 400 and "bomb.png is too large to decode" in r.json()["error"]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400)  # between the limit and twice it: a warning
    r = client.post("/api/upload", content=picture(), headers={"X-Filename": "bomb.png"})
    assert r.status_code == 400 and "too large to decode" in r.json()["error"]
    assert client.get("/api/meta").status_code == 200


def test_an_upload_over_the_size_limit_is_refused_while_it_is_read(client, explorer, monkeypatch):
    monkeypatch.setattr(app_module, "MAX_UPLOAD_BYTES", 1000)
    before = len(explorer.uploads)

    def chunks():  # no Content-Length: the limit must hold as the body streams in
        for _ in range(100):
            yield b"x" * 100

    r = client.post("/api/upload", content=chunks(), headers={"X-Filename": "big.png"})
    assert r.status_code == 413 and "big.png is larger than" in r.json()["error"]
    r = client.post("/api/upload", content=b"x" * 2000, headers={"X-Filename": "big.png"})
    assert r.status_code == 413
    assert len(explorer.uploads) == before
    assert client.get("/api/meta").status_code == 200


def test_uploads_are_kept_in_memory_and_bounded(explorer, monkeypatch):
    monkeypatch.setattr(session, "MAX_UPLOADS", 2)
    tokens = [explorer.upload(picture(), f"p{i}.png")["token"] for i in range(3)]
    assert tokens[0] not in explorer.uploads and set(tokens[1:]) <= set(explorer.uploads)
    with pytest.raises(SuiteError, match="no longer here: upload it again"):
        explorer.ask({"upload": tokens[0], "conditions": {"style": 0}, "method": "knn"})


# ---------------------------------------------------------------------------------------------
# Bad requests


@pytest.mark.parametrize(
    "body, message",
    [
        ({"row": 0, "conditions": {"style": 0}, "method": "magic"}, "unknown method 'magic'"),
        ({"row": 0, "conditions": {}, "method": "knn"}, "give one class for each of: style"),
        ({"row": 0, "conditions": {"style": 9}, "method": "knn"}, "style class 9 out of range"),
        ({"row": 0, "conditions": {"style": "0"}, "method": "knn"}, "must be an integer"),
        ({"row": 10**6, "conditions": {"style": 0}, "method": "knn"}, "no database row 1000000"),
        ({"conditions": {"style": 0}, "method": "knn"}, "give the query as a database row"),
        ({"row": 0, "conditions": {"style": 0}, "method": "knn", "lam": -1}, "lam = -1 is outside"),
        ({"row": 0, "conditions": {"style": 0}, "method": "knn", "lam": 65}, "is outside 0 … 64"),
        (
            {"row": 0, "conditions": {"style": 0}, "method": "knn", "alpha": "x"},
            "alpha must be a number",
        ),
        ([1, 2], "the request must be a JSON object"),
    ],
)
def test_a_bad_search_request_is_refused_in_one_line(client, body, message):
    status, got = ask(client, **body) if isinstance(body, dict) else (None, None)
    if not isinstance(body, dict):
        r = client.post("/api/search", json=body)
        status, got = r.status_code, r.json()
    assert status == 400 and message in got["error"]
    r = client.post("/api/search", content=b"{not json")
    assert r.status_code == 400 and r.json()["error"] == "the request is not JSON"


# ---------------------------------------------------------------------------------------------
# Pictures, hosts, browsing


def test_pictures_are_served_by_row_only_from_under_the_data_root(
    pipe, space, explorer, client, tmp_path
):
    r = client.get("/image/3")
    assert r.status_code == 200
    assert r.content == space.image_path(space.images[3]).read_bytes()
    assert client.get(f"/image/{len(space)}").status_code == 404
    for path in ("/image/-1", "/image/..%2F..%2Fetc%2Fpasswd", "/static/..%2F..%2Fsession.py"):
        assert client.get(path).status_code == 404
    secret = tmp_path / "secret.png"
    secret.write_bytes(picture())
    link = pipe.data_root / pipe.dataset / "images" / "link.png"
    link.symlink_to(secret)
    try:  # a database whose keys point outside data/<dataset> (a crafted test.csv, a symlink)
        images = space.images.copy()
        images[0] = f"images/../../../{os.path.relpath(secret, pipe.data_root.parent)}"
        images[1] = "images/link.png"
        outside = Explorer(dataclasses.replace(space, images=images), explorer.projection, 1.0)
        with TestClient(create_app(outside), base_url="http://127.0.0.1") as c:
            for row in (0, 1):
                r = c.get(f"/image/{row}")
                assert r.status_code == 404 and "is not under" in r.json()["error"]
            assert c.get("/image/2").status_code == 200
    finally:
        link.unlink()


def test_only_loopback_host_names_are_answered_by_default(explorer):
    with TestClient(create_app(explorer), base_url="http://evil.example") as c:
        assert c.get("/api/meta").status_code == 400  # DNS rebinding: another site's name
    with TestClient(create_app(explorer), base_url="http://localhost:8765") as c:
        assert c.get("/api/meta").status_code == 200
    with TestClient(create_app(explorer, ["*"]), base_url="http://evil.example") as c:
        assert c.get("/api/meta").status_code == 200  # --host: any name


def test_the_page_loads_nothing_from_elsewhere(client):
    r = client.get("/")
    assert r.status_code == 200 and "default-src 'self'" in r.headers["content-security-policy"]
    page = r.text + client.get("/static/explorer.js").text + client.get("/static/explorer.css").text
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page and "//cdn" not in page


def test_browse_filters_by_class_and_pages(space, client):
    got = client.get("/api/browse", params={"style": 2, "genre": 1}).json()
    want = np.flatnonzero(
        (space.label_ids["style"] == 2).numpy() & (space.label_ids["genre"] == 1).numpy()
    )
    assert got["total"] == len(want) and [r["row"] for r in got["rows"]] == want.tolist()
    assert all(r["labels"]["style"] == space.labels["style"][2] for r in got["rows"])
    page2 = client.get("/api/browse", params={"offset": 48}).json()
    assert page2["rows"][0]["row"] == 48 and page2["total"] == len(space)
    assert client.get("/api/browse", params={"colour": 1}).status_code == 400
    assert client.get("/api/browse", params={"style": "x"}).status_code == 400


def test_meta_and_map_describe_the_task(space, client):
    meta = client.get("/api/meta").json()
    assert meta["conditions"] == ["style"] and meta["database"] == "test"
    assert meta["attributes"]["style"] == space.labels["style"] and meta["size"] == len(space)
    assert list(meta["methods"]) == list(REGISTRY) and meta["default_method"] == "backward_search"
    for key, m in meta["methods"].items():  # the registry's title, knob and trained flag
        r = REGISTRY[key]
        assert m == {"label": r.title(), "knob": r.knob and r.knob.key, "trained": r.trained}
    assert meta["methods"]["centroid_shift"]["knob"] == "alpha"
    assert meta["methods"]["student"] == {
        "label": "Student (distilled)",
        "knob": "lambda",
        "trained": True,
    }
    m = client.get("/api/map").json()
    assert len(m["xy"]) == len(space) and m["colour"] == space.label_ids["style"].tolist()


# ---------------------------------------------------------------------------------------------
# The map and its cache


def test_the_map_is_cached_once_in_the_run_folder_and_refitted_when_stale(space, monkeypatch):
    path = proj.projection_path(space)
    assert path == space.weights / "projection_synthart-style_test.npz" and path.is_file()
    first = proj.load_projection(space)
    z = space.vectors(np.arange(len(space)))
    np.testing.assert_allclose(first.project(z), first.xy, atol=1e-9)
    monkeypatch.setattr(proj, "fit_projection", lambda s: pytest.fail("the cache was not used"))
    again = proj.load_projection(space)
    assert np.array_equal(again.xy, first.xy) and again.fingerprint == first.fingerprint
    monkeypatch.undo()
    shifted = in_memory_search(z + 0.5)  # C1 re-ran: the cached map is stale
    moved = dataclasses.replace(space, db=shifted.db, searcher=shifted)
    refit = proj.load_projection(moved)
    assert refit.fingerprint != first.fingerprint
    np.testing.assert_allclose(refit.xy, refit.project(z + 0.5), atol=1e-9)
    proj.load_projection(space)  # back to the real one


def test_the_map_fit_is_class_balanced_and_deterministic(space):
    rows = proj.balanced_sample(space, size=20)
    counts = np.bincount(space.label_ids["style"].numpy()[rows], minlength=4)
    assert (counts == 5).all()
    a, b = proj.fit_projection(space), proj.fit_projection(space)
    assert np.array_equal(a.xy, b.xy)
    np.testing.assert_allclose(a.axes @ a.axes.T, np.eye(2), atol=1e-9)


def test_a_corrupt_or_unwritable_cache_costs_only_the_cache(space, tmp_path, caplog):
    path = proj.projection_path(space)
    good = path.read_bytes()
    try:
        path.write_bytes(b"garbage")
        with caplog.at_level(logging.WARNING):
            p = proj.load_projection(space)
        assert "unreadable" in caplog.text and p.xy.shape == (len(space), 2)
        assert path.read_bytes() != b"garbage"  # rewritten
    finally:
        path.write_bytes(good)
    ro = dataclasses.replace(space, weights=tmp_path / "not-a-folder")
    (tmp_path / "not-a-folder").write_text("a file where the run folder should be")
    with caplog.at_level(logging.WARNING):
        p = proj.load_projection(ro)
    assert "the map is not cached" in caplog.text and p.xy.shape == (len(space), 2)


def test_the_explorer_writes_nothing_but_its_map(pipe, tmp_path):
    def listing():
        return sorted(
            (str(p.relative_to(pipe.root)), p.stat().st_mtime_ns)
            for p in pipe.root.rglob("*")
            if p.is_file()
        )

    task = get_task(TASK, pipe.data_root)
    before = listing()
    space = load_space(
        pipe.data_root, pipe.weights_root, task, pipe.run, torch.device("cpu"), database="all"
    )
    ex = Explorer(space, proj.load_projection(space), 1.0)
    with TestClient(create_app(ex), base_url="http://127.0.0.1") as c:
        assert ask(c, row=0, conditions={"style": 1}, method="backward_search", lam=1.0)[0] == 200
        assert c.post("/api/upload", content=picture()).status_code == 200
        assert c.get("/image/0").status_code == 200
    new = sorted(set(listing()) - set(before))
    assert [n for n, _ in new] == [f"weights/{pipe.run}/projection_synthart-style_all.npz"]
    assert len(space) == 2 * 4 * 3 * 8  # --database all: train and test


# ---------------------------------------------------------------------------------------------
# E3 itself


def test_e3_binds_loopback_by_default_and_warns_for_another_host(pipe, monkeypatch, caplog):
    served = []
    monkeypatch.setattr(E3_explore, "serve", lambda app, sock: served.append(sock.getsockname()))
    args = pipe.argv("--task", TASK, "--port", "0")
    assert E3_explore.parse_args(args).host == "127.0.0.1"
    with caplog.at_level(logging.INFO, logger="src"):
        E3_explore.main(args)
    assert served[-1][0] == "127.0.0.1" and "warning" not in caplog.text
    assert "the explorer is at http://127.0.0.1:" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="src"):
        E3_explore.main([*args, "--host", "0.0.0.0"])
    assert served[-1][0] == "0.0.0.0"
    assert "warning: --host 0.0.0.0 lets every machine" in caplog.text


def test_e3_refuses_a_port_in_use_and_a_bad_database_in_one_line(pipe, capsys):
    from src.cli import run_stage

    busy = E3_explore.listen("127.0.0.1", 0)
    busy.listen()
    try:
        port = str(busy.getsockname()[1])
        assert run_stage(E3_explore.main, pipe.argv("--task", TASK, "--port", port)) == 2
        assert (
            f"port {port} on 127.0.0.1 is in use: choose another with --port"
            in capsys.readouterr().err
        )
    finally:
        busy.close()
    with pytest.raises(SystemExit) as e:
        E3_explore.parse_args(pipe.argv("--task", TASK, "--database", "train"))
    assert e.value.code == 2
    assert "invalid choice: 'train'" in capsys.readouterr().err


def test_the_stages_do_not_import_the_web_stack():
    stages = [s.removesuffix(".py") for k, s in STAGE_SCRIPTS.items() if k != "E3"]
    code = (
        "import sys\n"
        f"for s in {stages!r}: __import__(s)\n"
        "web = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('starlette', 'uvicorn', 'httpx', 'playwright') or m.startswith('src.explorer'))\n"
        "print(web)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_e3_marks_e1s_lambda_when_e1_ran(pipe):
    args = E3_explore.parse_args(pipe.argv("--task", TASK))
    assert E3_explore.open_explorer(args).default_lambda == get_task(TASK).default_lambda
    metrics_json = pipe.results_root / pipe.run / TASK / "metrics.json"
    write_json(metrics_json, {"lambda": 0.5})
    try:
        assert E3_explore.open_explorer(args).meta()["default_lambda"] == 0.5
    finally:
        metrics_json.unlink()


def test_e3_serves_on_one_thread_unless_threads_is_given(pipe, monkeypatch):
    threads = []
    monkeypatch.setattr(
        E3_explore, "serve", lambda app, sock: threads.append(torch.get_num_threads())
    )
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the stages' default here would be two threads
    before = torch.get_num_threads()
    try:
        E3_explore.main(pipe.argv("--task", TASK, "--port", "0"))
        E3_explore.main(pipe.argv("--task", TASK, "--port", "0", "--threads", "2"))
    finally:
        use_threads(None)  # the other tests' default
        torch.set_num_threads(before)
    assert threads == [1, 2]
