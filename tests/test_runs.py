"""Runs are found, not guessed: resolve_run picks the dataset's only run or lists the candidates."""

from __future__ import annotations

import pytest

from src.artifacts import write_json
from src.errors import SuiteError
from src.runs import find_runs, resolve_run


def _run(root, name, dataset, backbone="convnext_atto", e=64, created="2026-11-25 10:00:00"):
    d = root / name
    d.mkdir(parents=True)
    (d / "encoder.pt").write_bytes(b"x")
    write_json(
        d / "config.json",
        {
            "encoder": {"dataset": dataset, "backbone": backbone, "embedding_size": e},
            "created": created,
        },
    )


def test_the_datasets_only_run_is_used_without_run(tmp_path):
    _run(tmp_path, "cub_convnext_atto_e64_ft", "cub")
    _run(tmp_path, "wikiart_convnext_base_e256_ft", "wikiart")
    (tmp_path / "cub_empty").mkdir()  # no encoder.pt: not a run
    assert resolve_run(tmp_path, "cub", None) == "cub_convnext_atto_e64_ft"


def test_the_flag_wins_when_its_run_exists(tmp_path):
    _run(tmp_path, "cub_a", "cub")
    _run(tmp_path, "cub_b", "cub")
    assert resolve_run(tmp_path, "cub", "cub_b") == "cub_b"


def test_several_runs_are_listed_and_none_is_picked(tmp_path):
    _run(tmp_path, "cub_convnext_atto_e64_ft", "cub", created="2026-11-25 10:00:00")
    _run(tmp_path, "cub_resnet50_e128_frozen", "cub", "resnet50", 128, "2026-11-24 09:00:00")
    with pytest.raises(SuiteError) as e:
        resolve_run(tmp_path, "cub", None)
    msg = str(e.value)
    assert "--run" in msg and "\n" not in msg
    assert "cub_convnext_atto_e64_ft (convnext_atto, E=64, trained 2026-11-25 10:00:00)" in msg
    assert "cub_resnet50_e128_frozen (resnet50, E=128, trained 2026-11-24 09:00:00)" in msg


def test_no_run_names_b1_and_the_flag(tmp_path):
    _run(tmp_path, "wikiart_x", "wikiart")
    with pytest.raises(SuiteError, match=r"B1_train_encoder.py --dataset cub first, or give --run"):
        resolve_run(tmp_path, "cub", None)
    with pytest.raises(SuiteError, match="B1_train_encoder.py --dataset cub"):
        resolve_run(tmp_path / "missing", "cub", None)


def test_a_missing_flagged_run_names_the_flag_and_the_candidates(tmp_path):
    _run(tmp_path, "cub_convnext_atto_e64_ft", "cub")
    with pytest.raises(SuiteError) as e:
        resolve_run(tmp_path, "cub", "cub_convnext_base_e256_ft")
    msg = str(e.value)
    assert "--run cub_convnext_base_e256_ft" in msg and "encoder.pt not found" in msg
    assert "cub_convnext_atto_e64_ft (convnext_atto" in msg


def test_a_run_without_config_counts_for_the_dataset_its_name_starts_with(tmp_path):
    (tmp_path / "cub_old").mkdir()
    (tmp_path / "cub_old" / "encoder.pt").write_bytes(b"x")
    assert [r.name for r in find_runs(tmp_path, "cub")] == ["cub_old"]
    assert find_runs(tmp_path, "wikiart") == []


@pytest.mark.parametrize("stage", ["C1", "D1", "E1", "E2"])
def test_every_stage_finds_a_non_default_run(tmp_path, stage, capsys):
    """C1/D1/E1/E2 without --run and no run: one line naming B1 and --run, not the default run."""
    import importlib

    from src.hints import STAGE_SCRIPTS

    mod = importlib.import_module(STAGE_SCRIPTS[stage].removesuffix(".py"))
    _run(tmp_path, "cub_convnext_atto_e64_ft", "cub")
    _run(tmp_path, "cub_resnet50_e64_ft", "cub", "resnet50")
    flag = ["--dataset", "cub"] if stage == "C1" else ["--task", "cub-bird"]
    with pytest.raises(SuiteError, match=r"2 runs of cub .*choose one with --run"):
        mod.main([*flag, "--weights-root", str(tmp_path), "--data-root", str(tmp_path / "d")])
