"""scripts/gpu_check.py (`make gpu-check`): its one-line refusal without CUDA, and the whole check
run end to end on the CPU with tiny sizes (--dry-run)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_refuses_in_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "r.md"
    assert _gpu_check().main(["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: no CUDA device")
    assert not out.exists()


def test_results_file_is_named_after_the_gpu():
    path = _gpu_check().default_out("NVIDIA H100 80GB HBM3")
    assert path == ROOT / "bench" / "RESULTS-NVIDIA-H100-80GB-HBM3.md"


def test_pytest_summary_is_read():
    counts = _gpu_check().pytest_counts("... 7 passed, 2 skipped, 1 failed, 900 deselected in 9s")
    assert counts == {"passed": 7, "skipped": 2, "failed": 1, "deselected": 900}


def _user_folders() -> dict[str, list[str]]:
    return {
        d: sorted(str(p) for p in (ROOT / d).rglob("*")) if (ROOT / d).exists() else []
        for d in ("data", "weights", "results")
    }


@pytest.mark.slow
def test_dry_run_runs_every_step_on_the_cpu(tmp_path):
    before = _user_folders()
    out = tmp_path / "RESULTS-dry.md"
    p = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--dry-run", "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    # On the CPU the CUDA tests skip and the search misses the GPU target: exit 1, file written.
    assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-3000:]
    text = out.read_text()
    rows = {
        line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:]
        for line in text.splitlines()
        if line.startswith("| ") and not line.startswith("| check")
    }
    assert "Dry run on the CPU" in text
    assert rows["pytest -m cuda"][0].endswith("skipped") and rows["pytest -m cuda"][2] == "FAIL |"
    for cond in ("style", "style+genre"):
        figure, target, status = rows[f"Backward Search, {cond}, N = 20, E = 16"]
        assert figure.endswith("ms/query") and target == "≤ 0.01 ms/query"
        assert status in ("PASS |", "FAIL |")
    assert any(k.startswith("retrieval + metrics") for k in rows)
    loader = next(v for k, v in rows.items() if k.startswith("B1 loader, convnext_atto at 32 px"))
    assert "workers" in loader[0] and loader[1] == "≥ 0.9"
    for stage in ("B1 (1 epoch, bf16)", "C1", "E1"):
        figure, target, status = rows[f"SynthArt 32 px, convnext_atto: {stage}"]
        assert figure.startswith("exit 0 in") and status == "PASS |"
    assert _user_folders() == before  # everything went to a temporary folder
    assert not list(tmp_path.glob("gpu-check-*"))
