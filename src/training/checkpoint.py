"""B1 checkpoints: RNG states (so `--resume` reproduces an uninterrupted run on CPU), the
settings a checkpoint must share with the flags, and checkpoint.pt's contents.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from src.artifacts import load_torch, save_torch
from src.errors import SuiteError
from src.hints import B1_HINT
from src.tasks import Recipe
from src.training.engine import STATE_KEYS, TrainState
from src.transforms import flips_of

# Settings a checkpoint must share with the flags to be resumed: the encoder's configuration…
RESUME_KEYS = (
    "backbone",
    "embedding_size",
    "frozen",
    "frozen_train_mode",
    "attributes",
    "num_classes",
    "image_size",
    "flips",
)
# … and the recipe's settings (a changed one would splice two runs into one, and config.json
# would record the new value for the whole run).
RESUME_RECIPE_KEYS = (
    "pretrained",
    "random_resized_crop",
    "optimizer",
    "lr",
    "batch_size",
    "weight_decay",
    "lr_step",
    "lr_gamma",
    "schedule",
    "warmup_epochs",
    "label_smoothing",
    "mix",
    "precision",
)


# What checkpoint.pt holds (every B1 since checkpoints began writes these keys; `read_checkpoint`
# refuses a file without them in one line).
CHECKPOINT_KEYS = ("config", "epoch", *STATE_KEYS, "rng", "log")


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as plain containers and tensors (weights_only-safe)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    v, internal, gauss_next = state["python"]
    random.setstate((v, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def full_recipe(stored: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's recipe with the fields as_dict() left out (demo fields at their default)."""
    return {f.name: f.default for f in fields(Recipe)} | dict(stored)


def flag_name(key: str) -> str:
    """The flag that sets a recipe field (one without a flag of its own comes with --recipe)."""
    if "help" in Recipe.__dataclass_fields__[key].metadata:
        return "--" + key.replace("_", "-")
    return f"{key} (--recipe)"


def check_resumable(
    ck: Mapping[str, Any], config: Mapping[str, Any], recipe: Recipe, path: Path
) -> None:
    """A checkpoint must come from the same configuration and optimisation settings as the flags,
    and hold no more epochs than asked for; else say in one line what differs."""
    stored_config = {**ck["config"], "flips": flips_of(ck["config"])}  # older ones lack it
    diff = [
        f"{k}: checkpoint {stored_config.get(k)!r} vs flags {config.get(k)!r}"
        for k in RESUME_KEYS
        if stored_config.get(k) != config.get(k)
    ]
    stored, given = full_recipe(ck.get("recipe", {})), full_recipe(recipe.as_dict())
    diff += [
        f"{flag_name(k)}: checkpoint {stored[k]!r} vs flags {given[k]!r}"
        for k in RESUME_RECIPE_KEYS
        if stored[k] != given[k]
    ]
    if diff:
        raise SuiteError(
            f"{path} was trained with other settings ({'; '.join(diff)}); use the checkpoint's "
            "values or drop --resume to start over"
        )
    if recipe.epochs < int(ck["epoch"]):
        raise SuiteError(
            f"--epochs {recipe.epochs} is fewer than the {ck['epoch']} epochs {path} has done; "
            f"pass --epochs {ck['epoch']} or more, or drop --resume to start over"
        )


def save_checkpoint(
    path: Path,
    config: Mapping[str, Any],
    recipe: Recipe,
    epoch: int,
    state: TrainState,
    seed: int,
    rows: list,
) -> None:
    """checkpoint.pt: everything `--resume` needs to continue after `epoch` as if never stopped."""
    save_torch(
        path,
        {
            "config": config,
            "recipe": recipe.as_dict(),
            "epoch": epoch,
            **state.state_dict(),  # model, optimizer, scheduler, scaler: the keys as ever
            "rng": rng_state(),
            "sampler": {"seed": seed, "epoch": epoch},
            "log": rows,
        },
    )


def read_checkpoint(path: Path, config: Mapping[str, Any], recipe: Recipe) -> dict[str, Any]:
    """checkpoint.pt, checked against the flags (`check_resumable`) before B1 reads data or
    downloads weights: a refused --resume costs nothing."""
    ck = load_torch(path, f"{B1_HINT} (without --resume)", map_location="cpu")
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ck, dict) or k not in ck]
    if missing:
        raise SuiteError(
            f"{path} is not a B1 checkpoint (it lacks {', '.join(missing)}); drop --resume to "
            "start over"
        )
    check_resumable(ck, config, recipe, path)
    return ck


def resume_checkpoint(ck: Mapping[str, Any], state: TrainState) -> tuple[int, list[dict[str, Any]]]:
    """Load a checkpoint (`read_checkpoint`) into the training state; returns (last epoch, log
    rows)."""
    state.load_state_dict(ck)
    set_rng_state(ck["rng"])
    return int(ck["epoch"]), list(ck["log"])
