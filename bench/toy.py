"""A clustered toy embedding space with heads trained on it: the teacher's world in seconds.

The world of bench/backward_search.py and bench/scale.py (no dataset needed), and of the Backward
Search, student and device tests, which import it from here (the product never imports tests/;
nothing in src/ needs a toy). Each label attribute has one random centre per class;
z = tanh(Σ_attr centre[class] + noise), so classes form clusters the SPEC-shaped heads learn to
high accuracy in a few hundred Adam steps.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.data import head_hits
from src.method.encoder import head


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


def accuracy(
    heads: Mapping[str, nn.Module], z: Tensor, labels: Mapping[str, Tensor]
) -> dict[str, float]:
    """Per-attribute accuracy of the heads' argmax (counted as B1 and C1 count it)."""
    with torch.no_grad():
        logits = {a: h(z) for a, h in heads.items()}
        hits = head_hits(logits, torch.stack([labels[a] for a in heads], 1))
    return {a: c / len(z) for a, c in zip(heads, hits.tolist(), strict=True)}
