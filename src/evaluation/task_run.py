"""One task of one encoder run, as the stages that search open it (D1, E1, E2, E3): the task, the
run (src/runs.py), their folders, whether the run was imported from the authors' release, λ by
one rule, and the search space. Opening it here keeps the stages from drifting apart.
"""

from __future__ import annotations

from argparse import Namespace
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from src.artifacts import is_release, read_json, read_metrics, results_dir, run_dir
from src.errors import SuiteError
from src.evaluation.space import SearchSpace, load_space
from src.hints import hint
from src.method.student import student_lambdas, student_path
from src.runs import resolve_run
from src.tasks import Task, get_task


def resolve_lambda(
    task: Task,
    given: float | None = None,
    *,
    evaluated: float | None = None,
    students: Path | None = None,
) -> tuple[float, str]:
    """λ and where it came from, by one precedence: --lambda (`given`); the λ E1 evaluated
    (`evaluated`, for the stages that show E1's results); on a run imported from the authors'
    release (`students`: its folder) the λ of its one student of the task, unless one is at the
    task's default; the task's default λ."""
    if given is not None:
        return given, "--lambda"
    if evaluated is not None:
        return evaluated, "the λ E1 evaluated (metrics.json)"
    found = [] if students is None else student_lambdas(students, task.name)
    if not found or task.default_lambda in found:
        return task.default_lambda, "the task's default"
    if len(found) > 1:
        raise SuiteError(
            f"{students} holds students of {task.name} at λ = {', '.join(f'{x:g}' for x in found)}: "
            "choose one with --lambda"
        )
    name = student_path(students, task.name, found[0]).name
    return found[0], f"the imported student's file name ({name})"


@dataclass(frozen=True)
class TaskRun:
    """A task and the encoder run a stage uses for it, with the roots it was found under."""

    task: Task
    run: str
    data_root: Path
    weights_root: Path
    results_root: Path

    @property
    def weights(self) -> Path:
        """weights/<run>: the encoder, embeddings and students."""
        return run_dir(self.weights_root, self.run)

    @property
    def results(self) -> Path:
        """results/<run>/<task>: what E1 wrote and E2 draws."""
        return results_dir(self.results_root, self.run, self.task.name)

    @cached_property
    def imported(self) -> bool:
        """The run came from the authors' release (its weights/<run>/config.json says so)."""
        path = self.weights / "config.json"
        return path.is_file() and is_release(read_json(path, hint("B1", "--run", self.run)))

    def evaluated(self) -> dict[str, Any]:
        """E1's metrics.json of the task ({} before E1 ran)."""
        return read_metrics(self.results / "metrics.json") or {}

    def lam(self, given: float | None, *, after_e1: bool = True) -> tuple[float, str]:
        """λ for this task and run (`resolve_lambda`): the stages after E1 read E1's λ first."""
        evaluated = self.evaluated().get("lambda") if after_e1 else None
        students = self.weights if self.imported else None
        return resolve_lambda(self.task, given, evaluated=evaluated, students=students)

    def space(self, device: torch.device, **kw: Any) -> SearchSpace:
        """The task's search space (src/evaluation/space.py); `kw`: database, images."""
        return load_space(self.data_root, self.weights_root, self.task, self.run, device, **kw)


def open_task_run(args: Namespace) -> TaskRun:
    """The task and run of a stage's flags (--task, --run and the roots): the task from the
    registry, the run given or the dataset's only one; each wrong one refused in one line."""
    task = get_task(args.task, args.data_root)
    run = resolve_run(args.weights_root, task.dataset, args.run)
    roots = (Path(args.data_root), Path(args.weights_root), Path(args.results_root))
    return TaskRun(task, run, *roots)
