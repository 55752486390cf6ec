"""The encoder of SPEC §4: heads and reduction layer by layer, backbones, freezing, weights, transforms."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms

from src.artifacts import save_torch
from src.errors import SuiteError
from src.method.encoder import (
    BACKBONES,
    Encoder,
    build_backbone,
    build_encoder,
    encoder_config,
    head,
    load_encoder,
    reduction,
)
from src.tasks import get_dataset
from src.transforms import flips_of, image_transform, transform_parts

LABELS = {"style": ["a", "b", "c"], "genre": ["x", "y"]}


def layer_spec(seq: nn.Sequential) -> list[tuple]:
    """(type name, sizes) of each layer: enough to compare an architecture with SPEC §4."""
    out = []
    for m in seq:
        if isinstance(m, nn.Linear):
            out.append(("Linear", m.in_features, m.out_features))
        elif isinstance(m, nn.BatchNorm1d):
            out.append(("BatchNorm1d", m.num_features))
        elif isinstance(m, nn.Dropout):
            out.append(("Dropout", m.p))
        else:
            out.append((type(m).__name__,))
    return out


def tiny_config(**kw) -> dict:
    base = dict(
        dataset="synthart",
        backbone="convnext_atto",
        embedding_size=16,
        frozen=False,
        labels=LABELS,
        image_size=32,
        square_resize=False,
    )
    return encoder_config(**(base | kw))


def test_head_is_spec_architecture():
    assert layer_spec(head(64, 7)) == [
        ("Linear", 64, 256),
        ("ReLU",),
        ("BatchNorm1d", 256),
        ("Dropout", 0.4),
        ("Linear", 256, 128),
        ("ReLU",),
        ("BatchNorm1d", 128),
        ("Dropout", 0.4),
        ("Linear", 128, 7),
    ]


def test_reduction_is_spec_architecture():
    assert layer_spec(reduction(1024, 256)) == [
        ("Linear", 1024, 256),
        ("ReLU",),
        ("BatchNorm1d", 256),
        ("Dropout", 0.1),
        ("Linear", 256, 256),
        ("BatchNorm1d", 256),
        ("Tanh",),
    ]


@pytest.mark.parametrize("name", list(BACKBONES))
def test_backbone_feature_size(name):
    torch.manual_seed(0)
    model = build_backbone(name, "none", image_size=32).eval()
    with torch.no_grad():
        f = model(torch.randn(2, 3, 32, 32))
    assert f.shape == (2, BACKBONES[name].feature_size)
    if name.startswith("convnext"):  # the authors' Flatten classifier: no final LayerNorm2d
        assert isinstance(model.classifier, nn.Flatten)


def test_paper_backbone_sizes():
    sizes = {
        n: BACKBONES[n].feature_size for n in ["convnext_base", "resnet50", "vgg16_bn", "vit_b_16"]
    }
    assert sizes == {"convnext_base": 1024, "resnet50": 2048, "vgg16_bn": 25088, "vit_b_16": 768}
    atto = build_backbone("convnext_atto")
    assert 3.0e6 < sum(p.numel() for p in atto.parameters()) < 4.0e6


def test_encoder_outputs():
    model = build_encoder(tiny_config()).eval()
    z, logits = model(torch.randn(5, 3, 32, 32))
    assert z.shape == (5, 16) and z.abs().max() <= 1
    assert {a: lg.shape for a, lg in logits.items()} == {"style": (5, 3), "genre": (5, 2)}
    assert list(model.heads) == ["style", "genre"]
    assert torch.equal(model.embed(torch.zeros(1, 3, 32, 32)), model(torch.zeros(1, 3, 32, 32))[0])
    # heads map embeddings to logits on their own (Backward Search uses them so)
    assert model.heads["style"](z).shape == (5, 3)


def test_frozen_backbone_gets_no_updates():
    torch.manual_seed(0)
    model = build_encoder(tiny_config(backbone="resnet50", frozen=True))
    model.train()
    assert not model.backbone.training and model.reduction.training
    assert not any(p.requires_grad for p in model.backbone.parameters())
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    red_before = model.reduction[0].weight.clone()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.1)
    _, logits = model(torch.randn(4, 3, 32, 32))
    sum(lg.sum() for lg in logits.values()).backward()
    opt.step()
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN statistics
    assert not torch.equal(red_before, model.reduction[0].weight)


def test_finetuned_backbone_trains():
    model = build_encoder(tiny_config()).train()
    assert model.backbone.training
    assert all(p.requires_grad for p in model.backbone.parameters())


def test_imagenet_download_failure_suggests_path(monkeypatch):
    import torchvision.models._api as api

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(SuiteError, match="--pretrained FILE.pth"):
        build_backbone("resnet50", "imagenet")


def test_imagenet_for_a_backbone_without_weights():
    with pytest.raises(SuiteError, match="no ImageNet weights"):
        build_backbone("convnext_atto", "imagenet")


def test_pretrained_path_loads_torchvision_state_dict(tmp_path):
    torch.manual_seed(1)
    src = BACKBONES["convnext_atto"].build()
    save_torch(tmp_path / "atto.pth", src.state_dict())
    model = build_backbone("convnext_atto", str(tmp_path / "atto.pth"))
    assert torch.equal(model.features[0][0].weight, src.features[0][0].weight)
    save_torch(tmp_path / "wrong.pth", {"x": torch.zeros(1)})
    with pytest.raises(SuiteError, match="not a torchvision convnext_atto state dict"):
        build_backbone("convnext_atto", str(tmp_path / "wrong.pth"))
    with pytest.raises(SuiteError, match="not found"):
        build_backbone("convnext_atto", str(tmp_path / "missing.pth"))


def test_unknown_backbone():
    with pytest.raises(SuiteError, match="convnext_base"):
        build_backbone("resnet9000")


def stripes_image(w: int, h: int) -> Image.Image:
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 8] = (255, 0, 0)  # a red band at the left edge
    return Image.fromarray(a)


def test_transforms_shapes_and_crop():
    cfg = tiny_config()
    img = stripes_image(96, 48)
    test = image_transform(cfg, train=False)
    x = test(img)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(x, test(img))  # deterministic
    # Resize shorter side to 32 → 64×32, CenterCrop drops the left band
    assert x[0, :, 0].max() < 0
    train = image_transform(cfg, train=True)
    assert train(img).shape == (3, 32, 32)


def test_square_resize_keeps_whole_image():
    cfg = tiny_config(square_resize=True)
    x = image_transform(cfg, train=False)(stripes_image(96, 48))
    assert x.shape == (3, 32, 32)
    assert x[0, :, 0].min() > 2  # red band still there: resized to a square, not cropped
    train = image_transform(cfg, train=True)
    x = train(stripes_image(96, 48))
    assert x.shape == (3, 32, 32) and x[0, :, 0].min() > 2


def test_apy_trains_on_the_authors_train_square():
    """aPY (square_resize): Resize((S, S)) and normalisation only, train = test, no crop or flip."""
    assert get_dataset("apy").square_resize
    cfg = tiny_config(square_resize=True)
    pre, post = transform_parts(cfg, train=True)
    assert [type(t) for t in pre] == [transforms.Resize] and tuple(pre[0].size) == (32, 32)
    assert [type(t).__name__ for t in post] == ["ToFloat", "Normalize"]
    a = np.zeros((40, 96, 3), np.uint8)
    a[:5, :8] = 255  # a white corner: any flip or crop would move or drop it
    img = Image.fromarray(a)
    train, test = image_transform(cfg, train=True), image_transform(cfg, train=False)
    torch.manual_seed(0)
    for _ in range(10):
        assert torch.equal(train(img), test(img))
    assert test(img)[0, 0, 0] > 2 and test(img)[0, -1, -1] < 0


def test_backbone_weights_are_the_authors():
    """resnet50(pretrained=True) = IMAGENET1K_V1; the authors' ViT enum expression = IMAGENET1K_V1."""
    from torchvision.models import ResNet50_Weights, ViT_B_16_Weights, get_weight

    authors_vit = ViT_B_16_Weights.IMAGENET1K_SWAG_LINEAR_V1.DEFAULT  # as their code writes it
    assert authors_vit is ViT_B_16_Weights.IMAGENET1K_V1  # checked with the installed torchvision
    assert get_weight(BACKBONES["vit_b_16"].weights) is authors_vit
    assert authors_vit.transforms().crop_size == [224]  # 224 px weights, not SWAG's 384
    assert get_weight(BACKBONES["resnet50"].weights) is ResNet50_Weights.IMAGENET1K_V1
    for name in ("convnext_base", "vgg16_bn"):
        assert BACKBONES[name].weights.endswith(".IMAGENET1K_V1")


def test_load_encoder_roundtrip(tmp_path):
    cfg = tiny_config()
    model = build_encoder(cfg)
    save_torch(tmp_path / "encoder.pt", {"config": cfg, "model": model.state_dict()})
    loaded, config = load_encoder(tmp_path)
    assert config == cfg and not loaded.training and isinstance(loaded, Encoder)
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(loaded.embed(x), model.eval().embed(x))


def test_load_encoder_errors(tmp_path):
    with pytest.raises(SuiteError, match="run B1_train_encoder.py"):
        load_encoder(tmp_path)
    save_torch(tmp_path / "encoder.pt", {"weights": 1})
    with pytest.raises(SuiteError, match="not an encoder file"):
        load_encoder(tmp_path)


def flipped(transform, img, axis: int) -> bool:
    """Whether 20 draws of the train transform ever flip the white band of `img` along `axis`."""
    return any(transform(img)[0].mean(axis)[0] < 0 for _ in range(20))


def test_flips_are_a_recipe_switch_and_old_configs_keep_theirs():
    a = np.zeros((32, 32, 3), np.uint8)
    a[:4, :] = 255  # a white band at the top: seen at the bottom after a vertical flip
    a[:, :4] = 255  # and at the left: at the right after a horizontal flip
    img = Image.fromarray(a)
    torch.manual_seed(0)

    def flips(config) -> tuple[bool, bool]:
        t = image_transform(config, train=True)
        return flipped(t, img, 1), flipped(t, img, 0)  # (vertical, horizontal)

    assert flips(tiny_config(flips="none")) == (False, False)
    assert flips(tiny_config(flips="h")) == (False, True)
    assert flips(tiny_config(flips="hv")) == (True, True)
    assert flips(tiny_config(flips="h", square_resize=True)) == (False, True)
    # encoder.pt written before `flips`: the authors' hv, the demo's vertical_flip=False, aPY none
    assert flips_of(tiny_config()) == "hv"
    assert flips_of(tiny_config(vertical_flip=False)) == "h"
    assert flips_of(tiny_config(square_resize=True)) == "none"


def stochastic_backbone() -> nn.Module:
    """A tiny ConvNeXt with stochastic depth 0.5 (convnext_base's) behind a BatchNorm2d."""
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    cfg = [CNBlockConfig(8, 16, 2), CNBlockConfig(16, None, 2)]
    convnext = ConvNeXt(cfg, stochastic_depth_prob=0.5)
    convnext.classifier = nn.Flatten()
    return nn.Sequential(nn.BatchNorm2d(3), convnext)  # → 16 features


@pytest.mark.parametrize("quirk", [False, True], ids=["eval-mode (ours)", "frozen-train-mode"])
def test_frozen_backbone_mode(quirk):
    """Ours: a frozen backbone is deterministic and its BN statistics stay; the authors' possible
    setting (quirk): it stays in train mode, stochastic depth drops blocks, BN statistics move."""
    torch.manual_seed(0)
    model = Encoder(stochastic_backbone(), 16, 8, {"a": 3}, frozen=True, frozen_train_mode=quirk)
    model.train()
    assert model.reduction.training and model.backbone.training == quirk
    assert not any(p.requires_grad for p in model.backbone.parameters())
    bn = model.backbone[0]
    mean_before = bn.running_mean.clone()
    x = torch.randn(4, 3, 32, 32) * 3 + 1
    f1, f2 = model.backbone(x), model.backbone(x)
    assert torch.equal(f1, f2) != quirk  # stochastic depth: two passes differ only in train mode
    assert torch.equal(bn.running_mean, mean_before) != quirk  # BN statistics move only then
    model.eval()  # C1 and E1 see a deterministic backbone either way
    assert not model.backbone.training
    assert torch.equal(model.backbone(x), model.backbone(x))


def test_frozen_train_mode_is_read_from_the_config():
    assert build_encoder(tiny_config(frozen=True)).train().backbone.training is False
    quirk = build_encoder(tiny_config(frozen=True, frozen_train_mode=True)).train()
    assert quirk.backbone.training is True


# ---------------------------------------------------------------------------------------------
# The backbone table's rules, the files, the release's encoder without a backbone


def test_small_convnexts_are_deterministic_with_torchvisions_layer_scale():
    from torchvision.models.convnext import CNBlock

    model = build_backbone("convnext_atto")
    blocks = [m for m in model.modules() if isinstance(m, CNBlock)]
    assert len(blocks) == 2 + 2 + 6 + 2
    assert all(torch.all(b.layer_scale == 1e-6) for b in blocks)  # torchvision's initial scale
    assert all(b.stochastic_depth.p == 0.0 for b in blocks)  # no blocks dropped in training
    model.train()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), model(x))


def test_unknown_backbone_is_one_exact_line():
    with pytest.raises(SuiteError) as e:
        build_backbone("resnet9000")
    assert str(e.value) == f"unknown backbone 'resnet9000'; choose one of: {', '.join(BACKBONES)}"


@pytest.mark.parametrize(
    ("backbone", "size", "pretrained", "said"),
    [("convnext_atto", 31, "none", "--image-size 31 is too small for convnext_atto: it takes ≥ 32 px; "
      "choose another --image-size (or --backbone)"),
     ("vit_b_16", 232, "none", "--image-size 232 does not fit vit_b_16: it takes multiples of 16 px; "
      "choose another --image-size (or --backbone)"),
     ("vit_b_16", 240, "imagenet", "--image-size 240 does not fit vit_b_16 with --pretrained imagenet: "
      "its weights take 224 px only; use that size or --pretrained none"),
     ("convnext_atto", 32, "none", None), ("vit_b_16", 16, "none", None),
     ("vit_b_16", 224, "imagenet", None), ("vit_b_16", 240, "none", None),
     ("resnet50", 40, "imagenet", None)],
)  # fmt: skip
def test_image_sizes_at_the_edges_of_the_table(backbone, size, pretrained, said):
    from src.method.encoder import check_image_size

    if said is None:
        check_image_size(backbone, size, pretrained)  # no error
        return
    with pytest.raises(SuiteError) as e:
        check_image_size(backbone, size, pretrained)
    assert str(e.value) == said


def test_imagenet_weights_are_downloaded_with_their_hash_checked(monkeypatch):
    import torchvision.models._api as api

    seen = {}

    def fake(url, *args, **kwargs):
        seen.update(kwargs)
        return BACKBONES["resnet50"].build().state_dict()

    monkeypatch.setattr(api, "load_state_dict_from_url", fake)
    build_backbone("resnet50", "imagenet")
    assert seen["check_hash"] is True and seen["progress"] is True


def test_a_state_dict_under_a_state_dict_key_loads(tmp_path):
    torch.manual_seed(2)
    src = BACKBONES["convnext_atto"].build()
    save_torch(tmp_path / "wrapped.pth", {"state_dict": src.state_dict()})
    model = build_backbone("convnext_atto", str(tmp_path / "wrapped.pth"))
    assert torch.equal(model.features[0][0].weight, src.features[0][0].weight)


def test_a_finetuned_backbone_gets_gradients():
    model = build_encoder(tiny_config()).train()
    z = model.embed(torch.randn(4, 3, 32, 32))
    z.sum().backward()
    assert all(p.grad is not None for p in model.backbone.parameters())


def test_the_release_encoder_has_heads_but_no_backbone():
    from src.method.encoder import AbsentBackbone

    cfg = tiny_config(frozen=True) | {"backbone_absent": True}
    model = build_encoder(cfg).eval()
    assert isinstance(model.backbone, AbsentBackbone) and not model.has_backbone
    assert model.frozen and list(model.heads) == ["style", "genre"]
    assert model.reduction[0].in_features == BACKBONES["convnext_atto"].feature_size
    assert model.heads["genre"](torch.zeros(2, 16)).shape == (2, 2)
    with pytest.raises(SuiteError) as e:
        model.embed(torch.zeros(1, 3, 32, 32))
    assert str(e.value) == (
        "this encoder was imported from the authors' release without its backbone: it has "
        "their embeddings and heads but cannot encode images"
    )
    assert build_encoder(tiny_config()).has_backbone


def test_load_encoder_puts_the_model_on_the_device_asked(tmp_path):
    cfg = tiny_config()
    save_torch(tmp_path / "encoder.pt", {"config": cfg, "model": build_encoder(cfg).state_dict()})
    loaded, _ = load_encoder(tmp_path, device="meta")  # "meta" stands in for a GPU here
    assert {p.device.type for p in loaded.parameters()} == {"meta"}


def test_load_encoder_errors_are_one_exact_line(tmp_path):
    from src.hints import B1_HINT

    save_torch(tmp_path / "encoder.pt", {"config": tiny_config()})
    with pytest.raises(SuiteError) as e:
        load_encoder(tmp_path)
    path = tmp_path / "encoder.pt"
    assert str(e.value) == f"{path} is not an encoder file (no config/model); re-run {B1_HINT}"
    other = build_encoder(tiny_config(embedding_size=8)).state_dict()
    save_torch(path, {"config": tiny_config(), "model": other})
    with pytest.raises(SuiteError) as e:
        load_encoder(tmp_path)
    assert str(e.value).startswith(f"{path}: weights do not match its config (Error(s) in loading")


def test_the_tables_builders_strip_the_classifier_and_load_no_weights(monkeypatch):
    from types import SimpleNamespace

    from src.method import encoder
    from src.method.encoder import _strip, _tv

    net = SimpleNamespace(net=lambda weights: ("built", weights))  # torchvision.models stand-in
    monkeypatch.setattr(encoder, "models", lambda: net)
    assert _tv("net")(image_size=64) == ("built", None)
    model = nn.Sequential(nn.Linear(2, 3))
    model.classifier = nn.Linear(3, 4)
    assert _strip("classifier", nn.Identity)(model) is model
    assert isinstance(model.classifier, nn.Identity)


def test_without_pretrained_any_size_the_layers_take_is_allowed():
    from src.method.encoder import check_image_size

    check_image_size("vit_b_16", 240)  # the default is no weights: 224 px is not required


def test_an_encoder_file_without_its_config_is_one_line(tmp_path):
    from src.hints import B1_HINT

    save_torch(tmp_path / "encoder.pt", {"model": build_encoder(tiny_config()).state_dict()})
    with pytest.raises(SuiteError) as e:
        load_encoder(tmp_path)
    path = tmp_path / "encoder.pt"
    assert str(e.value) == f"{path} is not an encoder file (no config/model); re-run {B1_HINT}"


def test_a_long_load_error_is_cut_to_200_characters(tmp_path, monkeypatch):
    cfg = tiny_config()
    save_torch(tmp_path / "encoder.pt", {"config": cfg, "model": build_encoder(cfg).state_dict()})

    def refuse(*_a, **_k):
        raise RuntimeError("x" * 300 + "\nsecond line")

    monkeypatch.setattr(Encoder, "load_state_dict", refuse)
    with pytest.raises(SuiteError) as e:
        load_encoder(tmp_path)
    path = tmp_path / "encoder.pt"
    assert str(e.value) == f"{path}: weights do not match its config ({'x' * 200})"


def test_an_encoder_is_fine_tuned_and_in_our_mode_unless_told():
    plain = Encoder(stochastic_backbone(), 16, 8, {"a": 3}).train()
    assert not plain.frozen and plain.backbone.training
    assert all(p.requires_grad for p in plain.backbone.parameters())
    frozen = Encoder(stochastic_backbone(), 16, 8, {"a": 3}, frozen=True).train()
    assert not frozen.backbone.training  # frozen_train_mode (the quirk) only when asked


def test_the_encoder_is_built_for_its_image_size():
    # ViT's position table is made for the configured side: 32 px, not its weights' 224
    cfg = tiny_config(backbone="vit_b_16", image_size=32)
    model = build_encoder(cfg).eval()
    with torch.no_grad():
        assert model.embed(torch.zeros(1, 3, 32, 32)).shape == (1, 16)


def test_the_encoder_config_holds_what_rebuilds_and_labels_the_model():
    cfg = tiny_config()
    assert cfg == {
        "dataset": "synthart",
        "backbone": "convnext_atto",
        "feature_size": 320,
        "embedding_size": 16,
        "frozen": False,
        "attributes": ["style", "genre"],
        "num_classes": {"style": 3, "genre": 2},
        "labels": LABELS,
        "image_size": 32,
        "square_resize": False,
    }


def test_a_failed_download_names_the_error(monkeypatch):
    import torchvision.models._api as api

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(SuiteError) as e:
        build_backbone("resnet50", "imagenet")
    assert str(e.value).startswith(
        "could not download the ImageNet weights ResNet50_Weights.IMAGENET1K_V1 (URLError: "
    )


def test_imagenet_weights_build_the_vit_at_their_224_px(monkeypatch):
    # --pretrained imagenet at --image-size 32: the model is built for the weights' 224 px (its
    # position table must fit them); without weights the default side is 224 too
    import torchvision.models._api as api

    monkeypatch.setattr(api, "load_state_dict_from_url", lambda *a, **k: vit.state_dict())
    vit = BACKBONES["vit_b_16"].build(image_size=224)
    assert build_backbone("vit_b_16", "imagenet", image_size=32).image_size == 224
    assert build_backbone("vit_b_16").image_size == 224


def test_pretrained_files_that_are_no_state_dict_are_one_line(tmp_path, monkeypatch):
    from torchvision.models.convnext import ConvNeXt

    missing = tmp_path / "missing.pth"
    with pytest.raises(SuiteError) as e:
        build_backbone("convnext_atto", str(missing))
    assert str(e.value) == (
        f"{missing} not found: run a torchvision state dict download (see --pretrained) first"
    )
    save_torch(tmp_path / "tensor.pth", torch.zeros(3))  # a tensor, not a dict
    with pytest.raises(SuiteError, match="not a torchvision convnext_atto state dict"):
        build_backbone("convnext_atto", str(tmp_path / "tensor.pth"))
    save_torch(tmp_path / "wrong.pth", {"x": torch.zeros(1)})
    with pytest.raises(SuiteError) as e:
        build_backbone("convnext_atto", str(tmp_path / "wrong.pth"))
    assert str(e.value) == (
        f"--pretrained {tmp_path / 'wrong.pth'}: not a torchvision convnext_atto state dict "
        "(Error(s) in loading state_dict for ConvNeXt:)"
    )

    def refuse(*_a, **_k):
        raise RuntimeError("y" * 300 + "\nsecond line")

    monkeypatch.setattr(ConvNeXt, "load_state_dict", refuse)
    with pytest.raises(SuiteError) as e:
        build_backbone("convnext_atto", str(tmp_path / "wrong.pth"))
    assert str(e.value).endswith(f"state dict ({'y' * 200})")
