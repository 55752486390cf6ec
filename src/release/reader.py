"""Find and parse the pieces of an authors' release folder (SPEC §10) for one dataset.

The archive's exact file list is unknown, so every piece is looked for by its name anywhere under
the folder a user gives: run folders `CIR_Model-dataset<DS>-cate<CAT>-basemodel<B>-encodingsize<E>-
enc_update<True|False>-num_epoch<N>-final` (each with model_<N>.pth, the two inference_*.npy files
and optional knowledge_distill_model_* student folders), and the data files of their A1/A2
(classes.label2num.pkl, filename.tag.pkl, preprocessed_<DS>_{train,test}.csv,
query_<attrs>_<DS>_test_random.pkl). Which backbones and sizes exist is discovered, not assumed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from src.errors import SuiteError
from src.tasks import Task, get_dataset, tasks_of

# The authors' dataset names and label attribute names → the suite's (registry names).
AUTHORS_DATASET = {"cub": "CUB", "apy": "APY", "wikiart": "wikiart"}
ATTRIBUTE = {"birds": "species", "category": "category", "style": "style", "genre": "genre"}
THEIRS = {v: k for k, v in ATTRIBUTE.items()}  # our attribute name → theirs
# The authors' backbone names → the suite's (their `vit_b` is torchvision's vit_b_16).
BACKBONE = {"convnext_base": "convnext_base", "resnet50": "resnet50", "vgg16_bn": "vgg16_bn"}
BACKBONE["vit_b"] = "vit_b_16"

RUN_RE = re.compile(
    r"(?P<mname>.+?)-dataset(?P<ds>[^-]+)-cate(?P<cat>[^-]+)-basemodel(?P<backbone>.+?)"
    r"-encodingsize(?P<e>\d+)-enc_update(?P<update>True|False)-num_epoch(?P<epochs>\d+)-final"
)
STUDENT_DIR_RE = re.compile(
    r"knowledge_distill_model_lambda(?P<lam>[0-9.eE+-]+)_reg(?P<reg>[0-9.eE+-]+)(?P<cond2>_cond2)?"
)
STUDENT_FILE_RE = re.compile(r"student_model_epoch(?P<epoch>\d+)\.pth")
CHECKPOINT_RE = re.compile(r"model_(?P<epoch>\d+)\.pth")
QUERY_RE = re.compile(r"query_(?P<attrs>.+)_(?P<ds>[^_]+)_test_random\.pkl")


@dataclass(frozen=True)
class ReleaseStudent:
    """One distilled student: its file, the task it conditions on and the teacher's λ."""

    file: Path
    task: str
    lam: float
    epoch: int


@dataclass(frozen=True)
class ReleaseRun:
    """One of the authors' encoder runs and its files."""

    name: str  # the authors' folder name
    folder: Path
    backbone: str  # the suite's backbone name
    embedding_size: int
    frozen: bool
    epochs: int
    checkpoint: Path
    embeddings: dict[str, Path]  # split → inference_<DS>_<split>_embedding_epoch<N>.npy
    students: tuple[ReleaseStudent, ...] = ()


@dataclass
class Release:
    """Everything found for one dataset: its data files, queries per task, and runs."""

    root: Path
    dataset: str  # the suite's name
    label_map: Path
    tags: Path
    splits: dict[str, Path]
    queries: dict[str, Path]  # task → query pickle
    runs: list[ReleaseRun]
    notes: list[str] = field(default_factory=list)  # what was found but left out, and why


def task_for(dataset: str, attrs: list[str]) -> Task | None:
    """The registry task of `dataset` conditioning on the authors' `attrs` (in their order)."""
    ours = tuple(ATTRIBUTE.get(a, a) for a in attrs)
    return next((t for t in tasks_of(dataset) if t.conditions == ours), None)


def _walk(root: Path) -> tuple[dict[str, list[Path]], list[Path]]:
    """One pass over `root`: release files by name (.pkl/.csv/.npy/.pth) and run folders."""
    files: dict[str, list[Path]] = {}
    runs: list[Path] = []
    for d, dirs, names in os.walk(root):
        dirs.sort()
        for n in dirs:
            if RUN_RE.fullmatch(n):
                runs.append(Path(d) / n)
        for n in names:
            if n.endswith((".pkl", ".csv", ".npy", ".pth")):
                files.setdefault(n, []).append(Path(d) / n)
    return files, runs


def _one(files: dict[str, list[Path]], name: str, ds: str, root: Path, what: str) -> Path:
    """The single file `name` for dataset `ds` (a folder named `ds` above it if several exist)."""
    found = sorted(files.get(name, []))
    if not found:
        raise SuiteError(
            f"{name} ({what}) not found anywhere under {root}; the authors' code writes it to "
            f"data/{ds}/attributes/ (their pre-processed data archive)"
        )
    mine = [p for p in found if ds in p.relative_to(root).parts[:-1]] if len(found) > 1 else found
    if len(mine) == 1:
        return mine[0]
    raise SuiteError(
        f"several {name} files under {root} ({', '.join(map(str, found[:3]))}) and not exactly "
        f"one below a folder named {ds}; keep one per dataset, as in their data/{ds}/attributes/"
    )


def find_release(root: str | Path, dataset: str) -> Release:
    """Discover the release pieces of `dataset` (cub, apy, wikiart) under `root`."""
    root = Path(root)
    spec = get_dataset(dataset)
    if dataset not in AUTHORS_DATASET:
        raise SuiteError(
            f"--dataset {dataset}: the authors' release covers only {', '.join(AUTHORS_DATASET)}"
        )
    if not root.is_dir():
        raise SuiteError(f"release folder {root} not found (unpack the authors' archives there)")
    ds = AUTHORS_DATASET[dataset]
    files, run_dirs = _walk(root)
    label_map = _one(files, "classes.label2num.pkl", ds, root, "label maps")
    tags = _one(files, "filename.tag.pkl", ds, root, "tags")
    splits = {
        s: _one(files, f"preprocessed_{ds}_{s}.csv", ds, root, f"the {s} split")
        for s in ("train", "test")
    }
    notes: list[str] = []
    queries: dict[str, Path] = {}
    for name in sorted(files):
        m = QUERY_RE.fullmatch(name)
        if not m or m["ds"] != ds:
            continue
        task = task_for(dataset, m["attrs"].split("-"))
        if task is None:
            notes.append(f"{name}: no task of the suite conditions on {m['attrs']}; skipped")
            continue
        queries[task.name] = _one(files, name, ds, root, f"the {task.name} queries")
    if not queries:
        raise SuiteError(
            f"no query file query_<attrs>_{ds}_test_random.pkl under {root}; the authors' A2 "
            f"writes them to data/{ds}/attributes/"
        )
    notes += [
        f"no query file for {t.name}: its E1 needs queries (e.g. from A2_make_queries.py)"
        for t in tasks_of(dataset)
        if t.name not in queries
    ]
    runs = [find_run(d, m) for d in run_dirs if (m := RUN_RE.fullmatch(d.name)) and m["ds"] == ds]
    if not runs:
        raise SuiteError(
            f"no run folder CIR_Model-dataset{ds}-cate…-final under {root}; it comes from the "
            "authors' weights archive (their model/ folder)"
        )
    seen: dict[tuple, Path] = {}
    for r in runs:
        key = (r.backbone, r.embedding_size, r.frozen)
        if key in seen:
            raise SuiteError(
                f"two runs of {spec.name} {r.backbone} E{r.embedding_size}: {seen[key]} and "
                f"{r.folder}; keep one of them"
            )
        seen[key] = r.folder
        notes += [f"{r.name}: {n}" for n in _student_notes(r.folder)]
    return Release(root, dataset, label_map, tags, splits, queries, runs, notes)


def find_run(folder: Path, m: re.Match) -> ReleaseRun:
    """A run folder's checkpoint, embeddings and students (missing pieces: one-line errors)."""
    ds, epochs = m["ds"], int(m["epochs"])
    if m["backbone"] not in BACKBONE:
        raise SuiteError(
            f"{folder}: backbone {m['backbone']!r} is not one the suite knows "
            f"({', '.join(BACKBONE)}); move this folder out of the release to skip it"
        )
    checkpoint = folder / f"model_{epochs}.pth"
    if not checkpoint.is_file():
        others = sorted(p for p in folder.glob("model_*.pth") if CHECKPOINT_RE.fullmatch(p.name))
        if len(others) != 1:
            raise SuiteError(
                f"{checkpoint} (the encoder checkpoint) not found in {folder}"
                + (f"; found {', '.join(p.name for p in others)}" if others else "")
            )
        checkpoint = others[0]
    embeddings = {}
    for split in ("train", "test"):
        p = folder / f"inference_{ds}_{split}_embedding_epoch{epochs}.npy"
        if not p.is_file():
            raise SuiteError(f"{p.name} (the {split} embeddings, C1) not found in {folder}")
        embeddings[split] = p
    dataset = {v: k for k, v in AUTHORS_DATASET.items()}[ds]
    students = []
    for d in sorted(folder.iterdir()):
        sm = STUDENT_DIR_RE.fullmatch(d.name)
        if not (d.is_dir() and sm and float(sm["reg"]) == 0.0):
            continue
        found = _student_file(d)
        if found is None:
            continue
        attrs = ["style", "genre"] if sm["cond2"] else None
        task = _student_task(dataset, attrs)
        if task is not None:
            students.append(ReleaseStudent(found[0], task, float(sm["lam"]), found[1]))
    return ReleaseRun(
        name=folder.name,
        folder=folder,
        backbone=BACKBONE[m["backbone"]],
        embedding_size=int(m["e"]),
        frozen=m["update"] == "False",
        epochs=epochs,
        checkpoint=checkpoint,
        embeddings=embeddings,
        students=tuple(students),
    )


def _student_file(d: Path) -> tuple[Path, int] | None:
    """The file their E1 loads (`*49.pth`; the highest epoch if several end in 49)."""
    cands = [
        (int(m["epoch"]), p) for p in d.glob("*49.pth") if (m := STUDENT_FILE_RE.fullmatch(p.name))
    ]
    if not cands:
        return None
    epoch, path = max(cands)
    return path, epoch


def _student_task(dataset: str, attrs: list[str] | None) -> str | None:
    """Single-condition students condition on the dataset's first attribute (their D1)."""
    if attrs is None:
        attrs = [{"cub": "birds", "apy": "category", "wikiart": "style"}[dataset]]
    t = task_for(dataset, attrs)
    return t.name if t else None


def _student_notes(folder: Path) -> list[str]:
    """Student folders that are not imported, and why."""
    out = []
    for d in sorted(folder.iterdir()):
        sm = STUDENT_DIR_RE.fullmatch(d.name)
        if not (d.is_dir() and sm):
            continue
        if float(sm["reg"]) != 0.0:
            out.append(f"{d.name}: student_reg {sm['reg']} (their E1 evaluates reg 0.0); skipped")
        elif _student_file(d) is None:
            out.append(
                f"{d.name}: no student_model_epoch*49.pth (the file their E1 loads); skipped"
            )
    return out
