"""C1: the embeddings file (keys, dtypes, row order, no pickle), the heads' accuracy, the train
split's seeded training transform, error paths."""

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
from src.data import load_split
from src.embeddings import SeededItems, extract_embeddings, item_seed, load_embeddings
from src.errors import SuiteError
from src.method.encoder import build_encoder, encoder_config
from src.tasks import DATASETS, default_run
from src.transforms import image_transform
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
    folder = weights / RUN / "embeddings"  # a small run is one partition
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [p["name"] for p in manifest["partitions"]] == ["part-00000"]
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "part-00000", "plan.json"]
    arrays = {f.stem: np.load(f, allow_pickle=False) for f in (folder / "part-00000").glob("*.npy")}
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
    # SynthArt's default: the train split gets the test transform too (make demo unchanged)
    x = tf(Image.open(data / "synthart" / arrays["image"][3]).convert("RGB"))[None]
    with torch.no_grad():
        np.testing.assert_allclose(arrays["z"][3], model.embed(x)[0].numpy(), atol=1e-5)
    metrics = json.loads((weights / RUN / "metrics.json").read_text())
    assert metrics["train_transform"] == "test" and metrics["augmentation_seed"] is None
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
    assert sorted(p.name for p in (weights / RUN).iterdir()) == ["encoder.pt"]


def test_wrong_dataset_for_run(setup):
    data, weights, _, _ = setup
    with pytest.raises(SuiteError, match="trained on synthart, not cub"):
        run_c1(data, weights, "--run", RUN, "--dataset", "cub")


def test_load_embeddings_missing(tmp_path):
    with pytest.raises(SuiteError, match=r"run C1_extract_embeddings.py"):
        load_embeddings(tmp_path)


# ---------------------------------------------------------------------------------------------
# The train split with the training transform (the authors' C1)


def test_paper_datasets_embed_the_train_split_with_the_training_transform():
    assert {d: DATASETS[d].c1_train_transform for d in ("cub", "apy", "wikiart", "synthart")} == {
        "cub": "train",
        "apy": "train",
        "wikiart": "train",
        "synthart": "test",
    }


def _flips(x: torch.Tensor) -> list[torch.Tensor]:
    return [x, x.flip(-1), x.flip(-2), x.flip(-1).flip(-2)]


def test_train_split_gets_seeded_random_flips(setup):
    data, weights, model, cfg = setup
    run_c1(data, weights, "--dataset", "synthart", "--train-transform", "train", "--seed", "3")
    first = load_embeddings(weights / RUN)
    metrics = json.loads((weights / RUN / "metrics.json").read_text())
    assert metrics["train_transform"] == "train" and metrics["augmentation_seed"] == 3
    assert metrics["args"]["train_transform"] == "train"
    # 32-px images at image size 32: the random crop is the whole image, so each train row is
    # the embedding of one of the four flips (vertical and horizontal, as the authors' transform)
    tf = image_transform(cfg, train=False)
    chosen = []
    for i in range(10):
        x = tf(Image.open(data / "synthart" / first["image"][i]).convert("RGB"))[None]
        with torch.no_grad():
            cands = torch.cat([model.embed(v) for v in _flips(x)]).numpy()
        dist = np.abs(cands - first["z"][i]).max(1)
        assert dist.min() < 1e-5
        chosen.append(int(dist.argmin()))
    assert len(set(chosen)) > 1 and set(chosen) != {0}
    # test rows: the test transform, whatever the train split got
    run_c1(data, weights, "--dataset", "synthart")
    plain = load_embeddings(weights / RUN)
    assert np.array_equal(plain["z"][10:], first["z"][10:])
    assert not np.array_equal(plain["z"][:10], first["z"][:10])
    # same seed → the same arrays (the .npz bytes differ only in zip timestamps); another seed →
    # other draws on the train rows only
    run_c1(data, weights, "--dataset", "synthart", "--train-transform", "train", "--seed", "3")
    again = load_embeddings(weights / RUN)
    assert all(np.array_equal(again[k], first[k]) for k in first)
    run_c1(data, weights, "--dataset", "synthart", "--train-transform", "train", "--seed", "4")
    other = load_embeddings(weights / RUN)
    assert not np.array_equal(other["z"][:10], first["z"][:10])
    assert np.array_equal(other["z"][10:], first["z"][10:])


def test_seeded_items_ignore_batching_workers_and_order(setup):
    data, _, _, cfg = setup
    table = load_split(data, "synthart", "train", cfg, train=True)
    items = SeededItems(table, seed=5)
    state = torch.get_rng_state()
    reverse = [items[i][0] for i in reversed(range(len(items)))][::-1]
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    batched = []
    for workers, batch in ((0, 4), (2, 3)):
        loader = torch.utils.data.DataLoader(items, batch_size=batch, num_workers=workers)
        batched.append(torch.cat([x for x, _ in loader]))
    assert torch.equal(batched[0], torch.stack(reverse))
    assert torch.equal(batched[1], batched[0])
    other = torch.stack([SeededItems(table, seed=6)[i][0] for i in range(len(items))])
    assert not torch.equal(other, batched[0])


def test_seeded_items_draw_torch_manual_seeds_cpu_stream_without_calling_it(setup, monkeypatch):
    """Item i is drawn as after torch.manual_seed(item_seed(seed, i)), which SeededItems does not
    call (it seeds every accelerator's generator too: ~0.3 ms an image)."""
    data, _, _, cfg = setup
    table = load_split(data, "synthart", "train", cfg, train=True)
    want = []
    for i in range(3):
        torch.manual_seed(item_seed(5, i))
        want.append(table[i][0])
    monkeypatch.setattr(torch, "manual_seed", lambda s: pytest.fail("torch.manual_seed called"))
    items = SeededItems(table, seed=5)
    assert all(torch.equal(items[i][0], want[i]) for i in range(3))


def test_unknown_train_transform(setup):
    data, _, model, cfg = setup
    with pytest.raises(SuiteError, match="'flip' is not one of train, test"):
        extract_embeddings(model, cfg, data, torch.device("cpu"), train_transform="flip")


def test_the_cuda_loader_path_on_the_cpu(setup, monkeypatch):
    """C1's CUDA branch (pinned batches, non-blocking copies) gives the same arrays on the CPU."""
    data, _, model, cfg = setup
    seen = []
    real = torch.utils.data.DataLoader

    def spy(*a, **k):
        seen.append(k["pin_memory"])
        return real(*a, **{**k, "pin_memory": False})  # no accelerator here to pin for

    plain, _ = extract_embeddings(model, cfg, data, torch.device("cpu"), 4)
    monkeypatch.setattr(torch.utils.data, "DataLoader", spy)
    pinned, _ = extract_embeddings(model, cfg, data, torch.device("cpu"), 4, pin_memory=True)
    assert seen == [True, True]  # both splits took the CUDA loader branch
    assert set(pinned) == set(plain)
    for k in plain:
        np.testing.assert_array_equal(pinned[k], plain[k])
