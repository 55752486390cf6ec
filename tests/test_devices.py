"""Devices: --device selection with stand-ins for CUDA, and the CUDA agreement tests of `pytest -m cuda`
(student, an AMP training step, channels_last), each beside the same assertion on the CPU."""

from __future__ import annotations

import copy

import pytest
import torch

from bench.toy import toy_space, train_heads
from src.cli import resolve_device
from src.errors import SuiteError
from src.method.encoder import build_encoder, encoder_config
from src.method.student import DistillConfig, distill
from src.tasks import AUTHORS_TRAINING
from src.training.engine import Runtime, make_train_state, to_device, train_step

HAS_CUDA = torch.cuda.is_available()
needs_cuda = [
    pytest.mark.cuda,
    pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA"),
]
# A parameter list "cpu" (always) and "cuda" (marked: only `pytest -m cuda` on a GPU runs it).
CPU_AND_CUDA = ["cpu", pytest.param("cuda", marks=needs_cuda)]


# ---------------------------------------------------------------------------------------------
# --device auto|cpu|cuda|cuda:N, with torch's CUDA queries replaced by stand-ins


@pytest.fixture
def gpus(monkeypatch):
    """Pretend torch sees `n` CUDA devices (0 = none): gpus(2)."""

    def pretend(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)

    return pretend


def test_auto_picks_cuda_when_torch_sees_one(gpus):
    gpus(1)
    assert resolve_device("auto") == torch.device("cuda")
    gpus(0)
    assert resolve_device("auto") == torch.device("cpu")


def test_cpu_needs_no_cuda(gpus):
    gpus(0)
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_names_are_checked_against_the_devices(gpus, name):
    gpus(2)
    assert resolve_device(name) == torch.device(name)


@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_without_cuda_is_one_line(gpus, name):
    gpus(0)
    with pytest.raises(SuiteError, match="sees no CUDA device; use --device cpu") as e:
        resolve_device(name)
    assert "\n" not in str(e.value)


def test_cuda_index_out_of_range_is_one_line(gpus):
    gpus(2)
    with pytest.raises(SuiteError, match=r"sees 2 CUDA device\(s\), cuda:0 … cuda:1") as e:
        resolve_device("cuda:2")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "name", ["gpu", "tpu-ish", "cuda:", "cuda:-1", "cuda:x", "CUDA", " cpu", "mps", "meta", ""]
)
def test_bad_device_names_are_one_line(gpus, name):
    gpus(1)
    with pytest.raises(
        SuiteError, match="is not a device name; use auto, cpu, cuda or cuda:N"
    ) as e:
        resolve_device(name)
    assert "\n" not in str(e.value)


@pytest.fixture
def fp32_maths():
    """TF32 off while a test compares devices (B1's runtime turns it on for training)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# ---------------------------------------------------------------------------------------------
# The student (D1, E1) on either device


@pytest.fixture(scope="module")
def student_world():
    classes = {"style": 5, "genre": 3}
    z, labels = toy_space(600, 16, classes, seed=3, spread=3.0, noise=0.5)
    heads = train_heads(z[:400], {a: y[:400] for a, y in labels.items()}, steps=120)
    return classes, z[:400], z[400:], heads


@pytest.mark.parametrize("device", CPU_AND_CUDA)
def test_student_distils_on_the_device_and_agrees_with_the_cpu(student_world, device, fp32_maths):
    classes, z_train, z_test, heads = student_world
    heads = {a: copy.deepcopy(h) for a, h in heads.items()}  # distill moves them to the device
    student, log = distill(
        heads, z_train, ["style"], classes, 1.0, DistillConfig(epochs=4, batch_size=100),
        device=device, progress=False,
    )  # fmt: skip
    assert next(student.parameters()).device.type == device
    assert log[-1]["mse"] < 0.7 * log[0]["mse"]
    assert all(0.9 <= r["teacher_satisfied"] <= 1.0 for r in log)
    cond = {"style": torch.randint(5, (len(z_test),), generator=torch.Generator().manual_seed(5))}
    with torch.no_grad():
        here = student.search(z_test.to(device), {a: y.to(device) for a, y in cond.items()})
        on_cpu = copy.deepcopy(student).cpu().search(z_test, cond)
    assert here.device.type == device
    torch.testing.assert_close(here.cpu(), on_cpu, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# B1's accelerator paths: an autocast step, channels_last


def _tiny_encoder(size: int = 32):
    labels = {"style": ["a", "b", "c"], "genre": ["x", "y"]}
    config = encoder_config("synthart", "convnext_atto", 16, False, labels, size, False)
    torch.manual_seed(0)
    return build_encoder(config), config


def _batch(size: int = 32, n: int = 4):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.stack([torch.randint(3, (n,), generator=g), torch.randint(2, (n,), generator=g)], 1)
    return x, y


@pytest.mark.parametrize(
    "device, amp",
    [
        ("cpu", torch.bfloat16),
        pytest.param("cuda", torch.bfloat16, marks=needs_cuda),
        pytest.param("cuda", torch.float16, marks=needs_cuda),  # the GradScaler path
    ],
)
def test_an_autocast_step_is_finite_and_moves_the_weights(device, amp):
    model, _ = _tiny_encoder()
    rt = Runtime(torch.device(device), amp_dtype=amp)
    model = model.to(rt.device)
    if rt.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)  # as B1 does on CUDA
    before = [p.detach().clone() for p in model.parameters()]
    state = make_train_state(model, AUTHORS_TRAINING, rt)
    assert state.scaler.is_enabled() == (amp == torch.float16)
    model.train()
    x, y = to_device(*_batch(), rt)
    for _ in range(4):  # fp16: the scaler may skip a first overflowing step, then rescale
        loss, logits = train_step(state, x, y, rt)
        assert torch.isfinite(loss).item()
        assert all(lg.dtype == amp for lg in logits.values())  # autocast was on
    after = list(model.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(p.detach(), q) for p, q in zip(after, before, strict=True))


@pytest.mark.parametrize("device", CPU_AND_CUDA)
def test_channels_last_gives_the_same_outputs(device, fp32_maths):
    model, _ = _tiny_encoder()
    model = model.to(device).eval()
    x, _ = _batch()
    x = x.to(device)
    with torch.no_grad():
        z, logits = model(x)
        cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        z_cl, logits_cl = cl(x.contiguous(memory_format=torch.channels_last))
    assert z_cl.device.type == device
    # the same maths in another memory order: float32 rounding apart (a layout bug is O(1) off)
    torch.testing.assert_close(z_cl, z, rtol=1e-3, atol=1e-4)
    for a in logits:
        torch.testing.assert_close(logits_cl[a], logits[a], rtol=1e-3, atol=1e-4)
