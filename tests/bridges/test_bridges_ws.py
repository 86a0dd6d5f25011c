"""WebSocketSink against real clients: websockets' own client and hand-written raw sockets."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import threading
import time

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from bridges_testkit import swinging_arms_pose
from hop.bridges.frame import PoseFrame, PoseSink
from hop.bridges.retarget import load_rig
from hop.bridges.ws import REPLY_QUEUE, WebSocketOptions, WebSocketSink, validate_options
from hop.bridges.ws_protocol import BINARY_HEADER
from hop.model.skeleton import TED_GESTURE

TOKEN = "test-token-0123456789abcdef"


@pytest.fixture
def make_sink():
    sinks = []

    def make(**fields) -> WebSocketSink:
        sink = WebSocketSink(WebSocketOptions(port=0, **fields))
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close()


def frame(index: int, t: float | None = None, **fields) -> PoseFrame:
    t = index / 15 if t is None else t
    return PoseFrame(index, time.perf_counter(), swinging_arms_pose(t), speaking=index % 2 == 0, **fields)


def hello(client) -> dict:
    message = json.loads(client.recv(timeout=5))
    assert message["type"] == "hello"
    return message


def wait_for(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


def wait_clients(sink: WebSocketSink, count: int) -> None:
    assert wait_for(lambda: sink.stats()["clients"] == count), sink.stats()


# --------------------------------------------------------------------- raw sockets

def raw_http(port: int, request_line: str, headers: dict[str, str] | None = None, rcvbuf: int | None = None,
             payload: bytes = b""):
    """Open a socket, send one request, return (socket, status code, bytes after the head)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    headers = {"Host": f"127.0.0.1:{port}", **(headers or {})}
    lines = [request_line] + [f"{k}: {v}" for k, v in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head else 0
    return sock, status, rest


def raw_upgrade(port: int, path: str = "/ws?format=json", rcvbuf: int | None = None) -> socket.socket:
    key = base64.b64encode(os.urandom(16)).decode()
    sock, status, _ = raw_http(port, f"GET {path} HTTP/1.1", {
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13"},
        rcvbuf=rcvbuf)
    assert status == 101
    return sock


def raw_get(port: int, path: str) -> tuple[int, bytes]:
    sock, status, body = raw_http(port, f"GET {path} HTTP/1.1")
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    sock.close()
    return status, body


def masked_frame(opcode: int, payload: bytes, declared: int | None = None) -> bytes:
    """A client-to-server WebSocket frame; `declared` can claim more bytes than follow."""
    length = len(payload) if declared is None else declared
    head = bytes([0x80 | opcode])
    head += bytes([0x80 | length]) if length < 126 else bytes([0x80 | 126]) + struct.pack(">H", length)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


# --------------------------------------------------------------------- wire formats

def test_bridges_ws_is_a_pose_sink(make_sink):
    sink = make_sink()
    assert isinstance(sink, PoseSink)
    assert sink.url.startswith("ws://127.0.0.1:") and sink.viewer_url.startswith("http://127.0.0.1:")
    assert {"sent", "dropped", "errors", "last_error"} <= set(sink.stats())


def test_bridges_ws_binary_frames(make_sink):
    sink = make_sink(client_queue_frames=8)  # the burst of 5 below fits the client's queue
    with connect(sink.url + "?format=binary") as client:
        greeting = hello(client)
        assert greeting["format"] == "binary" and greeting["skeleton"]["name"] == "ted_gesture"
        assert greeting["skeleton"]["bones"] == [[p, c] for p, c, _ in TED_GESTURE.bones]
        wait_clients(sink, 1)
        frames = [frame(i) for i in range(5)]
        for f in frames:
            sink.send(f)
        for f in frames:
            message = client.recv(timeout=5)
            assert isinstance(message, bytes) and len(message) == BINARY_HEADER.size + 4 * (27 + 30)
            magic, version, flags, stream, _, n_bones, n_joints, index, capture, capture_unix = \
                BINARY_HEADER.unpack_from(message)
            assert (magic, version, n_bones, n_joints, index, stream) == (b"HOPF", 1, 9, 10, f.index, 0)
            assert flags & 1 == int(f.speaking) and capture == f.capture_time
            assert abs(capture_unix - time.time()) < 5
            body = np.frombuffer(message, dtype="<f4", offset=BINARY_HEADER.size)
            np.testing.assert_array_equal(body[:27], f.dir_vec)
            joints = body[27:].reshape(10, 3)
            np.testing.assert_allclose(joints[0], 0.0)
            for k, (parent, child, length) in enumerate(TED_GESTURE.bones):
                np.testing.assert_allclose(joints[child] - joints[parent], length * f.dir_vec[3 * k:3 * k + 3], atol=1e-6)
    assert sink.stats()["errors"] == 0


# VRM 1.0 normalized rest directions, worked out here from the rig file's Unity
# offsets by mirroring x (Unity: left at -X; VRM 1.0: facing +Z, left at +X).
VRM_PARENT = {"spine": "hips", "chest": "spine", "upperChest": "chest", "leftShoulder": "upperChest",
              "rightShoulder": "upperChest", "leftUpperArm": "leftShoulder", "rightUpperArm": "rightShoulder",
              "leftLowerArm": "leftUpperArm", "rightLowerArm": "rightUpperArm"}
# bone -> (rest vector as a sum of Unity offsets of these rig bones, TED joints it must follow)
CHECKED_BONES = {
    "spine": (("Chest", "UpperChest", "Neck"), ("spine", "neck")),
    "leftShoulder": (("LeftUpperArm",), ("neck", "left_shoulder")),
    "leftUpperArm": (("LeftLowerArm",), ("left_shoulder", "left_elbow")),
    "leftLowerArm": (("LeftHand",), ("left_elbow", "left_wrist")),
    "rightShoulder": (("RightUpperArm",), ("neck", "right_shoulder")),
    "rightUpperArm": (("RightLowerArm",), ("right_shoulder", "right_elbow")),
    "rightLowerArm": (("RightHand",), ("right_elbow", "right_wrist")),
}


def world_rotation(pose: dict, bone: str) -> Rotation:
    local = Rotation.from_quat(pose[bone]["rotation"]) if bone in pose else Rotation.identity()
    parent = VRM_PARENT.get(bone)
    return local if parent is None else world_rotation(pose, parent) * local


def test_bridges_ws_json_is_three_vrm_pose_right_handed(make_sink):
    rig = load_rig("unity_humanoid")
    offsets = {bone.name: bone.offset * np.array([-1.0, 1.0, 1.0]) for bone in rig.bones}
    names = list(TED_GESTURE.joint_names)
    sink = make_sink()
    with connect(sink.url + "?format=json") as client:
        hello(client)
        wait_clients(sink, 1)
        for i, t in enumerate(np.linspace(0.0, 2.0, 7)):
            f = frame(i, t=float(t), stream=3)
            sink.send(f)
            message = json.loads(client.recv(timeout=5))
            assert message["type"] == "pose" and message["index"] == i and message["stream"] == 3
            assert message["speaking"] == f.speaking and message["captureTime"] == f.capture_time
            pose, joints = message["pose"], np.array(message["joints"])
            assert set(pose) == {"hips", "spine", "neck", "head", "leftShoulder", "leftUpperArm", "leftLowerArm",
                                 "rightShoulder", "rightUpperArm", "rightLowerArm"}
            assert pose["hips"]["position"] == [0.0, 0.0, 0.0]
            for entry in pose.values():
                assert abs(np.linalg.norm(entry["rotation"]) - 1.0) < 1e-5
            # Right-handed, Y up, facing +Z: left arm at +X, head up, nose in front of the neck.
            assert joints[names.index("left_shoulder")][0] > 0.1 > -0.1 > joints[names.index("right_shoulder")][0]
            assert joints[names.index("head_top")][1] > joints[names.index("neck")][1] > 0.2
            assert joints[names.index("nose")][2] > joints[names.index("neck")][2]
            # The joints follow the frame's directions: TED (x, y, z) -> (-x, -y, z).
            for k, (parent, child, length) in enumerate(TED_GESTURE.bones):
                expected = length * f.dir_vec[3 * k:3 * k + 3] * np.array([-1.0, -1.0, 1.0])
                np.testing.assert_allclose(joints[child] - joints[parent], expected, atol=2e-5)
            # Forward kinematics of the pose reproduces the joints' bone directions.
            for bone, (rest_parts, (a, b)) in CHECKED_BONES.items():
                rest = sum(offsets[part] for part in rest_parts)
                got = world_rotation(pose, bone).apply(rest / np.linalg.norm(rest))
                want = joints[names.index(b)] - joints[names.index(a)]
                want /= np.linalg.norm(want)
                angle = np.degrees(np.arccos(np.clip(np.dot(got, want), -1, 1)))
                assert angle < 0.5, (bone, angle)


def test_bridges_ws_bad_frames_counted_never_raised(make_sink):
    sink = make_sink()
    with connect(sink.url) as client:
        hello(client)
        wait_clients(sink, 1)
        nan = swinging_arms_pose(0.0)
        nan[4] = np.nan
        sink.send(PoseFrame(0, 1.0, nan, True))
        sink.send(PoseFrame(1, 1.0, np.zeros(5, np.float32), True))
        sink.send(PoseFrame(2, 1.0, swinging_arms_pose(0.0), True, skeleton="ted_expressive"))
        sink.send(frame(3))
        message = client.recv(timeout=5)
        assert BINARY_HEADER.unpack_from(message)[7] == 3  # only the good frame arrives
    stats = sink.stats()
    assert stats["errors"] == 3 and "frame 2" in stats["last_error"]


# --------------------------------------------------------------------- slow and vanishing clients

def test_bridges_ws_slow_client_loses_old_frames_never_stalls_sender(make_sink):
    sink = make_sink(client_queue_frames=4, close_timeout_s=0.5)
    # A client that completes the handshake and then never reads, with a tiny receive window.
    slow = raw_upgrade(sink.port, rcvbuf=2048)
    received: list[int] = []
    with connect(sink.url + "?format=json", max_size=None) as fast:
        hello(fast)
        wait_clients(sink, 2)

        def read() -> None:
            try:
                while True:
                    received.append(json.loads(fast.recv(timeout=10))["index"])
            except (TimeoutError, ConnectionClosed):
                pass

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        durations = []
        n = 1500
        for i in range(n):
            start = time.perf_counter()
            sink.send(frame(i))
            durations.append(time.perf_counter() - start)
            time.sleep(0.001)
        assert wait_for(lambda: received and received[-1] == n - 1, timeout=10), received[-5:]
        slow_stats = next(c for c in sink.client_stats() if c["sent"] < n / 2)
        assert slow_stats["dropped"] > n / 2 and slow_stats["queued"] <= 4
        # Small kernel buffers keep the stale backlog a stalled client can build short.
        assert slow_stats["sent"] < 200, slow_stats
        assert len(received) > n / 2 and received == sorted(received)
        durations_ms = np.array(durations) * 1e3
        # A stall would last as long as the slow client refuses to read: for ever. The bounds
        # leave room for GIL hand-overs and a shared, busy 2-core machine.
        figures = (np.median(durations_ms), np.percentile(durations_ms, 99), durations_ms.max())
        assert figures[0] < 0.5 and figures[1] < 10 and figures[2] < 250, figures
        assert sink.stats()["errors"] == 0
        start = time.perf_counter()
        sink.close()  # with the slow client still stalled
        assert time.perf_counter() - start < 2.5  # close_timeout_s is 0.5
    slow.close()


def test_bridges_ws_disconnect_mid_frame(make_sink):
    sink = make_sink()
    # A client that dies halfway through sending a frame.
    sock = raw_upgrade(sink.port)
    sock.sendall(masked_frame(0x1, b'{"type": "control", ', declared=120))
    sock.close()
    # A client that resets the connection while frames are streaming to it.
    sock = raw_upgrade(sink.port)
    wait_clients(sink, 1)
    for i in range(20):
        sink.send(frame(i))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # RST
    for i in range(20, 40):
        sink.send(frame(i))
    wait_clients(sink, 0)
    with connect(sink.url + "?format=binary") as client:
        hello(client)
        wait_clients(sink, 1)
        sink.send(frame(99))
        assert BINARY_HEADER.unpack_from(client.recv(timeout=5))[7] == 99
    stats = sink.stats()
    assert stats["errors"] == 0 and stats["control_accepted"] == 0


# --------------------------------------------------------------------- control input

VALID = '{"type": "control", "intensity": 0.5}'
GARBAGE = [
    "", "null", "[]", "42", '"control"', "{", "{}", '{"type": "control"}', '{"type": "Control", "mute": true}',
    '{"type": "control", "mute": 1}', '{"type": "control", "mute": "yes"}', '{"type": "control", "intensity": true}',
    '{"type": "control", "intensity": 3.5}', '{"type": "control", "intensity": -0.1}',
    '{"type": "control", "intensity": NaN}', '{"type": "control", "intensity": Infinity}',
    '{"type": "control", "intensity": 1e999}', '{"type": "control", "intensity": ' + "9" * 500 + "}",
    '{"type": "control", "intensity": "1"}', '{"type": "control", "intensity": null}',
    '{"type": "control", "style": "../etc"}', '{"type": "control", "style": ""}', '{"type": "control", "style": 3}',
    '{"type": "control", "style": "calm", "exec": "rm -rf /"}', '{"type": "control", "mute": true, "mute": false}',
    '{"type": "control", "__proto__": {"mute": true}}', '{"type": ["control"], "mute": true}',
    "[" * 400 + "]" * 400, '{"type": "control", "style": "\\ud800"}', "\x00\x01\x02",
]


def test_bridges_ws_control_reply_is_the_receivers_own_verdict(make_sink):
    """"accepted" only once the callback took the control: a receiver that cannot apply it raises
    ControlError, and the client gets that error and its reason (one schema, checked end to end)."""
    from hop.bridges.control import ControlError

    sink = make_sink()
    applied = []

    def receiver(control):
        if control.style == "speaker_999999":
            raise ControlError("bad_value", "style 'speaker_999999': speaker id 999999 out of range 0..3")
        applied.append(control)

    sink.on_control(receiver)
    with connect(sink.url) as client:
        hello(client)
        client.send('{"type": "control", "style": "speaker_999999", "mute": true}')
        reply = json.loads(client.recv(timeout=5))
        assert reply == {"type": "error", "error": "bad_value",
                         "detail": "style 'speaker_999999': speaker id 999999 out of range 0..3"}
        client.send('{"type": "control", "style": "speaker_1"}')
        assert json.loads(client.recv(timeout=5))["type"] == "accepted"
    assert [c.style for c in applied] == ["speaker_1"], "a rejected control must change nothing"
    assert sink.stats()["control_rejected"] == 1 and sink.stats()["control_accepted"] == 1


def test_bridges_ws_garbage_control_rejected_without_state_change(make_sink):
    sink = make_sink(control_rate_hz=1000.0, styles=("calm", "lively"))
    applied = []
    sink.on_control(applied.append)
    with connect(sink.url) as client:
        hello(client)
        for text in GARBAGE:
            client.send(text)
            reply = json.loads(client.recv(timeout=5))
            assert reply["type"] == "error" and reply["error"] in ("bad_json", "bad_schema", "bad_value"), (text, reply)
        client.send(b'{"type": "control", "mute": true}')  # binary frames are not control messages
        assert json.loads(client.recv(timeout=5))["error"] == "binary"
        client.send('{"type": "control", "style": "other"}')  # well formed but not an offered style
        assert json.loads(client.recv(timeout=5))["error"] == "bad_value"
        client.send('{"type": "control", "style": "calm", "intensity": 1, "mute": false}')
        reply = json.loads(client.recv(timeout=5))
        assert reply == {"type": "accepted", "control": {"style": "calm", "intensity": 1.0, "mute": False}}
    assert len(applied) == 1 and (applied[0].style, applied[0].intensity, applied[0].mute) == ("calm", 1.0, False)
    stats = sink.stats()
    assert stats["control_rejected"] == len(GARBAGE) + 2 and stats["control_accepted"] == 1
    assert stats["errors"] == 0


def test_bridges_ws_oversized_control_messages(make_sink):
    sink = make_sink(max_control_bytes=256)
    applied = []
    sink.on_control(applied.append)
    with connect(sink.url) as client:
        hello(client)
        padded = '{"type": "control", "mute": true}' + " " * 300  # valid JSON, too long
        client.send(padded)
        assert json.loads(client.recv(timeout=5))["error"] == "too_large"
        client.send('{"type": "control", "style": "' + "é" * 120 + '"}')  # < 256 characters, > 256 bytes
        assert json.loads(client.recv(timeout=5))["error"] == "too_large"
    with connect(sink.url, max_size=None) as client:
        hello(client)
        client.send("x" * (70 * 1024))  # over the hard limit: the connection is closed
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                client.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    assert applied == []
    with connect(sink.url) as client:  # the server is still there
        hello(client)
        client.send(VALID)
        assert json.loads(client.recv(timeout=5))["type"] == "accepted"
    assert len(applied) == 1


def test_bridges_ws_control_rate_limited(make_sink):
    sink = make_sink(control_rate_hz=10.0)
    applied = []
    sink.on_control(applied.append)
    with connect(sink.url) as client:
        hello(client)
        replies = []
        for _ in range(40):
            client.send(VALID)
            replies.append(json.loads(client.recv(timeout=5)))
        accepted = [r for r in replies if r["type"] == "accepted"]
        limited = [r for r in replies if r.get("error") == "rate_limited"]
        assert 10 <= len(accepted) <= 13 and len(accepted) + len(limited) == 40
        time.sleep(0.35)  # the bucket refills at 10 a second
        client.send(VALID)
        assert json.loads(client.recv(timeout=5))["type"] == "accepted"
    assert len(applied) == len(accepted) + 1


def test_bridges_ws_flood_without_reading_is_bounded(make_sink):
    """A client that floods control messages and never reads the replies cannot grow server memory."""
    sink = make_sink(control_rate_hz=1e6)
    sock = raw_upgrade(sink.port, path="/ws", rcvbuf=2048)
    message = masked_frame(0x1, b'{"type": "control", "mute": true}')
    sock.settimeout(0.05)
    sent = 0
    deadline = time.monotonic() + 2.0
    try:
        while sent < 20000 and time.monotonic() < deadline:
            sock.sendall(message * 50)
            sent += 50
    except (socket.timeout, BlockingIOError):
        pass  # the server stopped reading: backpressure reached the client
    assert wait_for(lambda: sink.stats()["control_accepted"] > 100)
    # Far more replies are due than the client has read (none): the server keeps only the newest few.
    assert wait_for(lambda: sink.client_stats() and sink.client_stats()[0]["replies_queued"] == REPLY_QUEUE)
    time.sleep(0.2)
    (client,) = sink.client_stats()
    assert client["replies_queued"] <= REPLY_QUEUE and client["queued"] == 0
    assert client["control_accepted"] > 10 * REPLY_QUEUE
    sock.close()
    wait_clients(sink, 0)
    assert sink.stats()["errors"] == 0


# --------------------------------------------------------------------- access control

def test_bridges_ws_token(make_sink):
    sink = make_sink(token=TOKEN)
    for url, headers in ((sink.url, None), (sink.url + "?token=wrong-token-0123456789", None),
                         (sink.url, {"Authorization": "Bearer nope"}),
                         (sink.url + "?token=" + TOKEN[:-1], None)):
        with pytest.raises(InvalidStatus) as refused:
            connect(url, additional_headers=headers)
        assert refused.value.response.status_code == 401
    with connect(sink.url + "?format=json&token=" + TOKEN) as client:
        assert hello(client)["format"] == "json"
    with connect(sink.url, additional_headers={"Authorization": "Bearer " + TOKEN}) as client:
        hello(client)
    assert sink.stats()["clients_refused"] == 4
    assert sink.viewer_url.endswith("/?token=" + TOKEN)


def test_bridges_ws_token_counts_only_when_sent_exactly_once(make_sink):
    """Several token= values (or a query token and a Bearer header) are refused whole: a request
    could otherwise carry hundreds of guesses, any of which would let it in."""
    sink = make_sink(token=TOKEN)
    guesses = "&".join(f"token=guess-{i:04d}-0123456789" for i in range(250))
    for url, headers in ((f"{sink.url}?{guesses}&token={TOKEN}", None),
                         (f"{sink.url}?token={TOKEN}&token={TOKEN}", None),
                         (f"{sink.url}?token={TOKEN}", {"Authorization": "Bearer " + TOKEN})):
        with pytest.raises(InvalidStatus) as refused:
            connect(url, additional_headers=headers)
        assert refused.value.response.status_code == 400
        assert b"send the token once" in refused.value.response.body
    with connect(f"{sink.url}?token={TOKEN}") as client:
        hello(client)


def test_bridges_ws_failed_tokens_back_off_per_address(make_sink):
    """After auth_failures_allowed wrong tokens an address is refused outright (429 with
    Retry-After), even with the right token, for a backoff that doubles with each failure."""
    sink = make_sink(token=TOKEN, auth_failures_allowed=3, auth_backoff_s=0.5)
    statuses = []
    started = time.monotonic()
    for i in range(200):  # a guessing loop as fast as the server answers
        try:
            with connect(f"{sink.url}?token=guess-{i:04d}-0123456789"):
                pass
        except InvalidStatus as error:
            statuses.append(error.response.status_code)
    elapsed = time.monotonic() - started
    assert statuses[:3] == [401, 401, 401] and set(statuses[3:]) <= {401, 429}, statuses[:10]
    # only the first few, and one after each expired backoff, ever reached the token check
    checked = sink.stats()["token_failures"]
    assert checked <= 3 + 2 + elapsed / 0.5, (checked, elapsed)
    assert sink.stats()["refused_backoff"] >= 200 - checked
    with pytest.raises(InvalidStatus) as refused:  # blocked: the right token does not help now
        connect(f"{sink.url}?token={TOKEN}")
    assert refused.value.response.status_code == 429 and int(refused.value.response.headers["Retry-After"]) >= 1
    time.sleep(min(300.0, 0.5 * 2 ** (checked - 3)) + 0.1)
    with connect(f"{sink.url}?token={TOKEN}") as client:  # the backoff over: the right token gets in
        hello(client)


def test_bridges_ws_remote_bind_needs_opt_in_and_token():
    for host in ("0.0.0.0", "192.168.1.20", "::", "example.org"):
        with pytest.raises(ValueError, match="allow_remote"):
            validate_options(WebSocketOptions(host=host))
        with pytest.raises(ValueError, match="token"):
            validate_options(WebSocketOptions(host=host, allow_remote=True))
        validate_options(WebSocketOptions(host=host, allow_remote=True, token=TOKEN))
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        validate_options(WebSocketOptions(host=host))
    with pytest.raises(ValueError, match="too short"):
        validate_options(WebSocketOptions(token="short"))
    with pytest.raises(ValueError, match="URL-safe"):
        validate_options(WebSocketOptions(token="has spaces and more than 16"))
    with pytest.raises(ValueError, match="allow_remote"):
        WebSocketSink(WebSocketOptions(host="0.0.0.0", port=0))


def test_bridges_ws_origin_checks(make_sink):
    sink = make_sink(allowed_origins=("http://localhost:5173",))
    port = sink.port
    refused = ["http://evil.example", "null", f"http://127.0.0.1:{port + 1}", f"https://evil.example:{port}"]
    for origin in refused:
        with pytest.raises(InvalidStatus) as error:
            connect(sink.url, origin=origin)
        assert error.value.response.status_code == 403, origin
    # DNS rebinding: a page on evil.example resolved to 127.0.0.1 sends a matching Host and Origin.
    sock, status, _ = raw_http(port, "GET /ws HTTP/1.1", {
        "Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}", "Upgrade": "websocket",
        "Connection": "Upgrade", "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13"})
    sock.close()
    assert status == 403
    for origin in (f"http://127.0.0.1:{port}", "http://localhost:5173", None):
        with connect(sink.url, origin=origin) as client:
            hello(client)
    assert sink.stats()["clients_refused"] == len(refused) + 1


def test_bridges_ws_duplicate_headers_refused(make_sink):
    sink = make_sink()
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}
    sock = socket.create_connection(("127.0.0.1", sink.port), timeout=5)
    lines = ["GET /ws HTTP/1.1", f"Host: 127.0.0.1:{sink.port}", "Host: evil.example",
             f"Origin: http://127.0.0.1:{sink.port}"] + [f"{k}: {v}" for k, v in upgrade.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert sock.recv(100).startswith(b"HTTP/1.1 400")
    sock.close()
    assert sink.stats()["errors"] == 0 and sink.stats()["clients_refused"] == 1


def test_bridges_ws_max_clients(make_sink):
    sink = make_sink(max_clients=2)
    with connect(sink.url) as a, connect(sink.url) as b:
        hello(a), hello(b)
        wait_clients(sink, 2)
        with pytest.raises(InvalidStatus) as error:
            connect(sink.url)
        assert error.value.response.status_code == 503
    wait_clients(sink, 0)
    with connect(sink.url) as c:
        hello(c)


# --------------------------------------------------------------------- the viewer's files

def test_bridges_ws_serves_viewer(make_sink):
    sink = make_sink()
    status, body = raw_get(sink.port, "/")
    assert status == 200 and b"<canvas id=\"scene\">" in body
    sock, status, _ = raw_http(sink.port, "GET /viewer.js HTTP/1.1")
    sock.close()
    assert status == 200
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{sink.port}/viewer.js") as response:
        assert "javascript" in response.headers["Content-Type"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "default-src 'self'" in response.headers["Content-Security-Policy"]
        assert len(response.read()) > 100_000
    status, _ = raw_get(sink.port, "/ws")  # a plain GET of the socket path is not an upgrade
    assert status == 404
    status, _ = raw_get(sink.port, "/viewer.js.source-sha256")  # build bookkeeping, not part of the viewer
    assert status == 404


TRAVERSALS = [
    "/../ws.py", "/../../pyproject.toml", "/%2e%2e/ws.py", "/%2e%2e%2f%2e%2e%2fpyproject.toml", "/..%2fws.py",
    "//etc/passwd", "/static/../../ws.py", "/viewer.js/../../ws.py", "/..\\ws.py", "/%2E%2E/%2E%2E/README.md",
    "/index.html%00.js", "/./index.html/../../ws.py", "/etc/passwd", "/.." + "/.." * 20 + "/etc/passwd",
    "/src/main.js", "/../src/main.js", "/node_modules/three/package.json", "/../viewer/package.json",
    "/" + "a" * 5000,
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_bridges_ws_no_path_traversal(make_sink, path):
    sink = make_sink()
    status, body = raw_get(sink.port, path)
    assert status in (400, 404, 414, 431), (path, status)
    for secret in (b"import ", b"[project]", b"root:", b"websockets", b"# hop-live", b"\"name\""):
        assert secret not in body
    status, _ = raw_get(sink.port, "/index.html")  # still serving
    assert status == 200


@pytest.mark.parametrize("method, body", [("HEAD", ""), ("OPTIONS", ""), ("POST", ""), ("POST", "a=1"),
                                          ("PUT", "x" * 5000), ("DELETE", ""), ("PATCH", "{}"), ("TRACE", ""),
                                          ("CONNECT", "")])
def test_bridges_ws_methods_other_than_get_get_405(make_sink, method, body):
    """Every method but GET gets 405 with Allow: GET (a POST with a body used to get no reply at
    all, HEAD and OPTIONS the page)."""
    sink = make_sink()
    target = "127.0.0.1:1" if method == "CONNECT" else "/"
    headers = {"Content-Length": str(len(body))} if body else None
    sock, status, body = raw_http(sink.port, f"{method} {target} HTTP/1.1", headers, payload=body.encode())
    try:
        sock.settimeout(2)
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    sock.close()
    assert status == 405, (method, status)
    assert b"<canvas" not in body and b"<html" not in body.lower(), "the page must not be served"
    if method == "HEAD":
        assert body == b"", body
    assert sink.stats()["methods_refused"] == 1
    status, _ = raw_get(sink.port, "/index.html")  # GET still serves
    assert status == 200


def test_bridges_ws_port_in_use_is_a_clear_error(make_sink):
    sink = make_sink()
    with pytest.raises(OSError, match=r"pick another port \(hop-live: --ws \[HOST:\]PORT\)"):
        WebSocketSink(WebSocketOptions(port=sink.port))
