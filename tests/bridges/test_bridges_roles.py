"""The bridges by role: every output is a PoseSink; control inputs hand a validated Control to
the callback they are given and depend on no output and on nothing of the engine."""

from __future__ import annotations

import ast
import socket
from pathlib import Path

from hop.bridges.bvh import BvhOptions, BvhRecorder
from hop.bridges.frame import PoseSink
from hop.bridges.osc import OscSink
from hop.bridges.vmc import VmcOptions, VmcSink
from hop.bridges.ws import WebSocketOptions, WebSocketSink

BRIDGES = Path(__file__).resolve().parents[2] / "bridges"
OUTPUTS = {"osc", "vmc", "avatar", "bvh", "ws", "ws_protocol", "ws_http", "ws_auth"}
CONTROL_INPUTS = {"control", "osc_control", "ws_control"}
SHARED = {"frame", "retarget", "osc_wire"}


def bridge_imports(module: str) -> set[str]:
    """The hop.* modules a bridges module imports."""
    tree = ast.parse((BRIDGES / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hop"):
            found.add(node.module)
            if node.module == "hop.bridges":
                found.update(f"hop.bridges.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("hop"))
    return found


def test_bridges_every_module_has_one_role():
    modules = {path.stem for path in BRIDGES.glob("*.py")} - {"__init__"}
    assert modules == OUTPUTS | CONTROL_INPUTS | SHARED, "add a new module to its role here and in bridges/README.md"


def test_bridges_control_inputs_know_no_output_and_no_engine():
    for module in CONTROL_INPUTS:
        imported = bridge_imports(module)
        assert not {name for name in imported if name.startswith("hop.engine")}, module
        assert not {name.removeprefix("hop.bridges.") for name in imported} & OUTPUTS, (module, imported)
    for module in OUTPUTS | SHARED:
        assert not {name for name in bridge_imports(module) if name.startswith("hop.engine")}, module


def test_bridges_every_output_is_a_pose_sink(tmp_path):
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    port = receiver.getsockname()[1]
    sinks = [OscSink("127.0.0.1", port), VmcSink("127.0.0.1", port, VmcOptions(rig="unity_humanoid")),
             WebSocketSink(WebSocketOptions(port=0, skeleton="ted_gesture")),
             BvhRecorder(tmp_path / "take.bvh", BvhOptions(fps=15.0, skeleton="ted_gesture"))]
    try:
        for sink in sinks:
            assert isinstance(sink, PoseSink), type(sink).__name__
            stats = sink.stats()
            assert isinstance(stats, dict) and {"sent", "dropped", "errors", "last_error"} <= set(stats), stats
    finally:
        for sink in sinks:
            sink.close()
        receiver.close()
