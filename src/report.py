"""results/<run>/REPORT.md: every table E1 wrote, the figures, the settings and what cannot be compared.

Built only from the artifacts on disk (metrics.json, table*.md, sweep.csv, calibration.json,
figures/*.png and the config.json files of every stage), so it can be regenerated at any time and
never claims more than the files hold.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from src.artifacts import dataset_dir, queries_path, results_dir, run_dir, write_text
from src.evaluation import METHODS
from src.hints import hint
from src.paper import METHOD_NAMES, TABLE3_TARGET_MTS, TABLE5_DEVICE
from src.quirks import protocol_label
from src.setting import mark_deltas, setting_banner, setting_differences
from src.tables import RANDOM_BY_NATURE, RELEASE, TITLES, fmt_cell, md_table
from src.tasks import AUTHORS_TRAINING, Task, get_dataset, tasks_of

NOT_RECORDED = "not recorded"

FIGURE_CAPTIONS = (  # file-name prefix → caption (in this order in the report)
    (
        "results_",
        "Ranked results (paper Figs 1/7/8/9); green frame = carries every condition label",
    ),
    ("fig5_", "λ rows beside a t-SNE of the two classes (paper Fig 5)"),
    ("search_", "Searching an outside picture (`E2_visualize.py --image`)"),
)
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
)
RUN_FIGURES = (
    ("fig6_lambda.png", "mAP@10 and mTS@10 against λ (paper Fig 6)"),
    ("training_curves.png", "B1 training curves (weights/<run>/train_log.csv)"),
)


def read_json_or_none(path: Path) -> Any:
    """A JSON file's content, or None when it is missing or unreadable (the report says so)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _lam(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) else "—"


def _mean_sd(m: Mapping[str, Any], prefix: str) -> str:
    it, sd = m.get(f"{prefix}iterations_mean"), m.get(f"{prefix}iterations_sd")
    return f"{it:.2f} ± {sd or 0.0:.2f}" if it is not None else "—"


def metrics_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """One row per method of metrics.json: the paper's mAP@10, true mAP@10, mTS@10, context, cost.

    On imported data the random row says it cannot match (the authors' random search is unseeded).
    """
    methods = metrics.get("methods", {})
    release = metrics.get("source") == RELEASE
    order = [m for m in METHODS if m in methods] + [m for m in methods if m not in METHODS]
    context_attrs = sorted(
        {a for m in methods.values() for a in (m.get("context_preservation") or {})}
    )
    rows = []
    for name in order:
        m = methods[name]
        shown = METHOD_NAMES.get(name, name)
        row = {
            "method": f"{shown} ({RANDOM_BY_NATURE})" if release and name == "random" else shown,
            "λ": _lam(m.get("lambda")),
            "paper mAP@10 (precision@10)": m.get("paper_map@10"),
            "mAP@10 (true AP)": m.get("map@10"),
            "mTS@10": m.get("mts@10"),
        }
        for a in context_attrs:
            row[f"keeps query's {a}"] = (m.get("context_preservation") or {}).get(a)
        row["iterations, batched rule (mean ± sd)"] = _mean_sd(m, "")
        if any(x.get("single_iterations_mean") is not None for x in methods.values()):
            row["iterations, single-query rule (mean ± sd)"] = _mean_sd(m, "single_")
        ms = m.get("ms_per_query")
        row["ms / query"] = f"{ms:.3g}" if ms is not None else "—"
        rows.append(row)
    return pd.DataFrame(rows)


def _config_line(name: str, cfg: Any) -> str:
    if not isinstance(cfg, dict):
        return f"- {name}: no config.json found"
    if cfg.get("source") == RELEASE and "command" not in cfg:
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


def _is_release(cfg: Any) -> bool:
    return isinstance(cfg, dict) and cfg.get("source") == RELEASE


def _encoder_differences(task: Task, enc_cfg: Any) -> list[str]:
    """The encoder settings of this run that differ from the paper's main setting."""
    recipe = training_settings(enc_cfg)
    if task.paper_column is None or not recipe:
        return []
    # an imported encoder IS the authors' trained one: only its configuration can differ
    keys = (
        ("backbone", "embedding_size")
        if _is_release(enc_cfg)
        else ("backbone", "embedding_size", "epochs", "pretrained")
    )
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
    release = _is_release(data_cfg)
    if task.paper_column is None:
        notes.append(
            f"{task.name} runs on SynthArt, the suite's embedded procedural dataset. Its numbers show "
            "that the method and the pipeline work end to end; they cannot be compared with any "
            "column of the paper (the paper columns of the tables say n/a)."
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
    diff = _encoder_differences(task, enc_cfg)
    if diff and _is_release(enc_cfg):
        notes.append(
            "This is the authors' own trained encoder, but not the configuration of the paper's "
            "main tables (2, 4–6): "
            + "; ".join(diff)
            + "; compare with Table 3 where the paper has a row for it."
        )
    elif diff:
        notes.append("The encoder differs from the paper's main setting: " + "; ".join(diff) + ".")
    metrics = metrics if isinstance(metrics, dict) else {}
    if metrics.get("exclude_query"):
        notes.append(
            "The query image was left out of the database (--exclude-query); the authors kept it, "
            "so it could retrieve itself."
        )
    methods = metrics.get("methods", {})
    if methods.get("backward_search", {}).get("ms_per_query") is not None:
        notes.append(
            f"Times per query are this machine's (batched search), not the paper's {TABLE5_DEVICE} "
            "one query at a time: compare orders of magnitude only."
        )
    if release and "random" in methods:
        notes.append(
            f'Random search rows are marked "{RANDOM_BY_NATURE}": no run can match its numbers.'
        )
    if release and metrics and "student" not in methods:
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
    if _is_release(data_cfg):
        kept = "; ".join(data_cfg.get("notes") or [])
        out.append(
            f"- A1 data: imported from the authors' release `{data_cfg.get('release', '?')}`: "
            f"their split files, tags rebuilt as their code builds them; quirks added on import: "
            f"{_quirks(data_cfg)}" + (f" ({kept})" if kept else "")
        )
    else:
        out.append(f"- A1 data: quirks: {_quirks(data_cfg)}; split: {_get(data_cfg, 'split')}")
    if _is_release(enc_cfg):
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
    lam_text = f"λ = {_lam(lam)} ({e1.get('lambda_source', NOT_RECORDED)})"
    student = metrics.get("student_file") if isinstance(metrics, dict) else None
    out.append(
        f"- E1: mTS@10 {_quirks(e1 if 'quirks' in e1 else metrics)}; --exclude-query: "
        f"{NOT_RECORDED if exclude is None else ('yes' if exclude else 'no')}; {lam_text}; "
        f"student: {f'`{student}`' if student else 'none'}"
    )
    return [*out, ""]


def _student_line(data_cfg: Any, run_metrics: Any) -> str:
    """What the student of Table 6 learnt from: C1's train-split embeddings, or the authors' own."""
    if _is_release(data_cfg):
        return "The student is the authors' own (their released student, converted)."
    return (
        "The student (D1) was distilled on C1's train-split embeddings made with the "
        f"{_get(run_metrics, 'train_transform')} transform (augmentation seed "
        f"{_get(run_metrics, 'augmentation_seed')})."
    )


def _source_line(base: Path, path: Path, e1_cfg: Any) -> str:
    """Which artifact a table comes from and the E1 command that wrote it."""
    cmd = e1_cfg.get("command") if isinstance(e1_cfg, dict) else None
    by = f", written by `{cmd}`" if cmd else ""
    return f"Source: `{path.relative_to(base.parent).as_posix()}`{by}."


def _figures(base: Path, folder: Path) -> list[str]:
    """Markdown image links (relative to `base`) for the PNGs in `folder`, in the report's order."""
    if not folder.is_dir():
        return []
    pngs = sorted(p for p in folder.glob("*.png"))
    out = []
    for prefix, caption in FIGURE_CAPTIONS:
        for p in pngs:
            if p.name.startswith(prefix):
                out += [
                    f"**{caption}** — `{p.name}`",
                    "",
                    f"![{p.stem}]({p.relative_to(base).as_posix()})",
                    "",
                ]
    for p in pngs:
        if not any(p.name.startswith(prefix) for prefix, _ in FIGURE_CAPTIONS):
            out += [f"![{p.stem}]({p.relative_to(base).as_posix()})", ""]
    return out


def task_section(
    base: Path, task: Task, data_cfg: Any, enc_cfg: Any, run_metrics: Any = None
) -> list[str]:
    """The markdown of one task: protocol, summary, E1's tables, sweep, calibration, figures, caveats."""
    tdir = base / task.name
    metrics = read_json_or_none(tdir / "metrics.json")
    e1_cfg = read_json_or_none(tdir / "config.json")
    out = [f"## Task `{task.name}`", ""]
    differs = setting_differences(task, data_cfg, enc_cfg, metrics)  # not the paper's: banner, †
    out += setting_banner(differs)
    if _is_release(data_cfg):
        out += [
            "**Computed by our E1 from the authors' released artifacts**: their encoder heads, "
            "embeddings, queries and students, imported without images or retraining; the "
            "paper's values sit beside ours with Δ.",
            "",
        ]
    out.append(
        f"Conditions: {', '.join(task.conditions)} · paper column: {task.paper_column or 'none (SynthArt)'}"
    )
    if isinstance(metrics, dict):
        out[-1] += (
            f" · λ = {_lam(metrics.get('lambda'))} · {metrics.get('n_queries', '?')} queries · "
            f"database {metrics.get('database_size', '?')} images · query image "
            f"{'excluded from' if metrics.get('exclude_query') else 'kept in'} the database"
        )
        out += ["", *protocol_block(data_cfg, enc_cfg, run_metrics, e1_cfg, metrics)]
        out += ["### Our numbers (metrics.json)", "", md_table(metrics_table(metrics)), ""]
        out.append(_source_line(base, tdir / "metrics.json", e1_cfg))
        rs = metrics.get("retrieved_similarity")
        if rs is not None:
            out += ["", f"Retrieved similarity, teacher vs student (Table 6): {rs:.3f}"]
    else:
        out += ["", f"No metrics.json: run `{hint('E1', '--task', task.name)}` first."]
    out.append("")
    for stem, title in TITLES.items():
        md = tdir / f"{stem}.md"
        if md.exists():
            body = md.read_text(encoding="utf-8").strip()
            body = mark_deltas(body) if differs else body
            heading = title.format(target=TABLE3_TARGET_MTS)
            out += [body, ""] if body.startswith("#") else [f"### {heading}", "", body, ""]
            if stem == "table6":
                out += [_student_line(data_cfg, run_metrics), ""]
            out += [_source_line(base, md, e1_cfg), ""]
    sweep = tdir / "sweep.csv"
    if sweep.exists():
        out += ["### λ sweep (sweep.csv; plotted in Fig 6)", "", md_table(pd.read_csv(sweep)), ""]
        out += [_source_line(base, sweep, e1_cfg), ""]
    cal = read_json_or_none(tdir / "calibration.json")
    if isinstance(cal, dict):
        out += [
            "### λ calibration (Table 3 protocol)",
            "",
            f"Target mTS@10 {fmt_cell(cal.get('target_mts'))}: λ = {_lam(cal.get('lambda'))} gives "
            f"mTS@10 {fmt_cell(cal.get('mts@10'))} and paper mAP@10 {fmt_cell(cal.get('paper_map@10'))} "
            f"({len(cal.get('steps', []))} bisection steps).",
            "",
            _source_line(base, tdir / "calibration.json", e1_cfg),
            "",
        ]
    figs = _figures(base, tdir / "figures")
    if figs:
        out += ["### Figures", "", *figs]
    notes = not_comparable(task, data_cfg, enc_cfg, metrics)
    if notes:
        out += ["### What cannot be compared", "", *[f"- {n}" for n in notes], ""]
    return out


def _versions(configs: Mapping[str, Any]) -> pd.DataFrame:
    rows: dict[str, dict[str, str]] = {}
    for stage, cfg in configs.items():
        if isinstance(cfg, dict):
            for pkg, v in (cfg.get("versions") or {}).items():
                rows.setdefault(pkg, {})[stage] = str(v)
    stages = [s for s, c in configs.items() if isinstance(c, dict) and c.get("versions")]
    return pd.DataFrame([{"package": p, **{s: rows[p].get(s, "—") for s in stages}} for p in rows])


def build_report(
    results_root: str | Path,
    weights_root: str | Path,
    data_root: str | Path,
    run: str,
    dataset: str,
) -> str:
    """The text of results/<run>/REPORT.md for every task of `dataset` that has results."""
    base = results_dir(results_root, run)
    wdir = run_dir(weights_root, run)
    data_cfg = read_json_or_none(dataset_dir(data_root, dataset) / "config.json")
    enc_cfg = read_json_or_none(wdir / "config.json")
    heads = read_json_or_none(wdir / "metrics.json")
    tasks = [t for t in tasks_of(dataset) if (base / t.name).is_dir()]
    out = [
        f"# Backward Search reproduction — run `{run}`",
        "",
        f"Dataset {dataset} ({get_dataset(dataset).description}). Generated "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')} by E2_visualize.py from the artifacts on disk. "
        '"paper mAP@10" is the paper\'s metric, which is precision@10; "mAP@10 (true AP)" is '
        "average precision at 10. Tables show ours beside the paper's values where the paper has a "
        "column for the task.",
        "",
        "Tasks: "
        + (", ".join(f"[{t.name}](#task-{t.name})" for t in tasks) or "none evaluated yet"),
        "",
    ]
    if isinstance(heads, dict) and heads.get("test_accuracy"):
        acc = ", ".join(f"{a} {v:.3f}" for a, v in heads["test_accuracy"].items())
        out += [f"Encoder heads' test accuracy (C1): {acc}.", ""]
    for task in tasks:
        out += task_section(base, task, data_cfg, enc_cfg, heads)
    run_figs = [(n, c) for n, c in RUN_FIGURES if (base / "figures" / n).exists()]
    if run_figs:
        out += ["## Run figures", ""]
        for name, caption in run_figs:
            out += [f"**{caption}**", "", f"![{Path(name).stem}](figures/{name})", ""]
    configs = {"A1 data": data_cfg}
    for t in tasks:
        a2 = queries_path(data_root, dataset, t.name).with_suffix(".json")
        configs[f"A2 {t.name}"] = read_json_or_none(a2)
    configs["B1 encoder"] = enc_cfg
    for t in tasks:
        for d1 in sorted(wdir.glob(f"student_{t.name}_lam*.json")):
            configs[f"D1 {d1.stem}"] = read_json_or_none(d1)
    configs.update(
        {f"E1 {t.name}": read_json_or_none(base / t.name / "config.json") for t in tasks}
    )
    out += ["## Settings, seeds and versions", ""]
    out += [_config_line(name, cfg) for name, cfg in configs.items()]
    recipe = training_settings(enc_cfg)
    keys = [k for k in TRAINING_KEYS if k in recipe]
    if keys:
        out += ["", "Encoder training: " + ", ".join(f"{k} = {recipe[k]}" for k in keys) + "."]
    result = (enc_cfg or {}).get("result") if isinstance(enc_cfg, dict) else None
    if isinstance(result, dict) and result.get("seconds") is not None:
        out += [
            f"B1 took {result['seconds']:.0f} s on {enc_cfg.get('device', '?')} "
            f"({enc_cfg.get('precision', '?')}, {enc_cfg.get('processes', 1)} process(es))."
        ]
    versions = _versions(configs)
    if len(versions):
        out += ["", md_table(versions)]
    out.append("")
    return "\n".join(out)


def write_report(
    results_root: str | Path,
    weights_root: str | Path,
    data_root: str | Path,
    run: str,
    dataset: str,
) -> Path:
    """Write results/<run>/REPORT.md atomically and return its path."""
    path = results_dir(results_root, run) / "REPORT.md"
    write_text(path, build_report(results_root, weights_root, data_root, run, dataset))
    return path
