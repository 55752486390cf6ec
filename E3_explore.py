"""E3 — the explorer: pick a query and a condition, move λ, watch the search walk (paper Fig. 1).

    python E3_explore.py --task synthart-style            # then open http://127.0.0.1:8765/
    python E3_explore.py --task synthart-multi --database all --port 0

A local web page over a finished run (after C1; D1's students when present): the top-10 of
Backward Search, the student, the class-centroid shift, head-filtered kNN or kNN for any database
image or uploaded picture, and the query's walk on a 2-D map of the database. Binds 127.0.0.1;
--host opens it to others. Writes nothing but the map's cache,
weights/<run>/projection_<task>_<database>.npz.
"""

from __future__ import annotations

import logging
import sys

from src.argtypes import int_at_least, run_name_arg
from src.cli import (
    add_device_arg,
    add_index_arg,
    resolve_device,
    run_stage,
    setup_logging,
    stage_parser,
)
from src.evaluation.space import DATABASES, SearchSpace
from src.evaluation.task_run import open_task_run
from src.explorer.app import create_app
from src.explorer.projection import load_projection
from src.explorer.searchers import forkable
from src.explorer.server import THREADS, host_names, is_loopback, listen, serve, url_of
from src.explorer.session import Explorer
from src.runs import RUN_HELP
from src.tasks import TASK_HELP
from src.threads import usable_cpus, use_threads

log = logging.getLogger("src.E3")
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8765


def parse_args(argv: list[str] | None):
    p = stage_parser(__doc__.split("\n")[0])
    add_device_arg(p)
    add_index_arg(p)
    p.add_argument(
        "--task", required=True, metavar="TASK", help=f"the task to explore: {TASK_HELP}"
    )
    p.add_argument("--run", type=run_name_arg, help=RUN_HELP)
    p.add_argument(
        "--database",
        choices=DATABASES,
        default="test",
        help="what is searched: the test split (the paper's protocol) or all (train + test)",
    )
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to listen on; anything but loopback lets other machines in (a warning says so)",
    )
    p.add_argument(
        "--port", type=int_at_least(0, 65535), default=DEFAULT_PORT, help="port (0: any free one)"
    )
    return p.parse_args(argv)


def open_space(args) -> tuple[SearchSpace, float]:
    """--task's search space over its run, and its default λ (E1's, else the task's)."""
    tr = open_task_run(args)
    space = tr.space(resolve_device(args.device), database=args.database, index=args.index)
    lam, _ = tr.lam(None)
    return space, lam


def open_explorer(args) -> Explorer:
    """The explorer over --task's run: its search space, map and default λ."""
    space, lam = open_space(args)
    return Explorer(space, load_projection(space), lam)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is None:  # the stages' default suits batches; each E3 answer is one query
        use_threads(THREADS)
    setup_logging()
    sock = listen(args.host, args.port)  # first: a port in use fails before the run is read
    try:
        explorer = open_explorer(args)
        space = explorer.space
        open_to_all = not is_loopback(args.host)
        if open_to_all:
            log.warning(
                "E3: warning: --host %s lets every machine that reaches this one search run %s "
                "and see its images, with no password",
                args.host,
                space.run,
            )
        log.info(
            "E3: %s, run %s: %d %s images", space.task.name, space.run, len(space), space.database
        )
        if forkable(space.device):  # a search process per CPU: one process's threads share a GIL
            explorer.in_processes(usable_cpus(), close=[sock])
        log.info("E3: the explorer is at %s (Ctrl-C stops it)", url_of(sock))
        try:
            serve(create_app(explorer, ["*"] if open_to_all else host_names(args.host, sock)), sock)
        finally:
            explorer.close()
    finally:
        sock.close()


if __name__ == "__main__":
    sys.exit(run_stage(main))
