"""results/<run>/REPORT.md: every table E1 wrote, the figures, the settings and what cannot be compared.

Built only from the artifacts on disk (metrics.json, table*.md, sweep.csv, calibration.json,
figures/*.png and the config.json files of every stage), so it can be regenerated at any time and
never claims more than the files hold.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from src import plane
from src.artifacts import dataset_dir, queries_path, results_dir, run_dir, write_text
from src.bootstrap import p_text
from src.evaluation import METHODS
from src.hints import hint
from src.paper import TABLE3_TARGET_MTS, TABLE5_DEVICE
from src.quirks import protocol_label
from src.setting import mark_deltas, setting_banner, setting_differences
from src.tables import (
    HIGH,
    LOW,
    RANDOM_BY_NATURE,
    RELEASE,
    TITLES,
    fmt_cell,
    md_table,
    method_name,
    with_interval,
)
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
PLANE_FIGURES = plane.FIGURES  # what E2 draws per task in results/<run>/<task>/figures/
PAIRED_NAMES = {"paper_map@10": "precision@10", "mts@10": "mTS@10"}
SEED_RUN = re.compile(r"-seed(\d+)$")  # results/<run>-seed<N>: the same configuration, B1 seed N
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


def _with_ci(row: dict[str, Any], header: str, value: Any, ci: Any) -> None:
    """row[header] and its interval's LOW / HIGH columns (md_table shows them in one cell)."""
    row[header] = value
    lo, hi = ci if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None)
    row[header + LOW], row[header + HIGH] = lo, hi


def metrics_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """One row per method of metrics.json: the paper's mAP@10, true mAP@10, mTS@10, context, cost,
    each metric with its 95 % bootstrap interval when E1 recorded one.

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
        shown = method_name(name, m)
        ci = m.get("ci") or {}
        row = {
            "method": f"{shown} ({RANDOM_BY_NATURE})" if release and name == "random" else shown,
            "λ": _lam(m.get("lambda")),
        }
        _with_ci(row, "paper mAP@10 (precision@10)", m.get("paper_map@10"), ci.get("paper_map@10"))
        _with_ci(row, "mAP@10 (true AP)", m.get("map@10"), ci.get("map@10"))
        _with_ci(row, "mTS@10", m.get("mts@10"), ci.get("mts@10"))
        for a in context_attrs:
            value = (m.get("context_preservation") or {}).get(a)
            _with_ci(
                row, f"keeps query's {a}", value, (ci.get("context_preservation") or {}).get(a)
            )
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
    if task.user:
        notes.append(
            f"{task.name} runs on your own images ({task.dataset}, A1 --dataset folder). Its "
            "numbers measure the method on them; no column of the paper is about this data, so "
            "they cannot be compared with the paper's (the paper columns say n/a)."
        )
    elif task.paper_column is None:
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
    planes = {name for _, name in PLANE_FIGURES}  # shown in the trade-off plane section
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
        f"Conditions: {', '.join(task.conditions)} · paper column: {task.paper_column or ('none (your images)' if task.user else 'none (SynthArt)')}"
    )
    if isinstance(metrics, dict):
        out[-1] += (
            f" · λ = {_lam(metrics.get('lambda'))} · {metrics.get('n_queries', '?')} queries · "
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
        out.append(_source_line(base, tdir / "metrics.json", e1_cfg))
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
                out += [_student_line(data_cfg, run_metrics), ""]
            out += [_source_line(base, md, e1_cfg), ""]
    sweep = tdir / "sweep.csv"
    if sweep.exists():
        out += ["### λ sweep (sweep.csv; plotted in Fig 6)", "", md_table(pd.read_csv(sweep)), ""]
        out += [_source_line(base, sweep, e1_cfg), ""]
    if isinstance(metrics, dict):
        out += plane_lines(base, tdir, metrics, e1_cfg)
        out += seeds_lines(base.parent, base.name, task, metrics)
    cal = read_json_or_none(tdir / "calibration.json")
    if isinstance(cal, dict):
        out += [
            "### λ calibration (Table 3 protocol)",
            "",
            _calibration_line(cal),
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


def paired_table(metrics: Mapping[str, Any]) -> pd.DataFrame | None:
    """Backward Search − each method on the same queries (metrics.json "paired"): mean difference
    with its 95 % interval and p-value per metric, and which intervals contain 0."""
    paired = ((metrics.get("paired") or {}).get("backward_search_minus")) or {}
    if not paired:
        return None
    rows = []
    for name, d in paired.items():
        summary = (metrics.get("methods") or {}).get(name)
        row: dict[str, Any] = {"Backward Search −": method_name(name, summary)}
        zero = []
        for key, shown in PAIRED_NAMES.items():
            t = d.get(key) or {}
            if "mean" not in t:
                continue
            row[f"Δ {shown}"] = with_interval(f"{t['mean']:+.3f}", t.get("low"), t.get("high"))
            row[f"p ({shown})"] = p_text(t["p"])
            if t["low"] <= 0.0 <= t["high"]:
                zero.append(shown)
        row["interval contains 0 (no difference shown)"] = ", ".join(zero) or "—"
        rows.append(row)
    return pd.DataFrame(rows)


def _read_csv_or_none(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path) if path.is_file() else None
    except (OSError, ValueError):
        return None


def plane_lines(base: Path, tdir: Path, metrics: Mapping[str, Any], e1_cfg: Any) -> list[str]:
    """The trade-off plane: E2's figures (when drawn) and, per x axis, the sentence computed from
    sweep.csv, sweep_alpha.csv and metrics.json (never written by hand)."""
    sweep = _read_csv_or_none(tdir / "sweep.csv")
    alpha = _read_csv_or_none(tdir / "sweep_alpha.csv")
    if sweep is None and alpha is None:
        return []
    out = [
        "### Trade-off plane (Backward Search's λ against the class-centroid shift's α)",
        "",
        "Not in the paper. y: paper mAP@10 (precision@10); the curves are Backward Search along "
        "λ (sweep.csv) and the class-centroid shift along α (sweep_alpha.csv); single points: "
        "the methods without a knob, the student at its λ.",
        "",
    ]
    for x_metric, name in PLANE_FIGURES:
        p = plane.plane(sweep, alpha, metrics.get("methods") or {}, x_metric)
        if p is None:
            continue
        out += [f"**x = {p.x_label}.** {plane.dominance_sentence(p)}", ""]
        fig = tdir / "figures" / name
        if fig.is_file():
            out += [f"![{fig.stem}]({fig.relative_to(base).as_posix()})", ""]
    for f in ("sweep.csv", "sweep_alpha.csv"):
        if (tdir / f).is_file():
            out += [_source_line(base, tdir / f, e1_cfg), ""]
    return out


def _calibration_line(cal: Mapping[str, Any]) -> str:
    ci = cal.get("mts@10_ci")
    mts = fmt_cell(cal.get("mts@10"))
    mts = with_interval(mts, *ci) if isinstance(ci, list) and len(ci) == 2 else mts
    return (
        f"Target mTS@10 {fmt_cell(cal.get('target_mts'))}: λ = {_lam(cal.get('lambda'))} gives "
        f"mTS@10 {mts} and paper mAP@10 {fmt_cell(cal.get('paper_map@10'))} "
        f"({len(cal.get('steps', []))} bisection steps)."
    )


def seed_runs(results_root: Path, run: str) -> dict[str, Path]:
    """The replicate runs of `run` trained with other B1 seeds: results/<run>-seed<N>/ folders."""
    pattern = re.compile(re.escape(run) + r"-seed\d+")  # run names hold no glob character
    return {
        d.name: d
        for d in sorted(Path(results_root).glob(f"{run}-seed*"))
        if d.is_dir() and pattern.fullmatch(d.name)
    }


def _value_and_ci(s: Mapping[str, Any], metric: str) -> tuple[Any, Any]:
    """A method's value and interval of a metric: "paper_map@10", "mts@10" or "context_<attr>"."""
    ci = s.get("ci") or {}
    if metric.startswith("context_"):
        a = metric.removeprefix("context_")
        ctx_ci = ci.get("context_preservation") or {}
        return (s.get("context_preservation") or {}).get(a), ctx_ci.get(a)
    return s.get(metric), ci.get(metric)


def seeds_table(runs: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame | None:
    """Mean ± sd across B1 seeds per method (runs: name → metrics.json of one task), beside the
    mean width of the bootstrap intervals over queries: seed-to-seed spread against query noise.

    None with fewer than two runs. Runs must share the configuration (task, λ, queries, database,
    --exclude-query): a mismatch raises ValueError naming the run.
    """
    if len(runs) < 2:
        return None
    keys = ("task", "lambda", "n_queries", "database_size", "exclude_query")
    first_name, first = next(iter(runs.items()))
    for name, m in runs.items():
        diff = [k for k in keys if m.get(k) != first.get(k)]
        if diff:
            raise ValueError(f"run {name} differs from {first_name} in {', '.join(diff)}")
    all_methods = [r.get("methods") or {} for r in runs.values()]
    methods = [m for m in all_methods[0] if all(m in ms for ms in all_methods)]
    attrs = sorted(
        {
            a
            for ms in all_methods
            for s in ms.values()
            for a in (s.get("context_preservation") or {})
        }
    )
    shown = {"paper_map@10": "precision@10", "mts@10": "mTS@10"}
    shown |= {f"context_{a}": f"keeps query's {a}" for a in attrs}
    rows = []
    for method in methods:
        per = [ms[method] for ms in all_methods]
        row: dict[str, Any] = {"method": method_name(method), "seeds": len(per)}
        for metric, name in shown.items():
            pairs = [_value_and_ci(s, metric) for s in per]
            v = np.asarray([np.nan if x is None else x for x, _ in pairs], dtype=float)
            row[f"{name}: mean ± sd across seeds"] = f"{v.mean():.3f} ± {v.std(ddof=1):.3f}"
            widths = [c[1] - c[0] for _, c in pairs if isinstance(c, list) and len(c) == 2]
            ok = len(widths) == len(per)
            row[f"{name}: 95 % bootstrap width (mean)"] = f"{np.mean(widths):.3f}" if ok else "—"
        rows.append(row)
    return pd.DataFrame(rows)


def seeds_lines(results_root: Path, run: str, task: Task, metrics: Any) -> list[str]:
    """The across-seeds table of one task, when replicate runs results/<run>-seed<N>/ exist."""
    reps = {
        name: read_json_or_none(d / task.name / "metrics.json")
        for name, d in seed_runs(results_root, run).items()
    }
    reps = {n: m for n, m in reps.items() if isinstance(m, dict)}
    if not reps or not isinstance(metrics, dict):
        return []
    try:
        df = seeds_table({run: metrics, **reps})
    except ValueError as e:
        return ["### Across B1 seeds", "", f"Not shown: {e}.", ""]
    if df is None:
        return []
    return [
        "### Across B1 seeds (not in the paper)",
        "",
        f"Runs: {', '.join(f'`{n}`' for n in [run, *reps])}. Mean ± sd over the runs (sample sd); "
        "beside it, the mean width of each run's 95 % bootstrap interval over queries.",
        "",
        md_table(df),
        "",
    ]


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
    configs["C1 embeddings"] = heads  # C1's metrics.json carries its command and arguments
    for t in tasks:
        for d1 in sorted(wdir.glob(f"student_{t.name}_lam*.json")):
            configs[f"D1 {d1.stem}"] = read_json_or_none(d1)
    configs.update(
        {f"E1 {t.name}": read_json_or_none(base / t.name / "config.json") for t in tasks}
    )
    configs.update(
        {
            f"E2 {t.name}": read_json_or_none(base / t.name / "figures" / "config.json")
            for t in tasks
        }
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
