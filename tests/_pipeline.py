"""A tiny, honest end-to-end fixture: the artifacts of A1 → A2 → B1 → C1, made by hand in seconds.

`build_pipeline(root, dataset)` writes, under root/{data,weights}, what the stages would write
(contracts 1–4): a processed dataset of small PNGs with two label attributes (style, genre), tags,
query files for the dataset's tasks, an encoder.pt whose HEADS were trained (on the embeddings) to
high accuracy, and an embeddings.npz. The embedding space is well separated and built so that
kNN keeps the query's context (genre and "scene" tags) but not the conditioned style, while
the heads let Backward Search reach any style: the situation the paper's tables measure.
Only the heads are trained; the backbone in encoder.pt is an untrained convnext_atto (E1 never
runs it; E2 can still embed a picture with it).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from src.artifacts import queries_path, run_dir, save_npz, save_torch, write_csv, write_json
from src.method.encoder import build_encoder, encoder_config
from src.partitions import LEGACY, Partitions, Plan, open_partitions, write_set
from src.tasks import get_dataset, tasks_of

STYLES = ["flat", "dots", "hatch", "mosaic"]
GENRES = ["portrait", "landscape", "still_life"]
SCENES = 6  # a latent context each image has; shows in its tags and in its embedding
STYLE_DIMS = 8
STYLE_CODES = np.random.default_rng(5).choice([-1.0, 1.0], (len(STYLES), STYLE_DIMS))
EMBEDDING_SIZE = STYLE_DIMS + len(GENRES) + SCENES + 1
RUN = "tiny_e18"


@dataclass
class Pipeline:
    """Roots and names of a built fixture."""

    root: Path
    data_root: Path
    weights_root: Path
    results_root: Path
    dataset: str
    run: str

    def argv(self, *extra: str) -> list[str]:
        """Common E1/E2 arguments pointing at this fixture."""
        return [
            "--data-root",
            str(self.data_root),
            "--weights-root",
            str(self.weights_root),
            "--results-root",
            str(self.results_root),
            "--run",
            self.run,
            *extra,
        ]


def as_partitions(pipe: Pipeline, partition_rows: int) -> Partitions:
    """The run's embeddings.npz rewritten as C1's partitions (the .npz removed, as C1 does)."""
    wdir = pipe.weights_root / pipe.run
    with np.load(wdir / LEGACY) as f:
        arrays = {k: f[k] for k in f.files}
    n = len(arrays["z"])
    write_set(wdir, lambda a, b: {k: v[a:b] for k, v in arrays.items()}, Plan(n, partition_rows))
    assert not (wdir / LEGACY).exists()
    return open_partitions(wdir)


def _split_table(rng: np.random.Generator, n_per_pair: int, split: str) -> pd.DataFrame:
    rows = []
    for s, style in enumerate(STYLES):
        for g, genre in enumerate(GENRES):
            for k in range(n_per_pair):
                scene = int(rng.integers(SCENES))
                extra = [f"tone{int(rng.integers(3))}", f"count{int(rng.integers(2))}"]
                rows.append(
                    {
                        "image": f"images/{split}/{s}_{g}_{k}.png",
                        "style": style,
                        "genre": genre,
                        "tags": "|".join([genre, f"scene{scene}", f"sky{scene % 3}", *extra]),
                        "_s": s,
                        "_g": g,
                        "_scene": scene,
                    }
                )
    return pd.DataFrame(rows)


def _embed(df: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    """z = tanh(style code | genre | scene + noise): kNN follows genre and scene, not style."""
    n = len(df)
    z = rng.normal(0.0, 0.1, (n, EMBEDDING_SIZE))
    z[:, :STYLE_DIMS] += 0.5 * STYLE_CODES[df["_s"].to_numpy()]  # weak, spread over 8 dims
    z[np.arange(n), STYLE_DIMS + df["_g"].to_numpy()] += 2.0
    z[np.arange(n), STYLE_DIMS + len(GENRES) + df["_scene"].to_numpy()] += 2.0
    return np.tanh(z).astype(np.float32)


def _train_heads(encoder, z: np.ndarray, targets: dict[str, np.ndarray], steps: int = 300) -> None:
    """Fit the heads (only) on the embeddings, as B1 would have; a few hundred Adam steps."""
    torch.manual_seed(0)
    params = [p for h in encoder.heads.values() for p in h.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)
    x = torch.from_numpy(z)
    ys = {a: torch.tensor(y) for a, y in targets.items()}
    encoder.heads.train()
    for _ in range(steps):
        loss = sum(torch.nn.functional.cross_entropy(h(x), ys[a]) for a, h in encoder.heads.items())
        opt.zero_grad()
        loss.backward()
        opt.step()
    encoder.eval()


def _queries(test: pd.DataFrame, task_conditions: tuple[str, ...], n: int, seed: int):
    """Queries from the test split; every condition differs from the query's own class."""
    rng = np.random.default_rng(seed)
    vocab = {"style": STYLES, "genre": GENRES}
    picks = rng.choice(len(test), size=n, replace=False)
    rows = []
    for qid, i in enumerate(picks):
        r = test.iloc[i]
        row = {"query_id": qid, "image": r["image"]}
        for a in task_conditions:
            own = vocab[a].index(r[a])
            row[a] = vocab[a][(own + 1 + int(rng.integers(len(vocab[a]) - 1))) % len(vocab[a])]
        row["tags"] = r["tags"]
        rows.append(row)
    return pd.DataFrame(rows)


def build_pipeline(
    root: Path, dataset: str = "synthart", n_per_pair: int = 8, n_queries: int = 40
) -> Pipeline:
    """Write data/, weights/ of a tiny pipeline under `root` for a (style, genre) dataset."""
    spec = get_dataset(dataset)
    assert spec.attributes == ("style", "genre"), "the fixture models style + genre datasets"
    rng = np.random.default_rng(0)
    data = root / "data" / dataset
    labels = {"style": STYLES, "genre": GENRES}
    tables = {s: _split_table(rng, n_per_pair, s) for s in ("train", "test")}
    colours = rng.integers(0, 256, (len(STYLES), len(GENRES), 3), dtype=np.uint8)
    for df in tables.values():
        for img, s, g in zip(df["image"], df["_s"], df["_g"], strict=True):
            p = data / img
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.broadcast_to(colours[s, g], (8, 8, 3)).copy()).save(p)
    for split, df in tables.items():
        write_csv(data / f"{split}.csv", df[["image", "style", "genre", "tags"]])
    write_json(data / "labels.json", labels)
    for task in tasks_of(dataset):
        write_csv(
            queries_path(root / "data", dataset, task.name),
            _queries(tables["test"], task.conditions, n_queries, seed=len(task.conditions)),
        )

    zs = {s: _embed(df, rng) for s, df in tables.items()}
    config = encoder_config(dataset, "convnext_atto", EMBEDDING_SIZE, False, labels, 32, False)
    encoder = build_encoder(config)
    _train_heads(
        encoder,
        zs["train"],
        {"style": tables["train"]["_s"].to_numpy(), "genre": tables["train"]["_g"].to_numpy()},
    )
    wdir = run_dir(root / "weights", RUN)
    save_torch(wdir / "encoder.pt", {"config": config, "model": encoder.state_dict()})
    both = pd.concat([tables["train"], tables["test"]], ignore_index=True)
    z = np.concatenate([zs["train"], zs["test"]])
    save_npz(
        wdir / "embeddings.npz",
        image=both["image"].to_numpy(dtype=str),
        split=np.array(["train"] * len(tables["train"]) + ["test"] * len(tables["test"])),
        label_style=both["_s"].to_numpy(dtype=np.int64),
        label_genre=both["_g"].to_numpy(dtype=np.int64),
        z=z,
    )
    test_s, test_g = tables["test"]["_s"].to_numpy(), tables["test"]["_g"].to_numpy()
    with torch.no_grad():
        xt = torch.from_numpy(zs["test"])
        acc = {
            a: float((encoder.heads[a](xt).argmax(1).numpy() == ids).mean())
            for a, ids in (("style", test_s), ("genre", test_g))
        }
    write_json(wdir / "metrics.json", {"test_accuracy": acc})
    return pipeline_at(root, dataset, RUN)


def pipeline_at(root: Path, dataset: str = "synthart", run: str = RUN) -> Pipeline:
    """The pipeline whose roots lie under `root` (data/, weights/, results/)."""
    return Pipeline(root, root / "data", root / "weights", root / "results", dataset, run)


def copy_pipeline(template: Path, root: Path, run: str = RUN) -> Pipeline:
    """A copy of a built pipeline at `root`: tests change their copy, never the template."""
    shutil.copytree(template, root)
    return pipeline_at(root, "synthart", run)
