"""Every stage's --help explains every flag, and says how run names are formed and found."""

from __future__ import annotations

import argparse
import importlib

import pytest

from src.hints import STAGE_SCRIPTS


class _Built(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def stage_parser_of(stage: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser a stage builds, caught at its parse_args call (nothing runs)."""
    mod = importlib.import_module(STAGE_SCRIPTS[stage].removesuffix(".py"))

    def catch(self, args=None, namespace=None):
        raise _Built(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    with pytest.raises(_Built) as e:
        mod.parse_args([])
    return e.value.parser


@pytest.mark.parametrize("stage", list(STAGE_SCRIPTS))
def test_every_flag_has_a_help_line(stage, monkeypatch):
    parser = stage_parser_of(stage, monkeypatch)
    bare = [
        a.option_strings[0] if a.option_strings else a.dest
        for a in parser._actions
        if not (a.help or "").strip()
    ]
    assert bare == [], f"{stage}: flags without help: {bare}"


@pytest.mark.parametrize("stage", ["B1", "C1", "D1", "E1", "E2"])
def test_help_says_how_the_run_is_named_and_found(stage, monkeypatch):
    text = " ".join(stage_parser_of(stage, monkeypatch).format_help().split())
    assert "<dataset>_<backbone>_e<E>_<ft|frozen>" in text
    assert "only run" in text  # later stages find it
