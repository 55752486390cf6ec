"""A clustered toy embedding space with heads trained on it: the teacher's world in seconds.

Used by the Backward Search / student tests and by bench/backward_search.py. Each label attribute
has one random centre per class; z = tanh(Σ_attr centre[class] + noise), so classes form clusters
the SPEC-shaped heads learn to high accuracy in a few hundred Adam steps.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.encoder import head


def toy_space(
    n: int,
    embedding_size: int,
    classes: Mapping[str, int],
    *,
    seed: int = 0,
    spread: float = 1.0,
    noise: float = 0.3,
) -> tuple[Tensor, dict[str, Tensor]]:
    """n embeddings (float32, in (-1, 1)) and their class ids per attribute."""
    g = torch.Generator().manual_seed(seed)
    pre = noise * torch.randn(n, embedding_size, generator=g)
    labels = {}
    for attr, c in classes.items():
        centres = spread * torch.randn(c, embedding_size, generator=g) / len(classes) ** 0.5
        y = torch.randint(c, (n,), generator=g)
        pre += centres[y]
        labels[attr] = y
    return torch.tanh(pre), labels


def train_heads(
    z: Tensor, labels: Mapping[str, Tensor], *, steps: int = 200, seed: int = 0
) -> dict[str, nn.Sequential]:
    """SPEC-shaped heads fitted on (z, labels) with Adam, full batch; returned in eval mode."""
    torch.manual_seed(seed)
    heads = {a: head(z.shape[1], int(y.max()) + 1) for a, y in labels.items()}
    params = [p for h in heads.values() for p in h.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)
    for h in heads.values():
        h.train()
    for _ in range(steps):
        loss = sum(F.cross_entropy(h(z), labels[a]) for a, h in heads.items())
        opt.zero_grad()
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    for h in heads.values():
        h.eval()
    return heads


def accuracy(heads: Mapping[str, nn.Module], z: Tensor, labels: Mapping[str, Tensor]) -> dict:
    """Per-attribute accuracy of the heads' argmax."""
    with torch.no_grad():
        return {a: float((h(z).argmax(1) == labels[a]).float().mean()) for a, h in heads.items()}


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
