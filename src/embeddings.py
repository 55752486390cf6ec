"""C1: the embedding z of every train and test image, and how later stages read it.

Rows are train.csv's rows then test.csv's, in file order; each row has image, split,
label_<attr> (class ids) and z (float32, E values). C1 writes them as partitions
(src/partitions.py; `Extraction.embed` embeds one run of rows); `load_embeddings` returns them in
memory, from the partitions or an earlier version's embeddings.npz. The model is in eval mode;
test images get the test transform; train images get the encoder's training transform (random
crop and flips; aPY its square resize) as in the authors' C1 — D1 distils on them — or, on
request, the test transform (TRAIN_TRANSFORMS). The random draws are seeded per image
(`SeededItems`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from src.artifacts import dataset_dir, file_sha256
from src.data import head_hits, load_split
from src.datasets.common import read_labels
from src.errors import SuiteError
from src.hints import C1_HINT, hint
from src.partitions import Plan, open_partitions
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


class Extraction:
    """One C1 run's work: the encoder, the train and test splits (in that row order) with their
    transforms, the batch size; `embed(start, stop)` embeds any run of rows.

    Batches are cut within each split's part of the rows, from its first row, so a run of rows
    gives the same bits whoever embeds it, alone or as one of many partitions, on the same kind
    of device with the same number of threads (item i's random transform is seeded from (seed, i)
    — `SeededItems` — so augmentation agrees too). Another thread count may round a CPU matrix
    product differently (bench/RESULTS.md: ≤ 2.7e-7 on the demo run).

    train_transform: "train" embeds the train split with the encoder's training transform,
    seeded per image by `seed`; "test" with the test transform. The test split always gets the
    test transform. pin_memory (default: on CUDA) stages batches in page-locked memory so the
    non-blocking copies overlap the forward pass.
    """

    def __init__(
        self,
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
    ):
        if train_transform not in TRAIN_TRANSFORMS:
            raise SuiteError(
                f"train_transform {train_transform!r} is not one of {', '.join(TRAIN_TRANSFORMS)}"
            )
        self.dataset = ds = config["dataset"]
        check_labels(config, read_labels(data_root, ds), f"{Path(data_root) / ds / 'labels.json'}")
        self.model = model.to(device).eval()
        self.attrs = list(config["attributes"])
        self.device, self.batch_size, self.workers = device, batch_size, workers
        self.pin = device.type == "cuda" if pin_memory is None else pin_memory
        self.splits: list[tuple[str, Any, Any]] = []  # (split, items to load, its table)
        for split in SPLITS:
            augment = split == "train" and train_transform == "train"
            table = load_split(Path(data_root), ds, split, config, train=augment)
            self.splits.append((split, SeededItems(table, seed) if augment else table, table))
        self.rows = sum(len(t) for _, _, t in self.splits)

    @torch.no_grad()
    def embed(self, start: int = 0, stop: int | None = None) -> tuple[dict[str, np.ndarray], dict]:
        """Rows [start, stop) of train then test: (arrays image, split, label_<attr>, z, and
        {"correct": {attr: test rows the heads get right}, "test_rows": n})."""
        stop = self.rows if stop is None else stop
        parts: dict[str, list[np.ndarray]] = {"image": [], "split": [], "z": []}
        parts |= {f"label_{a}": [] for a in self.attrs}
        correct = torch.zeros(len(self.attrs), dtype=torch.long, device=self.device)
        test_rows, offset = 0, 0
        for split, items, table in self.splits:
            a, b = max(start - offset, 0), min(stop - offset, len(table))
            offset += len(table)
            if a >= b:
                continue
            batches = torch.utils.data.DataLoader(
                torch.utils.data.Subset(items, range(a, b)),
                batch_size=self.batch_size,
                num_workers=self.workers,
                pin_memory=self.pin,
            )
            zs, hits = [], torch.zeros_like(correct)
            for x, y in progress(batches, f"C1 {split}", unit="img", per_step=self.batch_size):
                z, logits = self.model(x.to(self.device, non_blocking=True))
                y = y.to(self.device, non_blocking=True)
                hits += head_hits(logits, y)
                zs.append(z.float())
            parts["z"].append(torch.cat(zs).cpu().numpy())
            parts["image"].append(np.asarray(table.images[a:b], dtype=str))
            parts["split"].append(np.full(b - a, split))
            for i, attr in enumerate(self.attrs):
                parts[f"label_{attr}"].append(table.labels[a:b, i].numpy().astype(np.int64))
            if split == "test":
                correct, test_rows = hits, b - a
        arrays = {k: np.concatenate(v) for k, v in parts.items()}
        arrays["z"] = arrays["z"].astype(np.float32)
        counts = dict(zip(self.attrs, correct.tolist(), strict=True))
        return arrays, {"correct": counts, "test_rows": test_rows}


def test_accuracy(infos: list[Mapping[str, Any]], attrs: list[str]) -> dict[str, float]:
    """The heads' accuracy on the test split from the partitions' counts of right answers."""
    rows = sum(int(i["test_rows"]) for i in infos)
    return {a: sum(int(i["correct"][a]) for i in infos) / max(rows, 1) for a in attrs}


def extract_embeddings(*args: Any, **kwargs: Any) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Every row in one go, with `Extraction`'s arguments: (the arrays of the whole set,
    {attr: test accuracy of the heads})."""
    job = Extraction(*args, **kwargs)
    arrays, info = job.embed()
    return arrays, test_accuracy([info], job.attrs)


def load_embeddings(run_dir: str | Path, hint: str = C1_HINT) -> dict[str, np.ndarray]:
    """A run's embeddings in memory (image, split, label_<attr>, z), from its partitions or an
    earlier version's embeddings.npz (fails 'run C1_extract_embeddings.py first')."""
    store = open_partitions(run_dir, hint)
    arrays = store.arrays()
    bad = ~np.isfinite(arrays["z"]).all(axis=1)  # checked before any stage draws or writes
    if bad.any():
        raise SuiteError(
            f"{store.source} holds NaN or infinite embeddings ({int(bad.sum())} rows, e.g. "
            f"{arrays['image'][bad][0]}): a diverged encoder? re-train with "
            f"B1_train_encoder.py, then re-run {hint}"
        )
    return arrays


def plan(
    run_dir: Path,
    data_root: str | Path,
    job: Extraction,
    partition_rows: int,
    settings: dict[str, Any],
    finish: str,
) -> Plan:
    """The partitions of a C1 run over `job`'s rows; their settings record what the values
    depend on besides `settings` (transform, seed, batch size): the encoder's and the processed
    data's digests, so partitions of another encoder or dataset are never mixed in."""
    data = dataset_dir(data_root, job.dataset)
    digests = {
        "encoder_sha256": file_sha256(run_dir / "encoder.pt"),
        "data_sha256": hashlib.sha256(
            b"".join(
                file_sha256(data / f).encode() for f in ("train.csv", "test.csv", "labels.json")
            )
        ).hexdigest(),
    }
    return Plan(job.rows, partition_rows, {**settings, **digests}, finish)
