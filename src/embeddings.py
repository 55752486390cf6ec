"""C1: the embedding z of every train and test image, and the file later stages read it from.

weights/<run>/embeddings.npz (no pickle): image, split, label_<attr> (class ids), z (float32 N×E);
rows are train.csv's rows then test.csv's, in file order. The model is in eval mode; test images
get the test transform; train images get the encoder's training transform (random crop and
flips; aPY its square resize) as in the authors' C1 — D1 distils on them — or, on request, the
test transform (TRAIN_TRANSFORMS). The random draws are seeded per image (`SeededItems`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from src.artifacts import load_npz, save_npz
from src.data import head_hits, load_split
from src.datasets.common import read_labels
from src.errors import SuiteError
from src.hints import C1_HINT, hint
from src.progress import progress

SPLITS = ("train", "test")
TRAIN_TRANSFORMS = ("train", "test")  # which transform C1 gives the train split


def item_seed(seed: int, index: int) -> int:
    """The torch seed of image `index`'s random transform: a function of (seed, index) only."""
    return int(np.random.SeedSequence([seed % 2**64, index]).generate_state(1, np.uint64)[0])


class SeededItems(torch.utils.data.Dataset):
    """A dataset whose item i is drawn with torch's RNG seeded from (seed, i).

    The random crop and flips of an image then depend on nothing else — not on the batch size,
    the number of loader workers or the order of loading — and the global RNG is left as it was.
    """

    def __init__(self, items: torch.utils.data.Dataset, seed: int):
        self.items, self.seed = items, seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        # the CPU generator only (the transforms draw there): torch.manual_seed would also seed
        # every accelerator's, ~0.3 ms an image; the CPU stream is the same bits either way
        gen = torch.default_generator
        state = gen.get_state()
        gen.manual_seed(item_seed(self.seed, i))
        try:
            return self.items[i]
        finally:
            gen.set_state(state)


def check_labels(config: Mapping[str, Any], labels: Mapping[str, list[str]], where: str) -> None:
    """The encoder's heads must match the dataset's labels.json (attributes and class counts)."""
    for a in config["attributes"]:
        have = len(labels.get(a, []))
        want = config["num_classes"][a]
        if have != want:
            raise SuiteError(
                f"the encoder's {a} head has {want} classes but {where} lists {have}; "
                f"re-run {hint('B1', '--dataset', config['dataset'])} on this data"
            )


@torch.no_grad()
def extract_embeddings(
    model: torch.nn.Module,
    config: Mapping[str, Any],
    data_root: str | Path,
    device: torch.device,
    batch_size: int = 256,
    workers: int = 0,
    *,
    train_transform: str = "test",
    seed: int = 0,
    pin_memory: bool | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """(arrays of embeddings.npz, {attr: test accuracy of the heads}).

    train_transform: "train" embeds the train split with the encoder's training transform,
    seeded per image by `seed`; "test" with the test transform. The test split always gets the
    test transform. pin_memory (default: on CUDA) stages batches in page-locked memory so the
    non-blocking copies overlap the forward pass.
    """
    if train_transform not in TRAIN_TRANSFORMS:
        raise SuiteError(
            f"train_transform {train_transform!r} is not one of {', '.join(TRAIN_TRANSFORMS)}"
        )
    ds = config["dataset"]
    check_labels(config, read_labels(data_root, ds), f"{Path(data_root) / ds / 'labels.json'}")
    attrs = config["attributes"]
    model = model.to(device).eval()
    pin = device.type == "cuda" if pin_memory is None else pin_memory
    parts: dict[str, list[np.ndarray]] = {"image": [], "split": [], "z": []}
    parts |= {f"label_{a}": [] for a in attrs}
    accuracy: dict[str, float] = {}
    for split in SPLITS:
        augment = split == "train" and train_transform == "train"
        table = load_split(Path(data_root), ds, split, config, train=augment)
        items = SeededItems(table, seed) if augment else table
        batches = torch.utils.data.DataLoader(
            items, batch_size=batch_size, num_workers=workers, pin_memory=pin
        )
        zs, correct = [], torch.zeros(len(attrs), dtype=torch.long, device=device)
        for x, y in progress(batches, f"C1 {split}", unit="img", per_step=batch_size):
            z, logits = model(x.to(device, non_blocking=True))
            y = y.to(device, non_blocking=True)
            correct += head_hits(logits, y)
            zs.append(z.float())
        parts["z"].append(torch.cat(zs).cpu().numpy())
        parts["image"].append(np.asarray(table.images, dtype=str))
        parts["split"].append(np.full(len(table), split))
        for i, a in enumerate(attrs):
            parts[f"label_{a}"].append(table.labels[:, i].numpy().astype(np.int64))
        if split == "test":
            accuracy = {
                a: c / max(len(table), 1) for a, c in zip(attrs, correct.tolist(), strict=True)
            }
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    arrays["z"] = arrays["z"].astype(np.float32)
    return arrays, accuracy


def save_embeddings(run_dir: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    path = Path(run_dir) / "embeddings.npz"
    save_npz(path, **arrays)
    return path


def load_embeddings(run_dir: str | Path) -> dict[str, np.ndarray]:
    """weights/<run>/embeddings.npz as a dict of arrays (fails 'run C1_extract_embeddings.py first')."""
    arrays = load_npz(Path(run_dir) / "embeddings.npz", C1_HINT)
    missing = [k for k in ("image", "split", "z") if k not in arrays]
    if missing:
        raise SuiteError(f"{Path(run_dir) / 'embeddings.npz'} lacks {missing}; re-run {C1_HINT}")
    if arrays["z"].ndim != 2 or len(arrays["z"]) != len(arrays["image"]):
        raise SuiteError(f"{Path(run_dir) / 'embeddings.npz'} has a malformed z; re-run {C1_HINT}")
    bad = ~np.isfinite(arrays["z"]).all(axis=1)  # checked before any stage draws or writes
    if bad.any():
        raise SuiteError(
            f"{Path(run_dir) / 'embeddings.npz'} holds NaN or infinite embeddings ({int(bad.sum())}"
            f" rows, e.g. {arrays['image'][bad][0]}): a diverged encoder? re-train with "
            f"B1_train_encoder.py, then re-run {C1_HINT}"
        )
    return arrays


def fingerprint(z: np.ndarray) -> str:
    """A short sha256 of the embeddings (shape and float32 bytes, not the file: np.savez stamps
    the time in it): D1 records the one it distilled from, so a later C1 run shows."""
    z = np.ascontiguousarray(z, dtype=np.float32)
    h = hashlib.sha256(repr(z.shape).encode())
    h.update(memoryview(z).cast("B"))
    return h.hexdigest()[:16]
