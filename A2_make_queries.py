"""A2 — draw a task's queries: balanced (test image, condition) pairs by the paper's protocol.

    python A2_make_queries.py --task synthart-style [--num-queries N] [--seed 777]

Reads data/<dataset>/test.csv and labels.json (A1) and writes data/<dataset>/queries_<task>.csv
(query_id, image, one column per conditioned attribute holding the condition's class name, tags)
and queries_<task>.json (how it was drawn) atomically. The same seed gives the same file.
"""

from __future__ import annotations

import logging
import sys
import time

from src.argtypes import int_at_least
from src.artifacts import dataset_dir, queries_path, stage_config, write_csv, write_json
from src.atomic import atomic_files, stage_lock
from src.cli import run_stage, setup_logging, stage_parser
from src.errors import SuiteError
from src.paper import QUERIES
from src.queries import DEFAULT_SEED, load_test_split, make_queries
from src.tasks import TASK_HELP, describe_tasks, get_task

log = logging.getLogger("src.A2")


def parse_args(argv: list[str] | None):
    p = stage_parser(__doc__.split("\n")[0])
    p.add_argument("--task", metavar="TASK", help=f"which task's queries: {TASK_HELP}")
    p.add_argument(
        "--list-tasks", action="store_true", help="print every task (yours too) and exit"
    )
    p.add_argument(
        "--num-queries",
        type=int_at_least(1),
        default=None,
        help=f"distinct (query, condition) pairs to draw, exactly (refused when the test split "
        f"cannot give them); default: the protocol's {QUERIES}, or every valid pair of a test "
        "split that has fewer (with a note in the log, the .json and REPORT.md)",
    )
    p.set_defaults(seed=DEFAULT_SEED)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging()
    if args.list_tasks:
        print(describe_tasks(args.data_root))
        return
    if args.task is None:
        raise SuiteError("A2 needs --task TASK (--list-tasks prints them)")
    task = get_task(args.task, args.data_root)
    t0 = time.time()
    out = queries_path(args.data_root, task.dataset, task.name)
    # the dataset's lock: A1 must not swap the folder while its queries are drawn
    with stage_lock(dataset_dir(args.data_root, task.dataset)):
        draw, test = draw_queries(args, task, out)
    if draw.note:
        log.info("A2 %s: %s", task.name, draw.note)
    log.info(
        "A2 %s: %d queries from %d test images (%d draws; skipped %s) → %s (%.1f s)",
        task.name,
        len(draw.queries),
        len(test),
        draw.draws,
        ", ".join(f"{k} {v}" for k, v in draw.skipped.items()),
        out,
        time.time() - t0,
    )


def draw_queries(args, task, out):
    """Draw the queries and write the .csv and its .json together (both or neither)."""
    test, labels = load_test_split(args.data_root, task.name)
    draw = make_queries(test, labels, task.conditions, args.num_queries, args.seed)
    own = test.iloc[draw.rows]
    balance = {a: own[a].value_counts().to_dict() for a in task.conditions}
    cond_balance = {a: draw.queries[a].value_counts().to_dict() for a in task.conditions}
    meta = out.with_suffix(".json")
    with atomic_files(out.parent, [out.name, meta.name]) as tmp:
        write_csv(tmp / out.name, draw.queries)
        write_json(
            tmp / meta.name,
            stage_config(
                args,
                task=task.name,
                dataset=task.dataset,
                conditions=list(task.conditions),
                resolved={"num_queries": len(draw.queries)},
                num_queries=len(draw.queries),
                note=draw.note,
                test_images=len(test),
                test_class_counts={a: test[a].value_counts().to_dict() for a in task.conditions},
                draws=draw.draws,
                skipped=draw.skipped,
                query_class_counts=balance,
                condition_counts=cond_balance,
            ),
        )
    return draw, test


if __name__ == "__main__":
    sys.exit(run_stage(main))
