"""Per-frame cost of the OSC bridges, and send-to-receive latency on loopback.

With the project's default --benchmark-disable each benchmark body runs once, as
a plain test that checks its output. Figures:

    .venv/bin/python -m pytest tests/bridges/test_bridges_bench_vmc.py --benchmark-enable -s

(bridges/README.md lists the numbers measured that way.)
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from bridges_testkit import OscReceiverProcess, messages_of, perturbed, random_unit_pose
from osc_decoder import decode_packet

from hop.bridges.frame import PoseFrame
from hop.bridges.osc import OscSink, encode_native_bundle
from hop.bridges.retarget import Retargeter, load_rig
from hop.bridges.vmc import VmcBundleEncoder, VmcOptions, VmcSink, rig_bones
from hop.model.skeleton import TED_EXPRESSIVE, TED_GESTURE

RIG = load_rig("unity_humanoid")


def gesture_poses(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [perturbed(TED_GESTURE.mean_pose(), rng, 0.2) for _ in range(count)]


def cycling(items: list):
    state = {"i": 0}

    def take():
        state["i"] += 1
        return items[state["i"] % len(items)]
    return take


def test_bridges_bench_vmc_retarget_and_encode_55_bones(benchmark):
    """What VmcSink does per frame: swing retargeting onto all 55 bones, then patching the bundle template."""
    retargeter = Retargeter(RIG, "ted_gesture")
    encoder = VmcBundleEncoder(rig_bones(RIG, list(range(len(RIG.bones)))))
    next_pose = cycling(gesture_poses(64))

    def one_frame() -> bytes:
        (packet,) = encoder.encode(retargeter(next_pose()), 1.25)  # loopback: one datagram
        return packet

    packet = benchmark(one_frame)
    elements = decode_packet(packet)["elements"]
    bones = [m for m in elements if m["address"] == "/VMC/Ext/Bone/Pos"]
    assert len(RIG.bones) == 55 and len(bones) == 55
    assert [m["args"][0] for m in bones] == list(RIG.bone_names)
    quats = np.array([m["args"][4:8] for m in bones])
    np.testing.assert_allclose(np.linalg.norm(quats, axis=1), 1.0, atol=1e-5)
    assert np.sum(np.abs(quats[:, 3]) < 0.9999) >= 8  # the driven bones really turned
    assert elements[-1] == {"address": "/VMC/Ext/T", "types": "f", "args": [1.25]}


@pytest.mark.parametrize("skeleton", [TED_GESTURE, TED_EXPRESSIVE], ids=lambda s: s.name)
def test_bridges_bench_native_osc_encode(benchmark, skeleton):
    rng = np.random.default_rng(1)
    frames = [PoseFrame(i, 100.0 + i / 30, random_unit_pose(rng, skeleton.n_bones), True, skeleton=skeleton.name)
              for i in range(32)]
    packet = benchmark(encode_native_bundle, frames[0])
    assert packet == encode_native_bundle(frames[0])
    elements = decode_packet(packet)["elements"]
    assert len(elements[5]["args"]) == 3 * skeleton.n_bones and len(elements[6]["args"]) == 3 * skeleton.n_joints
    next_frame = cycling(frames)
    benchmark.extra_info["bytes"] = len(packet)
    assert len({encode_native_bundle(next_frame()) for _ in range(4)}) == 4


def percentiles_ms(values: list[float]) -> dict[str, float]:
    ms = np.array(values) * 1e3
    return {"median": float(np.median(ms)), "p95": float(np.percentile(ms, 95)), "p99": float(np.percentile(ms, 99)),
            "max": float(ms.max())}


@pytest.mark.parametrize("kind", ["native", "vmc"])
def test_bridges_bench_loopback_send_to_receive_latency(kind, record_property):
    """perf_counter() just before the sink encodes and sends, to perf_counter() right after recv() in another
    process (osc_decoder.py); both clocks are CLOCK_MONOTONIC. Frames are paced at 100 Hz, like a live stream."""
    receiver = OscReceiverProcess()
    sink = (OscSink("127.0.0.1", receiver.port) if kind == "native"
            else VmcSink("127.0.0.1", receiver.port, VmcOptions(send_rate=100.0)))
    poses = gesture_poses(300, seed=2)
    sent = []
    try:
        next_due = time.perf_counter()
        for i, pose in enumerate(poses):
            next_due += 0.01
            while time.perf_counter() < next_due:
                time.sleep(0.0005)
            now = time.perf_counter()
            sent.append(now)
            sink.send(PoseFrame(i, now, pose, speaking=True))
        lines = receiver.collect(len(poses), timeout=10.0)
    finally:
        sink.close()
        receiver.close()
    assert len(lines) == len(poses), f"lost {len(poses) - len(lines)} of {len(poses)} datagrams on loopback"
    for i in (0, len(lines) // 2, len(lines) - 1):  # in order, and the right frames
        messages = messages_of(lines[i])
        if kind == "native":
            assert messages[0]["args"] == [i] and messages[2]["args"] == [sent[i]]
        else:
            assert messages[-1]["address"] == "/VMC/Ext/T"
            assert abs(messages[-1]["args"][0] - i / 100.0) < 1e-5  # the send clock: index / send rate
    latency = [line["received"] - t for line, t in zip(lines, sent)]
    assert min(latency) > 0
    figures = percentiles_ms(latency)
    record_property(f"{kind}_latency_ms", figures)
    print(f"\n{kind} OSC loopback send-to-receive over {len(latency)} frames: "
          + ", ".join(f"{k} {v:.3f} ms" for k, v in figures.items()))
    # Generous: this machine is shared; a healthy loopback is well under a millisecond at the median.
    assert figures["median"] < 20.0
