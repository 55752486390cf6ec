"""Argument types: a bad flag value is refused when the arguments are parsed, with argparse's one
line and exit code 2. Below the registry, so its Recipe fields can name their own types.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from pathlib import Path

from src.errors import SuiteError


def int_at_least(low: int, most: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer ≥ `low` (epochs ≥ 1, workers ≥ 0, …), and ≤ `most` if given."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is too small: use an integer ≥ {low}")
        if most is not None and value > most:
            raise argparse.ArgumentTypeError(f"{value} is too large: use an integer ≤ {most}")
        return value

    parse.__name__ = f"integer ≥ {low}"  # argparse names the type in its message
    return parse


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0 (learning rate, lr gamma, …)."""
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value:g} must be > 0")
    return value


def nonnegative_float(text: str) -> float:
    """An argparse type: a finite number ≥ 0 (λ, weight decay, regularisation weights)."""
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value:g} must be ≥ 0")
    return value


def fraction(text: str) -> float:
    """An argparse type: a number ≥ 0 and < 1 (label smoothing)."""
    value = _finite(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{value:g} must be ≥ 0 and < 1")
    return value


def open_fraction(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1 (a target mTS@10)."""
    value = _finite(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{value:g} must be between 0 and 1")
    return value


MIN_IMAGE_SIZE = 16  # no backbone takes less; each one's own minimum: method/encoder.py BACKBONES
image_size = int_at_least(MIN_IMAGE_SIZE)
image_size.__name__ = "image size"

RUN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")  # one path component, no leading . or -


def check_run_name(run: str, what: str = "--run") -> str:
    """`run` if it is one safe path component (so weights/<run> stays under its root), else fail."""
    if not isinstance(run, str) or not RUN_NAME.fullmatch(run):
        raise SuiteError(
            f"{what} {run!r} is not a run name: use 1-100 of A-Z a-z 0-9 . _ - (not starting "
            "with . or -), one folder name under the root, no '/'"
        )
    return run


def run_name_arg(text: str) -> str:
    """An argparse type: a run name (one safe folder name; see check_run_name)."""
    try:
        return check_run_name(text, "run name")
    except SuiteError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def folder_arg(text: str) -> Path:
    """An argparse type: a folder that exists or can be created (not a file)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder")
    return path
