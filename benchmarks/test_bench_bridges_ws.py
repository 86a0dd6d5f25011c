"""Per-frame cost of the WebSocket wire formats and loopback send-to-receive latency.

pytest runs these once as tests (--benchmark-disable); for figures:
    .venv/bin/python -m pytest tests/bridges/test_bridges_bench_ws.py --benchmark-enable -p no:randomly
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from bridges_testkit import swinging_arms_pose
from websockets.sync.client import connect

from hop.bridges.frame import PoseFrame
from hop.bridges.ws import WebSocketOptions, WebSocketSink
from hop.bridges.ws_protocol import BINARY_HEADER, VrmPoseEncoder, encode_binary, encode_json, frame_joints
from hop.model.skeleton import TED_EXPRESSIVE, TED_GESTURE


def frames(skeleton, n: int = 64) -> list[PoseFrame]:
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        if skeleton is TED_GESTURE:
            dir_vec = swinging_arms_pose(i / 15)
        else:
            v = rng.normal(size=(skeleton.n_bones, 3))
            dir_vec = (v / np.linalg.norm(v, axis=1, keepdims=True)).reshape(-1).astype(np.float32)
        out.append(PoseFrame(i, time.perf_counter(), dir_vec, True, skeleton=skeleton.name))
    return out


@pytest.mark.parametrize("skeleton", [TED_GESTURE, TED_EXPRESSIVE], ids=lambda s: s.name)
def test_bridges_bench_ws_encode_json(benchmark, skeleton):
    pose = VrmPoseEncoder()
    batch = frames(skeleton)
    counter = iter(range(10 ** 9))

    def encode() -> str:
        f = batch[next(counter) % len(batch)]
        return encode_json(f, frame_joints(f, skeleton), 1.0, pose(f))

    message = json.loads(benchmark(encode))
    assert message["type"] == "pose" and len(message["joints"]) == skeleton.n_joints
    assert len(message["pose"]) > 9


@pytest.mark.parametrize("skeleton", [TED_GESTURE, TED_EXPRESSIVE], ids=lambda s: s.name)
def test_bridges_bench_ws_encode_binary(benchmark, skeleton):
    batch = frames(skeleton)
    counter = iter(range(10 ** 9))

    def encode() -> bytes:
        f = batch[next(counter) % len(batch)]
        return encode_binary(f, skeleton, frame_joints(f, skeleton), 1.0)

    message = benchmark(encode)
    assert len(message) == BINARY_HEADER.size + 4 * (skeleton.pose_dim + 3 * skeleton.n_joints)


def test_bridges_bench_ws_send_call(benchmark):
    """What the engine thread pays per frame, with a JSON and a binary client connected."""
    sink = WebSocketSink(WebSocketOptions(port=0, client_queue_frames=4))
    try:
        with connect(sink.url + "?format=json") as a, connect(sink.url + "?format=binary") as b:
            a.recv(timeout=5), b.recv(timeout=5)
            deadline = time.monotonic() + 5
            while sink.stats()["clients"] < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            frame = frames(TED_GESTURE, 1)[0]

            # Paced by a pause before each timed call, or this would time the shedding path.
            benchmark.pedantic(sink.send, args=(frame,), setup=lambda: time.sleep(0.002), rounds=300)
            assert sink.stats()["errors"] == 0 and sink.stats()["frames_in"] >= 1
    finally:
        sink.close()


@pytest.mark.parametrize("wire_format", ["binary", "json"])
def test_bridges_bench_ws_loopback_latency(benchmark, wire_format):
    """Engine send() to a websockets client's recv() on 127.0.0.1, one frame at a time."""
    sink = WebSocketSink(WebSocketOptions(port=0))
    latencies: list[float] = []
    batch = frames(TED_GESTURE)
    try:
        with connect(f"{sink.url}?format={wire_format}", max_size=None) as client:
            client.recv(timeout=5)
            deadline = time.monotonic() + 5
            while sink.stats()["clients"] < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            counter = iter(range(10 ** 9))

            def round_trip() -> None:
                f = batch[next(counter) % len(batch)]
                start = time.perf_counter()
                sink.send(f)
                client.recv(timeout=5)
                latencies.append(time.perf_counter() - start)

            for _ in range(50):  # figures even when the benchmark plugin is disabled
                round_trip()
            benchmark(round_trip)
    finally:
        sink.close()
    ms = np.array(latencies) * 1e3
    benchmark.extra_info.update({"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))})
    print(f"\n{wire_format}: send-to-receive p50 {np.percentile(ms, 50):.3f} ms, p99 {np.percentile(ms, 99):.3f} ms "
          f"over {len(ms)} frames")
    assert np.percentile(ms, 50) < 20
