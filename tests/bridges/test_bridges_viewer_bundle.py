"""The committed viewer bundle (bridges/viewer/static/viewer.js) is the build of the committed sources.

build.mjs records the SHA-256 of every source (src/, build.mjs, package.json,
package-lock.json) and of what it built in static/viewer.js.source-sha256; the
first test recomputes them, so changing a source without rebuilding fails here.
The second rebuilds the bundle from the sources and compares it byte for byte;
it needs Node.js and bridges/viewer/node_modules from `npm ci`, and skips without.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

VIEWER = Path(__file__).resolve().parents[2] / "bridges" / "viewer"
RECORD = VIEWER / "static" / "viewer.js.source-sha256"
SOURCE_FILES = ("build.mjs", "package.json", "package-lock.json")
BUILT_FILES = ("static/viewer.js", "static/third-party-licenses.txt")
REBUILD = "cd bridges/viewer && npm ci && node build.mjs, then commit bridges/viewer/static/"


def sources() -> list[str]:
    return sorted([path.relative_to(VIEWER).as_posix() for path in (VIEWER / "src").rglob("*") if path.is_file()]
                  + list(SOURCE_FILES))


def recorded() -> dict[str, str]:
    """path -> SHA-256 as build.mjs wrote them."""
    entries = {}
    for line in RECORD.read_text().splitlines():
        if line and not line.startswith("#"):
            digest, path = line.split("  ", 1)
            entries[path] = digest
    return entries


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bridges_viewer_bundle_matches_its_sources():
    assert RECORD.is_file(), f"{RECORD} is missing: {REBUILD}"
    entries = recorded()
    assert set(entries) == set(sources()) | set(BUILT_FILES), (
        f"the sources recorded for viewer.js ({sorted(entries)}) are not the viewer's sources and outputs "
        f"({sources() + list(BUILT_FILES)}): {REBUILD}")
    changed = [path for path in sources() if sha256(VIEWER / path) != entries[path]]
    assert not changed, f"changed since static/viewer.js was built: {changed}; rebuild it: {REBUILD}"
    edited = [path for path in BUILT_FILES if sha256(VIEWER / path) != entries[path]]
    assert not edited, f"{edited} differ from what build.mjs wrote (edited by hand?); rebuild: {REBUILD}"


def _node_modules_match_the_lock() -> str | None:
    """Why a rebuild cannot be trusted here, or None when it can."""
    if shutil.which("node") is None:
        return "no Node.js on this machine"
    installed = VIEWER / "node_modules" / ".package-lock.json"
    if not installed.is_file():
        return "bridges/viewer/node_modules missing (run npm ci there)"
    want = json.loads((VIEWER / "package-lock.json").read_text())["packages"]
    have = json.loads(installed.read_text())["packages"]
    differ = [name for name, entry in want.items()
              if name and not entry.get("optional") and have.get(name, {}).get("version") != entry.get("version")]
    return f"node_modules differs from package-lock.json ({differ[:3]}); run npm ci" if differ else None


def test_bridges_viewer_bundle_rebuilds_byte_identical(tmp_path):
    reason = _node_modules_match_the_lock()
    if reason:
        pytest.skip(reason)
    for path in sources():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(VIEWER / path, tmp_path / path)
    (tmp_path / "static").mkdir()
    os.symlink(VIEWER / "node_modules", tmp_path / "node_modules")
    build = subprocess.run(["node", "build.mjs"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr
    for path in (*BUILT_FILES, RECORD.relative_to(VIEWER).as_posix()):
        assert (tmp_path / path).read_bytes() == (VIEWER / path).read_bytes(), \
            f"rebuilding gives a different {path}: {REBUILD}"
