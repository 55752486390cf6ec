"""What every stage script shares: common flags, seeding, devices, logging, one-line errors."""

from __future__ import annotations

import argparse
import logging
import random
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from src.errors import SuiteError

LOGGER = "backward_search"  # the one logger every stage and module writes to
log = logging.getLogger(LOGGER)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults in --help, except the uninformative None/False ones."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def stage_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the flags every stage has."""
    p = argparse.ArgumentParser(description=description, formatter_class=_HelpFormatter)
    p.add_argument(
        "--data-root", type=Path, default=Path("data"), help="processed datasets (A1, A2 outputs)"
    )
    p.add_argument(
        "--weights-root", type=Path, default=Path("weights"), help="encoders, embeddings, students"
    )
    p.add_argument(
        "--results-root", type=Path, default=Path("results"), help="metrics, tables, figures"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="random seed; the same seed gives the same artifacts"
    )
    return p


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        default="auto",
        help="'auto' (CUDA when available, else CPU), 'cpu', 'cuda', 'cuda:1', …",
    )


def resolve_device(name: str):  # -> torch.device
    """'auto' → CUDA when available, else CPU; otherwise the named device, checked."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise SuiteError(
            f"--device {name!r} is not a device name; use auto, cpu or cuda[:N]"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SuiteError(
            f"--device {name} asked for CUDA but torch sees no CUDA device; use --device cpu"
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


def setup_logging(log_file: Path | None = None) -> None:
    """Log to stdout and, when given, to a file beside the artifacts."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="a", encoding="utf-8"))
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=handlers, force=True)


def run_stage(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> int:
    """Run a stage's main; a SuiteError becomes a one-line message on stderr and exit code 2."""
    try:
        main(argv)
    except SuiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "error: interrupted; finished artifacts are intact, re-run the stage to continue",
            file=sys.stderr,
        )
        return 130
    return 0
