"""The student (SPEC §6): a small MLP distilled from Backward Search, one forward pass per query.

Input: concat(z0, one-hot of each conditioned attribute's target class, attributes in task order).
Linear(E+ΣC→128) → sigmoid → BN → Linear(128→128) → sigmoid → BN → Linear(128→E) → tanh.
`distill` trains it on train-split embeddings with fresh random conditions every epoch and the
teacher's answers computed on the fly per batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.artifacts import load_torch
from src.errors import SuiteError
from src.hints import hint
from src.method.backward_search import backward_search
from src.progress import progress as progress_bar
from src.threads import search_threads

HIDDEN = 128
logger = logging.getLogger(__name__)
D1 = hint("D1")


@dataclass(frozen=True)
class DistillConfig:
    """D1's distillation settings (the authors' code), what `distill` takes; their defaults live
    here only."""

    epochs: int = 49  # the authors evaluate epoch 49
    batch_size: int = 512  # teacher and student batch
    lr: float = 1e-3  # Adam on the student
    student_reg: float = 0.0  # weight of mean|s − z0|

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise SuiteError("distill: epochs must be ≥ 1 and batch_size ≥ 2")


def student_path(run_dir: str | Path, task: str, lam: float) -> Path:
    """weights/<run>/student_<task>_lam<λ:g>.pt — where D1 writes a student and E1 finds it."""
    return Path(run_dir) / f"student_{task}_lam{lam:g}.pt"


def student_lambdas(run_dir: str | Path, task: str) -> list[float]:
    """The λ of every student D1 wrote for `task` in the run folder (student_path's files), sorted."""
    found = set()
    for p in Path(run_dir).glob(f"student_{task}_lam*.pt"):
        try:
            lam = float(p.stem.removeprefix(f"student_{task}_lam"))
        except ValueError:  # another task whose name extends this one's, or a stray file
            continue
        if student_path(run_dir, task, lam) == p:
            found.add(lam)
    return sorted(found)


def batch_starts(n: int, batch_size: int) -> list[int]:
    """Where D1's batches over n training embeddings start (a last batch of 1 is dropped: BN)."""
    return [s for s in range(0, n, batch_size) if n - s >= 2]


def student_input(
    z0: Tensor, conditions: Mapping[str, Tensor], num_classes: Mapping[str, int]
) -> Tensor:
    """concat(z0, one-hot per conditioned attribute), attributes in num_classes' (task) order."""
    if set(conditions) != set(num_classes):
        raise SuiteError(
            f"student_input: conditions on {sorted(conditions)} but the student was trained "
            f"for {list(num_classes)}"
        )
    parts = [z0]
    for attr, n_cls in num_classes.items():
        y = torch.as_tensor(conditions[attr], device=z0.device).long()
        if y.shape != (z0.shape[0],):
            raise SuiteError(f"student_input: condition {attr!r} must have shape ({z0.shape[0]},)")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= n_cls):
            raise SuiteError(
                f"student_input: class id out of range for {attr!r} (0..{n_cls - 1} allowed)"
            )
        parts.append(F.one_hot(y, n_cls).to(z0.dtype))
    return torch.cat(parts, dim=1)


class Student(nn.Module):
    """The distilled student: (z0, one-hot conditions) → searched embedding."""

    def __init__(self, embedding_size: int, num_classes: Mapping[str, int], hidden: int = HIDDEN):
        super().__init__()
        self.embedding_size = embedding_size
        self.num_classes = dict(num_classes)
        self.net = nn.Sequential(
            nn.Linear(embedding_size + sum(self.num_classes.values()), hidden),
            nn.Sigmoid(),
            nn.BatchNorm1d(hidden),
            nn.Linear(hidden, hidden),
            nn.Sigmoid(),
            nn.BatchNorm1d(hidden),
            nn.Linear(hidden, embedding_size),
            nn.Tanh(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def search(self, z0: Tensor, conditions: Mapping[str, Tensor]) -> Tensor:
        """The student's answer for queries z0 under `conditions` (what the teacher would return)."""
        return self(student_input(z0, conditions, self.num_classes))


def distill(
    heads: Mapping[str, nn.Module],
    z_train: Tensor,
    conditions_attrs: Sequence[str],
    num_classes: Mapping[str, int],
    lam: float,
    settings: DistillConfig | None = None,  # None: DistillConfig()
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
    on_pace: Callable[[float], None] | None = None,
) -> tuple[Student, list[dict[str, Any]]]:
    """Train a student on the teacher's answers (SPEC §6); returns it (eval mode) and a per-epoch log.

    on_pace(seconds per batch) is called once after the first batches (src/progress.py), so D1
    can estimate the whole run.
    Each epoch every training embedding gets fresh uniformly random target classes; Backward Search
    (λ, default lr/iterations/early stopping) answers each batch; loss = MSE + student_reg·mean|s − z0|.
    """
    settings = settings or DistillConfig()
    epochs, batch_size, student_reg = settings.epochs, settings.batch_size, settings.student_reg
    attrs = list(conditions_attrs)
    missing = [a for a in attrs if a not in num_classes or a not in heads]
    if not attrs or missing:
        raise SuiteError(f"distill: no head / class count for condition attribute(s) {missing}")
    device = torch.device(device)
    z_train = z_train.to(device=device, dtype=torch.float32)
    if not torch.isfinite(z_train).all():
        raise SuiteError("distill: training embeddings hold NaN or inf; re-run C1")
    n, emb = z_train.shape
    if n < 2:
        raise SuiteError(f"distill: need at least 2 training embeddings, got {n}")
    heads = {a: heads[a].to(device) for a in attrs}
    n_cls = {a: int(num_classes[a]) for a in attrs}
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    student = Student(emb, n_cls).to(device)
    opt = torch.optim.Adam(student.parameters(), lr=settings.lr)
    log: list[dict[str, Any]] = []
    for epoch in range(1, epochs + 1):
        t0 = time.time()
        student.train()
        order = torch.randperm(n, generator=gen).to(device)
        targets = {a: torch.randint(c, (n,), generator=gen).to(device) for a, c in n_cls.items()}
        sums = torch.zeros(5, dtype=torch.float64, device=device)  # mse, reg, iters, sat, count
        bar = progress_bar(
            batch_starts(n, batch_size),
            f"D1 epoch {epoch}/{epochs}",
            enabled=progress,
            on_pace=on_pace if epoch == 1 else None,
        )
        for s in bar:
            idx = order[s : s + batch_size]
            z0 = z_train[idx]
            cond = {a: y[idx] for a, y in targets.items()}
            with torch.no_grad(), search_threads():  # tiny steps: same bits on any thread count
                teacher = backward_search(heads, z0, cond, lam)
            out = student(student_input(z0, cond, n_cls))
            mse = F.mse_loss(out, teacher.z)
            reg = (out - z0).abs().mean()
            loss = mse + student_reg * reg if student_reg else mse
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.loss = loss.detach()  # read only when a progress line is written
            b = len(idx)
            sums += torch.stack(
                [
                    mse.detach().double() * b,
                    reg.detach().double() * b,
                    teacher.iterations.sum().double(),
                    (teacher.satisfied_at >= 0).sum().double(),
                    torch.tensor(b, dtype=torch.float64, device=device),
                ]
            )
        mse_m, reg_m, it_m, sat_m = (sums[:4] / sums[4]).tolist()
        log.append(
            {
                "epoch": epoch,
                "mse": mse_m,
                "l1_to_z0": reg_m,
                "loss": mse_m + student_reg * reg_m,
                "teacher_iterations": it_m,
                "teacher_satisfied": sat_m,
                "seconds": time.time() - t0,
            }
        )
        bar.close()
        logger.info(
            "D1 epoch %d/%d: mse %.5f, teacher %.1f iterations, %.1f%% satisfied (%.1f s)",
            epoch,
            epochs,
            mse_m,
            it_m,
            100 * sat_m,
            log[-1]["seconds"],
        )
    student.eval()
    return student, log


def load_student(path: str | Path, device: torch.device | str = "cpu") -> tuple[Student, dict]:
    """Load a student written by D1 (weights only, no pickle); returned in eval mode."""
    obj = load_torch(path, D1, map_location=device)
    try:
        cfg = obj["config"]
        n_cls = {a: int(cfg["num_classes"][a]) for a in cfg["conditions"]}
        student = Student(int(cfg["embedding_size"]), n_cls, int(cfg.get("hidden", HIDDEN)))
        student.load_state_dict(obj["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise SuiteError(
            f"{path} is not a student file ({type(e).__name__}: {first}); re-run {D1}"
        ) from None
    return student.to(device).eval(), cfg
