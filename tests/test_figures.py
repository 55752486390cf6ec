"""E2 figures: green frames where results satisfy the condition, Fig 6 panels, Fig 5, curves, and
searching a picture from outside the dataset (`E2_visualize.py --image`)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import E2_visualize
from src.errors import SuiteError
from src.evaluation import space as search_space
from src.labels import parse_conditions
from src.report import drawing, figures
from src.tasks import get_task
from tests._pipeline import build_pipeline

GREY, RED = (128, 128, 128), (200, 40, 40)


def png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def green_fraction(img: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Share of green pixels in the ring 1..5 px outside an image cell (where the frame lies)."""
    x0, y0, x1, y1 = box
    outer = img[y0 - 5 : y1 + 5, x0 - 5 : x1 + 5]
    mask = np.ones(outer.shape[:2], bool)
    mask[4:-4, 4:-4] = False  # keep the ring 1..5 px outside the cell
    ring = outer[mask]
    green = (ring[:, 1] > 140) & (ring[:, 0] < 90) & (ring[:, 2] < 90)
    return float(green.mean())


def count_panels(path) -> int:
    """Plot panels in a PNG: each has two full-height dark spines (left and right)."""
    dark = np.asarray(Image.open(path).convert("L")) < 80
    spine_cols = np.flatnonzero(dark.sum(0) > 0.3 * dark.shape[0])
    if not len(spine_cols):
        return 0
    return (len(np.split(spine_cols, np.flatnonzero(np.diff(spine_cols) > 2) + 1)) + 1) // 2


def solid(colour, size=(40, 30)) -> np.ndarray:
    return np.broadcast_to(np.array(colour, np.uint8), (size[1], size[0], 3)).copy()


# ---------------------------------------------------------------------------------------------
# Drawing, on synthetic inputs


def test_green_frame_only_around_results_that_satisfy(tmp_path):
    framed = [True, False, False, True, False]
    rows = [
        drawing.ResultRow("kNN", [drawing.Tile(solid(GREY), ["#1", "x"], f) for f in framed]),
        drawing.ResultRow(
            "Backward Search", [drawing.Tile(solid(RED), ["#1"], not f) for f in framed]
        ),
    ]
    layout = drawing.draw_grid(
        drawing.Tile(solid(GREY), ["query"]), rows, tmp_path / "g.png", title="t"
    )
    img = png(tmp_path / "g.png")
    assert img.shape[:2] == (layout.height, layout.width)
    for i, row in enumerate(rows):
        for j, tile in enumerate(row.tiles):
            box = layout.cells[(i, j)]
            x0, y0, x1, y1 = box
            # the cell shows its own picture (the layout is where the tile was drawn)
            centre = img[(y0 + y1) // 2, (x0 + x1) // 2]
            assert np.abs(centre - np.array(GREY if i == 0 else RED)).max() <= 3
            frac = green_fraction(img, box)
            assert frac > 0.8 if tile.framed else frac == 0.0, (i, j, frac)
    assert green_fraction(img, layout.query) == 0.0


def test_tiles_keep_whole_picture_padded_square():
    wide = solid(RED, size=(60, 20))
    tile = drawing.load_tile_image(wide, 30)
    assert tile.shape == (30, 30, 3)
    assert (tile[0, 15] == 255).all() and (tile[15, 15] == RED).all()  # padded, not cropped


def test_unreadable_tile_names_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(SuiteError, match="broken.jpg"):
        drawing.load_tile_image(bad, 10)


def test_long_captions_wrap_and_are_bounded():
    lines = drawing.wrap_caption(["Abstract_Expressionism_and_more_words", "x" * 200])
    assert all(len(line) <= drawing.CAPTION_CHARS for line in lines)
    assert len(lines) <= drawing.MAX_CAPTION_LINES


def sweep_df(rising: bool = True) -> pd.DataFrame:
    lam = [0, 0.0625, 0.25, 1, 4, 16, 64]
    m = np.linspace(0.95, 0.1, len(lam))
    return pd.DataFrame({"lambda": lam, "paper_map@10": m, "mts@10": 1 - m if rising else m})


@pytest.mark.parametrize("n_tasks", [1, 3])
def test_fig6_has_one_panel_per_task_with_a_sweep(tmp_path, n_tasks):
    sweeps = {f"task{i}": sweep_df() for i in range(n_tasks)}
    sweeps["empty"] = sweep_df().iloc[:0]  # a task without sweep rows gets no panel
    assert drawing.draw_sweep(sweeps, tmp_path / "f6.png") == n_tasks
    assert count_panels(tmp_path / "f6.png") == n_tasks


def test_fig6_without_any_sweep_says_which_stage(tmp_path):
    with pytest.raises(SuiteError, match="--sweep"):
        drawing.draw_sweep({}, tmp_path / "f6.png")


def test_training_curves_two_panels(tmp_path):
    log = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "lr": [1e-3, 1e-3, 1e-4],
            "train_loss": [2.0, 1.0, 0.5],
            "test_acc_style": [0.4, 0.7, 0.9],
        }
    )
    drawing.draw_training_curves(log, tmp_path / "c.png")
    assert count_panels(tmp_path / "c.png") == 2


def test_conditions_are_checked_against_labels():
    labels = {"style": ["Baroque", "Early_Renaissance"], "genre": ["portrait"]}
    both = ("style", "genre")
    assert parse_conditions(["style=Baroque", "genre=portrait"], labels, both) == {
        "style": 0,
        "genre": 0,
    }
    assert parse_conditions(["style=early renaissance"], labels, both) == {"style": 1}
    with pytest.raises(SuiteError, match="valid names: Baroque, Early_Renaissance"):
        parse_conditions(["style=Rococo"], labels, both)
    with pytest.raises(SuiteError, match="heads for: style, genre"):
        parse_conditions(["medium=oil"], labels, both)
    with pytest.raises(SuiteError, match="ATTR=CLASS"):
        parse_conditions(["Baroque"], labels, both)
    with pytest.raises(SuiteError, match="at least one"):
        parse_conditions([], labels, both)
    with pytest.raises(SuiteError, match="conditions on style only"):
        parse_conditions(["genre=portrait"], labels, ("style",))


# ---------------------------------------------------------------------------------------------
# E2 on the tiny pipeline (hand-made A1…C1 artifacts)


def spy_grids(monkeypatch) -> list:
    """The rows of every result grid E2 draws from now on (each grid is still drawn)."""
    drawn: list = []
    real = drawing.draw_grid
    monkeypatch.setattr(
        figures,
        "draw_grid",
        lambda q, rows, path, **kw: drawn.append(rows) or real(q, rows, path, **kw),
    )
    return drawn


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    torch.manual_seed(0)  # the fixture's untrained backbone: the same whatever ran before
    return build_pipeline(tmp_path_factory.mktemp("e2"))


def test_result_grid_frames_match_labels_and_keep_the_query(pipe, monkeypatch, capsys):
    drawn = []
    real = drawing.draw_grid

    def spy(query, rows, path, **kw):
        layout = real(query, rows, path, **kw)
        drawn.append((query, rows, path, layout))
        return layout

    monkeypatch.setattr(figures, "draw_grid", spy)
    argv = pipe.argv("--task", "synthart-multi", "--query-id", "4", "--device", "cpu")
    assert E2_visualize.run_stage(E2_visualize.main, argv) == 0
    grid = [d for d in drawn if d[2].name == "results_q4.png"]
    assert len(grid) == 1
    query, rows, path, layout = grid[0]
    q = pd.read_csv(pipe.data_root / "synthart" / "queries_synthart-multi.csv").iloc[4]
    test = pd.read_csv(pipe.data_root / "synthart" / "test.csv").set_index("image")
    img = png(path)
    titles = [r.title for r in rows]
    assert titles[0].startswith("k-nearest") and titles[1].startswith("Backward Search")
    for i, row in enumerate(rows):
        assert len(row.tiles) == 10
        for j, tile in enumerate(row.tiles):
            key = str(tile.image.relative_to(pipe.data_root / "synthart"))
            ok = test.loc[key, "style"] == q["style"] and test.loc[key, "genre"] == q["genre"]
            frac = green_fraction(img, layout.cells[(i, j)])
            assert (frac > 0.8) if ok else (frac == 0.0), (titles[i], j, key)
    # Backward Search at the task's λ finds the condition on this fixture; kNN does not.
    assert sum(t.framed for t in rows[1].tiles) > sum(t.framed for t in rows[0].tiles)
    # The first kNN result is the query itself (it stays in the database): shown, not dropped.
    first = rows[0].tiles[0]
    assert str(first.image.relative_to(pipe.data_root / "synthart")) == q["image"]
    assert "(the query itself)" in first.caption
    figs = pipe.results_root / pipe.run / "synthart-multi" / "figures"
    assert (figs / "fig5_q4.png").exists()
    assert (pipe.results_root / pipe.run / "REPORT.md").exists()
    assert "report:" in capsys.readouterr().out


def test_student_row_appears_once_d1_trained_it(pipe, monkeypatch):
    import D1_train_distill

    d1 = pipe.argv("--task", "synthart-style", "--epochs", "1", "--lambda", "3", "--device", "cpu")
    assert D1_train_distill.run_stage(D1_train_distill.main, d1) == 0
    drawn = spy_grids(monkeypatch)
    argv = pipe.argv("--task", "synthart-style", "--query-id", "2", "--lambdas", "knn")
    assert (
        E2_visualize.run_stage(E2_visualize.main, [*argv, "--lambda", "3", "--device", "cpu"]) == 0
    )
    titles = [r.title for r in drawn[0]]
    assert titles == [
        "k-nearest search",
        "Backward Search at λ = 3",
        "Student (distilled) at λ = 3",
    ]
    assert all(len(r.tiles) == 10 for r in drawn[0])


def test_rankings_come_from_e1_when_it_ran_at_that_lambda(pipe, tmp_path, monkeypatch):
    results = tmp_path / "results"
    tdir = results / pipe.run / "synthart-style"
    tdir.mkdir(parents=True)
    (tdir / "metrics.json").write_text('{"lambda": 0.5, "methods": {}}')
    test = pd.read_csv(pipe.data_root / "synthart" / "test.csv")
    e1_keys = test["image"].iloc[::-1].head(10).tolist()  # an order no search would give
    q = pd.read_csv(pipe.data_root / "synthart" / "queries_synthart-style.csv").iloc[[0]]
    row = {"query_id": 0, "image": q["image"].iloc[0], "style": q["style"].iloc[0]}
    row.update({f"rank_{r + 1}": k for r, k in enumerate(e1_keys)})
    pd.DataFrame([row]).to_csv(tdir / "retrievals_knn.csv", index=False)
    drawn = spy_grids(monkeypatch)
    argv = [*pipe.argv("--task", "synthart-style", "--query-id", "0", "--lambdas", "knn")]
    argv += ["--results-root", str(results), "--device", "cpu"]
    assert E2_visualize.run_stage(E2_visualize.main, argv) == 0
    knn = drawn[0][0]
    assert [str(t.image.relative_to(pipe.data_root / "synthart")) for t in knn.tiles] == e1_keys
    assert drawn[0][1].title == "Backward Search at λ = 0.5"  # E1's λ, computed here (no CSV)
    # asked for another λ than E1's: E1's rankings are not used
    drawn.clear()
    assert E2_visualize.run_stage(E2_visualize.main, [*argv, "--lambda", "2"]) == 0
    assert [
        str(t.image.relative_to(pipe.data_root / "synthart")) for t in drawn[0][0].tiles
    ] != e1_keys


def test_fig5_marks_query_and_each_rows_top3_mean(pipe, monkeypatch):
    panels = []
    real = figures.tsne_panel
    monkeypatch.setattr(
        figures, "tsne_panel", lambda *a, **k: panels.append(real(*a, **k)) or panels[-1]
    )
    argv = pipe.argv("--task", "synthart-style", "--query-id", "1", "--lambdas", "knn,8,0")
    assert E2_visualize.run_stage(E2_visualize.main, [*argv, "--device", "cpu"]) == 0
    (panel,) = panels
    assert list(panel.marks) == ["k-nearest search", "λ=8", "λ=0"]
    q = pd.read_csv(pipe.data_root / "synthart" / "queries_synthart-style.csv").iloc[1]
    test = pd.read_csv(pipe.data_root / "synthart" / "test.csv").set_index("image")
    assert set(panel.classes) == {test.loc[q["image"], "style"], q["style"]}
    assert len(panel.points) == len(panel.classes) and np.isfinite(panel.points).all()
    assert (pipe.results_root / pipe.run / "synthart-style" / "figures" / "fig5_q1.png").exists()


def test_fig6_from_sweeps_of_the_run(pipe):
    base = pipe.results_root / pipe.run
    for t in ("synthart-style", "synthart-multi"):
        (base / t).mkdir(parents=True, exist_ok=True)
        sweep_df().to_csv(base / t / "sweep.csv", index=False)
    argv = pipe.argv("--task", "synthart-style", "--query-id", "0", "--lambdas", "knn,0")
    assert E2_visualize.run_stage(E2_visualize.main, [*argv, "--device", "cpu"]) == 0
    assert count_panels(base / "figures" / "fig6_lambda.png") == 2
    assert "figures/fig6_lambda.png" in (base / "REPORT.md").read_text()


def test_search_a_picture_from_outside_the_dataset(pipe, tmp_path, capsys):
    outside = tmp_path / "holiday photo.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(outside)
    # condition on a style the encoder does NOT see in the picture, so kNN alone would not do
    space = search_space.load_space(
        pipe.data_root, pipe.weights_root, get_task("synthart-style"), pipe.run, "cpu"
    )
    with torch.no_grad():
        seen = int(space.encoder.heads["style"](search_space.embed_image(space, outside)).argmax())
    styles = space.labels["style"]
    target = styles[(seen + 1) % len(styles)]
    argv = pipe.argv("--task", "synthart-style", "--image", str(outside))
    argv += ["--condition", f"style={target}", "--lambda", "0", "--device", "cpu"]
    assert E2_visualize.run_stage(E2_visualize.main, argv) == 0
    out = capsys.readouterr().out
    assert f"the encoder sees it as style = {styles[seen]}" in out
    ranked = [
        line.split() for line in out.splitlines() if line.split()[-1:] in (["True"], ["False"])
    ]
    assert [int(r[0]) for r in ranked] == list(range(1, 11))  # rank, cosine, image, style, …
    assert [r[3] == target for r in ranked] == [r[-1] == "True" for r in ranked]
    assert sum(r[3] == target for r in ranked) >= 8  # λ = 0: the condition wins
    grid = pipe.results_root / pipe.run / "synthart-style" / "figures" / "search_holiday_photo.png"
    assert grid.exists() and png(grid).shape[1] > 1000


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--condition", "style=Baroque"], "valid names: flat, dots, hatch, mosaic"),
        (["--condition", "medium=oil"], "heads for: style, genre"),
        (["--condition", "style"], "ATTR=CLASS"),
    ],
)
def test_bad_conditions_fail_clearly(pipe, tmp_path, capsys, extra, message):
    pic = tmp_path / "p.png"
    Image.fromarray(solid(GREY)).save(pic)
    argv = pipe.argv("--task", "synthart-style", "--image", str(pic), *extra, "--device", "cpu")
    assert E2_visualize.run_stage(E2_visualize.main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_unreadable_image_and_misplaced_flags_fail_clearly(pipe, tmp_path, capsys):
    bad = tmp_path / "scan.jpg"
    bad.write_bytes(b"\x00" * 10)
    base = pipe.argv("--task", "synthart-style", "--device", "cpu")
    cases = [
        ([*base, "--image", str(bad), "--condition", "style=dots"], "scan.jpg"),
        ([*base, "--condition", "style=dots"], "goes with --image"),
        ([*base, "--query-id", "999"], "--query-id [999]"),
        ([*base, "--lambdas", "knn,big"], "'big'"),
    ]
    for argv, message in cases:
        assert E2_visualize.run_stage(E2_visualize.main, argv) == 2
        assert message in capsys.readouterr().err


def test_e2_before_b1_says_which_stage(tmp_path, capsys):
    argv = ["--data-root", str(tmp_path / "d"), "--weights-root", str(tmp_path / "w")]
    assert E2_visualize.run_stage(E2_visualize.main, [*argv, "--task", "synthart-style"]) == 2
    assert "B1_train_encoder.py --dataset synthart first, or give --run" in capsys.readouterr().err


@pytest.mark.parametrize("n_tasks", [1, 2, 4])
def test_fig6_legend_fits_inside_the_figure(tmp_path, monkeypatch, n_tasks):
    """The legend (with baselines: 6 entries) is not clipped, even with one narrow panel."""
    drawn = []
    monkeypatch.setattr(drawing, "save_figure", lambda fig, path: drawn.append(fig))
    sweeps = {f"task{i}": sweep_df() for i in range(n_tasks)}
    base = {t: {"random search": (0.05, 0.1), "k-nearest": (0.2, 0.6)} for t in sweeps}
    drawing.draw_sweep(sweeps, tmp_path / "f6.png", baselines=base)
    (fig,) = drawn
    fig.draw_without_rendering()
    box, inside = fig.legends[0].get_window_extent(), fig.bbox
    assert inside.x0 <= box.x0 and box.x1 <= inside.x1
    assert inside.y0 <= box.y0 and box.y1 <= inside.y1
    for ax in fig.axes:  # and it does not overlap the panels' tick labels
        assert ax.get_tightbbox().y0 >= box.y1 - 1


def test_condition_errors_give_the_tasks_own_attribute_and_a_real_class():
    labels = {"species": ["001.Black_footed_Albatross", "008.Digit_seven"]}
    for items in (["species"], []):
        with pytest.raises(SuiteError) as e:
            parse_conditions(items, labels, ["species"])
        assert "(e.g. species=008.Digit_seven)" in str(e.value) and "Baroque" not in str(e.value)
    assert parse_conditions(["species=seven"], labels, ["species"]) == {"species": 1}


def test_image_search_shows_the_student_row_when_it_exists(pipe, tmp_path, monkeypatch):
    import D1_train_distill

    d1 = pipe.argv("--task", "synthart-style", "--epochs", "1", "--lambda", "3", "--device", "cpu")
    if not (pipe.weights_root / pipe.run / "student_synthart-style_lam3.pt").exists():
        assert D1_train_distill.run_stage(D1_train_distill.main, d1) == 0
    drawn = spy_grids(monkeypatch)
    pic = tmp_path / "p.png"
    Image.fromarray(solid(GREY)).save(pic)
    argv = pipe.argv("--task", "synthart-style", "--image", str(pic), "--condition", "style=dots")
    for lam, student in (("3", True), ("5", False)):  # no student was distilled at λ = 5
        drawn.clear()
        assert (
            E2_visualize.run_stage(E2_visualize.main, [*argv, "--lambda", lam, "--device", "cpu"])
            == 0
        )
        titles = [r.title for r in drawn[0]]
        expected = ["k-nearest search", f"Backward Search at λ = {lam}"]
        assert titles == expected + ([f"Student (distilled) at λ = {lam}"] if student else [])
        assert all(len(r.tiles) == 10 for r in drawn[0])


def test_image_search_without_the_result_pictures_prints_and_saves_the_results(
    pipe, tmp_path, capsys
):
    # a collection whose pictures are elsewhere (e.g. embedded on a cluster): no grid, no error
    pic, empty = tmp_path / "away.png", tmp_path / "no_pictures"
    Image.fromarray(solid(GREY)).save(pic)
    empty.mkdir()
    argv = pipe.argv("--task", "synthart-style", "--image", str(pic), "--condition", "style=dots")
    argv += ["--images", str(empty), "--device", "cpu"]
    assert E2_visualize.run_stage(E2_visualize.main, argv) == 0
    captured = capsys.readouterr()
    assert "result pictures are not on disk" in captured.out + captured.err
    assert "searched in" in captured.out + captured.err  # the search time is reported
    figs = pipe.results_root / pipe.run / "synthart-style" / "figures"
    record = json.loads((figs / "search_away.json").read_text())
    assert len(record["results"]) == 10 and not (figs / "search_away.png").exists()
