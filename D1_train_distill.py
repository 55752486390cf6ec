"""D1 — distill Backward Search into a student network (SPEC §6).

    python D1_train_distill.py --task wikiart-style [--lambda 1.1] [--epochs 49] [--run NAME]

Reads the encoder's heads (weights/<run>/encoder.pt, B1) and the train-split embeddings
(weights/<run>/embeddings/, C1: only the train rows are read); writes weights/<run>/student_<task>_lam<λ>.pt ({"config",
"model"}), its .json config and a per-epoch _log.csv, atomically.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict

import numpy as np
import pandas as pd

from src.argtypes import int_at_least, nonnegative_float, run_name_arg
from src.artifacts import require, save_torch, stage_config, write_csv, write_json
from src.atomic import atomic_files, stage_lock
from src.cli import (
    add_device_arg,
    resolve_device,
    run_stage,
    seed_everything,
    setup_logging,
    stage_parser,
    staged_log,
)
from src.errors import SuiteError
from src.evaluation.space import stage_hint
from src.evaluation.task_run import open_task_run, resolve_lambda
from src.method.student import HIDDEN, DistillConfig, batch_starts, distill, student_path
from src.progress import run_estimate
from src.runs import RUN_HELP
from src.tasks import TASK_HELP

log = logging.getLogger("src.D1")
SLOW_D1_SECONDS = 600.0  # above this, D1 on a CPU warns after its first batches


def parse_args(argv: list[str] | None):
    p = stage_parser(__doc__.split("\n")[0])
    p.add_argument(
        "--task", required=True, metavar="TASK", help=f"which task's conditions: {TASK_HELP}"
    )
    p.add_argument(
        "--lambda",
        dest="lam",
        type=nonnegative_float,
        help="λ of the teacher; None = the task's default λ",
    )
    d = DistillConfig()
    p.add_argument(
        "--epochs", type=int_at_least(1), default=d.epochs, help="the authors evaluate epoch 49"
    )
    p.add_argument(
        "--batch-size",
        type=int_at_least(2),
        default=d.batch_size,
        help="teacher and student batch (BatchNorm needs ≥ 2)",
    )
    p.add_argument(
        "--student-reg",
        type=nonnegative_float,
        default=d.student_reg,
        help="weight of mean|s − z0|",
    )
    p.add_argument("--run", type=run_name_arg, help=RUN_HELP)
    add_device_arg(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    tr = open_task_run(args)
    task, run, rdir = tr.task, tr.run, tr.weights
    lam, _ = resolve_lambda(task, args.lam)  # D1 makes a student: it reads no other λ
    out = student_path(rdir, task.name, lam)
    setup_logging()
    seed_everything(args.seed)
    device = resolve_device(args.device)
    require(rdir / "encoder.pt", f"B1_train_encoder.py --dataset {task.dataset}")
    # the student's four files are built aside and moved in together: a failed D1 leaves the
    # previous student, its config and its log exactly as they were
    names = [out.name, out.with_suffix(".json").name, out.stem + "_log.csv", out.stem + ".log"]
    with stage_lock(out), atomic_files(rdir, names) as tmp:
        with staged_log(tmp / f"{out.stem}.log"):  # closed before the files are moved (or dropped)
            train_student(args, task, run, lam, rdir, tmp / out.name, device)


def train_student(args, task, run: str, lam: float, rdir, out, device) -> None:
    """Distill the student and write its files as `out` (.pt), .json, _log.csv (in staging)."""
    import torch  # here, not above `src` (its import chooses the OpenMP wait policy first)

    from src.method.encoder import load_encoder
    from src.partitions import open_partitions

    encoder, enc_cfg = load_encoder(rdir, device)
    if enc_cfg.get("dataset") != task.dataset:
        raise SuiteError(
            f"run {run} holds a {enc_cfg.get('dataset')} encoder; task {task.name} needs "
            f"{task.dataset}: pass --run of a {task.dataset} encoder"
        )
    store = open_partitions(rdir)  # memory-mapped: only the train rows are read
    z_train = torch.from_numpy(store.take(np.flatnonzero(store.column("split") == "train")))
    if len(z_train) < 2:  # e.g. trimmed, or a release without them
        raise SuiteError(
            f"{store.source} holds {len(z_train)} train embeddings, and D1 distils on "
            f"the train split: re-run {stage_hint('C1', task, run)}"
        )
    log.info(
        "D1 %s: λ=%g, %d train embeddings of size %d, %d epochs on %s",
        task.name,
        lam,
        len(z_train),
        z_train.shape[1],
        args.epochs,
        device,
    )
    settings = DistillConfig(
        epochs=args.epochs, batch_size=args.batch_size, student_reg=args.student_reg
    )
    t0 = time.time()
    student, epochs_log = distill(
        encoder.heads,
        z_train,
        task.conditions,
        enc_cfg["num_classes"],
        lam,
        settings,
        seed=args.seed,
        device=device,
        on_pace=cpu_time_estimate(device, settings, len(z_train)),
    )
    config = {
        "task": task.name,
        "dataset": task.dataset,
        "run": run,
        "embedding_size": int(z_train.shape[1]),
        "conditions": list(task.conditions),
        "num_classes": {a: int(enc_cfg["num_classes"][a]) for a in task.conditions},
        "hidden": HIDDEN,
        "lambda": lam,
        **asdict(settings),
        "seed": args.seed,
        "embeddings_fingerprint": store.fingerprint,  # E1 warns when C1 has re-run since
    }
    model = {k: v.cpu() for k, v in student.state_dict().items()}
    write_csv(out.with_name(out.stem + "_log.csv"), pd.DataFrame(epochs_log))
    write_json(out.with_suffix(".json"), stage_config(args, **config, seconds=time.time() - t0))
    save_torch(out, {"config": config, "model": model})
    last = epochs_log[-1]
    log.info(
        "D1 %s: final mse %.5f (teacher %.1f iterations) → %s (%.1f s)",
        task.name,
        last["mse"],
        last["teacher_iterations"],
        rdir / out.name,
        time.time() - t0,
    )


def cpu_time_estimate(device, settings: DistillConfig, n: int):
    """On a CPU, a pace callback that logs D1's time from its first batches and warns in one line
    when the run would take more than SLOW_D1_SECONDS; None on an accelerator."""
    if device.type != "cpu":
        return None
    return run_estimate(
        "D1 on the CPU",
        f"{settings.epochs} epochs of {n} train embeddings",
        len(batch_starts(n, settings.batch_size)) * settings.epochs,
        SLOW_D1_SECONDS,
        "pass fewer --epochs (what they cost in precision@10: bench/RESULTS.md) or use a GPU "
        "(--device cuda)",
    )


if __name__ == "__main__":
    sys.exit(run_stage(main))
