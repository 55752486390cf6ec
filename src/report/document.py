"""results/<run>/REPORT.md: a Summary, what cannot be compared, then every table E1 wrote, the
figures and the settings.

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
    dataset_dir,
    is_release,
    queries_path,
    read_json_or_none,
    read_metrics,
    results_dir,
    run_dir,
    write_text,
)
from src.errors import SuiteError
from src.evaluation.registry import METHODS, RANDOM
from src.hints import hint
from src.method.student import student_lambdas, student_path
from src.paper import TABLE3_TARGET_MTS
from src.report import plane
from src.report.markdown import (
    METRIC_NOTE,
    RANDOM_BY_NATURE,
    TITLES,
    md_table,
    method_name,
    paper_values,
    with_ci,
)
from src.report.protocol import (
    TRAINING_KEYS,
    config_line,
    lam_text,
    not_comparable,
    protocol_block,
    source_line,
    student_line,
    training_settings,
)
from src.report.setting import MARK, mark_deltas, setting_banner, setting_differences
from src.report.stats import calibration_line, paired_table, plane_lines, seeds_lines
from src.report.summary import task_summary
from src.report.tables import table_notes
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
    release = is_release(metrics)
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
            "method": f"{shown} ({RANDOM_BY_NATURE})" if release and name == RANDOM else shown,
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
    """Markdown image links (relative to `base`) for the PNGs in `folder`, in the report's order,
    each kind's caption once above its figures."""
    if not folder.is_dir():
        return []
    planes = {name for _, name in plane.FIGURES}  # shown in the trade-off plane section
    pngs = sorted(p for p in folder.glob("*.png") if p.name not in planes)
    groups = [(c, [p for p in pngs if p.name.startswith(prefix)]) for prefix, c in FIGURE_CAPTIONS]
    rest = [p for p in pngs if not any(p.name.startswith(prefix) for prefix, _ in FIGURE_CAPTIONS)]
    out = []
    for caption, found in [*groups, ("", rest)]:
        if found and caption:
            out += [f"**{caption}**", ""]
        for p in found:
            out += [f"![{p.stem}]({p.relative_to(base).as_posix()})", ""]
    return out


def _embedded(body: str, task: Task, run: str, drop: set[str]) -> str:
    """An E1 table as REPORT.md shows it: the caption without the task and run (the section says
    them) and without the notes the report states once (`drop`)."""
    lines = body.split("\n")
    if lines[0].startswith("#"):
        lines[0] = lines[0].removesuffix(f" — {task.name}, run {run}")
    return "\n".join(line for line in lines if line.strip() not in drop).strip()


def _task_line(task: Task, metrics: Any) -> str:
    """Conditions, paper column, λ, queries, database and device of one task, in one line."""
    col = task.paper_column
    paper = f"{col} (SPEC §8)" if col else "none (your images)" if task.user else "none (SynthArt)"
    line = f"Conditions: {', '.join(task.conditions)} · paper column: {paper}"
    if isinstance(metrics, dict):
        kept = "excluded from" if metrics.get("exclude_query") else "kept in"
        line += (
            f" · λ = {lam_text(metrics.get('lambda'))} · {metrics.get('n_queries', '?')} queries · "
            f"database {metrics.get('database_size', '?')} tagged test images · query image "
            f"{kept} the database · device {metrics.get('device', '?')}"
        )
    return line


def unreachable_line(record: Mapping[str, Any]) -> str:
    """REPORT.md's sentence for metrics.json's "unreachable": the queries whose condition no
    database image carries."""
    names = [str(n) for n in record.get("conditions") or []]
    return (
        f"{record.get('queries', '?')} queries ask for a condition no image of the database "
        f"carries ({', '.join(names) or '?'}): every method scores 0 on them, so the numbers "
        "below understate every method alike; the test split is too small for these classes."
    )


def task_section(
    base: Path,
    task: Task,
    data_cfg: Any,
    enc_cfg: Any,
    run_metrics: Any,
    e1_cfg: Any,
    metrics: Any,
    differs: list[str],
) -> list[str]:
    """The markdown of one task: protocol, our numbers, E1's tables, sweep, plane, calibration,
    figures. `differs` lists how its setting differs from the paper's (banner and † on every Δ).

    The records (config.json files, the task's metrics.json) come from build_report, which reads
    each once for the whole report.
    """
    tdir = base / task.name
    out = [f"## Task `{task.name}`", ""]
    out += setting_banner(differs)
    if is_release(data_cfg):
        out += [
            "**Computed by our E1 from the authors' released artifacts**: their encoder heads, "
            "embeddings, queries and students, imported without images or retraining; the "
            "paper's values sit beside ours with Δ.",
            "",
        ]
    out.append(_task_line(task, metrics))
    unreachable = metrics.get("unreachable") if isinstance(metrics, dict) else None
    if isinstance(unreachable, dict):  # E1 warned: these queries score 0 whatever the method
        out += ["", f"**{unreachable_line(unreachable)}**"]
    drop: set[str] = set()  # E1's notes under every table: this report states each once
    if isinstance(metrics, dict):
        drop = set(table_notes(task, metrics).lines())
        out += ["", *protocol_block(data_cfg, enc_cfg, run_metrics, e1_cfg, metrics)]
        out += [source_line(base, tdir, e1_cfg), ""]
        out += ["### Our numbers (metrics.json)", "", md_table(metrics_table(metrics)), ""]
        paired = paired_table(metrics)
        if paired is not None:
            out += [
                "### Backward Search against each method (paired bootstrap over the same queries)",
                "",
                md_table(paired),
                "",
            ]
        rs = metrics.get("retrieved_similarity")
        if rs is not None and not (tdir / "table6.md").exists():  # else Table 6 shows it
            out += [f"Retrieved similarity, teacher vs student (Table 6): {rs:.3f}", ""]
    else:
        out += ["", f"No metrics.json: run `{hint('E1', '--task', task.name)}` first.", ""]
    for stem, title in TITLES.items():
        md = tdir / f"{stem}.md"
        if md.exists():
            body = _embedded(md.read_text(encoding="utf-8"), task, base.name, drop)
            body = mark_deltas(body) if differs else body
            heading = title.format(target=TABLE3_TARGET_MTS)
            out += [body, ""] if body.startswith("#") else [f"### {heading}", "", body, ""]
            if stem == "table6":
                out += [student_line(data_cfg, run_metrics), ""]
    sweep = tdir / "sweep.csv"
    if sweep.exists():
        out += ["### λ sweep (sweep.csv; plotted in Fig 6)", "", md_table(pd.read_csv(sweep)), ""]
    if isinstance(metrics, dict):
        out += plane_lines(base, tdir, metrics, task.conditions)
        out += seeds_lines(base.parent, base.name, task, metrics)
    cal = read_json_or_none(tdir / "calibration.json")
    if isinstance(cal, dict):
        out += ["### λ calibration (Table 3 protocol)", "", calibration_line(cal), ""]
    figs = _figures(base, tdir / "figures")
    if figs:
        out += ["### Figures", "", *figs]
    return out


def _once(per_task: Mapping[str, list[str]]) -> list[str]:
    """Bullets said once: those every task shares as they are, then each task's own, named."""
    lists = list(per_task.values())
    shared = [n for n in lists[0] if all(n in other for other in lists)] if lists else []
    out = [f"- {n}" for n in shared]
    for name, notes in per_task.items():
        out += [f"- `{name}`: {n}" for n in notes if n not in shared]
    return out


def _reading_notes(metrics: Mapping[str, Any], tasks: list[Task], marked: bool) -> list[str]:
    """What the tables' words and marks mean, said once for the report (once per task where the
    tasks differ), instead of under every table."""
    intervals = {}
    for t in tasks:
        boot = (metrics.get(t.name) or {}).get("bootstrap")
        if isinstance(boot, dict):
            intervals[t.name] = [
                f"[low, high] beside a number: its 95 % bootstrap interval over the queries "
                f"({boot.get('resamples')} resamples, seed {boot.get('seed')}). In the paired table "
                "Δ is Backward Search minus the method, mean over the same queries [95 % "
                "interval], p two-sided; where the interval contains 0 the queries do not show a "
                "difference."
            ]
    out = [
        f'- {METRIC_NOTE} Our numbers call them "paper mAP@10 (precision@10)" and "mAP@10 '
        '(true AP)", the sweep `paper_map@10` and `map@10`.',
        *_once(intervals),
    ]
    methods = {m for t in tasks for m in ((metrics.get(t.name) or {}).get("methods") or {})}
    extra = [m.label for k, m in METHODS.items() if not m.in_paper and k in methods]
    if extra:
        names = extra[0] if len(extra) == 1 else f"{', '.join(extra[:-1])} and {extra[-1]}"
        verb = "is a baseline" if len(extra) == 1 else "are baselines"
        out.append(f"- {names[0].upper()}{names[1:]} {verb} the paper does not have.")
    if any(t.paper_column for t in tasks):
        out.append("- Δ in Tables 2–6: ours minus the paper's value.")
    out += [f"- {n}" for n in dict.fromkeys(paper_values(t) for t in tasks if not t.paper_column)]
    if marked:
        out.append(
            f"- {MARK} beside a Δ: the task's setting is not the paper's (its banner lists how); "
            "read that Δ as context, not as a reproduction gap."
        )
    return ["## Reading the tables", "", *out, ""]


def _versions(configs: Mapping[str, Any]) -> pd.DataFrame:
    """Package versions, one column per group of stages that ran with the same ones (one column,
    "every stage", when all did)."""
    groups: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for stage, cfg in configs.items():
        versions = cfg.get("versions") if isinstance(cfg, dict) else None
        if versions:
            groups.setdefault(tuple((k, str(v)) for k, v in versions.items()), []).append(stage)
    every = len(groups) == 1 and len(next(iter(groups.values()))) > 1
    headers = {
        key: "every stage above" if every else ", ".join(stages) for key, stages in groups.items()
    }
    packages = dict.fromkeys(pkg for key in groups for pkg, _ in key)
    return pd.DataFrame(
        [
            {"package": pkg, **{h: dict(key).get(pkg, "—") for key, h in headers.items()}}
            for pkg in packages
        ]
    )


def build_report(
    results_root: str | Path,
    weights_root: str | Path,
    data_root: str | Path,
    run: str,
    dataset: str,
) -> str:
    """The text of results/<run>/REPORT.md for every task of `dataset` that has results: the
    Summary, what cannot be compared and how to read the tables first, then one section per task,
    the run's figures and the settings."""
    base = results_dir(results_root, run)
    wdir = run_dir(weights_root, run)
    data_cfg = read_json_or_none(dataset_dir(data_root, dataset) / "config.json")
    enc_cfg = read_json_or_none(wdir / "config.json")
    heads = read_json_or_none(wdir / "metrics.json")
    tasks = [t for t in tasks_of(dataset, data_root) if (base / t.name).is_dir()]
    metrics = {t.name: read_metrics(base / t.name / "metrics.json") for t in tasks}
    differs = {  # how each task's setting differs from the paper's: banner, † on every Δ
        t.name: setting_differences(t, data_cfg, enc_cfg, metrics[t.name]) for t in tasks
    }
    out = [
        f"# Backward Search reproduction — run `{run}`",
        "",
        f"Dataset {dataset} ({get_dataset(dataset, data_root).description}). Generated "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')} by E2_visualize.py from the artifacts on disk.",
    ]
    if isinstance(heads, dict) and heads.get("test_accuracy"):
        acc = ", ".join(f"{a} {v:.3f}" for a, v in heads["test_accuracy"].items())
        out[-1] += f" Encoder heads' test accuracy (C1): {acc}."
    out += ["", "## Summary", ""]
    a2 = {t.name: queries_path(data_root, dataset, t.name).with_suffix(".json") for t in tasks}
    a2_meta = {name: read_json_or_none(path) for name, path in a2.items()}
    for t in tasks:
        out += task_summary(base / t.name, t, metrics[t.name], differs[t.name], a2_meta[t.name])
    if not tasks:
        out += ["No task evaluated yet.", ""]
    caveats = {t.name: not_comparable(t, data_cfg, enc_cfg, metrics[t.name]) for t in tasks}
    if any(caveats.values()):
        out += ["## What cannot be compared", "", *_once(caveats), ""]
    valid = {n: m for n, m in metrics.items() if isinstance(m, dict)}
    out += _reading_notes(valid, tasks, any(differs.values()))
    e1_cfgs = {t.name: read_json_or_none(base / t.name / "config.json") for t in tasks}
    for task in tasks:
        name = task.name
        out += task_section(
            base, task, data_cfg, enc_cfg, heads, e1_cfgs[name], metrics[name], differs[name]
        )
    run_figs = [(n, c) for n, c in RUN_FIGURES if (base / "figures" / n).exists()]
    if run_figs:
        out += ["## Run figures", ""]
        for name, caption in run_figs:
            out += [f"**{caption}**", "", f"![{Path(name).stem}](figures/{name})", ""]
    configs = {"A1 data": data_cfg}
    for t in tasks:
        configs[f"A2 {t.name}"] = a2_meta[t.name]
    configs["B1 encoder"] = enc_cfg
    configs["C1 embeddings"] = heads  # C1's metrics.json carries its command and arguments
    for t in tasks:
        for lam in student_lambdas(wdir, t.name):
            d1 = student_path(wdir, t.name, lam).with_suffix(".json")
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


REPORT_TRIES = 5  # builds of REPORT.md before E2 gives up on an E1 that keeps replacing results


def _folder_identity(folder: Path) -> tuple[int, int] | None:
    """Which folder stands at `folder` (inode, change time), None when none: E1 swaps a task's
    folder in whole (src/atomic.py atomic_dir), so a new E1 run shows as a new identity."""
    try:
        st = folder.stat()
    except OSError:
        return None
    return st.st_ino, st.st_ctime_ns


def write_report(
    results_root: str | Path,
    weights_root: str | Path,
    data_root: str | Path,
    run: str,
    dataset: str,
) -> Path:
    """Write results/<run>/REPORT.md atomically and return its path.

    E2 holds the lock of its own task only, so E1 may replace another task's folder while the
    report reads it: the report is built again until no task's folder changed during a build, so
    every section comes from one E1 run (its λ, metrics and tables together)."""
    base = results_dir(results_root, run)
    folders = [base / t.name for t in tasks_of(dataset, data_root)]
    for _ in range(REPORT_TRIES):
        before = [_folder_identity(f) for f in folders]
        text = build_report(results_root, weights_root, data_root, run, dataset)
        if [_folder_identity(f) for f in folders] == before:
            break
    else:
        raise SuiteError(
            f"E1 replaced task results under {base} during each of {REPORT_TRIES} builds of "
            "REPORT.md; re-run E2 once E1 has finished"
        )
    path = base / "REPORT.md"
    write_text(path, text)
    return path
