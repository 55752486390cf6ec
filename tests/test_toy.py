"""bench/toy.py, the teacher's toy world of the benchmarks and the search tests: its space has the
spread and noise asked for, clustered by class; its heads are trained, seeded and left in eval
mode with no gradients; `accuracy` is the heads' argmax agreement."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bench.toy import accuracy, toy_space, train_heads


def test_the_space_is_tanh_of_centres_plus_noise_at_the_scales_asked():
    # pre-tanh values: a sum of m class centres, each N(0, spread²/m) per coordinate, plus
    # N(0, noise²) — so their standard deviation is √(spread² + noise²), whatever m is.
    for classes in ({"style": 50}, {"style": 50, "genre": 40, "mood": 30, "era": 20}):
        for spread, noise in ((1.0, 0.0), (0.0, 0.4), (0.6, 0.3)):
            z, labels = toy_space(4000, 64, classes, seed=1, spread=spread, noise=noise)
            assert z.shape == (4000, 64) and z.dtype == torch.float32
            assert z.abs().max() < 1
            want = math.sqrt(spread**2 + noise**2)
            assert float(torch.atanh(z.double()).std()) == pytest.approx(want, rel=0.08), (
                classes,
                spread,
            )
            assert set(labels) == set(classes)
            for a, c in classes.items():
                assert labels[a].shape == (4000,) and labels[a].dtype == torch.int64
                assert set(labels[a].tolist()) == set(range(c))  # every class drawn, none beyond


def test_without_noise_a_class_tuple_is_one_point():
    z, labels = toy_space(300, 8, {"style": 3, "genre": 2}, seed=2, noise=0.0)
    key = labels["style"] * 2 + labels["genre"]
    for k in key.unique():
        rows = z[key == k]
        assert torch.equal(rows, rows[:1].expand_as(rows))
    assert len({tuple(r) for r in z.tolist()}) == 6  # six tuples, six points


def test_the_space_is_seeded():
    a, la = toy_space(50, 4, {"style": 3}, seed=7)
    b, lb = toy_space(50, 4, {"style": 3}, seed=7)
    c, _ = toy_space(50, 4, {"style": 3}, seed=8)
    assert torch.equal(a, b) and torch.equal(la["style"], lb["style"])
    assert not torch.equal(a, c)
    # unless told: seed 0, spread 1, noise 0.3
    told = toy_space(50, 4, {"style": 3}, seed=0, spread=1.0, noise=0.3)[0]
    assert torch.equal(toy_space(50, 4, {"style": 3})[0], told)


def test_trained_heads_separate_the_classes_and_are_left_for_inference():
    z, labels = toy_space(600, 16, {"style": 5, "genre": 3}, seed=3, spread=3.0, noise=0.5)
    heads = train_heads(z, labels, steps=60)
    assert set(heads) == {"style", "genre"}
    assert [heads[a][-1].out_features for a in ("style", "genre")] == [5, 3]
    acc = accuracy(heads, z, labels)
    assert min(acc.values()) > 0.95, acc
    for h in heads.values():
        assert not h.training
        assert all(p.grad is None for p in h.parameters())
        bn = next(m for m in h if isinstance(m, nn.BatchNorm1d))
        assert bn.running_mean.abs().sum() > 0  # trained in train mode: BN statistics learnt
    untrained = train_heads(z, labels, steps=0)
    assert max(accuracy(untrained, z, labels).values()) < 0.6


def test_heads_are_seeded_and_steps_count():
    z, labels = toy_space(200, 8, {"style": 4}, seed=4, spread=3.0)

    def weights(**kw) -> torch.Tensor:
        return train_heads(z, labels, **kw)["style"][0].weight.detach()

    assert torch.equal(weights(steps=5, seed=1), weights(steps=5, seed=1))
    assert not torch.equal(weights(steps=5, seed=1), weights(steps=5, seed=2))
    assert not torch.equal(weights(steps=5, seed=1), weights(steps=6, seed=1))
    assert torch.equal(weights(steps=200, seed=0), weights())  # 200 steps unless told, seed 0
    # one step of Adam at lr 0.01 moves every weight with a gradient by 0.01
    start = weights(steps=0)
    moved = (weights(steps=1) - start).abs()
    assert float(moved.max()) == pytest.approx(0.01, rel=1e-3)


def test_accuracy_is_each_heads_argmax_agreement():
    head = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2))
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    got = accuracy(
        {"a": head, "b": head},
        z,
        {"a": torch.tensor([0, 1, 0, 0]), "b": torch.tensor([1, 0, 1, 0])},
    )
    assert got == {"a": 0.75, "b": 0.0}
