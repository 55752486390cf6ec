"""Tiny authors' releases (SPEC §10), written the way their scripts write them.

`AuthorsModel` / `AuthorsStudent` have their module names (ConditionalIRModel's enc_linear_1 …
attr_clssifiers.<attr>.linear_3, Student's fc1 … fc3); the pickles are written with the real
`pickle` module and np.save, as their A1/A2/C1 do: the untrusted input the importer reads.
"""

from __future__ import annotations

import math
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn


class AuthorsModel(nn.Module):
    """Their ConditionalIRModel's shape: a tiny `basemodel`, the reduction and one head per attr."""

    def __init__(self, feature_size: int, e: int, classes: dict[str, int]):
        super().__init__()
        self.basemodel = nn.Sequential(nn.Flatten(), nn.Linear(12, feature_size))
        self.enc_linear_1 = nn.Linear(feature_size, e)
        self.enc_batchnorm_1 = nn.BatchNorm1d(e)
        self.enc_dropout_1 = nn.Dropout(0.1)
        self.enc_linear_2 = nn.Linear(e, e)
        self.enc_batchnorm_2 = nn.BatchNorm1d(e)
        self.attr_clssifiers = nn.ModuleDict()
        for attr, n in classes.items():
            self.attr_clssifiers[attr] = nn.Sequential(
                OrderedDict(
                    [
                        ("linear_1", nn.Linear(e, 256)),
                        ("activation_2", nn.ReLU()),
                        ("batchnorm_2", nn.BatchNorm1d(256)),
                        ("dropout_2", nn.Dropout(0.4)),
                        ("linear_2", nn.Linear(256, 128)),
                        ("activation_3", nn.ReLU()),
                        ("batchnorm_3", nn.BatchNorm1d(128)),
                        ("dropout_3", nn.Dropout(0.4)),
                        ("linear_3", nn.Linear(128, n)),
                    ]
                )
            )
        _randomise_bn(self)

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        """Their `encoder` after the backbone: the tanh embedding z."""
        x = F.relu(self.enc_linear_1(features))
        x = self.enc_dropout_1(self.enc_batchnorm_1(x))
        return torch.tanh(self.enc_batchnorm_2(self.enc_linear_2(x)))


class AuthorsStudent(nn.Module):
    """Their Student: fc1 → sigmoid → bn1 → fc2 → sigmoid → bn2 → fc3 → tanh."""

    def __init__(self, e: int, num_class: int):
        super().__init__()
        self.fc1 = nn.Linear(e + num_class, 128)
        self.bn1 = nn.BatchNorm1d(128)
        self.fc2 = nn.Linear(128, 128)
        self.bn2 = nn.BatchNorm1d(128)
        self.fc3 = nn.Linear(128, e)
        _randomise_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(torch.sigmoid(self.fc1(x)))
        x = self.bn2(torch.sigmoid(self.fc2(x)))
        return torch.tanh(self.fc3(x))


def _randomise_bn(m: nn.Module) -> None:
    """Non-trivial running statistics, so eval-mode comparisons test the BN mapping."""
    g = torch.Generator().manual_seed(3)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm1d):
            n = mod.num_features
            mod.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
            mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            mod.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
            mod.num_batches_tracked.fill_(7)


def _dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _label_map(names: dict[str, list[str]]) -> dict:
    return {
        a: {"num2label": dict(enumerate(v)), "label2num": {n: i for i, n in enumerate(v)}}
        for a, v in names.items()
    }


def save_checkpoint(path: Path, model: AuthorsModel) -> None:
    """Their save_model: model, optimizer and scheduler state dicts."""
    opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-6)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.1)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "model_state_dict": model.state_dict(),
            "optimizer_state_dict": opt.state_dict(),
            "scheduler_state_dict": sched.state_dict(),
        },
        path,
    )


def save_embeddings(
    path: Path, rows: list[dict], attrs: dict[str, dict], e: int, seed: int, id_kind: str
) -> dict[str, list[float]]:
    """Their C1 `evaluation`: np.save of {k: {path, name, <attr>, <attr>_id, feature}}."""
    rng = np.random.default_rng(seed)
    result, feats = {}, {}
    for k, r in enumerate(rows):
        entry = {"path": r["path"], "name": Path(r["path"]).name}
        for a, amap in attrs.items():
            i = r[a]
            entry[a] = amap["num2label"][i]
            entry[f"{a}_id"] = torch.tensor(i) if id_kind == "tensor" else np.int64(i)
        z = torch.tanh(torch.from_numpy(rng.normal(size=e).astype(np.float32)))
        entry["feature"] = z.tolist()
        feats["/".join(r["path"].split("/")[-2:])] = entry["feature"]
        result[k] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, result)
    return feats


def save_student(folder: Path, e: int, num_class: int, seed: int) -> AuthorsStudent:
    """Their D1 saves at epochs 9, 19, …, 49; E1 loads the one ending in 49."""
    torch.manual_seed(seed)
    s = AuthorsStudent(e, num_class)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(AuthorsStudent(e, num_class).state_dict(), folder / "student_model_epoch0009.pth")
    torch.save(s.state_dict(), folder / "student_model_epoch0049.pth")
    return s


def run_folder(ds: str, cat: str, backbone: str, e: int, update: bool) -> str:
    return (
        f"CIR_Model-dataset{ds}-cate{cat}-basemodel{backbone}-encodingsize{e}"
        f"-enc_update{update}-num_epoch30-final"
    )


def write_cub_like(root: Path, e: int = 16) -> dict:
    """A CUB-like release: 4 species × 10 images, stratified 6/4 split, 8 queries, one run."""
    species = [
        "001.Black_footed_Albatross",
        "002.Laysan_Albatross",
        "003.Sooty_Albatross",
        "004.Groove_billed_Ani",
    ]
    attrs = [
        "has_bill_shape::curved",
        "has_wing_color::blue",
        "has_size::small",
        "has_eye_color::red",
    ]
    att = root / "data" / "CUB" / "attributes"
    amap = _label_map({"birds": species})
    _dump(att / "classes.label2num.pkl", amap)
    rng = np.random.default_rng(0)
    tags, rows = {}, {"train": [], "test": []}
    for i, s in enumerate(species):
        for j in range(10):
            key = f"{s}/{s[4:]}_{j:04d}_{i}.jpg"
            present = [a for a in attrs if rng.random() < 0.4] if j % 5 else []  # some: none
            tags[key] = [s, ",".join(present)]
            rows["train" if j < 6 else "test"].append(
                {"path": f"./data/CUB/images/{key}", "birds": i}
            )
    _dump(att / "filename.tag.pkl", tags)
    for split, r in rows.items():
        pd.DataFrame(r, columns=["path", "birds"]).to_csv(
            att / f"preprocessed_CUB_{split}.csv", index=False
        )
    queries = {}
    for k, r in enumerate(rows["test"][::2]):
        key = "/".join(r["path"].split("/")[-2:])
        queries[k] = {
            "candidate": key,
            "candidate_tags": str(tags[key][1]) + "," + key.split("/")[0],
            "condition": {"birds": species[(k * 3 + 1) % 4]},
        }
    _dump(att / "query_birds_CUB_test_random.pkl", queries)
    folder = root / "model" / run_folder("CUB", "birds", "convnext_base", e, True)
    torch.manual_seed(1)
    model = AuthorsModel(24, e, {"birds": 4})
    save_checkpoint(folder / "model_30.pth", model)
    feats = {}
    for split, seed in (("train", 1), ("test", 2)):
        feats |= save_embeddings(
            folder / f"inference_CUB_{split}_embedding_epoch30.npy",
            rows[split],
            {"birds": amap["birds"]},
            e,
            seed,
            "tensor",
        )
    student = save_student(folder / "knowledge_distill_model_lambda0.51_reg0.0", e, 4, 5)
    return {
        "species": species,
        "tags": tags,
        "queries": queries,
        "model": model,
        "student": student,
        "features": feats,
        "folder": folder,
    }


def write_wikiart_like(root: Path) -> dict:
    """A WikiArt-like release: 3 styles × 2 genres × 10, the seed-777 80/20 split, two runs."""
    styles, genres = ["Baroque", "Cubism", "Impressionism"], ["landscape", "portrait"]
    artists = ["other artist", "pablo-picasso", "rembrandt"]
    att = root / "data" / "wikiart" / "attributes"
    amap = _label_map({"artist": artists, "genre": genres, "style": styles})
    _dump(att / "classes.label2num.pkl", amap)
    tags, rows = {}, []
    for si, s in enumerate(styles):
        for gi, g in enumerate(genres):
            for j in range(10):
                key = f"{s}/{artists[j % 3]}_painting-{si}{gi}{j}.jpg"
                media = "oil,canvas" if j % 2 else float("nan")  # NaN as pandas reads empty cells
                tag = (
                    "banana,,,Still Life"
                    if j % 3 == 0
                    else ("Sky, Tree" if j % 3 == 1 else math.nan)
                )
                tags[key] = [g.replace("-", " "), s, media, tag]
                rows.append(
                    {
                        "path": f"./data/wikiart/images/{key}",
                        "artist": j % 3,
                        "genre": gi,
                        "style": si,
                    }
                )
    _dump(att / "filename.tag.pkl", tags)
    perm = np.random.RandomState(777).permutation(len(rows))
    thr = int(len(rows) * 0.8)
    split_rows = {"train": [rows[i] for i in perm[:thr]], "test": [rows[i] for i in perm[thr:]]}
    for split, r in split_rows.items():
        pd.DataFrame(r, columns=["path", "artist", "genre", "style"]).to_csv(
            att / f"preprocessed_wikiart_{split}.csv", index=False
        )
    queries = {}
    for attrs in (["style"], ["style", "genre"]):
        q = {}
        for k, r in enumerate(split_rows["test"][:8]):
            key = "/".join(r["path"].split("/")[-2:])
            cond = {"style": styles[(k + 1) % 3]}
            if "genre" in attrs:
                cond["genre"] = genres[k % 2]
            q[k] = {"candidate": key, "candidate_tags": "x,y", "condition": cond}
        queries["-".join(attrs)] = q
        _dump(att / f"query_{'-'.join(attrs)}_wikiart_test_random.pkl", q)
    runs = {}
    for backbone, e, update in (("vit_b", 8, False), ("resnet50", 16, True)):
        folder = (
            root
            / "weights_archive"
            / "model"
            / run_folder("wikiart", "stylegenre", backbone, e, update)
        )
        torch.manual_seed(e)
        model = AuthorsModel(20, e, {"genre": 2, "style": 3})
        save_checkpoint(folder / "model_30.pth", model)
        sub = {"genre": amap["genre"], "style": amap["style"]}
        for split, seed in (("train", 3), ("test", 4)):
            save_embeddings(
                folder / f"inference_wikiart_{split}_embedding_epoch30.npy",
                split_rows[split],
                sub,
                e,
                seed,
                "tensor",
            )
        students = {
            "wikiart-style": save_student(
                folder / "knowledge_distill_model_lambda1.1_reg0.0", e, 3, 6
            ),
            "wikiart-multi": save_student(
                folder / "knowledge_distill_model_lambda3.2_reg0.0_cond2", e, 5, 7
            ),
        }
        runs[(backbone, e)] = {"model": model, "students": students, "folder": folder}
    return {"tags": tags, "queries": queries, "runs": runs, "split_rows": split_rows}
