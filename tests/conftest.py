"""Shared test setup: one intra-op thread, so small-tensor tests don't stall in OpenMP spin-waits
on a busy 2-core machine (CI's size); the tests' tensors are far too small to gain from more."""

import os

os.environ["OMP_NUM_THREADS"] = "1"

import torch  # noqa: E402

torch.set_num_threads(1)
