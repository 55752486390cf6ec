"""E2 — figures, REPORT.md, and searching your own pictures.

    python E2_visualize.py --task synthart-style [--query-id 3 --query-id 7] [--lambda 1]
    python E2_visualize.py --task wikiart-style --image my.jpg --condition style=Baroque
    python E2_visualize.py --task cub-bird --run cub_convnext_base_e256_ft --images DIR
    python E2_visualize.py --task shop:colour --image my.jpg --condition colour=red --database all

Writes results/<run>/<task>/figures/ (result grids, Fig 5), results/<run>/figures/ (Fig 6 from
every task's sweep.csv, B1's training curves) and results/<run>/REPORT.md. With --image it embeds
the picture with the trained encoder, runs Backward Search, prints the ranked results and saves
results/<run>/<task>/figures/search_<name>.png (and .json: the ranked results). The database
is the test split (the paper's protocol), or with --database all the whole collection (train +
test). Without the dataset's images (a run imported from the authors' release) it draws Fig 6 and
says that the result grids need --images DIR.
"""

from __future__ import annotations

import logging
import math
import re
import sys
import time
from pathlib import Path

from src.argtypes import int_at_least, nonnegative_float, run_name_arg
from src.artifacts import stage_config, write_json
from src.atomic import atomic_path, stage_lock
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
from src.evaluation import shown
from src.evaluation.space import DATABASES, SearchSpace, embed_image
from src.evaluation.task_run import TaskRun, open_task_run
from src.labels import parse_conditions
from src.queries import read_queries
from src.report import figures, plane
from src.report.document import write_report
from src.runs import RUN_HELP
from src.tasks import TASK_HELP, tasks_of

log = logging.getLogger("src.E2")


def parse_args(argv: list[str] | None):
    p = stage_parser(__doc__.split("\n")[0])
    add_device_arg(p)
    add_index_arg(p)
    p.add_argument(
        "--task", required=True, metavar="TASK", help=f"the task to draw and report: {TASK_HELP}"
    )
    p.add_argument("--run", type=run_name_arg, help=RUN_HELP)
    p.add_argument(
        "--query-id",
        type=int_at_least(0),
        action="append",
        help="query to draw (repeatable; default the first three)",
    )
    p.add_argument("--image", type=Path, help="search with this picture instead of a query")
    p.add_argument(
        "--database",
        choices=DATABASES,
        default="test",
        help="what --image and the result grids search: test (the test split, the paper's "
        "protocol, as in E1's tables) or all (train + test: your whole collection; figures "
        "named *_all.png)",
    )
    p.add_argument(
        "--condition",
        action="append",
        default=[],
        metavar="ATTR=CLASS",
        help="with --image; repeatable",
    )
    p.add_argument(
        "--lambda",
        dest="lam",
        type=nonnegative_float,
        help="λ (default: the one E1 used, else the task's)",
    )
    p.add_argument("--lambdas", default="knn,16,4,0", help="rows of Fig 5: 'knn' and λ values")
    p.add_argument(
        "--images",
        type=Path,
        metavar="DIR",
        help="the dataset's images, when they are not under --data-root (a run imported from "
        "the authors' release): test.csv's image images/<class>/<file> is read as DIR/<class>/<file>",
    )
    return p.parse_args(argv)


def fig5_rows(text: str) -> list[float | None]:
    """'knn,16,4,0' → [None, 16.0, 4.0, 0.0] (None = plain kNN)."""
    out: list[float | None] = []
    for item in text.split(","):
        item = item.strip().lower()
        try:
            lam = None if item == "knn" else float(item)
        except ValueError:
            raise SuiteError(f"--lambdas item {item!r} is neither 'knn' nor a number") from None
        if lam is not None and not (math.isfinite(lam) and lam >= 0):
            raise SuiteError(f"--lambdas item {item!r}: λ must be a finite number ≥ 0")
        out.append(lam)
    return out


def search_picture(
    args,
    space: SearchSpace,
    conditions: dict[str, int],
    z0,
    lam: float,
    figs: Path,
    embed_ms: float,
) -> None:
    """--image: print the ranked results of Backward Search for the picture (embedded as z0)
    and save the grid."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", args.image.stem)[:60] or "image"
    path = figs / f"search_{stem}{figures.database_suffix(space)}.png"
    t0 = time.perf_counter()
    found = shown.search_picture(space, z0, conditions, lam)
    search_ms = 1e3 * (time.perf_counter() - t0)
    named = {a: space.labels[a][c] for a, c in conditions.items()}
    shown_keys = [k for r in found.rows for k in space.images[r.rows]]
    missing = space.missing_images(shown_keys)
    if missing:  # e.g. a collection embedded elsewhere: the results are still printed and saved
        log.warning(
            "E2: %d of the %d result pictures are not on disk (e.g. %s), so no grid is drawn; "
            "give their folder with --images DIR",
            len(missing),
            len(shown_keys),
            missing[0],
        )
    else:
        figures.picture_grid(space, args.image, found, named, path)
    log.info(
        "%s → %s (λ = %g) in %s; the encoder sees it as %s; embedded in %.1f ms, searched in "
        "%.1f ms (every method's ranking and its rows)",
        args.image,
        figures.condition_text(named),
        lam,
        space.describe(),
        figures.condition_text(found.seen_as),
        embed_ms,
        search_ms,
    )
    log.info(found.results.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    record = stage_config(
        args,
        run=space.run,
        database=space.database,
        search_lambda=lam,
        condition=named,
        seen_as=found.seen_as,
        results=found.results.to_dict(orient="records"),
    )
    write_json(path.with_suffix(".json"), record)
    log.info(
        "E2: wrote %s",
        path.with_suffix(".json") if missing else f"{path} and {path.with_suffix('.json').name}",
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging()
    seed_everything(args.seed)
    visualize(args)


def visualize(args) -> None:
    """Draw the figures of --task (or search --image) and write REPORT.md."""
    lams = fig5_rows(args.lambdas)
    if args.condition and args.image is None:
        raise SuiteError("--condition goes with --image; a query's condition is in its query file")
    if args.images is not None and not args.images.is_dir():
        raise SuiteError(f"--images {args.images} is not a folder: give the dataset's image folder")
    tr = open_task_run(args)
    task, results = tr.task, tr.results
    space = tr.space(
        resolve_device(args.device), database=args.database, images=args.images, index=args.index
    )
    if args.image is not None:  # checked and embedded before anything is written
        conditions = parse_conditions(args.condition, space.labels, task.conditions)
        t0 = time.perf_counter()
        z0 = embed_image(space, args.image)
        embed_ms = 1e3 * (time.perf_counter() - t0)
    lam, lam_source = tr.lam(args.lam)
    chosen = None if args.image is not None else chosen_queries(args, task.name)
    log_file = results / "figures" / "E2.log"
    # E1's lock: no E1 swaps the task's folder while E2 writes into it. E2.log goes on across runs
    # but is staged: a failed or killed run leaves the earlier log byte-identical.
    with stage_lock(results), atomic_path(log_file) as staged:
        with staged_log(staged, previous=log_file):  # only now: bad inputs leave no file behind
            log.info("E2 %s, run %s: λ = %g (%s)", task.name, tr.run, lam, lam_source)
            if args.image is not None:
                figs = results / "figures"
                return search_picture(args, space, conditions, z0, lam, figs, embed_ms)
            draw(args, tr, space, chosen, lam, lams)


def chosen_queries(args, task_name: str):
    """The --query-id rows of the task's query file (default: its first three)."""
    queries = read_queries(args.data_root, task_name)
    queries.index = queries["query_id"].astype(int)
    ids = args.query_id or queries.index[:3].tolist()
    unknown = sorted(set(ids) - set(queries.index))
    if unknown:
        raise SuiteError(f"--query-id {unknown} not in the query file (ids 0..{len(queries) - 1})")
    return queries.loc[ids].reset_index(drop=True)


def draw(args, tr: TaskRun, space: SearchSpace, chosen, lam, lams) -> None:
    """Result grids and Fig 5 (when the images are at hand), Fig 6, config.json, REPORT.md."""
    run, task, results = tr.run, tr.task, tr.results
    figs = results / "figures"
    paths, not_drawn = [], []
    missing = space.missing_images(chosen["image"])
    if missing and args.images is not None:
        raise SuiteError(
            f"--images {args.images}: no picture {missing[0]} for query image "
            f"{chosen['image'].iloc[0]}; DIR must hold the dataset's images as <class>/<file>"
        )
    if missing:  # e.g. a run imported from the authors' release: embeddings, no pictures
        not_drawn.append(
            f"result grids (results_q<K>.png, fig5_q<K>.png) need the dataset's images: re-run "
            f"E2_visualize.py --task {task.name} --run {run} --images DIR (DIR holding "
            f"<class>/<file> as test.csv names them after images/; docs/release.md)"
        )
        log.warning("E2: %s is not there; %s", missing[0], not_drawn[-1])
    else:
        log.info("E2: result grids search %s", space.describe())
        e1 = tr.evaluated()
        # E1's rankings are of the test split: reused only for the same database and λ
        reuse = lam == e1.get("lambda") and space.database == "test"
        grids = shown.result_grids(
            space, chosen, lam, e1_results=results if reuse else None, alpha=e1.get("alpha", 1.0)
        )
        paths += figures.result_grids(space, grids, figs)
        query = chosen.iloc[0]
        fig5 = figs / f"fig5_q{query['query_id']}{figures.database_suffix(space)}.png"
        rows = shown.lambda_rows(space, query, lams)
        paths.append(figures.lambda_figure(space, rows, fig5, seed=args.seed))
    paths += figures.run_figures(
        results.parent,
        tr.weights,
        [t.name for t in tasks_of(task.dataset, args.data_root)],
        run,
    )
    paths += plane.draw_task_planes(results, f"{task.name}, run {run}")  # numbers only: no images
    write_json(
        figs / "config.json",
        stage_config(
            args,
            run=run,
            search_lambda=lam,
            database=space.database,
            images=None if args.images is None else str(args.images),
            not_drawn=not_drawn,  # REPORT.md's figure list can say why a figure is missing
        ),
    )
    for p in paths:
        log.info("E2: wrote %s", p)
    report = write_report(args.results_root, args.weights_root, args.data_root, run, task.dataset)
    log.info("report: %s", report)


if __name__ == "__main__":
    sys.exit(run_stage(main))
