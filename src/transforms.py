"""The image transforms of SPEC §4: what B1 trains on and C1, E2 and the explorer embed.

Split in two so that a split can be decoded once and kept in memory: a deterministic PIL part
(resize, centre crop) and a tensor part (random crop, flips, normalisation) that runs every time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ToFloat(nn.Module):
    """uint8 C×H×W → float in [0, 1] (the tensor half of ToTensor)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().div_(255)


def flips_of(config: Mapping[str, Any]) -> str:
    """The train transform's flips recorded in an encoder config: none, h or hv (src/tasks.py FLIPS).

    Configs written before B1 recorded `flips` used the authors' rule: hv, h without
    `vertical_flip`, none with aPY's square resize.
    """
    if "flips" in config:
        return str(config["flips"])
    if config.get("square_resize", False):
        return "none"
    return "hv" if config.get("vertical_flip", True) else "h"


def transform_parts(config: Mapping[str, Any], train: bool) -> tuple[list, list]:
    """(deterministic PIL part, tensor part) of the image transform.

    The deterministic part may be cached (decoded once per image); the tensor part holds the
    random augmentation and normalisation and runs on uint8 C×H×W tensors every time.
    """
    from torchvision import transforms  # here: a stage that embeds no picture never imports it

    s = int(config["image_size"])
    square = bool(config.get("square_resize", False))
    resize = transforms.Resize((s, s) if square else s, antialias=True)
    norm = [ToFloat(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    # vertical before horizontal, the authors' order (the random draws stay theirs)
    flips = {
        "none": [],
        "h": [transforms.RandomHorizontalFlip()],
        "hv": [transforms.RandomVerticalFlip(), transforms.RandomHorizontalFlip()],
    }[flips_of(config)]
    if not train:
        return [resize, transforms.CenterCrop(s)], norm
    if config.get("random_resized_crop", False):  # the paper text's recipe
        return [], [transforms.RandomResizedCrop((s, s), antialias=True), *flips, *norm]
    if square:  # the authors' train_square (aPY): the whole crop, no random crop
        return [resize], [*flips, *norm]
    return [resize], [transforms.RandomCrop(s), *flips, *norm]


def image_transform(config: Mapping[str, Any], train: bool) -> Callable:
    """PIL image → normalised float tensor 3×S×S, as B1 (train) or C1 (test) sees it."""
    from torchvision import transforms

    pre, post = transform_parts(config, train)
    return transforms.Compose([*pre, transforms.PILToTensor(), *post])
