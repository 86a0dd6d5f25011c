"""An output's fault is one state in the status, in words, with its start time: a refusing OSC
target ("osc: no receiver at 127.0.0.1:9000 since 12:01:03", a counter of refused sends), a
full disk under a BVH recording ("bvh: disk full since ..."); said once in the errors when it
begins and once when it ends, shown on the status line while it lasts."""

from __future__ import annotations

import socket
import subprocess
import time

import numpy as np
import pytest

from hop.bridges.bvh import BvhRecorder
from hop.bridges.frame import PoseFrame
from hop.bridges.osc import OscSink
from hop.engine.outputs import Outputs
from hop.engine.status import EngineStatus

POSE = np.tile(np.array([0.0, 1.0, 0.0], np.float32), 9)  # ted_gesture: 9 bones, all pointing down


def frame(index: int) -> PoseFrame:
    return PoseFrame(index, time.perf_counter(), POSE, speaking=False)


def free_udp_port() -> int:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now: the kernel answers "port unreachable"
    return port


def stream(outputs: Outputs, frames: range, period_s: float = 1 / 60) -> None:
    for index in frames:
        outputs.send(frame(index))
        if index % 15 == 0:
            outputs.publish()
        time.sleep(period_s)
    outputs.publish()


def test_a_refusing_osc_target_is_one_fault_state_then_ends_when_a_receiver_listens():
    port = free_udp_port()
    status = EngineStatus()
    osc = OscSink("127.0.0.1", port)
    outputs = Outputs([osc], status)
    began = time.time()
    try:
        stream(outputs, range(120))  # 2 s at 60 Hz
        stats = osc.stats()
        assert stats["fault"] == f"no receiver at 127.0.0.1:{port}", stats
        assert stats["refused"] > 30 and stats["errors"] == 0, stats
        assert began - 1 <= stats["fault_since"] <= time.time()
        said = list(status.errors)
        assert len(said) == 1 and said[0].startswith(f"osc: no receiver at 127.0.0.1:{port} since "), said
        line = status.status_line()
        assert f"osc: no receiver at 127.0.0.1:{port} since " in line and "sends refused" in line, line
        assert status.snapshot()["output_faults"]["osc"]["fault"] == f"no receiver at 127.0.0.1:{port}"
        # A receiver starts listening: the fault ends (once sends go a second without a refusal).
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.bind(("127.0.0.1", port))
        receiver.settimeout(1.0)
        try:
            stream(outputs, range(120, 210))
            assert receiver.recv(65536).startswith(b"#bundle")
        finally:
            receiver.close()
        assert osc.stats()["fault"] == "" and status.snapshot()["output_faults"] == {}
        assert "no receiver" not in status.status_line()
        said = list(status.errors)
        assert len(said) == 2 and said[1].startswith(f"osc: no receiver at 127.0.0.1:{port}: over at "), said
    finally:
        outputs.close()


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs with 8 KiB left (needs the right to mount, as root in the test machines)."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        (mount_point / "filler").write_bytes(bytes(56 * 1024))
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], capture_output=True)


def test_a_full_disk_is_named_on_the_status_line_and_ends_when_space_is_back(tiny_disk):
    status = EngineStatus()
    recorder = BvhRecorder(tiny_disk / "take.bvh", skeleton="ted_gesture")
    outputs = Outputs([recorder], status)
    try:
        deadline = time.monotonic() + 20
        index = 0
        while not recorder.stats()["fault"]:
            assert time.monotonic() < deadline, "the disk never filled up"
            stream(outputs, range(index, index + 30), period_s=0.002)
            index += 30
        time.sleep(0.2)
        outputs.publish()
        stats = recorder.stats()
        assert stats["fault"] == "disk full" and stats["errors"] > 0, stats
        line = status.status_line()
        assert "bvh: disk full since " in line, line
        assert [e for e in status.errors if e.startswith("bvh: disk full since ")], list(status.errors)
        (tiny_disk / "filler").unlink()  # space again: the next frame that is written ends the fault
        stream(outputs, range(index, index + 10), period_s=0.01)
        time.sleep(0.3)
        outputs.publish()
        assert recorder.stats()["fault"] == "" and "disk full" not in status.status_line()
        assert status.errors[-1].startswith("bvh: disk full: over at "), list(status.errors)
    finally:
        outputs.close()
