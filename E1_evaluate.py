"""E1 — evaluate random search, kNN, Backward Search, the student and two baselines on a task.

    python E1_evaluate.py --task synthart-style [--lambda 1.0] [--alpha 1.0] [--sweep]
        [--target-mts 0.15] [--authors-quirks empty-tag-token|all|none] [--exclude-query]

Reads the queries (A2), the embeddings (C1), the encoder's heads (B1) and the student (D1, when
trained); writes results/<run>/<task>/: metrics.json, retrievals_<method>.csv, table2/3/4/5/6 (.md
and .csv, ours beside the paper's values; table3 with --target-mts), sweep.csv and sweep_alpha.csv
(--sweep), calibration.json (--target-mts), config.json, E1.log. The folder is built aside and
swapped in whole once everything has been computed (E2's figures/ carried over), under a lock. On a
run imported from the authors' release, λ defaults to the one in its student file's name (their
student's λ); --authors-quirks empty-tag-token computes mTS@10 as their code does (CUB, aPY).
Not in the paper: the baselines head-filtered kNN and class-centroid shift (step --alpha), a 95 %
bootstrap interval over queries for every metric, and a paired bootstrap test of Backward Search
against each other method (metrics.json "paired").
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from src.argtypes import nonnegative_float, open_fraction, run_name_arg
from src.artifacts import stage_config, write_json
from src.atomic import atomic_dir
from src.cli import (
    add_device_arg,
    add_index_arg,
    resolve_device,
    run_stage,
    seed_everything,
    setup_logging,
    stage_parser,
    staged_log,
)
from src.errors import SuiteError
from src.evaluation import task_eval
from src.evaluation.registry import METHODS, STUDENT, rankable
from src.evaluation.space import check_database_size, file_queries, unreachable_warning
from src.evaluation.task_run import open_task_run
from src.hints import hint
from src.method.student import student_path
from src.queries import read_queries
from src.quirks import parse_quirks, protocol_label
from src.report import tables
from src.runs import RUN_HELP
from src.tasks import TASK_HELP

log = logging.getLogger("src.E1")


def parse_args(argv: list[str] | None):
    p = stage_parser(__doc__.split("\n")[0])
    p.add_argument(
        "--task", required=True, metavar="TASK", help=f"which task to evaluate: {TASK_HELP}"
    )
    p.add_argument("--run", type=run_name_arg, help=RUN_HELP)
    p.add_argument("--lambda", dest="lam", type=nonnegative_float, help="λ (default: the task's)")
    p.add_argument(
        "--methods",
        help=f"comma-separated subset of {','.join(METHODS)} "
        "(default: all; the student only when D1 trained one)",
    )
    p.add_argument(
        "--exclude-query", action="store_true", help="drop each query's own image from its results"
    )
    p.add_argument(
        "--alpha",
        type=nonnegative_float,
        default=1.0,
        help="step of the class-centroid shift baseline (default 1)",
    )
    p.add_argument(
        "--sweep",
        action="store_true",
        help="Fig 6: λ = 0 and 1/16 … 64 → sweep.csv; centroid-shift α = 0 … 2 → sweep_alpha.csv",
    )
    p.add_argument(
        "--target-mts",
        type=open_fraction,
        metavar="MTS",
        help="Table 3 protocol: find λ with mTS@10 ≈ MTS (e.g. 0.15) → calibration.json",
    )
    p.add_argument(
        "--authors-quirks",
        default="none",
        help="reproduce the authors' E1 bug: empty-tag-token (CUB, aPY: an empty tag in a query "
        "without attributes lowers mTS@10), all or none (docs/deviations.md)",
    )
    add_device_arg(p)
    add_index_arg(p, paper=True)
    return p.parse_args(argv)


def chosen_methods(args, student_file: Path, lam: float) -> list[str]:
    """--methods checked; by default every method, the student only when its file exists."""
    if args.methods is None:
        return [m for m, r in METHODS.items() if not r.trained or student_file.exists()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise SuiteError(f"--methods {args.methods!r}: choose from {', '.join(METHODS)}")
    if any(METHODS[m].trained for m in methods) and not student_file.exists():
        raise SuiteError(
            f"{student_file} not found: run {hint('D1', '--task', args.task)} "
            f"--lambda {lam:g} first"
        )
    return methods


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    tr = open_task_run(args)
    task, run, rdir, out = tr.task, tr.run, tr.weights, tr.results
    quirks = parse_quirks(args.authors_quirks, "E1")
    lam, lam_source = tr.lam(args.lam, after_e1=False)
    setup_logging()
    seed_everything(args.seed)
    device = resolve_device(args.device)
    student_file = student_path(rdir, task.name, lam)
    methods = chosen_methods(args, student_file, lam)
    t0 = time.time()

    space = tr.space(device, index=args.index)
    queries = read_queries(args.data_root, task.name)
    q = file_queries(space, queries, exclude_query=args.exclude_query, quirks=quirks)
    check_database_size(len(space), space.database, args.exclude_query)
    methods, left_out = rankable(space, methods)  # e.g. the centroid shift without train rows
    if left_out and args.methods is not None:
        key, why = next(iter(left_out.items()))
        raise SuiteError(f"--methods {key}: the {METHODS[key].label} {why}")
    if STUDENT in methods:
        space.student(lam)  # loaded and checked before anything is written
    for name in sorted(set(quirks) - set(q.quirks)):
        log.info("--authors-quirks %s changes nothing on %s: not applied", name, task.dataset)
    # the task's folder is built aside and swapped in whole (E2's figures/ carried over): no
    # file of an earlier run (a stale sweep.csv, retrievals_student.csv) survives beside new ones
    with atomic_dir(out, keep=("figures",)) as tmp:
        with staged_log(tmp / "E1.log"):  # closed before the folder is swapped in (or dropped)
            log.info(
                "E1 %s, run %s: %d queries, database %d (%s)",
                task.name,
                run,
                len(q),
                len(space),
                device,
            )
            log.info("λ = %g (%s); mTS@10 protocol: %s", lam, lam_source, protocol_label(q.quirks))
            if args.index != "exact":
                log.info(
                    "searched with %s: not the paper's protocol", space.searcher.info.describe()
                )
            for key, why in left_out.items():
                log.warning("E1: warning: %s left out: it %s", METHODS[key].label, why)
            if warning := unreachable_warning(space, q):
                log.warning("E1: %s", warning)
            if STUDENT in methods:
                log.info("student: %s (λ = %g)", student_file.name, lam)
            elif student_file.exists():  # trained, but --methods leaves it out
                log.info(
                    "student: %s not evaluated (--methods %s)", student_file.name, args.methods
                )
            else:
                whose = "the release has" if tr.imported else "D1 trained"
                log.info(
                    "no student: %s none for %s at λ = %g (%s)",
                    whose,
                    task.name,
                    lam,
                    student_file.name,
                )
            results = task_eval.evaluate(
                space,
                q,
                methods,
                lam,
                seed=args.seed,
                sweep=args.sweep,
                target_mts=args.target_mts,
                alpha=args.alpha,
            )
            if STUDENT in methods:
                results.student_file = student_file.name
            tables.write_results(tmp, results)
            config = stage_config(
                args,
                {"lambda": lam},  # its source and the quirks applied: once, beside run and device
                run=run,
                device=str(device),
                quirks=list(q.quirks),
                lambda_source=lam_source,
                student_file=results.student_file,
            )
            write_json(tmp / "config.json", config)
            for line in task_eval.summary_lines(results):
                log.info(line)
    log.info("E1 wrote %s (%.1f s)", out, time.time() - t0)


if __name__ == "__main__":
    sys.exit(run_stage(main))
