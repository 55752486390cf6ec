"""Which protocol produced a task's numbers, and what in them cannot be set beside the paper's.

REPORT.md's per-task Protocol block, its "What cannot be compared" notes and the settings lines,
read from the config.json records of every stage (never from what a stage would do today).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from src.artifacts import is_release
from src.evaluation.registry import BACKWARD_SEARCH, RANDOM, STUDENT
from src.paper import TABLE5_DEVICE
from src.quirks import protocol_label
from src.report.markdown import RANDOM_BY_NATURE
from src.tasks import AUTHORS_TRAINING, Task

NOT_RECORDED = "not recorded"

TRAINING_KEYS = (
    "backbone",
    "pretrained",
    "frozen",
    "embedding_size",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "lr_step",
    "lr_gamma",
    "image_size",
    "random_resized_crop",
    "flips",
    "optimizer",  # these four only when a recipe departs from the authors' (Recipe.as_dict)
    "schedule",
    "warmup_epochs",
    "label_smoothing",
    "mix",
)


def lam_text(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) else "—"


def config_line(name: str, cfg: Any) -> str:
    if not isinstance(cfg, dict):
        return f"- {name}: no config.json found"
    if is_release(cfg) and "command" not in cfg:
        return f"- {name}: imported from the authors' release `{cfg.get('release', '?')}` ({cfg.get('created', '?')})"
    args = cfg.get("args", {})
    seed = args.get("seed", "—")
    device = f", device {cfg['device']}" if cfg.get("device") else ""
    return f"- {name}: `{cfg.get('command', '?')}` (seed {seed}{device}, {cfg.get('created', '?')})"


def training_settings(enc_cfg: Any) -> dict[str, Any]:
    """The encoder's effective training settings from B1's config.json (resolved recipe, else args)."""
    if not isinstance(enc_cfg, dict):
        return {}
    out = {k: v for k, v in (enc_cfg.get("args") or {}).items() if v is not None}
    out.update(enc_cfg.get("recipe") or {})
    enc = enc_cfg.get("encoder") or {}
    if "frozen" in enc:
        out["frozen"] = enc["frozen"]
    return out


def _release_encoder_differences(task: Task, enc_cfg: Any) -> list[str]:
    """How an imported encoder's configuration differs from the paper's main setting (a trained
    encoder's differences are the setting banner's, src/report/setting.py: not repeated here)."""
    recipe = training_settings(enc_cfg)
    if task.paper_column is None or not recipe or not is_release(enc_cfg):
        return []
    keys = ("backbone", "embedding_size")  # an imported encoder IS the authors' trained one
    diff = [
        f"{k} {recipe[k]} (paper: {getattr(AUTHORS_TRAINING, k)})"
        for k in keys
        if k in recipe and recipe[k] != getattr(AUTHORS_TRAINING, k)
    ]
    if recipe.get("frozen"):
        diff.append("backbone frozen (paper's main setting: fine-tuned)")
    return diff


def not_comparable(task: Task, data_cfg: Any, enc_cfg: Any, metrics: Any) -> list[str]:
    """Plain statements of what in this task's numbers cannot be set beside the paper's."""
    notes = []
    release = is_release(data_cfg)
    if task.user:
        notes.append(
            f"The data is your own images ({task.dataset}, A1 --dataset folder): the numbers "
            "measure the method on them; no column of the paper is about this data, so they "
            "cannot be compared with the paper's (the paper columns say n/a)."
        )
    elif task.paper_column is None:
        notes.append(
            "The data is SynthArt, the suite's embedded procedural dataset: its numbers show that "
            "the method and the pipeline work end to end; they cannot be compared with any column "
            "of the paper (the paper columns of the tables say n/a)."
        )
    data_cfg = data_cfg if isinstance(data_cfg, dict) else {}
    if "fallback" in str(data_cfg.get("tag_source", "")):
        notes.append(
            f"The tags are a fallback ({data_cfg['tag_source']}): the authors' attribution table "
            "(wikiart_attributions.csv) was not given to A1, so mTS@10 is far less informative "
            "than the paper's and is not comparable with it."
        )
    if data_cfg.get("warning"):
        notes.append(f"A1 warned: {data_cfg['warning']}.")
    diff = _release_encoder_differences(task, enc_cfg)
    if diff:
        notes.append(
            "This is the authors' own trained encoder, but not the configuration of the paper's "
            "main tables (2, 4–6): "
            + "; ".join(diff)
            + "; compare with Table 3 where the paper has a row for it."
        )
    metrics = metrics if isinstance(metrics, dict) else {}
    if metrics.get("exclude_query"):
        notes.append(
            "The query image was left out of the database (--exclude-query); the authors kept it, "
            "so it could retrieve itself."
        )
    methods = metrics.get("methods", {})
    if methods.get(BACKWARD_SEARCH, {}).get("ms_per_query") is not None:
        notes.append(
            f"Times per query are this machine's (batched search), not the paper's {TABLE5_DEVICE} "
            "one query at a time: compare orders of magnitude only."
        )
    if release and RANDOM in methods:
        notes.append(
            f'Random search rows are marked "{RANDOM_BY_NATURE}": no run can match its numbers.'
        )
    if release and metrics and STUDENT not in methods:
        notes.append(
            "The release has no student for this task at this λ: Table 6's student columns are "
            "empty."
        )
    if release:
        n = metrics.get("n_queries")
        n_text = f"{n:,} " if isinstance(n, int) else ""
        notes.append(
            f"The queries are not a source of difference: these are the authors' own {n_text}"
            "queries (their query pickle, imported as they are)."
        )
    elif task.paper_column is not None:
        notes.append(
            "The 1,000 queries follow the paper's protocol (SPEC §3) but not the authors' random "
            "streams, so they are not the same query pairs."
        )
    return notes


def _quirks(cfg: Any) -> str:
    """A stage's recorded quirks as a protocol label, or 'not recorded'."""
    if isinstance(cfg, dict) and isinstance(cfg.get("quirks"), list):
        return protocol_label(cfg["quirks"])
    return NOT_RECORDED


def _get(cfg: Any, key: str) -> Any:
    v = cfg.get(key) if isinstance(cfg, dict) else None
    return NOT_RECORDED if v is None else v


def protocol_block(
    data_cfg: Any, enc_cfg: Any, run_metrics: Any, e1_cfg: Any, metrics: Any
) -> list[str]:
    """Which protocol produced this task's numbers, stage by stage, from the artifacts' records."""
    out = ["### Protocol", ""]
    if is_release(data_cfg):
        kept = "; ".join(data_cfg.get("notes") or [])
        out.append(
            f"- A1 data: imported from the authors' release `{data_cfg.get('release', '?')}`: "
            f"their split files, tags rebuilt as their code builds them; quirks added on import: "
            f"{_quirks(data_cfg)}" + (f" ({kept})" if kept else "")
        )
    else:
        out.append(f"- A1 data: quirks: {_quirks(data_cfg)}; split: {_get(data_cfg, 'split')}")
    if is_release(enc_cfg):
        out.append(
            f"- B1 encoder: the authors' trained heads (release run "
            f"`{enc_cfg.get('release_run', '?')}`, backbone absent); precision: "
            f"{_get(enc_cfg, 'precision')}; quirks: {_quirks(enc_cfg)}"
        )
        out.append("- C1 embeddings: the authors' own (their inference_*_embedding_epoch*.npy)")
    else:
        out.append(
            f"- B1 encoder: precision: {_get(enc_cfg, 'precision')}; quirks: {_quirks(enc_cfg)}"
        )
        out.append(
            f"- C1 embeddings: train split with the {_get(run_metrics, 'train_transform')} "
            f"transform; augmentation seed: {_get(run_metrics, 'augmentation_seed')}"
        )
    e1 = e1_cfg if isinstance(e1_cfg, dict) else {}
    exclude = (e1.get("args") or {}).get("exclude_query")
    if exclude is None and isinstance(metrics, dict):
        exclude = metrics.get("exclude_query")
    lam = metrics.get("lambda") if isinstance(metrics, dict) else None
    lam_line = f"λ = {lam_text(lam)} ({e1.get('lambda_source', NOT_RECORDED)})"
    student = metrics.get("student_file") if isinstance(metrics, dict) else None
    out.append(
        f"- E1: mTS@10 {_quirks(e1 if 'quirks' in e1 else metrics)}; --exclude-query: "
        f"{NOT_RECORDED if exclude is None else ('yes' if exclude else 'no')}; {lam_line}; "
        f"student: {f'`{student}`' if student else 'none'}"
    )
    return [*out, ""]


def student_line(data_cfg: Any, run_metrics: Any) -> str:
    """What the student of Table 6 learnt from: C1's train-split embeddings, or the authors' own."""
    if is_release(data_cfg):
        return "The student is the authors' own (their released student, converted)."
    return (
        "The student (D1) was distilled on C1's train-split embeddings made with the "
        f"{_get(run_metrics, 'train_transform')} transform (augmentation seed "
        f"{_get(run_metrics, 'augmentation_seed')})."
    )


E1_FILES = (  # what E1 writes that REPORT.md shows, in the report's order
    "metrics.json",
    "table2.md",
    "table3.md",
    "table4.md",
    "table5.md",
    "table6.md",
    "sweep.csv",
    "sweep_alpha.csv",
    "calibration.json",
)


def source_line(base: Path, tdir: Path, e1_cfg: Any) -> str:
    """Which of E1's files a task's numbers come from, and the E1 command that wrote them."""
    cmd = e1_cfg.get("command") if isinstance(e1_cfg, dict) else None
    by = f", written by `{cmd}`" if cmd else ""
    files = ", ".join(f for f in E1_FILES if (tdir / f).is_file()) or "none yet"
    return f"Source: `{tdir.relative_to(base.parent).as_posix()}/`: {files}{by}."
