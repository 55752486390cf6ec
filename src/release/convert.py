"""Turn an authors' release (SPEC §10) into the suite's own artifacts; later stages run unchanged.

data/<dataset>/: labels.json, train.csv, test.csv (their split; tags rebuilt as their code builds
them), queries_<task>.csv (their queries, verbatim and in order), config.json.
weights/<run>/: encoder.pt (their reduction and heads as our Encoder, backbone marked absent),
config.json, embeddings.npz (their inference_*.npy), metrics.json (the heads' test accuracy) and
student_<task>_lam<λ>.pt/.json (their epoch-49 students as our Student).
Nothing is written unless every piece converts: all folders are replaced together at the end.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from src.artifacts import (
    RELEASE_SOURCE,
    dataset_dir,
    run_dir,
    run_name,
    save_npz,
    save_torch,
    versions,
    write_csv,
    write_json,
)
from src.atomic import atomic_dir
from src.datasets.common import Processed, write_processed
from src.datasets.wikiart import image_key
from src.errors import SuiteError
from src.method.encoder import build_encoder, encoder_config
from src.method.student import HIDDEN, Student, student_path
from src.quirks import parse_quirks
from src.release.reader import ATTRIBUTE, AUTHORS_DATASET, THEIRS, Release, ReleaseRun, find_release
from src.release.tables import as_int, read_labels, read_queries, read_split
from src.release.unpickle import load_npy, load_pickle, load_pth
from src.tasks import get_dataset, get_task

log = logging.getLogger(__name__)


# Their module names → ours (SPEC §10 keys → Sequential indices of src/method/encoder.py and
# src/method/student.py).
REDUCTION_KEYS = {
    "enc_linear_1": "0",
    "enc_batchnorm_1": "2",
    "enc_linear_2": "4",
    "enc_batchnorm_2": "5",
}
HEAD_KEYS = {
    "linear_1": "0",
    "batchnorm_2": "2",
    "linear_2": "4",
    "batchnorm_3": "6",
    "linear_3": "8",
}
STUDENT_KEYS = {"fc1": "0", "bn1": "2", "fc2": "3", "bn2": "5", "fc3": "6"}


# ---------------------------------------------------------------------------------------------
# Weights: encoder heads, embeddings, students


def _state_dict(path: Path, key: str | None) -> dict[str, torch.Tensor]:
    obj = load_pth(path)
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            raise SuiteError(
                f"{path} has no {key!r} (expected torch.save of their checkpoint dict)"
            )
        obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SuiteError(f"{path} does not hold a state dict of tensors")
    return dict(obj)


def _rename(
    state: Mapping[str, torch.Tensor], prefix: str, modules: Mapping[str, str], to: str, where: Path
) -> dict[str, torch.Tensor]:
    """`<prefix><theirs>.<param>` → `<to><ours>.<param>` for every module of `modules`."""
    out = {}
    for theirs, ours in modules.items():
        params = {
            k[len(prefix + theirs) + 1 :]: v
            for k, v in state.items()
            if k.startswith(f"{prefix}{theirs}.")
        }
        if not params:
            raise SuiteError(f"{where}: no {prefix}{theirs}.* weights (SPEC §10 key names)")
        out |= {f"{to}{ours}.{p}": v.detach().clone() for p, v in params.items()}
    return out


def convert_encoder(
    run: ReleaseRun, release: Release, labels: Mapping[str, list[str]]
) -> tuple[dict, dict, list[str]]:
    """(our encoder config, our state dict, notes) from their model_<N>.pth (no backbone)."""
    state = _state_dict(run.checkpoint, "model_state_dict")
    path = run.checkpoint
    if "enc_linear_1.weight" not in state:
        raise SuiteError(f"{path}: no enc_linear_1.weight; not a ConditionalIRModel checkpoint")
    e, feature_size = state["enc_linear_1.weight"].shape
    if e != run.embedding_size:
        raise SuiteError(
            f"{path}: embedding size {e}, but the folder name says {run.embedding_size}"
        )
    heads = sorted({k.split(".")[1] for k in state if k.startswith("attr_clssifiers.")})
    notes = [
        f"head {h!r} dropped (no such label in the suite)" for h in heads if h not in ATTRIBUTE
    ]
    attrs = [a for a in get_dataset(release.dataset).attributes if THEIRS[a] in heads]
    if not attrs:
        raise SuiteError(f"{path}: no classifier head for {', '.join(map(THEIRS.get, labels))}")
    ours = _rename(state, "", REDUCTION_KEYS, "reduction.", path)
    for a in attrs:
        ours |= _rename(state, f"attr_clssifiers.{THEIRS[a]}.", HEAD_KEYS, f"heads.{a}.", path)
        n = ours[f"heads.{a}.8.weight"].shape[0]
        if n != len(labels[a]):
            raise SuiteError(
                f"{path}: the {THEIRS[a]} head has {n} classes, the label map {len(labels[a])}"
            )
    spec = get_dataset(release.dataset)
    config = encoder_config(
        release.dataset,
        run.backbone,
        run.embedding_size,
        run.frozen,
        {a: labels[a] for a in attrs},
        224,
        spec.square_resize,
        feature_size=int(feature_size),
        backbone_absent=True,  # their backbone weights are not converted: E1 needs only z and heads
        pretrained="imagenet",
        source=RELEASE_SOURCE,
        release=str(release.root),
        release_run=run.name,
    )
    model = build_encoder(config)
    try:
        model.load_state_dict(ours)
    except RuntimeError as e:
        raise SuiteError(
            f"{path}: weights do not fit the encoder ({str(e).splitlines()[0][:200]})"
        ) from None
    return config, {k: v for k, v in model.state_dict().items()}, notes


def convert_embeddings(
    run: ReleaseRun, tables: Mapping[str, pd.DataFrame], labels: Mapping[str, list[str]]
) -> dict[str, np.ndarray]:
    """embeddings.npz arrays: train rows then test rows in split order, z from their .npy."""
    parts: dict[str, list] = {"image": [], "split": [], "z": []}
    parts |= {f"label_{a}": [] for a in labels}
    ids = {a: {n: i for i, n in enumerate(names)} for a, names in labels.items()}
    for split, table in tables.items():
        path = run.embeddings[split]
        entries = _entries_by_image(path)
        rows = table.to_dict("records")
        z = [_feature(entries, row, ids, run.embedding_size, path) for row in rows]
        parts["z"].append(np.stack(z) if z else np.zeros((0, run.embedding_size), np.float32))
        parts["image"].append(table["image"].to_numpy(dtype=str))
        parts["split"].append(np.full(len(table), split))
        for a in labels:
            parts[f"label_{a}"].append(table[a].map(ids[a]).to_numpy(dtype=np.int64))
    return {k: np.concatenate(v) for k, v in parts.items()}


def _entries_by_image(path: Path) -> dict[str, dict]:
    """Their inference dict {k: {path, name, <attr>, <attr>_id, feature}} keyed by our image."""
    raw = load_npy(path)
    if not isinstance(raw, dict):
        raise SuiteError(f"{path} does not hold a dict (np.save of their inference results)")
    out = {}
    for k, entry in raw.items():
        if not isinstance(entry, dict) or "path" not in entry or "feature" not in entry:
            raise SuiteError(f"{path}: entry {k!r} lacks 'path' or 'feature'")
        out[f"images/{image_key(entry['path'])}"] = entry
    return out


def _feature(entries: Mapping[str, dict], row: Mapping, ids, e: int, path: Path) -> np.ndarray:
    """One image's z, after checking its labels there agree with the split (same alignment)."""
    image = row["image"]
    entry = entries.get(image)
    if entry is None:
        raise SuiteError(f"{path} has no embedding for {image} (from the split CSVs)")
    for a, index in ids.items():
        theirs = THEIRS[a]
        if theirs in entry and str(entry[theirs]) != row[a]:
            raise SuiteError(f"{path}: {image} is {entry[theirs]!r} there, {row[a]!r} in the split")
        if f"{theirs}_id" in entry and as_int(entry[f"{theirs}_id"], str(path)) != index[row[a]]:
            raise SuiteError(f"{path}: {image} has a {theirs}_id other than the label map's")
    f = np.asarray(entry["feature"], dtype=np.float32).reshape(-1)
    if f.shape != (e,):
        raise SuiteError(f"{path}: {image} has {f.size} features, not {e}")
    return f


@torch.no_grad()
def head_accuracy(
    config: Mapping, state: Mapping, arrays: Mapping[str, np.ndarray]
) -> dict[str, float]:
    """The heads' accuracy on the test embeddings (what C1's metrics.json reports)."""
    model = build_encoder(config)
    model.load_state_dict(state)
    model.eval()
    test = arrays["split"] == "test"
    z = torch.from_numpy(arrays["z"][test])
    return {
        a: float((model.heads[a](z).argmax(1).numpy() == arrays[f"label_{a}"][test]).mean())
        for a in config["attributes"]
    }


def convert_student(
    student, run: ReleaseRun, run_name_: str, enc_config: Mapping
) -> tuple[dict, dict]:
    """(config, state dict) of our Student from their student_model_epoch<N>.pth."""
    task = get_task(student.task)
    state = _state_dict(student.file, None)
    missing = [a for a in task.conditions if a not in enc_config["num_classes"]]
    if missing:
        raise SuiteError(f"{student.file}: the encoder of {run.name} has no head for {missing}")
    n_cls = {a: int(enc_config["num_classes"][a]) for a in task.conditions}
    model = Student(run.embedding_size, n_cls)
    try:
        model.load_state_dict(_rename(state, "", STUDENT_KEYS, "net.", student.file))
    except RuntimeError as e:
        raise SuiteError(
            f"{student.file}: not a Student for E={run.embedding_size} and {task.name} "
            f"({str(e).splitlines()[0][:160]})"
        ) from None
    config = {
        "task": task.name,
        "dataset": task.dataset,
        "run": run_name_,
        "embedding_size": run.embedding_size,
        "conditions": list(task.conditions),
        "num_classes": n_cls,
        "hidden": HIDDEN,
        "lambda": student.lam,
        "epochs": student.epoch,
        "batch_size": 512,
        "lr": 1e-3,
        "student_reg": 0.0,
        "source": RELEASE_SOURCE,
        "release_file": str(student.file),
    }
    return config, {k: v for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# The entry point


def _provenance(release: Release, **extra: Any) -> dict[str, Any]:
    """What every written config.json records: the release it came from, versions, time."""
    return {
        "command": f"import_release({str(release.root)!r}, {release.dataset!r})",
        "source": RELEASE_SOURCE,
        "release": str(release.root),
        **extra,
        "versions": versions(),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def import_release(
    release_dir: str | Path,
    dataset: str,
    data_root: str | Path,
    weights_root: str | Path,
    quirks: Sequence[str] = (),
) -> list[str]:
    """Convert the authors' release of `dataset` into data/<dataset>/ and weights/<run>/ folders.

    Returns the run names written. `quirks` may name A1's `wikiart-tag-cleaning` (their tag
    string cleaning); CUB's tag shift is already in their files and cannot be undone.
    """
    quirks = parse_quirks(",".join(quirks), "A1")
    release = find_release(release_dir, dataset)
    labels = read_labels(release.label_map, dataset)
    tags = load_pickle(release.tags)
    if not isinstance(tags, dict):
        raise SuiteError(f"{release.tags} is not a dict of image → tags")
    tables = {
        s: read_split(p, dataset, labels, tags, quirks, release.tags)
        for s, p in release.splits.items()
    }
    queries = {t: read_queries(p, t, labels, tables["test"]) for t, p in release.queries.items()}
    processed = Processed(labels, tables["train"], tables["test"])
    data_notes = list(release.notes)
    if dataset == "cub":
        data_notes.append(
            "tags and split as the authors' A1 wrote them: the cub-tag-shift quirk is in their "
            "files"
        )

    names = [run_name(dataset, r.backbone, r.embedding_size, r.frozen) for r in release.runs]
    written: list[str] = []
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(atomic_dir(dataset_dir(data_root, dataset)))
        write_processed(out, processed)
        for task, df in queries.items():
            write_csv(out / f"queries_{task}.csv", df)
            write_json(
                out / f"queries_{task}.json",
                _provenance(
                    release, task=task, file=str(release.queries[task]), num_queries=len(df)
                ),
            )
        write_json(
            out / "config.json",
            _provenance(
                release,
                dataset=dataset,
                authors_dataset=AUTHORS_DATASET[dataset],
                files={"label_map": release.label_map, "tags": release.tags, **release.splits},
                counts={s: len(t) for s, t in tables.items()},
                queries={t: len(q) for t, q in queries.items()},
                quirks=list(quirks),
                tag_source="authors' filename.tag.pkl",
                notes=data_notes,
                runs=names,  # the weights/<run> folders of this import (make reproduce-release)
            ),
        )
        for run, name in zip(release.runs, names, strict=True):
            _write_run(
                stack.enter_context(atomic_dir(run_dir(weights_root, name))),
                name,
                run,
                release,
                labels,
                tables,
            )
            written.append(name)
    log.info("imported %s from %s: runs %s", dataset, release.root, ", ".join(written))
    return written


def _write_run(
    rdir: Path,
    name: str,
    run: ReleaseRun,
    release: Release,
    labels: Mapping[str, list[str]],
    tables: Mapping[str, pd.DataFrame],
) -> None:
    """weights/<run>/: encoder.pt, embeddings.npz, config.json, metrics.json and the students."""
    config, state, notes = convert_encoder(run, release, labels)
    arrays = convert_embeddings(run, tables, labels)
    save_torch(rdir / "encoder.pt", {"config": config, "model": state})
    save_npz(rdir / "embeddings.npz", **arrays)
    recipe = {
        "backbone": run.backbone,
        "embedding_size": run.embedding_size,
        "epochs": run.epochs,
        "pretrained": "imagenet",
    }
    write_json(
        rdir / "config.json",
        _provenance(
            release,
            run=name,
            release_run=run.name,
            checkpoint=run.checkpoint,
            recipe=recipe,
            encoder=config,
            notes=notes,
        ),
    )
    counts = {s: int((arrays["split"] == s).sum()) for s in ("train", "test")}
    write_json(
        rdir / "metrics.json",
        {
            "test_accuracy": head_accuracy(config, state, arrays),
            **_provenance(release, run=name, counts=counts, files=run.embeddings),
        },
    )
    for st in run.students:
        cfg, model = convert_student(st, run, name, config)
        path = student_path(rdir, st.task, st.lam)
        save_torch(path, {"config": cfg, "model": model})
        write_json(path.with_suffix(".json"), _provenance(release, **cfg))
    log.info("imported %s → %s (%d students)", run.name, name, len(run.students))
