"""What every stage script shares: common flags, seeding, devices, logging, one-line errors.

The top of the library: only stage scripts (and the explorer's) import it."""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import random
import re
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from src.argtypes import folder_arg, int_at_least
from src.errors import SuiteError
from src.threads import SEARCH_THREADS, in_use, use_threads
from src.wait_policy import CHOSEN as WAIT_POLICY

SEED_MAX = 2**32 - 1  # NumPy's legacy seed (np.random.seed) takes no more
ROOT_LOGGER = "src"  # every module logs to getLogger(__name__), every stage to "src.<stage>"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults in --help, except the uninformative None/False ones."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


class _StageParser(argparse.ArgumentParser):
    """Applies --threads as soon as the arguments are parsed, before a stage computes anything."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, rest = super().parse_known_args(args, namespace)
        if hasattr(parsed, "threads"):
            use_threads(parsed.threads)
            WAIT_POLICY.check()
        return parsed, rest


def stage_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the flags every stage has."""
    p = _StageParser(description=description, formatter_class=_HelpFormatter)
    p.add_argument(
        "--data-root",
        type=folder_arg,
        default=Path("data"),
        help="processed datasets (A1, A2 outputs)",
    )
    p.add_argument(
        "--weights-root",
        type=folder_arg,
        default=Path("weights"),
        help="encoders, embeddings, students",
    )
    p.add_argument(
        "--results-root", type=folder_arg, default=Path("results"), help="metrics, tables, figures"
    )
    p.add_argument(
        "--seed",
        type=int_at_least(0, most=SEED_MAX),
        default=0,
        help="random seed; the same seed gives the same artifacts",
    )
    p.add_argument(
        "--threads",
        type=int_at_least(1),
        metavar="N",
        help="CPU threads of the arithmetic, at most the CPUs of the affinity mask (default: "
        f"OMP_NUM_THREADS, else those CPUs; Backward Search's loops: {SEARCH_THREADS}, see "
        "docs/stages.md)",
    )
    return p


def add_device_arg(p: argparse.ArgumentParser) -> None:
    """The --device flag of every stage that computes on a device (checked by resolve_device)."""
    p.add_argument(
        "--device",
        default="auto",
        help="'auto' (CUDA when available, else CPU), 'cpu', 'cuda', 'cuda:1', …",
    )


def add_index_arg(p: argparse.ArgumentParser, *, paper: bool = False) -> None:
    """--index: where the database is searched (src/method/index.py); `paper`: a stage whose
    default reproduces the paper's tables (E1), for which any other kind is not the protocol."""
    from src.method.index_sizing import KINDS  # light: no torch at --help

    note = " Not the paper's protocol: the tables then say so." if paper else ""
    p.add_argument(
        "--index",
        choices=KINDS,
        default="exact",
        help="exact (default: ours, tile by tile), faiss-flat (the same top-10), ivf or ivf-pq "
        "(approximate, built once per run and database into weights/<run>/index-<kind>-"
        "<database>, recall@10 calibrated ≥ 0.99 and stated in every output)." + note,
    )


DEVICE_NAME = re.compile(r"auto|cpu|cuda(:[0-9]+)?")  # what --device accepts


def resolve_device(name: str):  # -> torch.device
    """'auto' → CUDA when available, else CPU; 'cpu', 'cuda' or 'cuda:N', checked against the
    devices torch sees, so a wrong name fails here in one line rather than deep in a stage."""
    import torch

    if not DEVICE_NAME.fullmatch(name):
        raise SuiteError(f"--device {name!r} is not a device name; use auto, cpu, cuda or cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:  # e.g. an index past what torch parses (cuda:99999999999999999999)
        raise SuiteError(
            f"--device {name!r} is not a device torch can name; use cpu or cuda:N"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SuiteError(
                f"--device {name} asked for CUDA but torch sees no CUDA device; use --device cpu"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise SuiteError(
                f"--device {name}: torch sees {count} CUDA device(s), "
                f"cuda:0 … cuda:{count - 1}; pick one of them"
            )
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass


_threads_logged = False


def setup_logging(log_file: Path | None = None) -> None:
    """Log the `src` loggers (every module's and stage's) to stdout and, when given, to a file
    beside the artifacts; a second call closes the previous handlers (so a staged log can move)."""
    root = logging.getLogger(ROOT_LOGGER)
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    if hasattr(sys.stdout, "reconfigure"):  # a non-UTF-8 terminal shows λ as \u03bb, no error
        sys.stdout.reconfigure(errors="backslashreplace")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="a", encoding="utf-8"))
    for h in handlers:
        h.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(h)
    root.setLevel(logging.INFO)
    global _threads_logged
    if not _threads_logged:  # once per process, though a stage may set up its logs twice
        _threads_logged = True
        threads = in_use()
        root.info(
            "CPU threads: %d, Backward Search's loops %d; %s",
            threads["threads"], threads["search_threads"], WAIT_POLICY.line(),
        )  # fmt: skip


@contextlib.contextmanager
def staged_log(log_file: Path, previous: Path | None = None) -> Iterator[None]:
    """Log to a staged `log_file` (beside the artifacts being built) for the block, then close it
    so the stage's files can be moved into place, or dropped; `previous`: a log to go on from."""
    if previous is not None and previous.is_file():
        shutil.copyfile(previous, log_file)
    setup_logging(log_file)
    try:
        yield
    finally:
        setup_logging()  # the file is closed, whether the block finished or failed


# The errors of the machine, not of our code: a full or read-only disk, permissions, a path that
# is a file where a folder is needed. They become one line; any other OSError (EBADF, EINVAL, a
# missing file we should have checked with `require`, …) is a bug and keeps its traceback.
ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "the disk is full: free space, then re-run (finished artifacts are intact)",
    errno.EDQUOT: "the disk quota is exceeded: free space, then re-run",
    errno.EROFS: "the file system is read-only: choose writable --data-root/--weights-root/--results-root",
    errno.EACCES: "permission denied: fix the permissions or choose other roots",
    errno.EPERM: "operation not permitted: fix the permissions or choose other roots",
    errno.ENOTDIR: "a path component is a file, not a folder: check the roots",
    errno.EEXIST: "a file is in the way of a folder: check the roots",
    errno.EISDIR: "a folder is where a file should be: remove it or choose other roots",
    errno.ENAMETOOLONG: "the path is too long: choose shorter roots",
    errno.EIO: "an input/output error from the disk: check the device",
    errno.EFBIG: "a file outgrew the size limit (ulimit -f) or the file system: raise the limit",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n) or use fewer --workers",
}


def environment_error(e: OSError) -> str | None:
    """One line for an OSError caused by the machine (disk, permissions), else None."""
    hint = ENVIRONMENT_ERRNOS.get(e.errno) if e.errno is not None else None
    if hint is None:
        return None
    where = f"{e.filename}: " if e.filename else ""
    return f"{where}{e.strerror or e}; {hint}"


def out_of_memory(e: BaseException) -> bool:
    """Whether `e` says the machine ran out of memory (host RAM, or a CUDA device's)."""
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":  # torch's, CUDA
        return True
    return isinstance(e, RuntimeError) and "can't allocate memory" in str(e)  # torch, CPU


def one_line(text: str) -> str:
    """`text` with line breaks and other unprintable characters escaped (a path or a name may
    hold them), so an error stays one line."""
    return "".join(c if c.isprintable() or c == " " else ascii(c)[1:-1] for c in text)


def run_stage(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> int:
    """Run a stage's main; a SuiteError or an error of the machine (disk full, read-only,
    permissions, out of memory) becomes a one-line message on stderr and exit code 2; bugs keep
    their traceback. SIGINT stops a stage (exit 130, finished artifacts intact) even where it
    started ignored."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        # a background job of a shell script (`python D1_train_distill.py … &`) starts with SIGINT
        # ignored, so `kill -INT` did nothing; a stage is safe to interrupt, so it listens
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        main(argv)
    except SuiteError as e:
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:
        line = environment_error(e)
        if line is None:
            raise
        print(f"error: {one_line(line)}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:
        if not out_of_memory(e):
            raise
        first = one_line(str(e).strip().splitlines()[0][:200]) if str(e).strip() else ""
        print(
            f"error: out of memory ({type(e).__name__}: {first}); lower --batch-size (or the "
            "model's sizes), or use a machine with more memory",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(
            "error: interrupted; finished artifacts are intact, re-run the stage to continue",
            file=sys.stderr,
        )
        return 130
    return 0
