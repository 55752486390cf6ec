"""The toy embedding space of the Backward Search / student tests (it lives in bench/toy.py), and
the one-query-at-a-time reference of the authors' single-query rule."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.toy import accuracy, toy_space, train_heads

__all__ = ["accuracy", "single_query_reference", "toy_space", "train_heads"]


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
