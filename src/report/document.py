"""results/<run>/REPORT.md: every table E1 wrote, the figures, the settings and what cannot be compared.

Built only from the artifacts on disk (metrics.json, table*.md, sweep.csv, calibration.json,
figures/*.png and the config.json files of every stage), so it can be regenerated at any time and
never claims more than the files hold.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from src.artifacts import (
    RELEASE_SOURCE,
    dataset_dir,
    queries_path,
    read_json_or_none,
    read_metrics,
    results_dir,
    run_dir,
    write_text,
)
from src.hints import hint
from src.paper import METHODS, TABLE3_TARGET_MTS
from src.report import plane
from src.report.markdown import RANDOM_BY_NATURE, TITLES, md_table, method_name, with_ci
from src.report.protocol import (
    TRAINING_KEYS,
    config_line,
    is_release,
    lam_text,
    not_comparable,
    protocol_block,
    source_line,
    student_line,
    training_settings,
)
from src.report.setting import mark_deltas, setting_banner, setting_differences
from src.report.stats import calibration_line, paired_table, plane_lines, seeds_lines
from src.tasks import Task, get_dataset, tasks_of

FIGURE_CAPTIONS = (  # file-name prefix → caption (in this order in the report)
    (
        "results_",
        "Ranked results (paper Figs 1/7/8/9); green frame = carries every condition label",
    ),
    ("fig5_", "λ rows beside a t-SNE of the two classes (paper Fig 5)"),
    ("search_", "Searching an outside picture (`E2_visualize.py --image`)"),
)
RUN_FIGURES = (
    ("fig6_lambda.png", "mAP@10 and mTS@10 against λ (paper Fig 6)"),
    ("training_curves.png", "B1 training curves (weights/<run>/train_log.csv)"),
)


def _mean_sd(m: Mapping[str, Any], prefix: str) -> str:
    it, sd = m.get(f"{prefix}iterations_mean"), m.get(f"{prefix}iterations_sd")
    return f"{it:.2f} ± {sd or 0.0:.2f}" if it is not None else "—"


def metrics_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """One row per method of metrics.json: the paper's mAP@10, true mAP@10, mTS@10, context, cost,
    each metric with its 95 % bootstrap interval when E1 recorded one.

    On imported data the random row says it cannot match (the authors' random search is unseeded).
    """
    methods = metrics.get("methods", {})
    release = metrics.get("source") == RELEASE_SOURCE
    order = [m for m in METHODS if m in methods] + [m for m in methods if m not in METHODS]
    context_attrs = sorted(
        {a for m in methods.values() for a in (m.get("context_preservation") or {})}
    )
    rows = []
    for name in order:
        m = methods[name]
        shown = method_name(name, m)
        ci = m.get("ci") or {}
        row = {
            "method": f"{shown} ({RANDOM_BY_NATURE})" if release and name == "random" else shown,
            "λ": lam_text(m.get("lambda")),
        }
        with_ci(row, "paper mAP@10 (precision@10)", m.get("paper_map@10"), ci.get("paper_map@10"))
        with_ci(row, "mAP@10 (true AP)", m.get("map@10"), ci.get("map@10"))
        with_ci(row, "mTS@10", m.get("mts@10"), ci.get("mts@10"))
        for a in context_attrs:
            value = (m.get("context_preservation") or {}).get(a)
            with_ci(row, f"keeps query's {a}", value, (ci.get("context_preservation") or {}).get(a))
        row["iterations, batched rule (mean ± sd)"] = _mean_sd(m, "")
        if any(x.get("single_iterations_mean") is not None for x in methods.values()):
            row["iterations, single-query rule (mean ± sd)"] = _mean_sd(m, "single_")
        ms = m.get("ms_per_query")
        row["ms / query"] = f"{ms:.3g}" if ms is not None else "—"
        rows.append(row)
    return pd.DataFrame(rows)


def _figures(base: Path, folder: Path) -> list[str]:
    """Markdown image links (relative to `base`) for the PNGs in `folder`, in the report's order."""
    if not folder.is_dir():
        return []
    planes = {name for _, name in plane.FIGURES}  # shown in the trade-off plane section
    pngs = sorted(p for p in folder.glob("*.png") if p.name not in planes)
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
    base: Path, task: Task, data_cfg: Any, enc_cfg: Any, run_metrics: Any, e1_cfg: Any
) -> list[str]:
    """The markdown of one task: protocol, summary, E1's tables, sweep, calibration, figures, caveats.

    The config.json records come from build_report, which reads each once for the whole report.
    """
    tdir = base / task.name
    metrics = read_metrics(tdir / "metrics.json")
    out = [f"## Task `{task.name}`", ""]
    differs = setting_differences(task, data_cfg, enc_cfg, metrics)  # not the paper's: banner, †
    out += setting_banner(differs)
    if is_release(data_cfg):
        out += [
            "**Computed by our E1 from the authors' released artifacts**: their encoder heads, "
            "embeddings, queries and students, imported without images or retraining; the "
            "paper's values sit beside ours with Δ.",
            "",
        ]
    out.append(
        f"Conditions: {', '.join(task.conditions)} · paper column: {task.paper_column or ('none (your images)' if task.user else 'none (SynthArt)')}"
    )
    if isinstance(metrics, dict):
        out[-1] += (
            f" · λ = {lam_text(metrics.get('lambda'))} · {metrics.get('n_queries', '?')} queries · "
            f"database {metrics.get('database_size', '?')} images · query image "
            f"{'excluded from' if metrics.get('exclude_query') else 'kept in'} the database"
        )
        out += ["", *protocol_block(data_cfg, enc_cfg, run_metrics, e1_cfg, metrics)]
        out += ["### Our numbers (metrics.json)", "", md_table(metrics_table(metrics)), ""]
        if metrics.get("bootstrap"):
            b = metrics["bootstrap"]
            out += [
                f"[low, high]: 95 % bootstrap interval over the queries ({b.get('resamples')} "
                f"resamples, seed {b.get('seed')}). Head-filtered kNN and the class-centroid shift "
                "are baselines the paper does not have.",
                "",
            ]
        out.append(source_line(base, tdir / "metrics.json", e1_cfg))
        paired = paired_table(metrics)
        if paired is not None:
            out += [
                "",
                "### Backward Search against each method (paired bootstrap over the same queries)",
                "",
                md_table(paired),
                "",
                "Δ: Backward Search minus the method, mean over queries [95 % interval]; p: "
                "two-sided. Where the interval contains 0 the queries do not show a difference.",
            ]
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
                out += [student_line(data_cfg, run_metrics), ""]
            out += [source_line(base, md, e1_cfg), ""]
    sweep = tdir / "sweep.csv"
    if sweep.exists():
        out += ["### λ sweep (sweep.csv; plotted in Fig 6)", "", md_table(pd.read_csv(sweep)), ""]
        out += [source_line(base, sweep, e1_cfg), ""]
    if isinstance(metrics, dict):
        out += plane_lines(base, tdir, metrics, e1_cfg)
        out += seeds_lines(base.parent, base.name, task, metrics)
    cal = read_json_or_none(tdir / "calibration.json")
    if isinstance(cal, dict):
        out += [
            "### λ calibration (Table 3 protocol)",
            "",
            calibration_line(cal),
            "",
            source_line(base, tdir / "calibration.json", e1_cfg),
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
    tasks = [t for t in tasks_of(dataset, data_root) if (base / t.name).is_dir()]
    out = [
        f"# Backward Search reproduction — run `{run}`",
        "",
        f"Dataset {dataset} ({get_dataset(dataset, data_root).description}). Generated "
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
    e1_cfgs = {t.name: read_json_or_none(base / t.name / "config.json") for t in tasks}
    for task in tasks:
        out += task_section(base, task, data_cfg, enc_cfg, heads, e1_cfgs[task.name])
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
    configs["C1 embeddings"] = heads  # C1's metrics.json carries its command and arguments
    for t in tasks:
        for d1 in sorted(wdir.glob(f"student_{t.name}_lam*.json")):
            configs[f"D1 {d1.stem}"] = read_json_or_none(d1)
    configs.update({f"E1 {name}": cfg for name, cfg in e1_cfgs.items()})
    configs.update(
        {
            f"E2 {t.name}": read_json_or_none(base / t.name / "figures" / "config.json")
            for t in tasks
        }
    )
    out += ["## Settings, seeds and versions", ""]
    out += [config_line(name, cfg) for name, cfg in configs.items()]
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
