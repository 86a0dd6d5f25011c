"""Every command-line flag the bridges name (in error messages, docstrings, READMEs, receiver
sources) is a flag hop-live has: engine/cli.py's argument parser is the list."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
# Flags of other programs that the bridges' READMEs quote (pytest's, in the benchmark commands).
OTHER_PROGRAMS = {"--benchmark-enable", "--benchmark-disable"}
SOURCES = ("*.py", "*.md", "*.cs", "*.h", "*.cpp", "src/*.js", "*.html", "*.mjs")


def cli_flags() -> set[str]:
    text = (ROOT / "engine" / "cli.py").read_text()
    return set(re.findall(r"add_argument\(\s*\"(--[a-z][a-z0-9-]*)\"", text))


def bridge_files() -> list[Path]:
    files = set()
    for pattern in SOURCES:
        files.update(path for path in (ROOT / "bridges").rglob(pattern) if "node_modules" not in path.parts)
    return sorted(files)


def test_bridges_name_only_flags_hop_live_has():
    known = cli_flags()
    assert {"--ws", "--ws-token", "--ws-allow-remote", "--osc", "--vmc", "--bvh", "--osc-control"} <= known
    named = {}
    for path in bridge_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for flag in FLAG.findall(line):
                named.setdefault(flag, f"{path.relative_to(ROOT)}:{number}")
    assert {"--ws", "--ws-token", "--ws-allow-remote"} <= set(named), "the WebSocket errors name their flags"
    unknown = {flag: where for flag, where in named.items() if flag not in known | OTHER_PROGRAMS}
    assert unknown == {}, f"flags hop-live does not have (engine/cli.py): {unknown}"
