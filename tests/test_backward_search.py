"""Backward Search (SPEC §5): the early-stopping rule, λ's two extremes, batched == one at a time."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import src.method.backward_search as bs
from src.errors import SuiteError
from src.method.backward_search import StopRule, backward_search
from src.method.retrieval import cosine_topk
from tests._search import accuracy, batch_query_reference, single_query_reference, toy_world

CLASSES = {"style": 6, "genre": 4, "mood": 3}


@pytest.fixture(scope="module")
def world():
    """Clustered float64 embeddings and three heads trained to high accuracy on them."""
    z, labels, heads = toy_world(900, 24, tuple(CLASSES.items()), 0, 600, 150)
    acc = accuracy(heads, z[600:], {a: y[600:] for a, y in labels.items()})
    assert min(acc.values()) > 0.95, acc  # the fixture is what the tests assume
    heads = {a: copy.deepcopy(h).double() for a, h in heads.items()}
    return z[600:].double(), {a: y[600:] for a, y in labels.items()}, heads


def _conditions(n: int, attrs, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {a: torch.randint(CLASSES[a], (n,), generator=g) for a in attrs}


def _slope_head(w: float) -> nn.Linear:
    """1-D z → logits (w·z, −w·z): CE for class 0 is softplus(−2wz), slope ≤ 2w everywhere."""
    head = nn.Linear(1, 2, bias=False).double()
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[w], [-w]], dtype=torch.float64))
    return head


# ---------------------------------------------------------------------------------------------
# The early-stopping rule on hand-checkable cases


@pytest.mark.parametrize("search", [backward_search, batch_query_reference])
@pytest.mark.parametrize("patience", [10, 3])
def test_early_stopping_keeps_first_step_when_loss_only_rises(search, patience):
    # λ = 5 > the CE slope (≤ 1): every z ≠ z0 has a higher loss than z0, so the loss measured at
    # iteration 0 (at z0) stays the best. The saved answer is the z AFTER that first step
    # (Adam's first step is lr·sign(g) = +0.2), and the query is done once `patience` + 1 later
    # iterations failed to improve: patience + 2 iterations.
    z0 = torch.tensor([[0.3]], dtype=torch.float64)
    cond = {"c": torch.tensor([0])}
    r = search({"c": _slope_head(0.5)}, z0, cond, 5.0, patience=patience)
    assert r.iterations.tolist() == [patience + 2]
    assert r.z.item() == pytest.approx(0.3 + 0.2, abs=1e-6)
    assert r.loss.item() == pytest.approx(math.log1p(math.exp(-2 * 0.5 * 0.3)), rel=1e-12)
    assert r.satisfied_at.tolist() == [0]  # z0 already predicts class 0 (w·z0 > −w·z0)


@pytest.mark.parametrize("search", [backward_search, batch_query_reference])
def test_the_batch_loss_averages_the_conditions_cross_entropies(search):
    # Two conditions on one 1-D z, λ = 5 above both CE slopes: z0's loss stays the best, so the
    # reported loss is the one measured at z0 — the MEAN of the two CEs (the pull is 0 there).
    z0 = torch.tensor([[0.3]], dtype=torch.float64)
    heads = {"a": _slope_head(0.5), "b": _slope_head(0.25)}
    cond = {"a": torch.tensor([0]), "b": torch.tensor([1])}
    r = search(heads, z0, cond, 5.0)
    ce_a = math.log1p(math.exp(-2 * 0.5 * 0.3))  # class 0 of (w·z, −w·z)
    ce_b = math.log1p(math.exp(2 * 0.25 * 0.3))  # class 1
    assert r.loss.item() == pytest.approx((ce_a + ce_b) / 2, rel=1e-12)
    assert r.z.item() == pytest.approx(0.3 + 0.2, abs=1e-6)  # the z after that first step


@pytest.mark.parametrize("search", [backward_search, batch_query_reference])
def test_equal_loss_counts_as_improvement(search):
    # A head with zero weights: zero gradient, z never moves, the loss stays log 2. The authors'
    # rule compares with ≤, so every iteration "improves" and the query runs to max_iter.
    head = nn.Linear(3, 2).double()
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    z0 = torch.tensor([[0.1, -0.2, 0.3]], dtype=torch.float64)
    r = search({"c": head}, z0, {"c": torch.tensor([1])}, 0.5, max_iter=37)
    assert r.iterations.tolist() == [37]
    assert torch.equal(r.z, z0)
    assert r.loss.item() == pytest.approx(math.log(2))
    assert r.satisfied_at.tolist() == [-1]  # argmax of a tie is class 0, never class 1


def test_without_early_stopping_runs_every_step(world):
    z, _, heads = world
    cond = _conditions(20, ["style"])
    r = backward_search(heads, z[:20], cond, 1.0, early_stopping=False, max_iter=30)
    ref = batch_query_reference(heads, z[:20], cond, 1.0, early_stopping=False, max_iter=30)
    assert r.iterations.tolist() == [30] * 20
    torch.testing.assert_close(r.z, ref.z, rtol=0, atol=1e-10)
    stopped = backward_search(heads, z[:20], cond, 1.0, max_iter=30)
    assert (stopped.iterations < 30).any()  # the fixture does stop early somewhere


# ---------------------------------------------------------------------------------------------
# λ's extremes


def test_lambda_zero_satisfies_the_condition(world):
    z, _, heads = world
    cond = _conditions(len(z), ["style"])
    r = backward_search(heads, z, cond, 0.0)
    with torch.no_grad():
        pred = heads["style"](r.z).argmax(1)
    assert torch.equal(pred, cond["style"])
    assert (r.satisfied_at >= 0).all()
    assert (r.satisfied_at < r.iterations).all()


def test_large_lambda_stays_within_one_step_and_keeps_knn_ranking(world):
    # λ → ∞: no later iterate beats z0's loss, so the answer is z0 plus Adam's first step
    # (at most lr per coordinate). With a small lr, that is the kNN ranking.
    z, _, heads = world
    cond = _conditions(len(z), ["style"])
    far = backward_search(heads, z, cond, 0.0)
    near = backward_search(heads, z, cond, 1e4)
    assert (near.z - z).abs().max() <= 0.2 + 1e-6
    assert (near.z - z).abs().mean() < 0.25 * (far.z - z).abs().mean()
    assert (near.iterations == 12).all()
    tiny = backward_search(heads, z, cond, 1e4, lr=1e-3)
    _, knn = cosine_topk(z, z, k=10)
    _, ours = cosine_topk(tiny.z, z, k=10)
    assert torch.equal(ours.sort(1).values, knn.sort(1).values)


# ---------------------------------------------------------------------------------------------
# Batched == one query at a time


@pytest.mark.parametrize("attrs", [["style"], ["style", "genre", "mood"]])
def test_batched_equals_reference_with_per_query_lambda(world, attrs):
    z, _, heads = world
    n = 48
    cond = _conditions(n, attrs, seed=len(attrs))
    lam = torch.linspace(0.0, 6.0, n, dtype=torch.float64)  # mixed finishing times
    r = backward_search(heads, z[:n], cond, lam)
    ref = batch_query_reference(heads, z[:n], cond, lam)
    assert r.iterations.unique().numel() > 3
    assert torch.equal(r.iterations, ref.iterations)
    assert torch.equal(r.satisfied_at, ref.satisfied_at)
    torch.testing.assert_close(r.z, ref.z, rtol=0, atol=1e-9)
    torch.testing.assert_close(r.loss, ref.loss, rtol=1e-10, atol=1e-12)


def test_cuda_looks_every_few_steps_and_the_cpu_every_step():
    # torch.device("cuda") is only a name: no GPU needed to ask which interval CUDA gets.
    assert bs._check_interval(torch.device("cpu")) == 1
    assert bs._check_interval(torch.device("cuda")) == bs.CHECK_EVERY_ACCELERATOR > 1
    assert bs._check_interval(torch.device("cuda:1")) == bs.CHECK_EVERY_ACCELERATOR


@pytest.mark.parametrize("rule", list(StopRule))
def test_the_cuda_interval_on_the_cpu_gives_the_every_step_answer(world, monkeypatch, rule):
    # The accelerator branch (finished queries dropped every CHECK_EVERY_ACCELERATOR steps, frozen
    # in between) run on the CPU with exactly the interval CUDA gets.
    z, _, heads = world
    n = 48
    cond = _conditions(n, ["style", "genre"])
    lam = torch.linspace(0.0, 4.0 if rule is StopRule.BATCH else 0.3, n, dtype=torch.float64)
    every_step = backward_search(heads, z[:n], cond, lam, rule=rule)
    cuda_interval = bs._check_interval(torch.device("cuda"))
    monkeypatch.setattr(bs, "_check_interval", lambda device: cuda_interval)
    late = backward_search(heads, z[:n], cond, lam, rule=rule)
    # the case is one that tests the branch: queries finish between two looks, and early
    assert (every_step.iterations % cuda_interval != 0).any()
    assert (every_step.iterations < 100 - cuda_interval).any()
    assert torch.equal(late.iterations, every_step.iterations)
    assert torch.equal(late.satisfied_at, every_step.satisfied_at)
    torch.testing.assert_close(late.z, every_step.z, rtol=0, atol=1e-12)
    torch.testing.assert_close(late.loss, every_step.loss, rtol=0, atol=1e-12)


@pytest.mark.parametrize("interval", [3, 1000])
def test_late_compaction_gives_the_same_answer(world, monkeypatch, interval):
    # On CUDA finished queries are dropped only every few steps; meanwhile they must stay frozen.
    z, _, heads = world
    cond = _conditions(32, ["style", "genre"])
    lam = torch.linspace(0.0, 4.0, 32, dtype=torch.float64)
    every_step = backward_search(heads, z[:32], cond, lam)
    monkeypatch.setattr(bs, "_check_interval", lambda device: interval)
    late = backward_search(heads, z[:32], cond, lam)
    assert torch.equal(late.iterations, every_step.iterations)
    assert torch.equal(late.satisfied_at, every_step.satisfied_at)
    torch.testing.assert_close(late.z, every_step.z, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# The walk (trace=True): the explorer's map draws it


@pytest.mark.parametrize("rule", list(StopRule))
@pytest.mark.parametrize("interval", [1, bs.CHECK_EVERY_ACCELERATOR])
def test_trace_changes_nothing_and_each_walk_ends_at_its_answer(world, monkeypatch, rule, interval):
    z, _, heads = world
    n = 24
    cond = _conditions(n, ["style", "genre"])
    lam = torch.linspace(0.0, 4.0 if rule is StopRule.BATCH else 0.3, n, dtype=torch.float64)
    monkeypatch.setattr(bs, "_check_interval", lambda device: interval)  # the CUDA branch too
    plain = backward_search(heads, z[:n], cond, lam, rule=rule)
    traced = backward_search(heads, z[:n], cond, lam, rule=rule, trace=True)
    assert plain.trace is None and len(traced.trace) == n
    for name in ("z", "iterations", "satisfied_at", "loss"):  # bit-identical
        assert torch.equal(getattr(traced, name), getattr(plain, name)), name
    lengths = []
    for i, walk in enumerate(traced.trace):
        assert torch.equal(walk[0], z[i]) and torch.equal(walk[-1], plain.z[i])
        assert len(walk) - 1 <= int(plain.iterations[i])  # steps up to the answer, no further
        lengths.append(len(walk))
    assert len(set(lengths)) > 1  # queries answered at different steps: each walk its own


def test_trace_is_the_reference_optimiser_step_by_step(world):
    # every iterate of the walk is z after that many Adam steps of the plain reference loop
    z, _, heads = world
    cond = _conditions(1, ["style"])
    walk = backward_search(heads, z[:1], cond, 0.5, trace=True).trace[0]
    for steps in (1, len(walk) // 2, len(walk) - 1):
        ref = batch_query_reference(heads, z[:1], cond, 0.5, max_iter=steps, early_stopping=False)
        torch.testing.assert_close(walk[steps], ref.z[0], rtol=0, atol=1e-12)


def test_trace_without_steps_is_z0(world):
    z, _, heads = world
    r = backward_search(heads, z[:3], _conditions(3, ["style"]), 1.0, max_iter=0, trace=True)
    assert [len(w) for w in r.trace] == [1, 1, 1]
    assert all(torch.equal(w[0], z[i]) for i, w in enumerate(r.trace))


def test_three_conditions_are_met_together(world):
    z, labels, heads = world
    cond = _conditions(len(z), list(CLASSES), seed=7)
    r = backward_search(heads, z, cond, 0.0)
    with torch.no_grad():
        for a in CLASSES:
            assert torch.equal(heads[a](r.z).argmax(1), cond[a])
    # conditions differing from the query's own classes needed more steps to satisfy
    same = torch.stack([cond[a] == labels[a] for a in CLASSES]).all(0)
    assert (r.satisfied_at[same] == 0).all()
    assert (r.satisfied_at[~same] > 0).all()


def test_heads_untouched_and_modes_restored_under_no_grad(world):
    z, _, heads = world
    before = {a: [p.detach().clone() for p in h.parameters()] for a, h in heads.items()}
    heads["genre"].train()
    try:
        with torch.no_grad():
            r = backward_search(heads, z[:10], _conditions(10, ["style", "genre"]), 0.5)
        assert heads["genre"].training and not heads["style"].training
    finally:
        heads["genre"].eval()
    assert not r.z.requires_grad
    for a, h in heads.items():
        for p, q in zip(h.parameters(), before[a], strict=True):
            assert p.grad is None
            assert torch.equal(p, q)


def test_float32_search_matches_reference(world):
    z, _, heads = world
    heads32 = {a: h.float() for a, h in heads.items()}
    try:
        cond = _conditions(16, ["style"])
        r = backward_search(heads32, z[:16].float(), cond, 1.0)
        ref = batch_query_reference(heads32, z[:16].float(), cond, 1.0)
        assert r.z.dtype == torch.float32
        torch.testing.assert_close(r.z, ref.z, rtol=0, atol=1e-4)
    finally:
        for h in heads.values():
            h.double()


# ---------------------------------------------------------------------------------------------
# The single-query rule (the authors' compute(), paper Table 5)


@pytest.mark.parametrize("attrs", [["style"], ["style", "genre"]])
@pytest.mark.parametrize("interval", [1, 3])
def test_single_rule_batched_equals_one_at_a_time(world, monkeypatch, attrs, interval):
    z, _, heads = world
    n = 40
    cond = _conditions(n, attrs, seed=5)
    lam = torch.linspace(0.0, 0.3, n, dtype=torch.float64)  # λ·Σ over 24 dims: mixed stop times
    monkeypatch.setattr(bs, "_check_interval", lambda device: interval)
    r = backward_search(heads, z[:n], cond, lam, rule=StopRule.SINGLE)
    ref_z, ref_iters, ref_best = single_query_reference(heads, z[:n], cond, lam)
    assert r.iterations.unique().numel() > 3
    assert (r.iterations < 100).any() and (r.iterations == 100).any()
    assert torch.equal(r.iterations, ref_iters)
    torch.testing.assert_close(r.z, ref_z, rtol=0, atol=1e-9)
    torch.testing.assert_close(r.loss, ref_best, rtol=1e-10, atol=1e-12)


class _Sine(nn.Module):
    """1-D z → logits (w·sin 3z, −w·sin 3z): Adam overshoots and circles the optimum, so CE wobbles."""

    def __init__(self, w: float = 1.0):
        super().__init__()
        self.w = w

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        s = self.w * torch.sin(3.0 * z)
        return torch.cat([s, -s], 1)


def test_single_rule_breaks_at_the_tenth_non_improvement():
    # One condition, λ = 0: both rules minimise and watch the same CE. The batch rule is done
    # after 11 non-improvements in a row, the single rule breaks after 10: one step earlier when
    # the first run of 10 is followed by an 11th (same saved z), several steps earlier when
    # an improvement came right after a run of exactly 10 (the batch rule went on).
    z0 = torch.linspace(-1, 1, 64, dtype=torch.float64)[:, None]
    cond = {"c": torch.zeros(64, dtype=torch.long)}
    batch = backward_search({"c": _Sine()}, z0, cond, 0.0)
    single = backward_search({"c": _Sine()}, z0, cond, 0.0, rule="single")
    ref_z, ref_iters, _ = single_query_reference({"c": _Sine()}, z0, cond, 0.0)
    assert torch.equal(single.iterations, ref_iters)
    torch.testing.assert_close(single.z, ref_z, rtol=0, atol=1e-12)
    stopped = batch.iterations < 100
    assert stopped.all()
    assert (single.iterations <= batch.iterations - 1).all()
    next_step = single.iterations == batch.iterations - 1
    assert next_step.sum() > 10 and (~next_step).sum() > 10
    torch.testing.assert_close(single.z[next_step], batch.z[next_step], rtol=0, atol=1e-12)


def test_single_rule_sums_the_l1_term_and_returns_its_best_ce_iterate(world):
    # λ·Σ_dims = (λ·E)·mean_dims, so with one condition the single rule at λ walks the batch
    # rule's path at λ·E. Without early stopping it returns the iterate after the step whose
    # measured CE was lowest (ties: the later one), not the last iterate.
    z, _, heads = world
    n, steps, lam = 16, 15, 0.02
    cond = _conditions(n, ["style"], seed=4)
    e = z.shape[1]
    single = backward_search(
        heads, z[:n], cond, lam, rule="single", early_stopping=False, max_iter=steps
    )
    path = [z[:n]] + [
        backward_search(heads, z[:n], cond, lam * e, early_stopping=False, max_iter=k).z
        for k in range(1, steps + 1)
    ]
    with torch.no_grad():
        ce = torch.stack(
            [
                nn.functional.cross_entropy(heads["style"](p), cond["style"], reduction="none")
                for p in path[:-1]
            ]
        )  # steps × n: CE measured before each step
    best_step = steps - 1 - ce.flip(0).argmin(0)  # the last minimum
    expect = torch.stack([path[int(k) + 1][i] for i, k in enumerate(best_step)])
    assert (best_step < steps - 1).any()  # the best is not always the last
    torch.testing.assert_close(single.z, expect, rtol=0, atol=1e-9)
    torch.testing.assert_close(single.loss, ce.min(0).values, rtol=1e-10, atol=1e-12)
    mean_form = backward_search(heads, z[:n], cond, lam, early_stopping=False, max_iter=steps)
    assert not torch.allclose(mean_form.z, path[-1])  # λ alone (a mean) walks another path


def test_single_rule_needs_patience(world):
    z, _, heads = world
    with pytest.raises(SuiteError, match="patience ≥ 1"):
        backward_search(heads, z[:3], _conditions(3, ["style"]), 1.0, rule="single", patience=0)


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda z, c, lam: (z, {"artist": c["style"]}, lam), "no head for attribute"),
        (lambda z, c, lam: (z, {"style": c["style"] + 6}, lam), "out of range"),
        (lambda z, c, lam: (z, {"style": c["style"] - 6}, lam), "out of range"),
        (lambda z, c, lam: (z, {"style": c["style"][:3]}, lam), "shape"),
        (lambda z, c, lam: (z, {"style": c["style"].double()}, lam), "integer"),
        (lambda z, c, lam: (z, {}, lam), "no condition"),
        (lambda z, c, lam: (z, c, torch.ones(3)), "lam has shape"),
        (lambda z, c, lam: (z, c, -1.0), "≥ 0"),
    ],
)
def test_bad_conditions_are_reported(world, change, message):
    z, _, heads = world
    args = change(z[:5], _conditions(5, ["style"]), 1.0)
    with pytest.raises(SuiteError, match=message):
        backward_search(heads, *args)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_embeddings_are_reported(world, bad):
    z, _, heads = world
    z0 = z[:5].clone()
    z0[3, 2] = bad
    with pytest.raises(SuiteError, match=r"NaN or inf \(rows \[3\]"):
        backward_search(heads, z0, _conditions(5, ["style"]), 1.0)


# ---------------------------------------------------------------------------------------------
# Devices


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("rule", list(StopRule))
def test_cpu_and_cuda_agree(world, rule):
    z, _, heads = world
    cond = _conditions(64, ["style", "genre"])
    top = 4.0 if rule is StopRule.BATCH else 0.3  # the single rule's λ multiplies a sum
    lam = torch.linspace(0.0, top, 64, dtype=torch.float64)
    cpu = backward_search(heads, z[:64], cond, lam, rule=rule)
    gpu_heads = {a: h.to("cuda") for a, h in heads.items()}
    try:
        gpu_cond = {a: c.cuda() for a, c in cond.items()}
        gpu = backward_search(gpu_heads, z[:64].cuda(), gpu_cond, lam, rule=rule)
    finally:
        for h in heads.values():
            h.to("cpu")
    assert gpu.z.is_cuda
    assert torch.equal(gpu.iterations.cpu(), cpu.iterations)
    assert torch.equal(gpu.satisfied_at.cpu(), cpu.satisfied_at)
    torch.testing.assert_close(gpu.z.cpu(), cpu.z, rtol=0, atol=1e-8)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda z, c, lam: (z.long(), c, lam), "z0 must be a floating-point N×E tensor"),
        (lambda z, c, lam: (z[0], c, lam), "z0 must be a floating-point N×E tensor"),
        (lambda z, c, lam: (z.tolist(), c, lam), "z0 must be a floating-point N×E tensor"),
        (lambda z, c, lam: (z, {}, lam), "no condition given; pass at least one attribute"),
        (
            lambda z, c, lam: (z, {"artist": c["style"]}, lam),
            "no head for attribute(s) ['artist']; heads exist for ['style', 'genre', 'mood']",
        ),
        (
            lambda z, c, lam: (z, {"style": c["style"].double()}, lam),
            "condition 'style' must hold integer class ids",
        ),
        (
            lambda z, c, lam: (z, {"style": c["style"][:3]}, lam),
            "condition 'style' has shape (3,); expected (5,)",
        ),
        (  # exactly the number of classes: one past the last id
            lambda z, c, lam: (z, {"style": torch.tensor([0, 1, 6, 2, 3])}, lam),
            "class id 6 for 'style' is out of range; the head has 6 classes (ids 0..5)",
        ),
        (
            lambda z, c, lam: (z, {"style": torch.tensor([0, -1, 5, 2, 3])}, lam),
            "class id -1 for 'style' is out of range; the head has 6 classes (ids 0..5)",
        ),
        (
            lambda z, c, lam: (z, c, torch.ones(3)),
            "lam has shape (3,); give a float or (5,) tensor",
        ),
        (lambda z, c, lam: (z, c, -1.0), "lam must be finite and ≥ 0"),
        (lambda z, c, lam: (z, c, float("inf")), "lam must be finite and ≥ 0"),
        (lambda z, c, lam: (z, c, float("nan")), "lam must be finite and ≥ 0"),
    ],
)
def test_bad_input_is_one_exact_line(world, change, message):
    z, _, heads = world
    args = change(z[:5], _conditions(5, ["style"]), 1.0)
    with pytest.raises(SuiteError) as e:
        backward_search(heads, *args)
    assert str(e.value) == f"backward_search: {message}"


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"lr": 0.0}, "lr must be > 0, got 0.0"),
        ({"lr": -0.2}, "lr must be > 0, got -0.2"),
        ({"lr": float("inf")}, "lr must be > 0, got inf"),
        ({"lr": float("nan")}, "lr must be > 0, got nan"),
        ({"max_iter": -1}, "max_iter and patience must be ≥ 0"),
        ({"patience": -1}, "max_iter and patience must be ≥ 0"),
        ({"patience": 0, "rule": "single"}, "the single-query rule needs patience ≥ 1"),
    ],
)
def test_bad_settings_are_one_exact_line(world, settings, message):
    z, _, heads = world
    with pytest.raises(SuiteError) as e:
        backward_search(heads, z[:5], _conditions(5, ["style"]), 1.0, **settings)
    assert str(e.value) == f"backward_search: {message}"


def test_non_finite_embeddings_name_the_first_five_rows(world):
    z, _, heads = world
    z0 = z[:9].clone()
    z0[[1, 2, 3, 5, 6, 8], 0] = float("nan")
    with pytest.raises(SuiteError) as e:
        backward_search(heads, z0, _conditions(9, ["style"]), 1.0)
    assert "(rows [1, 2, 3, 5, 6] …); re-run C1_extract_embeddings.py" in str(e.value)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.int8, torch.uint8])
def test_conditions_of_any_integer_type_search_alike(world, dtype):
    z, _, heads = world
    cond = _conditions(6, ["style", "genre"])
    plain = backward_search(heads, z[:6], cond, 1.0, max_iter=15)
    other = backward_search(
        heads, z[:6], {a: y.to(dtype) for a, y in cond.items()}, 1.0, max_iter=15
    )
    assert torch.equal(other.z, plain.z) and torch.equal(other.iterations, plain.iterations)


def test_the_smallest_settings_run(world):
    # patience 0 (batch rule): done at the first non-improvement; patience 1 (single rule): too
    z, _, heads = world
    cond = _conditions(6, ["style"])
    lam = torch.linspace(0.0, 4.0, 6, dtype=torch.float64)
    ref = batch_query_reference(heads, z[:6], cond, lam, patience=0)
    r = backward_search(heads, z[:6], cond, lam, patience=0)
    assert torch.equal(r.iterations, ref.iterations) and (r.iterations < 10).any()
    torch.testing.assert_close(r.z, ref.z, rtol=0, atol=1e-9)
    ref_z, ref_iters, _ = single_query_reference(heads, z[:6], cond, lam / 24, patience=1)
    single = backward_search(heads, z[:6], cond, lam / 24, patience=1, rule="single")
    assert torch.equal(single.iterations, ref_iters)
    torch.testing.assert_close(single.z, ref_z, rtol=0, atol=1e-9)


@pytest.mark.parametrize("rule", list(StopRule))
def test_no_steps_or_no_queries_give_z0_untouched(world, rule):
    z, _, heads = world
    r = backward_search(heads, z[:3], _conditions(3, ["style"]), 1.0, max_iter=0, rule=rule)
    assert torch.equal(r.z, z[:3]) and r.z is not z
    assert r.iterations.tolist() == [0, 0, 0] and r.satisfied_at.tolist() == [-1, -1, -1]
    assert r.loss.tolist() == [math.inf] * 3 and r.loss.dtype == z.dtype
    empty = backward_search(heads, z[:0], _conditions(0, ["style"]), 1.0, rule=rule)
    assert empty.z.shape == (0, z.shape[1]) and empty.iterations.shape == (0,)
    assert empty.loss.shape == (0,) and empty.satisfied_at.shape == (0,)


class _Counting(nn.Module):
    """A head that counts the embeddings it is shown."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head, self.rows = head, 0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.rows += z.shape[0]
        return self.head(z)


@pytest.mark.parametrize("rule", list(StopRule))
def test_finished_queries_leave_the_batch(world, rule):
    # On the CPU finished queries are dropped at once: a head sees each query once per iteration
    # it ran (and z0's first row once, to count its classes), nothing more.
    z, _, heads = world
    n = 24
    cond = _conditions(n, ["style", "genre"])
    lam = torch.linspace(0.0, 4.0 if rule is StopRule.BATCH else 0.3, n, dtype=torch.float64)
    counting = {a: _Counting(heads[a]) for a in cond}
    r = backward_search(counting, z[:n], cond, lam, rule=rule)
    assert (r.iterations < 100).any()
    for a in cond:
        assert counting[a].rows == 1 + int(r.iterations.sum()), a


@pytest.mark.parametrize("rule", list(StopRule))
def test_a_default_device_elsewhere_changes_nothing(world, rule):
    # torch.set_default_device("cuda") in a notebook must not move a search on CPU tensors: every
    # tensor it makes follows z0. The "meta" device stands in for the GPU (mixing raises).
    z, _, heads = world
    cond = _conditions(12, ["style", "genre"])
    lam = torch.linspace(0.0, 4.0 if rule is StopRule.BATCH else 0.3, 12, dtype=torch.float64)
    plain = backward_search(heads, z[:12], cond, lam, rule=rule, trace=True)
    with torch.device("meta"):
        r = backward_search(heads, z[:12], cond, 2.0 if rule is StopRule.BATCH else lam, rule=rule)
        again = backward_search(heads, z[:12], cond, lam, rule=rule, trace=True)
    assert r.z.device.type == "cpu"
    for name in ("z", "iterations", "satisfied_at", "loss"):
        assert torch.equal(getattr(again, name), getattr(plain, name)), name
    assert all(torch.equal(a, b) for a, b in zip(again.trace, plain.trace, strict=True))


def test_single_rule_treats_a_best_ce_of_zero_as_unset():
    # The authors' `if not best_loss:`: a CE of exactly 0.0 (float64 rounds CE to 0 once the
    # margin passes ~37) is no best, so the next CE, however large, is taken as the best. With
    # logits ±20·sin(3z) Adam runs through the CE = 0 band and out the other side.
    z0 = torch.linspace(-1, 1, 64, dtype=torch.float64)[:, None]
    cond = {"c": torch.zeros(64, dtype=torch.long)}
    head = _Sine(20.0)
    single = backward_search({"c": head}, z0, cond, 0.0, rule="single", trace=True)
    ref_z, ref_iters, ref_best = single_query_reference({"c": head}, z0, cond, 0.0)
    assert torch.equal(single.iterations, ref_iters)
    torch.testing.assert_close(single.z, ref_z, rtol=0, atol=1e-12)
    torch.testing.assert_close(single.loss, ref_best, rtol=0, atol=1e-12)
    # a walk measured a CE of 0 before its answer's step, yet its best CE is larger: under a
    # plain "≤ the best so far" rule the best would have stayed 0
    with torch.no_grad():
        zero_before = torch.stack(
            [
                (
                    nn.functional.cross_entropy(
                        head(w[:-1]), torch.zeros(len(w) - 1, dtype=torch.long), reduction="none"
                    )
                    == 0
                ).any()
                for w in single.trace
            ]
        )
    assert (zero_before & (single.loss > 0)).sum() > 5


def test_trace_of_more_queries_than_dimensions(world):
    z, _, heads = world
    n = z.shape[1] + 8  # more walks than coordinates
    cond = _conditions(n, ["style"])
    r = backward_search(heads, z[:n], cond, 1.0, max_iter=20, trace=True)
    assert len(r.trace) == n
    assert all(
        torch.equal(w[0], z[i]) and torch.equal(w[-1], r.z[i]) for i, w in enumerate(r.trace)
    )


def test_a_float_lambda_is_taken_at_z0s_precision(world):
    # λ = 0.1 is not a float32 number: given as a Python float it must weigh exactly as the
    # float64 tensor does on float64 embeddings
    z, _, heads = world
    cond = _conditions(8, ["style"])
    as_float = backward_search(heads, z[:8], cond, 0.1, max_iter=30)
    as_tensor = backward_search(
        heads, z[:8], cond, torch.full((8,), 0.1, dtype=torch.float64), max_iter=30
    )
    assert torch.equal(as_float.z, as_tensor.z) and torch.equal(as_float.loss, as_tensor.loss)
