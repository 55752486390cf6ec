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
from src.tables import TITLES, fmt_cell, md_table
from src.tasks import AUTHORS_TRAINING, Task, get_dataset, tasks_of

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


def metrics_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """One row per method of metrics.json: the paper's mAP@10, true mAP@10, mTS@10, context, cost."""
    methods = metrics.get("methods", {})
    order = [m for m in METHODS if m in methods] + [m for m in methods if m not in METHODS]
    context_attrs = sorted(
        {a for m in methods.values() for a in (m.get("context_preservation") or {})}
    )
    rows = []
    for name in order:
        m = methods[name]
        it, sd = m.get("iterations_mean"), m.get("iterations_sd")
        row = {
            "method": METHOD_NAMES.get(name, name),
            "λ": _lam(m.get("lambda")),
            "paper mAP@10 (precision@10)": m.get("paper_map@10"),
            "mAP@10 (true AP)": m.get("map@10"),
            "mTS@10": m.get("mts@10"),
        }
        for a in context_attrs:
            row[f"keeps query's {a}"] = (m.get("context_preservation") or {}).get(a)
        row["iterations (mean ± sd)"] = f"{it:.2f} ± {sd:.2f}" if it is not None else "—"
        ms = m.get("ms_per_query")
        row["ms / query"] = f"{ms:.3g}" if ms is not None else "—"
        rows.append(row)
    return pd.DataFrame(rows)


def _config_line(name: str, cfg: Any) -> str:
    if not isinstance(cfg, dict):
        return f"- {name}: no config.json found"
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


def not_comparable(task: Task, data_cfg: Any, enc_cfg: Any, metrics: Any) -> list[str]:
    """Plain statements of what in this task's numbers cannot be set beside the paper's."""
    notes = []
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
    recipe = training_settings(enc_cfg)
    if task.paper_column is not None and recipe:
        paper = {
            k: getattr(AUTHORS_TRAINING, k)
            for k in ("backbone", "embedding_size", "epochs", "pretrained")
        }
        diff = [
            f"{k} {recipe[k]} (paper: {v})"
            for k, v in paper.items()
            if k in recipe and recipe[k] != v
        ]
        if recipe.get("frozen"):
            diff.append("backbone frozen (paper's main setting: fine-tuned)")
        if diff:
            notes.append(
                "The encoder differs from the paper's main setting: " + "; ".join(diff) + "."
            )
    if isinstance(metrics, dict):
        if metrics.get("exclude_query"):
            notes.append(
                "The query image was left out of the database (--exclude-query); the authors kept it, "
                "so it could retrieve itself."
            )
        bs = metrics.get("methods", {}).get("backward_search", {})
        if bs.get("ms_per_query") is not None:
            notes.append(
                f"Times per query are this machine's (batched search), not the paper's {TABLE5_DEVICE} "
                "one query at a time: compare orders of magnitude only."
            )
    if task.paper_column is not None:
        notes.append(
            "The 1,000 queries follow the paper's protocol (SPEC §3) but not the authors' random "
            "streams, so they are not the same query pairs."
        )
    return notes


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


def task_section(base: Path, task: Task, data_cfg: Any, enc_cfg: Any) -> list[str]:
    """The markdown of one task: summary, E1's tables, sweep, calibration, figures, caveats."""
    tdir = base / task.name
    metrics = read_json_or_none(tdir / "metrics.json")
    out = [f"## Task `{task.name}`", ""]
    out.append(
        f"Conditions: {', '.join(task.conditions)} · paper column: {task.paper_column or 'none (SynthArt)'}"
    )
    if isinstance(metrics, dict):
        out[-1] += (
            f" · λ = {_lam(metrics.get('lambda'))} · {metrics.get('n_queries', '?')} queries · "
            f"database {metrics.get('database_size', '?')} images · query image "
            f"{'excluded from' if metrics.get('exclude_query') else 'kept in'} the database"
        )
        out += ["", "### Our numbers (metrics.json)", "", md_table(metrics_table(metrics))]
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
            heading = title.format(target=TABLE3_TARGET_MTS)
            out += [body, ""] if body.startswith("#") else [f"### {heading}", "", body, ""]
    sweep = tdir / "sweep.csv"
    if sweep.exists():
        out += ["### λ sweep (sweep.csv; plotted in Fig 6)", "", md_table(pd.read_csv(sweep)), ""]
    cal = read_json_or_none(tdir / "calibration.json")
    if isinstance(cal, dict):
        out += [
            "### λ calibration (Table 3 protocol)",
            "",
            f"Target mTS@10 {fmt_cell(cal.get('target_mts'))}: λ = {_lam(cal.get('lambda'))} gives "
            f"mTS@10 {fmt_cell(cal.get('mts@10'))} and paper mAP@10 {fmt_cell(cal.get('paper_map@10'))} "
            f"({len(cal.get('steps', []))} bisection steps).",
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
        out += task_section(base, task, data_cfg, enc_cfg)
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
