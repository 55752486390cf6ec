"""The toy embedding space of the Backward Search / student tests (it lives in bench/toy.py), and
one-query-at-a-time references of the authors' two rules, written from SPEC §5 with
torch.optim.Adam and plain loops — nothing shared with src/method/backward_search.py."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.toy import accuracy, toy_space, train_heads

__all__ = [
    "Reference",
    "accuracy",
    "batch_query_reference",
    "single_query_reference",
    "toy_space",
    "toy_world",
    "train_heads",
]


@functools.cache
def toy_world(
    n: int,
    embedding_size: int,
    classes: tuple[tuple[str, int], ...],
    seed: int,
    n_train: int,
    steps: int,
) -> tuple[Tensor, dict[str, Tensor], dict[str, nn.Sequential]]:
    """A toy space (z, labels) and heads trained on its first n_train rows.

    Built once per process: `make mutate` forks one pytest run per mutant from the process that
    built it, so each mutant costs its tests, not the training. (It depends only on
    bench/toy.py and the encoder's head, whose own mutation runs select other tests.)
    Callers must leave it as they found it.
    """
    z, labels = toy_space(n, embedding_size, dict(classes), seed=seed, spread=3.0, noise=0.5)
    heads = train_heads(z[:n_train], {a: y[:n_train] for a, y in labels.items()}, steps=steps)
    return z, labels, heads


@dataclass
class Reference:
    """What the batch-rule reference found per query (the fields of the search's result)."""

    z: Tensor
    iterations: Tensor
    satisfied_at: Tensor
    loss: Tensor


def batch_query_reference(
    heads: Mapping[str, nn.Module],
    z0: Tensor,
    conditions: Mapping[str, Tensor],
    lam: float | Tensor,
    *,
    lr: float = 0.2,
    max_iter: int = 100,
    early_stopping: bool = True,
    patience: int = 10,
) -> Reference:
    """The authors' batched rule (SPEC §5), one query at a time with torch.optim.Adam.

    loss = (1/m) Σ_attr CE(φ_attr(z), y_attr) + λ · mean_dims |z − z0|, measured before each
    step. Early stopping: a loss ≤ the best so far while the query's counter is ≤ `patience` saves
    the z AFTER the step and resets the counter; anything else counts one more; once the counter
    exceeds `patience` the saved z is the answer. satisfied_at: the first iterate (0 = z0) at
    which every head's argmax is its condition, -1 if none.
    """
    n = z0.shape[0]
    lam_t = torch.as_tensor(lam, dtype=z0.dtype).expand(n)
    out = Reference(
        z=z0.detach().clone(),
        iterations=torch.zeros(n, dtype=torch.long),
        satisfied_at=torch.full((n,), -1, dtype=torch.long),
        loss=torch.full((n,), float("inf"), dtype=z0.dtype),
    )
    for h in heads.values():
        h.eval()
    with torch.enable_grad():  # under a caller's no_grad too
        for i in range(n):
            base = z0[i : i + 1].detach()
            z = base.clone().requires_grad_(True)
            opt = torch.optim.Adam([z], lr=lr)
            best, saved, counter = float("inf"), base.clone(), 0
            for t in range(max_iter):
                ces, hits = [], []
                for a, y in conditions.items():
                    logits = heads[a](z)
                    target = torch.as_tensor(y)[i : i + 1]
                    ces.append(F.cross_entropy(logits, target))
                    hits.append(int(logits.argmax(1)) == int(target))
                loss = sum(ces) / len(ces) + float(lam_t[i]) * (z - base).abs().mean()
                (z.grad,) = torch.autograd.grad(loss, z)
                opt.step()
                out.iterations[i] = t + 1
                if out.satisfied_at[i] < 0 and all(hits):
                    out.satisfied_at[i] = t
                value = float(loss.detach())
                if not early_stopping:
                    best, saved = value, z.detach().clone()
                elif value <= best and counter <= patience:
                    best, saved, counter = value, z.detach().clone(), 0
                else:
                    counter += 1
                    if counter > patience:
                        break
            out.z[i], out.loss[i] = saved[0], best
    return out


def single_query_reference(
    heads: Mapping[str, nn.Module],
    z0: Tensor,
    conditions: Mapping[str, Tensor],
    lam: float | Tensor,
    *,
    lr: float = 0.2,
    max_iter: int = 100,
    early_stopping: bool = True,
    patience: int = 10,
) -> tuple[Tensor, Tensor, Tensor]:
    """The authors' single-query `compute()` rule, one query at a time with torch.optim.Adam.

    Objective Σ_attr CE + λ·Σ_dims|z − z0|; watches the CE alone (measured before the step, the
    z after the step is saved); `not best` (unset or 0.0) or CE ≤ best is an improvement; breaks at
    the `patience`-th non-improvement in a row. Returns (z, iterations, best CE) per query.
    """
    n = z0.shape[0]
    lam_t = torch.as_tensor(lam, dtype=z0.dtype).expand(n)
    out_z = z0.detach().clone()
    out_iters = torch.zeros(n, dtype=torch.long)
    out_best = torch.zeros(n, dtype=z0.dtype)
    for h in heads.values():
        h.eval()
    for i in range(n):
        base = z0[i : i + 1].detach()
        z = base.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr)
        best, saved, freeze = None, None, 0
        for step in range(1, max_iter + 1):
            ce = sum(
                F.cross_entropy(heads[a](z), torch.as_tensor(y)[i : i + 1])
                for a, y in conditions.items()
            )
            total = ce + float(lam_t[i]) * (z - base).abs().sum()
            (z.grad,) = torch.autograd.grad(total, z)
            opt.step()
            out_iters[i] = step
            value = float(ce.detach())
            if not best or value <= best:
                best, saved, freeze = value, z.detach().clone(), 0
            else:
                freeze += 1
                if early_stopping and freeze == patience:
                    break
        out_z[i], out_best[i] = saved[0], best
    return out_z, out_iters, out_best
