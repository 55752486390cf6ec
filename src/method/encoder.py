"""The encoder of SPEC §4: backbone → reduction to the embedding z (tanh) → one head per attribute.

The heads φ_attr map z to class logits; Backward Search (SPEC §5) later optimises z against them.
Backbones come from one table (name → builder, feature size, torchvision ImageNet weights).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from src.argtypes import MIN_IMAGE_SIZE
from src.artifacts import load_torch
from src.errors import SuiteError
from src.hints import B1_HINT

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Backbones


def _small_convnext(dims: tuple[int, int, int, int], depths: tuple[int, int, int, int], **_: Any):
    """A ConvNeXt of torchvision's class with the given widths and depths (for CPU demos)."""
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    cfg = [CNBlockConfig(dims[i], dims[i + 1] if i < 3 else None, depths[i]) for i in range(4)]
    return ConvNeXt(cfg, stochastic_depth_prob=0.0, layer_scale=1e-6)


def _strip(attr: str, replacement: Callable[[], nn.Module]) -> Callable[[nn.Module], nn.Module]:
    """Replace the classifier `attr` of a torchvision model so it returns the feature vector."""

    def strip(model: nn.Module) -> nn.Module:
        setattr(model, attr, replacement())
        return model

    return strip


@dataclass(frozen=True)
class Backbone:
    """A feature extractor: how to build it (no weights), its feature size, its ImageNet weights."""

    build: Callable[..., nn.Module]  # build(image_size=...) → the full torchvision model
    strip: Callable[[nn.Module], nn.Module]  # drop the classifier: the model then returns features
    feature_size: int
    weights: str | None  # torchvision weights enum, e.g. "ConvNeXt_Base_Weights.IMAGENET1K_V1"
    min_image_size: int = 32  # smallest input side its layers take (stride 32: 32 px → 1×1)
    image_size_step: int = 1  # the side must be a multiple of this (ViT: its 16 px patches)
    weights_image_size: int | None = None  # the only side its pretrained weights fit (ViT: 224)


def models():
    """torchvision's models, imported when a backbone is built: a stage that only reads
    embeddings (E1, an imported run) skips the second torchvision takes to import."""
    import torchvision.models

    return torchvision.models


def _tv(name: str) -> Callable[..., nn.Module]:
    return lambda **_: getattr(models(), name)(weights=None)


BACKBONES: dict[str, Backbone] = {
    # The authors replaced convnext's whole classifier (LayerNorm2d, Flatten, Linear) by Flatten.
    "convnext_base": Backbone(
        _tv("convnext_base"),
        _strip("classifier", nn.Flatten),
        1024,
        "ConvNeXt_Base_Weights.IMAGENET1K_V1",
    ),
    "convnext_tiny": Backbone(
        _tv("convnext_tiny"),
        _strip("classifier", nn.Flatten),
        768,
        "ConvNeXt_Tiny_Weights.IMAGENET1K_V1",
    ),
    # The authors' resnet50(pretrained=True) is torchvision's legacy alias for IMAGENET1K_V1.
    "resnet50": Backbone(  # padded stride-2 convolutions: any side ≥ 16 (MIN_IMAGE_SIZE) runs
        _tv("resnet50"),
        _strip("fc", nn.Identity),
        2048,
        "ResNet50_Weights.IMAGENET1K_V1",
        min_image_size=MIN_IMAGE_SIZE,
    ),
    # VGG's adaptive 7×7 pool flattened: 512·7·7 = 25,088 features.
    "vgg16_bn": Backbone(
        _tv("vgg16_bn"),
        _strip("classifier", nn.Identity),
        25088,
        "VGG16_BN_Weights.IMAGENET1K_V1",
    ),
    # The authors wrote ViT_B_16_Weights.IMAGENET1K_SWAG_LINEAR_V1.DEFAULT: `.DEFAULT` on a member
    # is the enum's DEFAULT, IMAGENET1K_V1 (224 px, ImageNet-1k). Without weights the position
    # table fits image_size.
    "vit_b_16": Backbone(
        lambda image_size=224, **_: models().vit_b_16(weights=None, image_size=image_size),
        _strip("heads", nn.Identity),
        768,
        "ViT_B_16_Weights.IMAGENET1K_V1",
        min_image_size=16,
        image_size_step=16,
        weights_image_size=224,
    ),
    # Small ConvNeXt configurations (ConvNeXt-V2 naming), trained from scratch in the demo.
    "convnext_atto": Backbone(
        partial(_small_convnext, (40, 80, 160, 320), (2, 2, 6, 2)),
        _strip("classifier", nn.Flatten),
        320,
        None,
    ),
    "convnext_femto": Backbone(
        partial(_small_convnext, (48, 96, 192, 384), (2, 2, 6, 2)),
        _strip("classifier", nn.Flatten),
        384,
        None,
    ),
    "convnext_pico": Backbone(
        partial(_small_convnext, (64, 128, 256, 512), (2, 2, 6, 2)),
        _strip("classifier", nn.Flatten),
        512,
        None,
    ),
}


def get_backbone(name: str) -> Backbone:
    if name not in BACKBONES:
        raise SuiteError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")
    return BACKBONES[name]


def check_image_size(name: str, image_size: int, pretrained: str = "none") -> None:
    """Fail, before anything is built or written, when `image_size` does not fit backbone `name`
    (its table row: minimum side, step, the side its pretrained weights were made for)."""
    spec = get_backbone(name)
    fix = "choose another --image-size (or --backbone)"
    if image_size < spec.min_image_size:
        raise SuiteError(
            f"--image-size {image_size} is too small for {name}: it takes ≥ "
            f"{spec.min_image_size} px; {fix}"
        )
    if image_size % spec.image_size_step:
        raise SuiteError(
            f"--image-size {image_size} does not fit {name}: it takes multiples of "
            f"{spec.image_size_step} px; {fix}"
        )
    if spec.weights_image_size and pretrained != "none" and image_size != spec.weights_image_size:
        raise SuiteError(
            f"--image-size {image_size} does not fit {name} with --pretrained {pretrained}: its "
            f"weights take {spec.weights_image_size} px only; use that size or --pretrained none"
        )


def imagenet_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The torchvision ImageNet weights of a backbone (downloaded once into the torch hub cache)."""
    spec = get_backbone(name)
    if spec.weights is None:
        raise SuiteError(
            f"backbone {name} has no ImageNet weights in torchvision; use --pretrained none or PATH"
        )
    weights = models().get_weight(spec.weights)
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except Exception as e:  # no network, proxy, corrupt download …
        raise SuiteError(
            f"could not download the ImageNet weights {spec.weights} ({type(e).__name__}: {e}); "
            f"on a machine with network run `torch.save(torchvision.models.get_weight("
            f"'{spec.weights}').get_state_dict(), 'FILE.pth')` and pass --pretrained FILE.pth"
        ) from None


def build_backbone(name: str, pretrained: str = "none", image_size: int = 224) -> nn.Module:
    """The backbone returning feature vectors; `pretrained` = 'imagenet', 'none' or a state-dict PATH."""
    spec = get_backbone(name)
    use_224 = pretrained != "none" and spec.weights is not None
    model = spec.build(image_size=224 if use_224 else image_size)
    if pretrained == "imagenet":
        state = imagenet_state_dict(name)
    elif pretrained == "none":
        state = None
    else:
        state = load_torch(pretrained, "a torchvision state dict download (see --pretrained)")
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    if state is not None:
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as e:
            first = str(e).strip().splitlines()[0][:200]
            raise SuiteError(
                f"--pretrained {pretrained}: not a torchvision {name} state dict ({first})"
            ) from None
    return spec.strip(model)


# ---------------------------------------------------------------------------------------------
# The encoder


def reduction(feature_size: int, embedding_size: int) -> nn.Sequential:
    """Linear(D→E) → ReLU → BN → Dropout(0.1) → Linear(E→E) → BN → tanh (= the embedding z)."""
    e = embedding_size
    return nn.Sequential(
        nn.Linear(feature_size, e),
        nn.ReLU(),
        nn.BatchNorm1d(e),
        nn.Dropout(0.1),
        nn.Linear(e, e),
        nn.BatchNorm1d(e),
        nn.Tanh(),
    )


def head(embedding_size: int, num_classes: int) -> nn.Sequential:
    """φ: Linear(E→256) → ReLU → BN → Dropout(0.4) → Linear(256→128) → ReLU → BN → Dropout(0.4) → Linear."""
    return nn.Sequential(
        nn.Linear(embedding_size, 256),
        nn.ReLU(),
        nn.BatchNorm1d(256),
        nn.Dropout(0.4),
        nn.Linear(256, 128),
        nn.ReLU(),
        nn.BatchNorm1d(128),
        nn.Dropout(0.4),
        nn.Linear(128, num_classes),
    )


class Encoder(nn.Module):
    """Images → (z, {attr: logits}); a frozen backbone stays in eval mode without gradients.

    frozen_train_mode (the authors' quirk `frozen-train-mode`): a frozen backbone follows the
    model into train mode, so stochastic depth drops blocks and BN statistics keep moving.
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_size: int,
        embedding_size: int,
        num_classes: Mapping[str, int],
        frozen: bool = False,
        frozen_train_mode: bool = False,
    ):
        super().__init__()
        self.backbone = backbone
        self.reduction = reduction(feature_size, embedding_size)
        self.heads = nn.ModuleDict({a: head(embedding_size, c) for a, c in num_classes.items()})
        self.frozen = frozen
        self.frozen_train_mode = frozen_train_mode
        if frozen:
            self.backbone.requires_grad_(False)
            self.train(self.training)

    def train(self, mode: bool = True) -> Encoder:
        super().train(mode)
        if self.frozen and not self.frozen_train_mode:
            self.backbone.eval()  # frozen rows of Table 3: BN statistics and dropout fixed too
        return self

    @property
    def has_backbone(self) -> bool:
        """False for a run imported from the authors' release: their heads and embeddings, but no
        backbone to embed a new picture with."""
        return not isinstance(self.backbone, AbsentBackbone)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding z (N×E, in [-1, 1]) of a batch of normalised images."""
        if self.frozen:
            with torch.no_grad():
                f = self.backbone(x)
        else:
            f = self.backbone(x)
        return self.reduction(f.flatten(1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        z = self.embed(x)
        return z, {a: h(z) for a, h in self.heads.items()}


def encoder_config(
    dataset: str,
    backbone: str,
    embedding_size: int,
    frozen: bool,
    labels: Mapping[str, list[str]],
    image_size: int,
    square_resize: bool,
    **extra: Any,
) -> dict[str, Any]:
    """The config stored in encoder.pt (contract 3); enough to rebuild the model without weights."""
    return {
        "dataset": dataset,
        "backbone": backbone,
        "feature_size": get_backbone(backbone).feature_size,
        "embedding_size": int(embedding_size),
        "frozen": bool(frozen),
        "attributes": list(labels),
        "num_classes": {a: len(v) for a, v in labels.items()},
        "labels": {a: list(v) for a, v in labels.items()},
        "image_size": int(image_size),
        "square_resize": bool(square_resize),
        **extra,
    }


class AbsentBackbone(nn.Module):
    """Stands in for a backbone whose weights were not imported (the authors' release, SPEC §10)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise SuiteError(
            "this encoder was imported from the authors' release without its backbone: it has "
            "their embeddings and heads but cannot encode images"
        )


def build_encoder(config: Mapping[str, Any], pretrained: str = "none") -> Encoder:
    """An Encoder for `config` (see encoder_config); backbone weights per `pretrained`."""
    if config.get("backbone_absent"):  # reduction and heads only (src/release)
        return Encoder(
            AbsentBackbone(),
            config["feature_size"],
            config["embedding_size"],
            config["num_classes"],
            config["frozen"],
        )
    spec = get_backbone(config["backbone"])
    bb = build_backbone(config["backbone"], pretrained, config["image_size"])
    return Encoder(
        bb,
        spec.feature_size,
        config["embedding_size"],
        config["num_classes"],
        config["frozen"],
        frozen_train_mode=bool(config.get("frozen_train_mode", False)),
    )


def load_encoder(run_dir: str | Path, device: Any = "cpu") -> tuple[Encoder, dict[str, Any]]:
    """weights/<run>/encoder.pt → (Encoder in eval mode on `device`, its config)."""
    path = Path(run_dir) / "encoder.pt"
    blob = load_torch(path, B1_HINT, map_location="cpu")
    if not isinstance(blob, dict) or "config" not in blob or "model" not in blob:
        raise SuiteError(f"{path} is not an encoder file (no config/model); re-run {B1_HINT}")
    config = blob["config"]
    model = build_encoder(config)
    try:
        model.load_state_dict(blob["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0][:200]
        raise SuiteError(f"{path}: weights do not match its config ({first})") from None
    return model.to(device).eval(), config
