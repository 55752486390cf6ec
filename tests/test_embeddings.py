"""C1: the embeddings file (keys, dtypes, row order, no pickle), the heads' accuracy, error paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import C1_extract_embeddings as c1
from src.artifacts import save_torch
from src.embeddings import load_embeddings
from src.encoder import build_encoder, encoder_config, image_transform
from src.errors import SuiteError
from src.tasks import default_run
from tests._encoder import GENRES, STYLES, make_tiny_dataset

RUN = default_run("synthart")


@pytest.fixture()
def setup(tmp_path) -> tuple[Path, Path, torch.nn.Module, dict]:
    """A tiny processed dataset and a hand-made encoder.pt (random weights) in the default run."""
    data = tmp_path / "data"
    make_tiny_dataset(data, n_train=10, n_test=7)
    torch.manual_seed(0)
    cfg = encoder_config(
        "synthart", "convnext_atto", 8, False, {"style": STYLES, "genre": GENRES}, 32, False
    )
    model = build_encoder(cfg).eval()
    weights = tmp_path / "weights"
    save_torch(weights / RUN / "encoder.pt", {"config": cfg, "model": model.state_dict()})
    return data, weights, model, cfg


def run_c1(data: Path, weights: Path, *extra: str) -> None:
    c1.main(["--data-root", str(data), "--weights-root", str(weights), "--device", "cpu", *extra])


def test_embeddings_file(setup):
    data, weights, model, cfg = setup
    run_c1(data, weights, "--dataset", "synthart", "--batch-size", "4")
    path = weights / RUN / "embeddings.npz"
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    assert set(arrays) == {"image", "split", "label_style", "label_genre", "z"}
    assert arrays["image"].dtype.kind == "U" and arrays["split"].dtype.kind == "U"
    assert arrays["z"].dtype == np.float32 and arrays["z"].shape == (17, 8)
    assert arrays["label_style"].dtype == np.int64 and arrays["label_genre"].dtype == np.int64
    train = pd.read_csv(data / "synthart" / "train.csv")
    test = pd.read_csv(data / "synthart" / "test.csv")
    both = pd.concat([train, test], ignore_index=True)
    assert arrays["image"].tolist() == both["image"].tolist()  # train rows, then test rows
    assert arrays["split"].tolist() == ["train"] * 10 + ["test"] * 7
    assert arrays["label_style"].tolist() == [STYLES.index(s) for s in both["style"]]
    assert arrays["label_genre"].tolist() == [GENRES.index(g) for g in both["genre"]]
    # z is the eval-mode embedding of the test transform, row by row
    tf = image_transform(cfg, train=False)
    i = 12
    x = tf(Image.open(data / "synthart" / arrays["image"][i]).convert("RGB"))[None]
    with torch.no_grad():
        z = model.embed(x)[0].numpy()
    np.testing.assert_allclose(arrays["z"][i], z, atol=1e-5)
    assert {k: v.tolist() for k, v in load_embeddings(weights / RUN).items()} == {
        k: v.tolist() for k, v in arrays.items()
    }


def test_heads_test_accuracy(setup):
    data, weights, model, cfg = setup
    run_c1(data, weights, "--run", RUN)
    arrays = load_embeddings(weights / RUN)
    test = arrays["split"] == "test"
    z = torch.from_numpy(arrays["z"][test])
    with torch.no_grad():
        expected = {
            a: float((model.heads[a](z).argmax(1).numpy() == arrays[f"label_{a}"][test]).mean())
            for a in ["style", "genre"]
        }
    metrics = json.loads((weights / RUN / "metrics.json").read_text())
    assert metrics["test_accuracy"] == pytest.approx(expected)


def test_c1_before_b1(tmp_path):
    with pytest.raises(SuiteError, match=r"run B1_train_encoder.py --dataset synthart first"):
        run_c1(tmp_path, tmp_path, "--dataset", "synthart")


def test_class_count_mismatch(setup):
    data, weights, _, _ = setup
    labels = json.loads((data / "synthart" / "labels.json").read_text())
    labels["style"].append("purple")
    (data / "synthart" / "labels.json").write_text(json.dumps(labels))
    with pytest.raises(SuiteError, match=r"style head has 3 classes but .*labels.json lists 4"):
        run_c1(data, weights, "--dataset", "synthart")
    assert not (weights / RUN / "embeddings.npz").exists()


def test_wrong_dataset_for_run(setup):
    data, weights, _, _ = setup
    with pytest.raises(SuiteError, match="trained on synthart, not cub"):
        run_c1(data, weights, "--run", RUN, "--dataset", "cub")


def test_load_embeddings_missing(tmp_path):
    with pytest.raises(SuiteError, match=r"run C1_extract_embeddings.py"):
        load_embeddings(tmp_path)
