"""Every command-line flag the project names is one a command of ours defines.

Messages, docstrings and READMEs of the live engine's parts (engine/, model/, profiles/,
bridges/ with its receivers and viewer) name hop-live's flags: those must be in
hop-live's parser. The top-level README names flags of every command: each must be
in the parser of one of the console scripts in pyproject.toml.
"""

from __future__ import annotations

import argparse
import importlib
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*")
COMMAND = re.compile(r"\bhop-[a-z0-9-]+")
# Flags of other programs quoted beside ours (pytest's and pip's, in the README's commands).
OTHER_PROGRAMS = {"--benchmark-enable", "--benchmark-disable", "--benchmark-json", "--no-deps",
                  "--nproc_per_node", "--standalone", "--ignore-length"}  # pytest, pip, torchrun, sox
LIVE_PARTS = ("engine", "model", "profiles", "bridges")
SOURCES = ("*.py", "*.md", "*.cs", "*.h", "*.cpp", "*.js", "*.html", "*.mjs", "*.toml")


class _Captured(Exception):
    def __init__(self, parser):
        self.parser = parser


def parser_of(entry_point: str) -> argparse.ArgumentParser:
    """The argument parser a console script builds (caught as it starts to parse)."""
    module, function = entry_point.split(":")
    original = argparse.ArgumentParser.parse_args

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    argparse.ArgumentParser.parse_args = capture
    try:
        getattr(importlib.import_module(module), function)([])
    except _Captured as captured:
        return captured.parser
    finally:
        argparse.ArgumentParser.parse_args = original
    raise AssertionError(f"{entry_point} did not parse arguments")


def flags_of(parser: argparse.ArgumentParser) -> set[str]:
    flags = {option for action in parser._actions for option in action.option_strings}
    for action in parser._actions:  # subcommands (hop-bench latency, ...)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= flags_of(sub)
    return flags


def named_flags(files) -> dict[tuple[str, str], str]:
    """(flag, the command a line names or ''): where first seen. A line that names one of our
    commands (``hop-train --config ...``) names that command's flags."""
    named = {}
    for path in files:
        continued: list[str] = []  # the command of a line that ends in a backslash goes on
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            commands = [c for c in COMMAND.findall(line) if c != "hop-live"] or continued
            for flag in FLAG.findall(line):
                named.setdefault((flag, commands[0] if commands else ""), f"{path.relative_to(ROOT)}:{number}")
            continued = commands if line.rstrip().endswith("\\") else []
    return named


def live_part_files() -> list[Path]:
    files = set()
    for part in LIVE_PARTS:
        for pattern in SOURCES:
            files.update(p for p in (ROOT / part).rglob(pattern)
                         if "node_modules" not in p.parts and p.name != "viewer.js")  # viewer.js: a minified bundle
    return sorted(files)


@pytest.fixture(scope="module")
def scripts() -> dict[str, set[str]]:
    entry_points = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    return {name: flags_of(parser_of(target)) for name, target in entry_points.items()}


def test_the_live_engine_names_only_flags_hop_live_has(scripts):
    named = named_flags(live_part_files())
    assert {("--ws", ""), ("--ws-token", ""), ("--no-asr", ""), ("--checkpoint", "")} <= set(named)
    unknown = {f"{command} {flag}".strip(): where for (flag, command), where in named.items()
               if flag not in scripts.get(command, set()) | scripts["hop-live"] | OTHER_PROGRAMS}
    assert unknown == {}, f"flags the named command (else hop-live) does not have: {unknown}"


def test_the_readme_names_only_flags_our_commands_have(scripts):
    named = named_flags([ROOT / "README.md"])
    known = set().union(*scripts.values()) | OTHER_PROGRAMS
    unknown = {flag: where for (flag, _), where in named.items() if flag not in known}
    assert unknown == {}, f"flags no command defines: {unknown}"
