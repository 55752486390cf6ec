"""The trade-off plane (src/report/plane.py): its data from E1's files, the drawing, the sentence."""

from __future__ import annotations

import json

import pandas as pd

from src.evaluation.registry import METHODS as REGISTRY
from src.report import plane as pl

CS_NAME = REGISTRY["centroid_shift"].label  # the α curve


def sweep(lams, mts, prec, genre=None) -> pd.DataFrame:
    df = pd.DataFrame({"lambda": lams, "paper_map@10": prec, "map@10": prec, "mts@10": mts})
    if genre is not None:
        df["context_genre"] = genre
    return df


def sweep_a(alphas, mts, prec, genre=None) -> pd.DataFrame:
    return sweep(alphas, mts, prec, genre).rename(columns={"lambda": "alpha"})


def method(prec, mts, genre=None, lam=None) -> dict:
    ctx = {} if genre is None else {"genre": genre}
    return {"paper_map@10": prec, "mts@10": mts, "context_preservation": ctx, "lambda": lam}


METHODS = {
    "random": method(0.1, 0.05, 0.3),
    "knn": method(0.05, 0.6, 0.9),
    "filtered_knn": method(0.95, 0.2, 0.4),
    "backward_search": method(0.7, 0.35, 0.6, lam=1.0),
    "student": method(0.6, 0.3, 0.5, lam=1.0),
}
BS = sweep([0, 0.5, 1, 2], [0.2, 0.3, 0.4, 0.5], [0.9, 0.8, 0.7, 0.5], [0.3, 0.5, 0.6, 0.8])
CS = sweep_a([0, 1, 2], [0.5, 0.4, 0.3], [0.05, 0.6, 0.75], [0.9, 0.6, 0.4])


def plane(bs, cs, methods, x_metric=pl.MTS):
    """The plane of a λ sweep of Backward Search and an α sweep of the centroid shift."""
    return pl.plane({"backward_search": bs, "centroid_shift": cs}, methods, x_metric)


def test_plane_holds_both_curves_and_the_points():
    p = plane(BS, CS, METHODS)
    bs, cs = p.curve(pl.BS), p.curve(CS_NAME)
    assert bs.knob == "λ" and list(bs.steps) == [0, 0.5, 1, 2]
    assert list(bs.x) == [0.2, 0.3, 0.4, 0.5] and list(bs.y) == [0.9, 0.8, 0.7, 0.5]
    assert cs.knob == "α" and list(cs.x) == [0.5, 0.4, 0.3]
    points = {pt.name: (pt.x, pt.y) for pt in p.points}
    assert points == {
        "k-nearest search": (0.6, 0.05),
        "head-filtered kNN (not in the paper)": (0.2, 0.95),
        "random search": (0.05, 0.1),
        "Student (distilled) at λ = 1": (0.3, 0.6),
    }


def test_context_plane_uses_context_preservation_and_needs_a_free_attribute():
    p = plane(BS, CS, METHODS, pl.CONTEXT)
    assert p.x_label == "context preservation (genre)"
    assert list(p.curve(pl.BS).x) == [0.3, 0.5, 0.6, 0.8]
    assert {pt.name: pt.x for pt in p.points}["k-nearest search"] == 0.9
    no_free = {m: method(s["paper_map@10"], s["mts@10"]) for m, s in METHODS.items()}
    assert plane(BS.drop(columns="context_genre"), None, no_free, pl.CONTEXT) is None


def test_draw_plane_writes_a_png_of_the_data(tmp_path):
    p = plane(BS, CS, METHODS)
    out = pl.draw_plane(p, tmp_path / "figures" / "plane_mts.png", title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = pl.plane_figure(p).axes[0]
    lines = {ln.get_label(): ln.get_xydata().tolist() for ln in ax.lines}
    assert lines["Backward Search (λ)"] == [[0.2, 0.9], [0.3, 0.8], [0.4, 0.7], [0.5, 0.5]]
    assert lines["class-centroid shift (α)"] == [[0.5, 0.05], [0.4, 0.6], [0.3, 0.75]]
    assert lines["head-filtered kNN (not in the paper)"] == [[0.2, 0.95]]
    marks = {t.get_text() for t in ax.texts}
    assert {"λ=0", "λ=0.5", "λ=2", "α=0", "α=1", "α=2", "Student (distilled) at λ = 1"} <= marks


def test_dominance_sentence_backward_search_ahead():
    # at mTS 0.3, 0.4, 0.5: BS 0.8, 0.7, 0.5 vs CS 0.75, 0.6, 0.05 → BS higher at 3 of 3
    text = pl.dominance_sentence(plane(BS, CS, METHODS))
    assert text.startswith(
        "At equal mTS@10 (±0.01), Backward Search has the higher precision@10 at 3 of 3 matched points and the class-centroid shift at 0, so Backward Search leads there"
    )
    assert "above: head-filtered kNN (not in the paper);" in text
    assert "on or below: Student (distilled) at λ = 1;" in text
    assert "beyond its range: random search, k-nearest search." in text
    assert text.endswith(".") and text.count("\n") == 0


def test_dominance_sentence_centroid_shift_ahead():
    better_cs = CS.assign(**{"paper_map@10": [0.6, 0.75, 0.85]})  # now above BS at every match
    text = pl.dominance_sentence(plane(BS, better_cs, METHODS))
    assert "Backward Search has the higher precision@10 at 0 of 3 matched points" in text
    assert "the class-centroid shift at 3, so the class-centroid shift leads there" in text


def test_dominance_sentence_without_matches_or_sweep():
    far = CS.assign(**{"mts@10": [0.9, 0.95, 0.99]})
    text = pl.dominance_sentence(plane(BS, far, {}))
    assert text.startswith("No α point of the class-centroid shift lies within ±0.01 mTS@10")
    assert "No λ sweep" in pl.dominance_sentence(plane(None, CS, METHODS))


def test_matching_needs_a_lambda_point_within_the_tolerance():
    shifted = CS.assign(**{"mts@10": CS["mts@10"] + 0.015})
    assert "No α point" in pl.dominance_sentence(plane(BS, shifted, {}))
    text = pl.dominance_sentence(plane(BS, shifted, {}), tolerance=0.02)
    assert "at 3 of 3 matched points" in text


def test_task_planes_are_drawn_from_e1s_files(tmp_path):
    BS.to_csv(tmp_path / "sweep.csv", index=False)
    CS.to_csv(tmp_path / "sweep_alpha.csv", index=False)
    (tmp_path / "metrics.json").write_text(json.dumps({"methods": METHODS}))
    planes = pl.task_planes(tmp_path)
    assert list(planes) == ["plane_mts.png", "plane_context.png"]
    assert list(planes["plane_context.png"].curve(CS_NAME).x) == [0.9, 0.6, 0.4]
    paths = pl.draw_task_planes(tmp_path, "synthart-style")
    assert [p.name for p in paths] == ["plane_mts.png", "plane_context.png"]
    assert all(p.parent == tmp_path / "figures" and p.stat().st_size > 0 for p in paths)
    (tmp_path / "sweep.csv").unlink()
    (tmp_path / "sweep_alpha.csv").unlink()
    assert pl.draw_task_planes(tmp_path) == []  # E1 without --sweep: no plane


def test_e2_says_why_a_task_conditioning_on_every_attribute_has_no_context_plane(tmp_path, caplog):
    no_free = {m: method(s["paper_map@10"], s["mts@10"]) for m, s in METHODS.items()}
    (tmp_path / "metrics.json").write_text(json.dumps({"methods": no_free}))
    BS.drop(columns="context_genre").to_csv(tmp_path / "sweep.csv", index=False)
    with caplog.at_level("INFO", logger="src"):  # E2's log: the src root's handlers
        paths = pl.draw_task_planes(tmp_path, "synthart-multi")
    assert [p.name for p in paths] == ["plane_mts.png"]
    said = [r for r in caplog.records if "No context plane (plane_context.png)" in r.getMessage()]
    assert len(said) == 1 and said[0].name.startswith("src.")
    assert "conditions on every label attribute" in said[0].getMessage()
    caplog.clear()
    (tmp_path / "metrics.json").write_text(json.dumps({"methods": METHODS}))
    BS.to_csv(tmp_path / "sweep.csv", index=False)
    with caplog.at_level("INFO", logger="src"):
        assert len(pl.draw_task_planes(tmp_path)) == 2
    assert "No context plane" not in caplog.text


def test_an_unreadable_sweep_leaves_its_curve_out_and_says_so(tmp_path, caplog):
    (tmp_path / "metrics.json").write_text(json.dumps({"methods": METHODS}))
    (tmp_path / "sweep.csv").write_text("")  # empty: pandas cannot read it
    CS.to_csv(tmp_path / "sweep_alpha.csv", index=False)
    with caplog.at_level("WARNING", logger="src"):
        planes = pl.task_planes(tmp_path)
    assert planes["plane_mts.png"].curve(pl.BS) is None and planes["plane_mts.png"].curve(CS_NAME)
    assert "sweep.csv is unreadable" in caplog.text
