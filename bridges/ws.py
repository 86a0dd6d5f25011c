"""Output: pose frames over WebSocket, with the browser viewer and the control input on the same port.

``WebSocketSink`` runs a websockets server on its own asyncio thread. The engine
thread calls ``send(frame)``, which only hands the frame to that loop; the loop
encodes it once per wire format and appends it to every client's bounded queue.
A client that reads too slowly loses its oldest queued frames (counted per
client); nothing a client does can stall the engine.

This module is the server: threads, connections, queues, fan-out, routing. The
rest lives beside it:
  ws_protocol  the wire formats (hello, binary and JSON pose messages)
  ws_http      the viewer's static files on plain GET requests
  ws_auth      bind policy, token and browser-origin checks
  ws_control   the control input carried by the same connections
"""

from __future__ import annotations

import asyncio
import functools
import http
import json
import math
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import parse_qs

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from hop.bridges import ws_auth
from hop.bridges.control import Control, RateLimit
from hop.bridges.frame import PoseFrame
from hop.bridges.ws_control import WebSocketControl, check_limits
from hop.bridges.ws_http import VIEWER_DIR, load_static_files, method_not_allowed, static_response, text_response
from hop.bridges.ws_protocol import (FORMATS, WS_PATH, VrmPoseEncoder, encode_binary, encode_json, frame_joints,
                                     hello_message, validate_frame)
from hop.model.skeleton import get_skeleton
from hop.profiles import RANGES

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
    # Failed token checks one remote address may make before it is refused (HTTP 429) for
    # auth_backoff_s, doubling with each further failure (ws_auth.FailureBudget).
    auth_failures_allowed: int = 5
    auth_backoff_s: float = 1.0
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
    low, high = RANGES["outputs.ws_port"]
    if isinstance(options.port, bool) or not isinstance(options.port, int) or not low <= options.port <= high:
        raise ValueError(f"WebSocket port {options.port!r} is not a port; expected PORT in {low}..{high} "
                         f"({low}: any free port)")
    if options.auth_failures_allowed < 1 or not options.auth_backoff_s > 0:
        raise ValueError("auth_failures_allowed must be at least 1 and auth_backoff_s positive")
    ws_auth.check_exposure(options.host, options.allow_remote, options.token, options.allowed_origins)
    if not 4096 <= options.send_buffer_bytes <= 16 * 1024 * 1024:
        raise ValueError("send_buffer_bytes must lie in 4096..16777216")
    if options.client_queue_frames < 1:
        raise ValueError("client_queue_frames must be at least 1")
    if options.max_clients < 1:
        raise ValueError("max_clients must be at least 1")
    if not 64 <= options.max_control_bytes <= INBOUND_HARD_LIMIT:
        raise ValueError(f"max_control_bytes must lie in 64..{INBOUND_HARD_LIMIT}")
    check_limits(options.max_control_bytes, options.control_rate_hz, options.styles)
    get_skeleton(options.skeleton)


class _GetOnlyConnection(ServerConnection):
    """Answers 405 itself to a request that is not GET, before websockets reads it: websockets
    parses GET requests only and drops anything else that has a body (a POST) without a reply."""

    def __init__(self, *args, on_wrong_method: Callable[[], None], **kwargs):
        super().__init__(*args, **kwargs)
        self._on_wrong_method = on_wrong_method
        self._head = b""
        self._method_checked = False

    def data_received(self, data: bytes) -> None:
        if not self._method_checked:
            self._head += data
            line_end = self._head.find(b"\r\n")
            if line_end < 0 and len(self._head) < 8192:
                return  # the request line is not complete yet
            self._method_checked = True
            data, self._head = self._head, b""
            method = data[: line_end if line_end >= 0 else len(data)].split(b" ", 1)[0]
            if method != b"GET":
                self._on_wrong_method()
                self.transport.write(method_not_allowed(method.decode("ascii", "replace")).serialize())
                self.transport.close()
                return
        super().data_received(data)


@dataclass(eq=False)
class _Client:
    connection: ServerConnection
    wire_format: str
    frames: deque
    limiter: RateLimit  # its control messages' rate limit
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
    """PoseSink serving pose frames over WebSocket (and the viewer over HTTP) from its own thread.

    Control messages from its clients go to the callback given to ``on_control``.
    """

    def __init__(self, options: WebSocketOptions = WebSocketOptions()):
        validate_options(options)
        self.options = options
        self._skeleton = get_skeleton(options.skeleton)
        self._files = load_static_files(VIEWER_DIR) if options.serve_viewer else {}
        self._control = WebSocketControl(options.max_control_bytes, options.control_rate_hz, options.styles,
                                         on_error=self._count_error)
        self._vrm_pose = VrmPoseEncoder()
        self._pending = 0  # frames handed to the server thread and not yet fanned out
        self._clients: set[_Client] = set()
        self._counts = {"frames_in": 0, "sent": 0, "dropped": 0, "errors": 0, "clients_refused": 0,
                        "clients_total": 0, "token_failures": 0, "refused_backoff": 0, "methods_refused": 0}
        self._budget = ws_auth.FailureBudget(options.auth_failures_allowed, options.auth_backoff_s)
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
                          "pick another port (hop-live: --ws [HOST:]PORT) or stop the program using it"
                          ) from self._startup_error

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
        """Give the callback that receives each validated control message.

        It runs on the WebSocket thread: keep it short and thread-safe (e.g. set
        fields another thread reads). Invalid messages never reach it.
        """
        self._control.on_control(callback)

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
        return {**self._counts, "control_accepted": self._control.accepted,
                "control_rejected": self._control.rejected, "clients": len(self._clients),
                "last_error": self._last_error}

    def client_stats(self) -> list[dict[str, int | str]]:
        """One entry per connected client: its format, frames sent, dropped and queued, control counts."""
        return [{"remote": str(client.connection.remote_address), "format": client.wire_format,
                 "sent": client.sent, "dropped": client.dropped, "queued": len(client.frames),
                 "replies_queued": len(client.replies), "control_accepted": client.control_accepted,
                 "control_rejected": client.control_rejected}
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
                server_header=None,
                create_connection=functools.partial(_GetOnlyConnection, on_wrong_method=self._wrong_method))
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
        """Route one HTTP request: the viewer's files, or a WebSocket upgrade if the client may have one."""
        if request.method != "GET":  # _GetOnlyConnection answers these first; kept as the rule here
            self._wrong_method()
            return method_not_allowed(request.method)
        repeated = ws_auth.repeated_header(request)
        if repeated is not None:
            self._counts["clients_refused"] += 1
            return text_response(http.HTTPStatus.BAD_REQUEST, f"more than one {repeated} header\n")
        path, _, query = request.path.partition("?")
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return static_response(self._files, path)
        if path != WS_PATH:
            return text_response(http.HTTPStatus.NOT_FOUND, f"the WebSocket endpoint is {WS_PATH}\n")
        params = parse_qs(query, keep_blank_values=True)
        formats = params.get("format", ["binary"])
        if len(formats) != 1 or formats[0] not in FORMATS:
            return text_response(http.HTTPStatus.BAD_REQUEST, f"format must be one of {FORMATS}\n")
        if self.options.token is not None:
            refused = self._check_token(connection, request, params)
            if refused is not None:
                self._counts["clients_refused"] += 1
                return refused
        if not ws_auth.origin_ok(request, self.options.host, self.options.allowed_origins):
            self._counts["clients_refused"] += 1
            return text_response(http.HTTPStatus.FORBIDDEN,
                                 "browser origin not allowed: open the viewer this server serves, or list the "
                                 "page's origin in WebSocketOptions.allowed_origins (hop-live has no flag for it)\n")
        if len(self._clients) >= self.options.max_clients:
            self._counts["clients_refused"] += 1
            return text_response(http.HTTPStatus.SERVICE_UNAVAILABLE, "too many clients\n")
        return None

    def _wrong_method(self) -> None:
        self._counts["methods_refused"] += 1

    def _check_token(self, connection: ServerConnection, request: Request, params: dict) -> Response | None:
        """None if the request carries the token exactly once; else the refusal. Each failure is
        charged to the remote address, which is refused outright while its backoff lasts."""
        address = str((connection.remote_address or ("?",))[0])
        wait = self._budget.blocked_for(address)
        if wait > 0:
            self._counts["refused_backoff"] += 1
            response = text_response(http.HTTPStatus.TOO_MANY_REQUESTS,
                                     f"too many failed token attempts from {address}; try again in "
                                     f"{math.ceil(wait)} s\n")
            response.headers["Retry-After"] = str(math.ceil(wait))
            return response
        offered = ws_auth.offered_tokens(request, params)
        if len(offered) == 1 and ws_auth.token_ok(request, params, self.options.token):
            self._budget.succeeded(address)
            return None
        self._counts["token_failures"] += 1
        self._budget.failed(address)
        if len(offered) > 1:
            return text_response(http.HTTPStatus.BAD_REQUEST,
                                 "send the token once: one ?token=... or one 'Authorization: Bearer' header\n")
        return text_response(http.HTTPStatus.UNAUTHORIZED,
                             "missing or wrong token: add ?token=... or an 'Authorization: Bearer' header\n")

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
                         self._control.new_client())
        client.replies.append(hello_message(self._skeleton, wire_format, self._control.describe()))
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
        accepted, reply = self._control.handle(message, client.limiter)
        if accepted:
            client.control_accepted += 1
        else:
            client.control_rejected += 1
        client.push_reply(reply)

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
