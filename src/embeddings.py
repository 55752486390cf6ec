"""C1: the embedding z of every train and test image, and the file later stages read it from.

weights/<run>/embeddings.npz (no pickle): image, split, label_<attr> (class ids), z (float32 N×E);
rows are train.csv's rows then test.csv's, in file order.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from src.artifacts import load_npz, save_npz
from src.data import load_split
from src.datasets.common import read_labels
from src.encoder import Encoder
from src.errors import SuiteError
from src.hints import C1_HINT, hint

SPLITS = ("train", "test")


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
    model: Encoder,
    config: Mapping[str, Any],
    data_root: str | Path,
    device: torch.device,
    batch_size: int = 256,
    workers: int = 0,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """(arrays of embeddings.npz, {attr: test accuracy of the heads}) with the test transform."""
    ds = config["dataset"]
    check_labels(config, read_labels(data_root, ds), f"{Path(data_root) / ds / 'labels.json'}")
    attrs = config["attributes"]
    model = model.to(device).eval()
    parts: dict[str, list[np.ndarray]] = {"image": [], "split": [], "z": []}
    parts |= {f"label_{a}": [] for a in attrs}
    accuracy: dict[str, float] = {}
    for split in SPLITS:
        table = load_split(Path(data_root), ds, split, config, train=False)
        batches = torch.utils.data.DataLoader(
            table, batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda"
        )
        zs, correct = [], torch.zeros(len(attrs), dtype=torch.long, device=device)
        for x, y in batches:
            z, logits = model(x.to(device, non_blocking=True))
            y = y.to(device, non_blocking=True)
            correct += torch.stack(
                [(lg.argmax(1) == y[:, i]).sum() for i, lg in enumerate(logits.values())]
            )
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
    return arrays
