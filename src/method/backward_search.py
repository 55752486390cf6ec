"""Backward Search (SPEC §5): move query embeddings until the frozen heads predict the condition.

Per query, z starts at z0 and Adam (lr 0.2, default betas) minimises an objective under a stopping
rule; the authors' code has two (`StopRule`):
- BATCH (default; their `batch_compute`, which produced every retrieval number):
  (1/m) Σ_attr CE(φ_attr(z), y_attr) + λ · mean_dims |z − z0|, watching that whole loss;
- SINGLE (their one-query `compute()`, the source of Table 5's iteration counts):
  Σ_attr CE + λ · Σ_dims |z − z0|, watching the cross-entropy alone.
`backward_search` runs every query at once on z0's device under either rule and drops finished
queries from the batch. Its ground truth, written independently (torch.optim.Adam, one query at a
time), lives in the tests (tests/_search.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.errors import SuiteError

BETAS = (0.9, 0.999)  # torch.optim.Adam defaults, as in the authors' code
EPS = 1e-8
CHECK_EVERY_ACCELERATOR = 4  # on CUDA, look for finished queries (one host sync) every few steps


class StopRule(Enum):
    """Which of the authors' two loops Backward Search follows (objective, watched value, stop).

    Both measure the watched value at z_t, take the Adam step, and on an improvement (value ≤ the
    best so far) save z_{t+1} — the authors' off-by-one. They differ in:
    BATCH  — their `batch_compute`: CE averaged over conditions + λ·mean_dims|z − z0|; watches that
             whole loss; a query's answer is final once `patience` + 1 iterations in a row failed
             to improve (their loop goes on to max_iter regardless; the rest is wasted work).
    SINGLE — their one-query `compute()`: CE summed over conditions (their per-condition weight
             ω taken as 1; nothing in their code calls it) + λ·Σ_dims|z − z0|; watches the CE
             alone; breaks after `patience` (10) non-improvements in a row. Their "no best yet"
             test is `not best_loss`, so a best CE of exactly 0.0 counts as no best (the next
             value is taken). Without early stopping it still returns the best-CE iterate.
    """

    BATCH = "batch"
    SINGLE = "single"


@dataclass
class SearchResult:
    """What Backward Search returns, one row per query.

    z: searched embeddings (N×E). iterations: loss evaluations (= Adam steps) each query ran
    before it was done. Under StopRule.SINGLE that is the authors' `compute()` loop count, the
    paper's Table 5 "iterations": steps up to and including the `patience`-th non-improvement in
    a row, or max_iter. Under StopRule.BATCH it is the step at which the answer became final
    (`patience` + 1 non-improvements after the last improvement), or max_iter; their
    `batch_compute` has no counter and always runs max_iter steps. satisfied_at: the first
    iteration t (0-based; iterate z_t, i.e. z after t steps, 0 = z0 itself) at which every
    conditioned head's argmax equals its condition, among the iterates the query evaluated; -1
    if none did. loss: the best watched value (BATCH: the loss; SINGLE: the CE), the one recorded
    with the returned z (measured just before the step that produced it, as in the authors' code).
    trace (only with `trace=True`): per query, its walk — z0, then z after each step up to the
    step that produced the returned z (so its last row is z): a (T_i + 1)×E tensor.
    """

    z: Tensor
    iterations: Tensor
    satisfied_at: Tensor
    loss: Tensor
    trace: list[Tensor] | None = None


# ---------------------------------------------------------------------------------------------
# Input checks


def _check_inputs(
    heads: Mapping[str, nn.Module],
    z0: Tensor,
    conditions: Mapping[str, Tensor],
    lam: float | Tensor,
    lr: float,
    max_iter: int,
    patience: int,
) -> tuple[list[str], dict[str, Tensor], Tensor]:
    """Validate the arguments; return the conditioned attributes, the conditions and λ on z0's device."""
    if not isinstance(z0, Tensor) or z0.dim() != 2 or not z0.is_floating_point():
        raise SuiteError("backward_search: z0 must be a floating-point N×E tensor")
    if not torch.isfinite(z0).all():
        bad = (~torch.isfinite(z0)).any(1).nonzero().flatten()[:5].tolist()
        raise SuiteError(
            f"backward_search: z0 holds NaN or inf (rows {bad} …); re-run C1_extract_embeddings.py"
        )
    if not conditions:
        raise SuiteError("backward_search: no condition given; pass at least one attribute")
    n = z0.shape[0]
    attrs = list(conditions)
    unknown = [a for a in attrs if a not in heads]
    if unknown:
        raise SuiteError(
            f"backward_search: no head for attribute(s) {unknown}; heads exist for {list(heads)}"
        )
    conds: dict[str, Tensor] = {}
    for a in attrs:
        y = torch.as_tensor(conditions[a], device=z0.device)  # not via a default device
        if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise SuiteError(f"backward_search: condition {a!r} must hold integer class ids")
        if y.shape != (n,):
            raise SuiteError(
                f"backward_search: condition {a!r} has shape {tuple(y.shape)}; expected ({n},)"
            )
        y = y.long()
        if n:
            with torch.no_grad(), _EvalMode({a: heads[a]}):
                num_classes = heads[a](z0[:1]).shape[1]
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= num_classes:
                raise SuiteError(
                    f"backward_search: class id {lo if lo < 0 else hi} for {a!r} is out of range; "
                    f"the head has {num_classes} classes (ids 0..{num_classes - 1})"
                )
        conds[a] = y
    lam_t = torch.as_tensor(lam, dtype=z0.dtype, device=z0.device)
    if lam_t.dim() == 0:
        lam_t = lam_t.expand(n)
    if lam_t.shape != (n,):
        raise SuiteError(
            f"backward_search: lam has shape {tuple(lam_t.shape)}; give a float or ({n},) tensor"
        )
    if not (torch.isfinite(lam_t).all() and (lam_t >= 0).all()):
        raise SuiteError("backward_search: lam must be finite and ≥ 0")
    if not (lr > 0 and math.isfinite(lr)):
        raise SuiteError(f"backward_search: lr must be > 0, got {lr}")
    if max_iter < 0 or patience < 0:
        raise SuiteError("backward_search: max_iter and patience must be ≥ 0")
    return attrs, conds, lam_t.contiguous()


class _EvalMode:
    """Put heads in eval mode for the search and restore each one's mode afterwards."""

    def __init__(self, heads: Mapping[str, nn.Module]):
        self.heads = list(heads.values())

    def __enter__(self) -> None:
        self.modes = [m.training for m in self.heads]
        for m in self.heads:
            m.eval()

    def __exit__(self, *exc: object) -> None:
        for m, mode in zip(self.heads, self.modes, strict=True):
            m.train(mode)


def _loss_and_hits(
    heads: Mapping[str, nn.Module],
    attrs: list[str],
    z: Tensor,
    z0: Tensor,
    conds: dict[str, Tensor],
    lam: Tensor,
    rule: StopRule = StopRule.BATCH,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per query (N,): the objective of `rule`, the value it watches, and whether every head's
    argmax meets its condition."""
    ce = z.new_zeros(z.shape[0])
    hit = torch.ones(z.shape[0], dtype=torch.bool, device=z.device)
    for a in attrs:
        logits = heads[a](z)
        ce = ce + F.cross_entropy(logits, conds[a], reduction="none")
        hit = hit & (logits.detach().argmax(1) == conds[a])
    if rule is StopRule.SINGLE:
        return ce + lam * (z - z0).abs().sum(1), ce, hit
    loss = ce / len(attrs) + lam * (z - z0).abs().mean(1)
    return loss, loss, hit


# ---------------------------------------------------------------------------------------------
# The batched optimizer


def _check_interval(device: torch.device) -> int:
    """Steps between looks for finished queries: every step on the CPU (no sync to pay),
    every few on an accelerator (each look is one host sync)."""
    return 1 if device.type == "cpu" else CHECK_EVERY_ACCELERATOR


def backward_search(
    heads: Mapping[str, nn.Module],
    z0: Tensor,
    conditions: Mapping[str, Tensor],
    lam: float | Tensor,
    *,
    lr: float = 0.2,
    max_iter: int = 100,
    early_stopping: bool = True,
    patience: int = 10,
    rule: StopRule = StopRule.BATCH,
    trace: bool = False,
) -> SearchResult:
    """Search every query at once (SPEC §5) on z0's device; finished queries leave the batch.

    heads: attribute → module mapping N×E embeddings to logits (used in eval mode, not updated).
    conditions: attribute → (N,) target class ids; lam: float or (N,) tensor.
    rule: the authors' batched loop (default) or their single-query `compute()` (Table 5).
    trace: also keep every iterate (`SearchResult.trace`, the walk of the explorer's map); the
    search itself is the same, bit for bit.
    """
    rule = StopRule(rule)
    attrs, conds, lam_t = _check_inputs(heads, z0, conditions, lam, lr, max_iter, patience)
    if rule is StopRule.SINGLE and patience < 1:
        raise SuiteError("backward_search: the single-query rule needs patience ≥ 1")
    # A query is done after this many non-improvements in a row (see StopRule).
    stop_after = patience + 1 if rule is StopRule.BATCH else patience
    keep_best = early_stopping or rule is StopRule.SINGLE  # compute() returns its best iterate
    n, dev = z0.shape[0], z0.device
    z0 = z0.detach()
    out_z = z0.clone()
    out_iters = torch.zeros(n, dtype=torch.long, device=dev)
    out_sat = torch.full((n,), -1, dtype=torch.long, device=dev)
    out_loss = torch.full((n,), float("inf"), dtype=z0.dtype, device=dev)
    walk = _Walk(z0) if trace else None
    if n == 0 or max_iter == 0:
        return SearchResult(out_z, out_iters, out_sat, out_loss, walk and walk.paths())

    check_every = _check_interval(dev)
    beta1, beta2 = BETAS
    # State of the active queries; `rows` maps them back to the output.
    rows = torch.arange(n, device=dev)
    base = z0
    z = z0.clone()
    m = torch.zeros_like(z)
    v = torch.zeros_like(z)
    saved = z0.clone()
    best = out_loss.clone()
    counter = torch.zeros(n, dtype=torch.long, device=dev)
    iters = torch.zeros(n, dtype=torch.long, device=dev)
    sat = out_sat.clone()
    done = torch.zeros(n, dtype=torch.bool, device=dev)
    lam_a, conds_a = lam_t, conds

    with _EvalMode(heads), torch.enable_grad():
        for t in range(max_iter):
            zl = z.requires_grad_(True)
            objective, loss, hit = _loss_and_hits(heads, attrs, zl, base, conds_a, lam_a, rule)
            (grad,) = torch.autograd.grad(objective.sum(), zl)
            z = zl.detach()
            loss = loss.detach()
            active = ~done
            iters += active
            sat = torch.where((sat < 0) & hit & active, t, sat)
            # Adam step on z (same arithmetic as torch.optim.Adam's single-tensor path).
            step = t + 1
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (v.sqrt() / math.sqrt(1 - beta2**step)).add_(EPS)
            z.addcdiv_(m, denom, value=-lr / (1 - beta1**step))
            if keep_best:
                better = loss <= best  # inf at first: the first value is always taken
                if rule is StopRule.SINGLE:
                    better |= best == 0  # their `if not best_loss:` treats a best of 0.0 as unset
                improved = active & better
                best = torch.where(improved, loss, best)
                saved = torch.where(improved[:, None], z, saved)
                counter = torch.where(improved, 0, counter + active)
                if early_stopping:
                    done = counter >= stop_after
            else:
                best, saved = loss, z
            if walk is not None:
                walk.step(rows, z, improved if keep_best else active, step)
            if early_stopping and (t + 1) % check_every == 0 and t + 1 < max_iter:
                n_done = int(done.sum())
                if n_done:
                    fin = done.nonzero().flatten()
                    out_z[rows[fin]] = saved[fin]
                    out_iters[rows[fin]] = iters[fin]
                    out_sat[rows[fin]] = sat[fin]
                    out_loss[rows[fin]] = best[fin]
                    if n_done == len(rows):
                        paths = walk and walk.paths()
                        return SearchResult(out_z, out_iters, out_sat, out_loss, paths)
                    keep = (~done).nonzero().flatten()
                    rows, base, z, m, v, saved = (x[keep] for x in (rows, base, z, m, v, saved))
                    best, counter, iters, sat, done, lam_a = (
                        x[keep] for x in (best, counter, iters, sat, done, lam_a)
                    )
                    conds_a = {a: y[keep] for a, y in conds_a.items()}
    out_z[rows] = saved
    out_iters[rows] = iters
    out_sat[rows] = sat
    out_loss[rows] = best
    return SearchResult(out_z, out_iters, out_sat, out_loss, walk and walk.paths())


class _Walk:
    """The iterates of a traced search: z after every step of the active queries, and for each
    query the step that produced its saved (returned) z — a walk ends at its answer."""

    def __init__(self, z0: Tensor):
        self.z0 = z0
        self.steps: list[tuple[Tensor, Tensor]] = []  # (output rows, z of those rows) per step
        self.last = torch.zeros(z0.shape[0], dtype=torch.long, device=z0.device)  # 0: z0 itself

    def step(self, rows: Tensor, z: Tensor, improved: Tensor, step: int) -> None:
        self.steps.append((rows, z.clone()))  # `rows` is replaced, never changed, on compaction
        self.last[rows[improved]] = step

    def paths(self) -> list[Tensor]:
        """Per query: z0, then z after steps 1 … the step of its answer."""
        per_query: list[list[Tensor]] = [[self.z0[i]] for i in range(self.z0.shape[0])]
        last = self.last.tolist()
        for t, (rows, z) in enumerate(self.steps, start=1):
            for j, i in enumerate(rows.tolist()):
                if t <= last[i]:
                    per_query[i].append(z[j])
        return [torch.stack(p) for p in per_query]
