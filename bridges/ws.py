"""WebSocket output and the browser viewer's web server, on one port.

``WebSocketSink`` runs a websockets server on its own asyncio thread. The engine
thread calls ``send(frame)``, which only hands the frame to that loop; the loop
encodes it once per wire format and appends it to every client's bounded queue.
A client that reads too slowly loses its oldest queued frames (counted per
client); nothing a client does can stall the engine.

Endpoints (same host and port):
  ``GET /ws?format=binary|json[&token=...]``  WebSocket pose stream + control input
  ``GET /``, ``/index.html``, ``/viewer.js`` ...  the bundled browser viewer

Wire formats:
  binary: one message per frame, little-endian, ``BINARY_HEADER`` (32 bytes) then
          float32 dir_vec (n_bones*3) then float32 joint positions (n_joints*3),
          both in TED axes (up -y, forward +z, subject's left -x), spine at 0.
  json:   ``{"type": "pose", "index", "stream", "speaking", "captureTime",
          "captureUnix", "pose": {boneName: {"rotation": [x,y,z,w]}, "hips":
          {..., "position": [0,0,0]}}, "joints": [[x,y,z], ...]}``; the pose is
          three-vrm's format for ``humanoid.setNormalizedPose()`` (lowerCamelCase
          VRM 1.0 bone names, rotations relative to the T-pose) and it and the
          joints are in the VRM 1.0 glTF frame: right-handed, Y up, metres, the
          figure facing +Z with its left hand at +X (see ``UNITY_TO_VRM``).
Every client first receives a JSON ``hello`` message describing the skeleton;
control input gets a JSON ``accepted`` or ``error`` reply.

Security: loopback by default; any other address needs ``allow_remote`` and a
token; browsers must come from the viewer's own origin or a configured one;
control messages are size- and rate-limited and parsed by a strict schema.
"""

from __future__ import annotations

import asyncio
import hmac
import http
import json
import math
import mimetypes
import re
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from hop.bridges.control import (INTENSITY_RANGE, STYLE_NAME, Control, ControlError, RateLimit, check_fields,
                                 is_loopback)
from hop.bridges.frame import PoseFrame
from hop.bridges import retarget
from hop.model.skeleton import Skeleton, get_skeleton

VIEWER_DIR = Path(__file__).parent / "viewer" / "static"
WS_PATH = "/ws"
FORMATS = ("binary", "json")

# Binary frame header, little-endian, 32 bytes so the float32 payload that follows
# is 4-byte aligned (a browser can view it with a Float32Array, no copy):
#   magic "HOPF", version u8, flags u8 (bit 0: speaking), stream u8, reserved u8,
#   n_bones u16, n_joints u16, frame index u32,
#   capture_time f64 (engine time.perf_counter() seconds),
#   capture_unix f64 (the same instant as Unix time, for clients on other clocks).
BINARY_HEADER = struct.Struct("<4sBBBBHHIdd")
BINARY_MAGIC = b"HOPF"
BINARY_VERSION = 1

# Hard cap on any inbound message; larger ones close the connection (1009).
# Messages between the control limit and this cap get an error reply instead.
INBOUND_HARD_LIMIT = 64 * 1024
REPLY_QUEUE = 16  # error/ack replies waiting for a slow client; more are dropped
WRITE_LIMIT = 16 * 1024  # bytes websockets buffers above the kernel before send() waits
MAX_PENDING_FRAMES = 64  # frames waiting for the server thread; more are dropped in send()


@dataclass(frozen=True)
class WebSocketOptions:
    host: str = "127.0.0.1"
    port: int = 8765  # 0 picks a free port (read it back from WebSocketSink.port)
    allow_remote: bool = False  # must be set to bind anything but loopback
    token: str | None = None  # required from clients when set; mandatory with allow_remote
    allowed_origins: tuple[str, ...] = ()  # extra browser origins, e.g. "http://localhost:5173"
    client_queue_frames: int = 4  # per-client backlog; older frames are dropped beyond it
    # Kernel send buffer per client. Linux grows it to megabytes by default, which
    # would let a stalled client's backlog reach minutes of stale frames before the
    # queue above starts dropping; small, the latency a slow client sees stays bounded.
    send_buffer_bytes: int = 32 * 1024
    max_clients: int = 16
    max_control_bytes: int = 1024
    control_rate_hz: float = 20.0  # sustained control messages per second per client (burst of the same size)
    styles: tuple[str, ...] = ()  # accepted style names; empty accepts any well-formed name
    serve_viewer: bool = True
    skeleton: str = "ted_gesture"  # announced in the hello message; frames of another skeleton are rejected
    close_timeout_s: float = 1.0


def validate_options(options: WebSocketOptions) -> None:
    """Raise ValueError naming the fix for any unsafe or impossible setting."""
    if not 0 <= options.port <= 65535:
        raise ValueError(f"WebSocket port {options.port} is out of range 0..65535")
    if not is_loopback(options.host):
        if not options.allow_remote:
            raise ValueError(
                f"WebSocket host {options.host!r} is not a loopback address; anyone on the network could "
                "connect. Bind 127.0.0.1, or opt in with allow_remote=True (--ws-allow-remote) and a token "
                "(--ws-token, e.g. from `python -c 'import secrets; print(secrets.token_urlsafe(24))'`)")
        if not options.token:
            raise ValueError(
                f"binding WebSocket host {options.host!r} requires a token (--ws-token); clients then "
                "connect with ?token=...")
    if options.token is not None and len(options.token) < 16:
        raise ValueError("WebSocket token is too short: use at least 16 characters, e.g. secrets.token_urlsafe(24)")
    if options.token is not None and not re.fullmatch(r"[A-Za-z0-9_.~-]+", options.token):
        raise ValueError("WebSocket token may only contain URL-safe characters [A-Za-z0-9_.~-]")
    for origin in options.allowed_origins:
        if not re.fullmatch(r"https?://[^/\s]+", origin):
            raise ValueError(f"allowed origin {origin!r} must look like http://host[:port], without a path")
    if not 4096 <= options.send_buffer_bytes <= 16 * 1024 * 1024:
        raise ValueError("send_buffer_bytes must lie in 4096..16777216")
    if options.client_queue_frames < 1:
        raise ValueError("client_queue_frames must be at least 1")
    if options.max_clients < 1:
        raise ValueError("max_clients must be at least 1")
    if not 64 <= options.max_control_bytes <= INBOUND_HARD_LIMIT:
        raise ValueError(f"max_control_bytes must lie in 64..{INBOUND_HARD_LIMIT}")
    if not options.control_rate_hz > 0:
        raise ValueError("control_rate_hz must be positive")
    for style in options.styles:
        if not STYLE_NAME.fullmatch(style):
            raise ValueError(f"style name {style!r} must match {STYLE_NAME.pattern}")
    get_skeleton(options.skeleton)


# ---------------------------------------------------------------------------
# Control messages: strict schema, parsed without side effects.

CONTROL_EXAMPLE = '{"type": "control", "intensity": 0.8}'


def parse_control(text: str, styles: tuple[str, ...] = ()) -> Control:
    """Parse one control message or raise ControlError saying what to send instead.

    Schema: a JSON object with "type": "control" and one or more of
    "style" (name), "intensity" (number in [0, 2]), "mute" (true/false); nothing else.
    """
    try:
        message = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)
    except (ValueError, RecursionError) as error:
        raise ControlError("bad_json", f"not valid JSON ({error}); send e.g. {CONTROL_EXAMPLE}") from None
    if not isinstance(message, dict):
        raise ControlError("bad_schema", f"expected a JSON object such as {CONTROL_EXAMPLE}")
    if message.get("type") != "control":
        raise ControlError("bad_schema", 'the "type" field must be "control"')
    return check_fields({k: v for k, v in message.items() if k != "type"}, styles)


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [key for key, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate keys")
    return dict(pairs)


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


# ---------------------------------------------------------------------------
# Frame encoding: plain functions, one per wire format.

def frame_joints(frame: PoseFrame, skeleton: Skeleton) -> np.ndarray:
    """Joint positions (n_joints, 3) in the TED convention, spine at the origin."""
    return skeleton.dir_vec_to_joints(np.asarray(frame.dir_vec, dtype=np.float64))


def encode_binary(frame: PoseFrame, skeleton: Skeleton, joints: np.ndarray, capture_unix: float) -> bytes:
    header = BINARY_HEADER.pack(
        BINARY_MAGIC, BINARY_VERSION, 1 if frame.speaking else 0, frame.stream & 0xFF, 0,
        skeleton.n_bones, skeleton.n_joints, frame.index & 0xFFFFFFFF, frame.capture_time, capture_unix)
    return header + np.asarray(frame.dir_vec, dtype="<f4").tobytes() + joints.astype("<f4").tobytes()


# The viewer's and three-vrm's frame: glTF axes as VRM 1.0 uses them - right-handed,
# Y up, metres, the figure FACING +Z (towards three.js's default camera), its left
# hand at +X. From Unity (left-handed, facing +Z, left at -X) that is a mirror of x:
# position (-x, y, z), quaternion (x, -y, -z, w). (retarget.SPACES["gltf"] is the
# other glTF convention, UniVRM 0.x's (x, y, -z), in which the figure faces -Z;
# three-vrm turns VRM 0.x avatars round with VRMUtils.rotateVRM0 and the viewer
# mirrors the pose for them, so the stream itself is in the VRM 1.0 frame.)
UNITY_TO_VRM = np.diag([-1.0, 1.0, 1.0])
TED_TO_VRM = UNITY_TO_VRM @ retarget.SPACES["unity"][0]  # (-x, -y, z): TED's y is down, its left at -x
VRM_RIG = "unity_humanoid"

# Unity HumanBodyBones -> three-vrm (VRM 1.0) humanoid bone names. lowerCamelCase,
# except the thumb, whose three bones VRM 1.0 calls Metacarpal, Proximal, Distal.
_THUMB_RENAMES = {"ThumbProximal": "ThumbMetacarpal", "ThumbIntermediate": "ThumbProximal"}


def vrm_bone_name(unity_name: str) -> str:
    for old, new in _THUMB_RENAMES.items():
        if unity_name.endswith(old):
            unity_name = unity_name[: -len(old)] + new
            break
    return unity_name[0].lower() + unity_name[1:]


def ted_to_vrm(points: np.ndarray) -> np.ndarray:
    """(..., 3) TED-convention vectors -> the viewer's VRM 1.0 frame."""
    return np.asarray(points) @ TED_TO_VRM.T


def unity_to_vrm_quats(quats: np.ndarray) -> np.ndarray:
    """(..., 4) Unity-space rotations (x, y, z, w) -> the same rotations in the VRM 1.0 frame."""
    # A change of axes C maps a rotation's axis by det(C) * C; here det = -1.
    return np.asarray(quats) * np.array([1.0, -1.0, -1.0, 1.0])


class VrmPoseEncoder:
    """Pose frames -> three-vrm normalized poses, one Retargeter per (stream, skeleton).

    ``{boneName: {"rotation": [x, y, z, w]}}`` for every bone the skeleton drives,
    plus ``hips`` with a zero ``position``: setNormalizedPose() takes each transform
    relative to the avatar's rest (T) pose, so the avatar keeps its own proportions.
    Rotations stay in one quaternion hemisphere from frame to frame per stream.
    """

    def __init__(self, rig: str = VRM_RIG):
        self.rig = retarget.load_rig(rig)
        self._retargeters: dict[tuple[int, str], tuple[retarget.Retargeter, list[int], list[str]]] = {}

    def __call__(self, frame: PoseFrame) -> dict[str, dict[str, list[float]]]:
        key = (frame.stream, frame.skeleton)
        entry = self._retargeters.get(key)
        if entry is None:
            retargeter = retarget.Retargeter(self.rig, frame.skeleton)
            driven = sorted({drive.bone for drive in self.rig.drives_for(frame.skeleton)})
            entry = (retargeter, driven, [vrm_bone_name(self.rig.bones[i].name) for i in driven])
            self._retargeters[key] = entry
        retargeter, driven, names = entry
        quats = np.round(unity_to_vrm_quats(retargeter(frame.dir_vec)[driven]), 6).tolist()
        pose: dict[str, dict[str, list[float]]] = {"hips": {"rotation": [0.0, 0.0, 0.0, 1.0], "position": [0.0, 0.0, 0.0]}}
        for name, quat in zip(names, quats):
            pose[name] = {"rotation": quat}
        return pose


def encode_json(frame: PoseFrame, joints: np.ndarray, capture_unix: float, pose: dict) -> str:
    message = {
        "type": "pose",
        "index": frame.index,
        "stream": frame.stream,
        "speaking": frame.speaking,
        "captureTime": frame.capture_time,
        "captureUnix": capture_unix,
        "pose": pose,
        "joints": np.round(ted_to_vrm(joints), 5).tolist(),
    }
    return json.dumps(message, separators=(",", ":"))


def hello_message(skeleton: Skeleton, wire_format: str, options: WebSocketOptions) -> str:
    return json.dumps({
        "type": "hello",
        "version": BINARY_VERSION,
        "format": wire_format,
        "skeleton": {"name": skeleton.name, "joints": list(skeleton.joint_names),
                     "bones": [[parent, child] for parent, child, _ in skeleton.bones]},
        "control": {"maxBytes": options.max_control_bytes, "ratePerSecond": options.control_rate_hz,
                    "styles": list(options.styles), "intensity": list(INTENSITY_RANGE)},
    })


def swinging_arms_pose(t: float) -> np.ndarray:
    """A moving TED Gesture pose without the model: the dataset's mean pose with both
    arms swinging sideways (0.5 Hz) and a slight nod, to check a viewer or avatar."""
    skeleton = get_skeleton("ted_gesture")
    bones = skeleton.mean_pose().reshape(-1, 3).astype(np.float64)
    swing = math.radians(35) * math.sin(2 * math.pi * 0.5 * t)
    for arm_bones, angle in (((4, 5), swing), ((7, 8), -swing)):  # left arm, right arm mirrored
        # Rotation about z (the forward axis) raises an arm out to its side.
        c, s = math.cos(angle), math.sin(angle)
        rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        bones[list(arm_bones)] = bones[list(arm_bones)] @ rotation.T
    nod = math.radians(10) * math.sin(2 * math.pi * 1.0 * t)
    c, s = math.cos(nod), math.sin(nod)
    bones[[1, 2]] = bones[[1, 2]] @ np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]]).T
    bones /= np.linalg.norm(bones, axis=1, keepdims=True)
    return bones.reshape(-1).astype(np.float32)


def validate_frame(frame: PoseFrame, skeleton: Skeleton) -> None:
    if frame.skeleton != skeleton.name:
        raise ValueError(f"frame skeleton {frame.skeleton!r} but the WebSocket sink announces {skeleton.name!r}; "
                         "set WebSocketOptions.skeleton")
    if np.shape(frame.dir_vec) != (skeleton.pose_dim,):
        raise ValueError(f"dir_vec has shape {np.shape(frame.dir_vec)}, expected ({skeleton.pose_dim},)")
    if not np.all(np.isfinite(frame.dir_vec)):
        raise ValueError("dir_vec holds NaN or inf")


# ---------------------------------------------------------------------------
# Static files for the viewer: a fixed table built at start-up, so a request
# can only ever name a file that is in the table (no path is ever joined).

@dataclass(frozen=True)
class StaticFile:
    content_type: str
    body: bytes


def load_static_files(folder: Path) -> dict[str, StaticFile]:
    if not (folder / "index.html").is_file():
        raise FileNotFoundError(f"viewer files missing in {folder}; rebuild them with `npm run build` in bridges/viewer")
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if content_type.startswith("text/") or content_type.endswith("javascript"):
                content_type += "; charset=utf-8"
            files["/" + path.relative_to(folder).as_posix()] = StaticFile(content_type, path.read_bytes())
    files["/"] = files["/index.html"]
    return files


# Scripts and styles only from the server itself; blob:/data: for a VRM the user drops in.
CONTENT_SECURITY_POLICY = ("default-src 'self' blob: data:; connect-src 'self' blob: data:; "
                           "img-src 'self' blob: data:; style-src 'self'; object-src 'none'; base-uri 'none'")


def static_response(files: dict[str, StaticFile], path: str) -> Response:
    found = files.get(path)
    if found is None:
        return text_response(http.HTTPStatus.NOT_FOUND, "not found\n")
    headers = Headers({
        "Content-Type": found.content_type,
        "Content-Length": str(len(found.body)),
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "Connection": "close",
    })
    return Response(200, "OK", headers, found.body)


def text_response(status: http.HTTPStatus, text: str) -> Response:
    body = text.encode()
    headers = Headers({"Content-Type": "text/plain; charset=utf-8", "Content-Length": str(len(body)),
                       "Connection": "close"})
    return Response(status.value, status.phrase, headers, body)


# ---------------------------------------------------------------------------
# The sink.

@dataclass(eq=False)
class _Client:
    connection: ServerConnection
    wire_format: str
    frames: deque
    limiter: RateLimit
    replies: deque = field(default_factory=lambda: deque(maxlen=REPLY_QUEUE))
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    writer: asyncio.Task | None = None
    sent: int = 0
    dropped: int = 0
    control_accepted: int = 0
    control_rejected: int = 0

    def push_frame(self, message: bytes | str) -> None:
        if len(self.frames) == self.frames.maxlen:
            self.dropped += 1  # the deque discards the oldest frame
        self.frames.append(message)
        self.wakeup.set()

    def push_reply(self, reply: dict) -> None:
        self.replies.append(json.dumps(reply))
        self.wakeup.set()


class WebSocketSink:
    """PoseSink serving pose frames over WebSocket (and the viewer over HTTP) from its own thread."""

    def __init__(self, options: WebSocketOptions = WebSocketOptions()):
        validate_options(options)
        self.options = options
        self._skeleton = get_skeleton(options.skeleton)
        self._files = load_static_files(VIEWER_DIR) if options.serve_viewer else {}
        self._on_control: Callable[[Control], None] | None = None
        self._vrm_pose = VrmPoseEncoder()
        self._pending = 0  # frames handed to the server thread and not yet fanned out
        self._clients: set[_Client] = set()
        self._counts = {"frames_in": 0, "sent": 0, "dropped": 0, "errors": 0, "control_accepted": 0,
                        "control_rejected": 0, "clients_refused": 0, "clients_total": 0}
        self._last_error = ""
        self._closed = False
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._server: Server | None = None
        self._thread = threading.Thread(target=self._run, name="hop-websocket", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            self._thread.join()
            raise OSError(f"cannot serve WebSocket on {options.host}:{options.port}: {self._startup_error}; "
                          "pick another port (--ws-port) or stop the program using it") from self._startup_error

    # -- public API ----------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"ws://{self._url_host()}:{self.port}{WS_PATH}"

    @property
    def viewer_url(self) -> str:
        query = f"?token={self.options.token}" if self.options.token else ""
        return f"http://{self._url_host()}:{self.port}/{query}"

    def on_control(self, callback: Callable[[Control], None]) -> None:
        """Register the engine's handler for validated control messages.

        It runs on the WebSocket thread: keep it short and thread-safe (e.g. set
        fields read by the engine loop). Invalid messages never reach it.
        """
        self._on_control = callback

    def send(self, frame: PoseFrame) -> None:
        """Hand a frame to the server thread; O(microseconds), never blocks on clients."""
        if self._closed or self._loop is None:
            return
        self._counts["frames_in"] += 1
        if self._pending >= MAX_PENDING_FRAMES:
            # The server thread is not keeping up (starved of CPU): shed frames here
            # rather than let its callback queue grow without bound.
            self._counts["dropped"] += 1
            return
        self._pending += 1
        try:
            self._loop.call_soon_threadsafe(self._fan_out, frame)
        except RuntimeError:  # the loop closed between the check and the call
            self._pending -= 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=self.options.close_timeout_s + 5.0)

    def stats(self) -> dict[str, float | int | str]:
        return {**self._counts, "clients": len(self._clients), "last_error": self._last_error}

    def client_stats(self) -> list[dict[str, int | str]]:
        """One entry per connected client: its format, frames sent and dropped, control counts."""
        return [{"remote": str(client.connection.remote_address), "format": client.wire_format,
                 "sent": client.sent, "dropped": client.dropped, "queued": len(client.frames),
                 "control_accepted": client.control_accepted, "control_rejected": client.control_rejected}
                for client in list(self._clients)]

    # -- server thread -------------------------------------------------------

    def _url_host(self) -> str:
        host = self.options.host
        return f"[{host}]" if ":" in host else host

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        try:
            self._server = await serve(
                self._handle, self.options.host, self.options.port,
                process_request=self._process_request, compression=None, max_size=INBOUND_HARD_LIMIT,
                max_queue=4, write_limit=WRITE_LIMIT, close_timeout=self.options.close_timeout_s,
                server_header=None)
        except OSError as error:
            self._startup_error = error
            self._ready.set()
            return
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await self._shut_down()

    async def _shut_down(self) -> None:
        """Stop accepting, say goodbye to every client, and abort those that do not answer in time."""
        assert self._server is not None
        self._server.close(close_connections=False)
        clients = list(self._clients)
        for client in clients:
            if client.writer is not None:
                client.writer.cancel()  # a writer stuck on a stalled client would hold the close up
        closing = [asyncio.create_task(client.connection.close(1001, "server shutting down")) for client in clients]
        if closing:
            _, late = await asyncio.wait(closing, timeout=self.options.close_timeout_s)
            for task in late:
                task.cancel()
        for client in clients:
            if client.connection.transport is not None:
                client.connection.transport.abort()  # no-op for connections already closed
        try:
            await asyncio.wait_for(self._server.wait_closed(), timeout=self.options.close_timeout_s)
        except TimeoutError:
            self._count_error("server did not finish closing in time")

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        for name in ("Host", "Origin", "Upgrade", "Authorization"):
            if len(request.headers.get_all(name)) > 1:
                self._counts["clients_refused"] += 1
                return text_response(http.HTTPStatus.BAD_REQUEST, f"more than one {name} header\n")
        path, _, query = request.path.partition("?")
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return static_response(self._files, path)
        if path != WS_PATH:
            return text_response(http.HTTPStatus.NOT_FOUND, f"the WebSocket endpoint is {WS_PATH}\n")
        params = parse_qs(query, keep_blank_values=True)
        formats = params.get("format", ["binary"])
        if len(formats) != 1 or formats[0] not in FORMATS:
            return text_response(http.HTTPStatus.BAD_REQUEST, f"format must be one of {FORMATS}\n")
        if self.options.token is not None and not self._token_ok(request, params):
            self._counts["clients_refused"] += 1
            return text_response(http.HTTPStatus.UNAUTHORIZED,
                                 "missing or wrong token: add ?token=... or an 'Authorization: Bearer' header\n")
        if not self._origin_ok(request):
            self._counts["clients_refused"] += 1
            return text_response(http.HTTPStatus.FORBIDDEN,
                                 "browser origin not allowed: open the viewer served by this server, "
                                 "or add the origin to allowed_origins (--ws-origin)\n")
        if len(self._clients) >= self.options.max_clients:
            self._counts["clients_refused"] += 1
            return text_response(http.HTTPStatus.SERVICE_UNAVAILABLE, "too many clients\n")
        return None

    def _token_ok(self, request: Request, params: dict[str, list[str]]) -> bool:
        expected = self.options.token.encode()  # type: ignore[union-attr]
        offered = params.get("token", [])
        authorization = request.headers.get("Authorization", "")
        if authorization.startswith("Bearer "):
            offered = [*offered, authorization.removeprefix("Bearer ")]
        return any(hmac.compare_digest(candidate.encode(), expected) for candidate in offered)

    def _origin_ok(self, request: Request) -> bool:
        """Allow non-browser clients (no Origin), configured origins and same-origin viewer pages.

        Same-origin means Origin == http://<Host header>. On a loopback bind the
        Host must also be a loopback name, or a DNS-rebinding page (evil.example
        resolved to 127.0.0.1) would count as same-origin; on a remote bind the
        token already guards the door.
        """
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        if origin in self.options.allowed_origins:
            return True
        host = request.headers.get("Host", "")
        if origin.lower() not in (f"http://{host}".lower(), f"https://{host}".lower()):
            return False
        if not is_loopback(self.options.host):
            return True
        host_name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return is_loopback(host_name)

    async def _handle(self, connection: ServerConnection) -> None:
        sock = connection.transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.options.send_buffer_bytes)
            except OSError as error:
                self._count_error(f"cannot size the send buffer: {error}")
        query = connection.request.path.partition("?")[2]  # type: ignore[union-attr]
        wire_format = parse_qs(query).get("format", ["binary"])[0]
        client = _Client(connection, wire_format, deque(maxlen=self.options.client_queue_frames),
                         RateLimit(self.options.control_rate_hz))
        client.replies.append(hello_message(self._skeleton, wire_format, self.options))
        client.wakeup.set()
        self._clients.add(client)
        self._counts["clients_total"] += 1
        client.writer = asyncio.create_task(self._write_loop(client))
        try:
            async for message in connection:
                self._on_message(client, message)
        except ConnectionClosed:
            pass
        finally:
            self._clients.discard(client)
            client.writer.cancel()

    async def _write_loop(self, client: _Client) -> None:
        # The only task that writes to this connection: replies first, then frames.
        try:
            while True:
                await client.wakeup.wait()
                client.wakeup.clear()
                while client.replies or client.frames:
                    if client.replies:
                        await client.connection.send(client.replies.popleft())
                    else:
                        await client.connection.send(client.frames.popleft())
                        client.sent += 1
                        self._counts["sent"] += 1
        except ConnectionClosed:
            pass

    def _on_message(self, client: _Client, message: str | bytes) -> None:
        try:
            self._check_control(client, message)
        except Exception as error:  # a bug in validation must not drop the client or the server
            self._count_error(f"control message check failed: {error!r}")
            client.control_rejected += 1
            self._counts["control_rejected"] += 1
            client.push_reply({"type": "error", "error": "internal", "detail": "message could not be checked"})

    def _check_control(self, client: _Client, message: str | bytes) -> None:
        try:
            if not client.limiter.allow():
                raise ControlError("rate_limited",
                                   f"at most {self.options.control_rate_hz:g} control messages per second")
            if isinstance(message, bytes):
                raise ControlError("binary", f"control messages are JSON text, e.g. {CONTROL_EXAMPLE}")
            if len(message) > self.options.max_control_bytes or \
                    len(message.encode("utf-8", "surrogatepass")) > self.options.max_control_bytes:
                raise ControlError("too_large", f"control messages are limited to {self.options.max_control_bytes} bytes")
            control = parse_control(message, self.options.styles)
        except ControlError as error:
            client.control_rejected += 1
            self._counts["control_rejected"] += 1
            client.push_reply({"type": "error", "error": error.code, "detail": error.detail})
            return
        client.control_accepted += 1
        self._counts["control_accepted"] += 1
        if self._on_control is not None:
            try:
                self._on_control(control)
            except Exception as error:  # the engine's handler must not take the server down
                self._count_error(f"control handler failed: {error!r}")
        client.push_reply({"type": "accepted", "control": {k: v for k, v in vars(control).items() if v is not None}})

    def _fan_out(self, frame: PoseFrame) -> None:
        self._pending -= 1
        if not self._clients:
            return
        try:
            validate_frame(frame, self._skeleton)
            joints = frame_joints(frame, self._skeleton)
            # The capture instant on the Unix clock, for clients on other clocks.
            capture_unix = time.time() - (time.perf_counter() - frame.capture_time)
            encoded: dict[str, bytes | str] = {}
            for client in list(self._clients):
                if client.wire_format not in encoded:
                    encoded[client.wire_format] = (
                        encode_binary(frame, self._skeleton, joints, capture_unix) if client.wire_format == "binary"
                        else encode_json(frame, joints, capture_unix, self._vrm_pose(frame)))
                before = client.dropped
                client.push_frame(encoded[client.wire_format])
                self._counts["dropped"] += client.dropped - before
        except Exception as error:  # a bad frame is counted, never raised into the engine
            self._count_error(f"frame {frame.index}: {error}")

    def _count_error(self, message: str) -> None:
        self._counts["errors"] += 1
        self._last_error = message
