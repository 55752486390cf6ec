"""A task's search space for E2: the trained encoder, the labels, the test-split database and
its embeddings; how an outside picture or a `--condition` enters it, and the searches (Backward
Search, the student) and cosine ranking run on it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError

from src.artifacts import run_dir
from src.backward_search import backward_search
from src.datasets.common import read_labels, read_split
from src.embeddings import load_embeddings
from src.encoder import image_transform, load_encoder
from src.errors import SuiteError
from src.eval_data import database_rows
from src.hints import C1_HINT
from src.labels import class_ids
from src.retrieval import cosine_topk
from src.student import load_student
from src.tasks import Task

MAX_SIDE = 512  # JPEGs are decoded at no less than 4× this side (the transforms resize to ~224)


@dataclass
class SearchSpace:
    """The searchable database of a task (test split, images with tags) and the trained encoder."""

    task: Task
    run: str
    data_root: Path
    labels: dict[str, list[str]]
    encoder: Any  # src.encoder.Encoder in eval mode
    config: dict[str, Any]
    table: pd.DataFrame  # database rows in database order: image, label attributes, tags
    z: torch.Tensor  # database embeddings N×E on the device
    z_all: dict[str, np.ndarray]  # image key → embedding of every train/test image
    device: torch.device
    images: Path | None = None  # E2 --images: the dataset's images outside data/<dataset>

    @cached_property
    def image_row(self) -> dict[str, int]:
        """Image key → database row."""
        return {img: i for i, img in enumerate(self.table["image"])}

    def image_path(self, key: str) -> Path:
        """Where the picture of image key `key` (`images/<class>/<file>`, as in test.csv) lies:
        under data/<dataset>, or under --images DIR without the leading `images/`."""
        if self.images is None:
            return self.data_root / self.task.dataset / key
        return self.images / key.removeprefix("images/")

    def missing_images(self, keys: Sequence[str]) -> list[Path]:
        """The pictures of `keys` that are not on disk (an imported release carries none)."""
        return [p for p in map(self.image_path, keys) if not p.is_file()]


def load_space(
    data_root: Path,
    weights_root: Path,
    task: Task,
    run: str,
    device: torch.device,
    images: Path | None = None,
) -> SearchSpace:
    """Encoder, labels, embeddings and the database (test images with tags, as E1 uses: SPEC §7)."""
    wdir = run_dir(weights_root, run)
    emb = load_embeddings(wdir)
    encoder, config = load_encoder(wdir, device)
    labels = read_labels(data_root, task.dataset)
    test = read_split(data_root, task.dataset, "test")
    rows = database_rows(emb, test, C1_HINT)
    table = test.set_index("image", drop=False).loc[emb["image"][rows]]
    z = torch.from_numpy(emb["z"][rows]).to(device)
    return SearchSpace(
        task=task,
        run=run,
        data_root=Path(data_root),
        labels=labels,
        encoder=encoder,
        config=config,
        table=table.reset_index(drop=True),
        z=z,
        z_all=dict(zip(emb["image"].tolist(), emb["z"], strict=True)),
        device=device,
        images=None if images is None else Path(images),
    )


def query_z(space: SearchSpace, images: Sequence[str]) -> torch.Tensor:
    """The stored embeddings z0 of query images (Q×E), or a clear error when C1 lacks one."""
    missing = [i for i in images if i not in space.z_all]
    if missing:
        raise SuiteError(
            f"query image {missing[0]} is not in the embeddings of run {space.run}; "
            f"the queries are newer than the embeddings: re-run {C1_HINT}"
        )
    return torch.from_numpy(np.stack([space.z_all[i] for i in images]))


def class_id(labels: Mapping[str, list[str]], attr: str, name: str) -> int:
    """The id of class `name` of `attr`; exact, else ignoring case, spaces, '_' and '-'."""
    if attr not in labels:
        raise SuiteError(
            f"unknown attribute {attr!r} in --condition; the encoder has heads for: "
            f"{', '.join(labels)}"
        )
    fix = f"valid names: {', '.join(labels[attr])}"
    return class_ids([name], attr, labels[attr], "--condition", fix, loose=True)[0].item()


def parse_conditions(
    items: Sequence[str], labels: Mapping[str, list[str]], allowed: Sequence[str]
) -> dict[str, int]:
    """`["style=Baroque", "genre=portrait"]` → {attr: class id}, checked against labels.json and
    the attributes the task conditions on (`allowed`)."""
    out: dict[str, int] = {}
    first = next((a for a in allowed if labels.get(a)), None)  # the example: this task's own
    example = f" (e.g. {first}={labels[first][-1]})" if first else ""
    for item in items:
        attr, sep, name = item.partition("=")
        if not sep or not attr.strip() or not name.strip():
            raise SuiteError(f"--condition {item!r} is not ATTR=CLASS{example}")
        attr = attr.strip()
        if attr in labels and attr not in allowed:  # an unknown attribute: class_id lists heads
            raise SuiteError(
                f"--condition {item!r}: the task conditions on {', '.join(allowed)} only; use a "
                f"task that conditions on {attr} (e.g. synthart-multi, wikiart-multi)"
            )
        if attr in out:
            raise SuiteError(f"--condition gives {attr!r} twice")
        out[attr] = class_id(labels, attr, name.strip())
    if not out:
        raise SuiteError(f"--image needs at least one --condition ATTR=CLASS{example}")
    return out


def embed_image(space: SearchSpace, path: Path) -> torch.Tensor:
    """Embed a picture file with the trained encoder and the test transform (1×E)."""
    try:
        with warnings.catch_warnings():
            # PIL only warns between MAX_IMAGE_PIXELS and twice that: refuse those too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as f:
                f.draft("RGB", (4 * MAX_SIDE,) * 2)  # a huge JPEG: decode at a reduced scale
                im = f.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise SuiteError(
            f"{path} is too large to decode (> {Image.MAX_IMAGE_PIXELS} pixels): resize it"
        ) from None
    except (FileNotFoundError, UnidentifiedImageError, OSError) as e:
        raise SuiteError(f"cannot read image {path}: {e}") from None
    x = image_transform(space.config, train=False)(im).unsqueeze(0).to(space.device)
    with torch.no_grad():
        return space.encoder.embed(x)


def rank(space: SearchSpace, z: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosine top-k database rows of each query vector: (scores Q×k, rows Q×k) as numpy."""
    with torch.no_grad():
        scores, idx = cosine_topk(z.detach().to(space.device), space.z, k=min(k, len(space.z)))
    return scores.cpu().numpy(), idx.cpu().numpy()


def search(
    space: SearchSpace,
    z0: torch.Tensor,
    conditions: Mapping[str, int | torch.Tensor],
    lam: float | torch.Tensor,
) -> torch.Tensor:
    """Backward Search of the rows of z0; a condition is one class id for all rows or one per row,
    λ a float or one per row."""
    n = len(z0)
    conds = {
        a: torch.as_tensor(c, dtype=torch.long).expand(n).to(space.device)
        for a, c in conditions.items()
    }
    if isinstance(lam, torch.Tensor):
        lam = lam.to(space.device, z0.dtype)
    return backward_search(space.encoder.heads, z0.to(space.device), conds, lam).z


def student_search(path: Path, space: SearchSpace, z0: torch.Tensor, conds) -> torch.Tensor:
    """The distilled student's answer for z0 under `conds` (D1's file at `path`)."""
    student, _ = load_student(path, space.device)
    with torch.no_grad():
        return student.search(
            z0.to(space.device), {a: c.to(space.device) for a, c in conds.items()}
        )
