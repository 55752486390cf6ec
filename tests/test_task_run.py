"""λ by one rule (src/evaluation/task_run.py), as D1, E1, E2 and E3 resolve it: --lambda; the λ E1
evaluated (the stages after E1); an imported run's one student's λ; the task's default."""

from __future__ import annotations

from argparse import Namespace

import pytest

from src.artifacts import RELEASE_SOURCE, write_json
from src.errors import SuiteError
from src.evaluation.task_run import open_task_run, resolve_lambda
from src.method.student import student_path
from src.tasks import get_task

TASK = get_task("synthart-style")
DEFAULT = TASK.default_lambda


def students(folder, *lams):
    """Student files (names only: the rule reads names) of TASK in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for lam in lams:
        student_path(folder, TASK.name, lam).write_bytes(b"")
    return folder


def test_the_precedence_given_then_e1s_then_the_imported_student_then_the_default(tmp_path):
    run = students(tmp_path, 0.51)
    assert resolve_lambda(TASK, 2.0, evaluated=3.0, students=run) == (2.0, "--lambda")
    lam, source = resolve_lambda(TASK, None, evaluated=3.0, students=run)
    assert (lam, source) == (3.0, "the λ E1 evaluated (metrics.json)")
    lam, source = resolve_lambda(TASK, None, students=run)
    assert lam == 0.51 and f"({student_path(run, TASK.name, 0.51).name})" in source
    assert resolve_lambda(TASK) == (DEFAULT, "the task's default")  # D1: nothing else read


def test_an_imported_run_keeps_the_default_when_a_student_has_it_and_refuses_to_guess(tmp_path):
    assert resolve_lambda(TASK, students=students(tmp_path / "a", 0.51, DEFAULT))[0] == DEFAULT
    with pytest.raises(SuiteError, match=r"at λ = 0\.25, 0\.51: choose one with --lambda"):
        resolve_lambda(TASK, students=students(tmp_path / "b", 0.51, 0.25))
    assert resolve_lambda(TASK, students=students(tmp_path / "c"))[0] == DEFAULT  # none


def test_only_an_imported_run_reads_its_students_and_only_after_e1_its_lambda(tmp_path):
    args = Namespace(
        task=TASK.name,
        run="r",
        data_root=tmp_path / "data",
        weights_root=tmp_path / "weights",
        results_root=tmp_path / "results",
    )
    rdir = students(tmp_path / "weights" / "r", 0.51)
    (rdir / "encoder.pt").write_bytes(b"")  # the run exists (resolve_run asks no more)
    write_json(tmp_path / "results" / "r" / TASK.name / "metrics.json", {"lambda": 3.0})
    tr = open_task_run(args)
    assert not tr.imported and tr.lam(None, after_e1=False)[0] == DEFAULT  # trained: its D1's
    assert tr.lam(None)[0] == 3.0
    write_json(rdir / "config.json", {"source": RELEASE_SOURCE})
    tr = open_task_run(args)
    assert tr.imported and tr.lam(None, after_e1=False)[0] == 0.51
    assert tr.lam(None)[0] == 3.0 and tr.lam(0.0)[0] == 0.0
