"""The browser viewer in real headless Chromium, driven over the Chrome DevTools protocol
(with the websockets client already in the venv): a moving pose stream through
WebSocketSink must move the figure on screen.

Set HOP_SCREENSHOT_DIR to keep the screenshots.
"""

from __future__ import annotations

import base64
import contextlib
import io
import itertools
import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from bridges_testkit import swinging_arms_pose
from websockets.sync.client import connect

from hop.bridges.frame import PoseFrame
from hop.bridges.ws import WebSocketOptions, WebSocketSink
from hop.model.skeleton import TED_EXPRESSIVE, TED_GESTURE

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (Debian package 'chromium')")


class Browser:
    """Headless Chromium with one page, spoken to over the DevTools protocol."""

    def __init__(self, profile: Path, width: int = 960, height: int = 720):
        self.process = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
             f"--user-data-dir={profile}", f"--window-size={width},{height}", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--mute-audio", "--no-sandbox",
             "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        endpoint = None
        deadline = time.monotonic() + 30
        while endpoint is None and time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                break
            found = re.search(r"DevTools listening on (ws://\S+)", line)
            endpoint = found and found.group(1)
        if endpoint is None:
            self.process.kill()
            raise RuntimeError("Chromium did not start its DevTools endpoint")
        threading.Thread(target=lambda: [None for _ in self.process.stderr], daemon=True).start()  # keep draining
        self.socket = contextlib.ExitStack().enter_context(connect(endpoint, max_size=None, open_timeout=10))
        self.ids = itertools.count(1)
        self.console: list[str] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Runtime.enable", session=True)
        self.call("Page.enable", session=True)

    def call(self, method: str, session: bool = False, timeout: float = 20.0, **params) -> dict:
        message_id = next(self.ids)
        message = {"id": message_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        self.socket.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self.socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("method") in ("Runtime.exceptionThrown", "Runtime.consoleAPICalled"):
                self.console.append(json.dumps(reply["params"])[:500])
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self) -> Image.Image:
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except Exception:
            pass
        self.socket.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Feeder:
    """Sends a pose function's frames to the sink at `fps` from its own thread, like the engine;
    ``expressions_at(t)`` gives each frame's face weights (none by default)."""

    def __init__(self, sink: WebSocketSink, pose_at, fps: float = 30.0, expressions_at=None,
                 skeleton: str = "ted_gesture"):
        self.sink, self.pose_at, self.fps, self.expressions_at = sink, pose_at, fps, expressions_at
        self.skeleton = skeleton
        self.stop = threading.Event()
        self.index = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        start = time.perf_counter()
        while not self.stop.is_set():
            t = self.index / self.fps
            expressions = self.expressions_at(t) if self.expressions_at else {}
            self.sink.send(PoseFrame(self.index, time.perf_counter(), self.pose_at(t), speaking=True,
                                     skeleton=self.skeleton, expressions=expressions))
            self.index += 1
            time.sleep(max(0.0, start + self.index / self.fps - time.perf_counter()))

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def scene_difference(a: Image.Image, b: Image.Image, panel: tuple[int, int, int, int]) -> float:
    """Fraction of the 3-D view's pixels that differ clearly; the figures panel (whose
    numbers change all the time) is left out."""
    x = np.asarray(a, dtype=np.int16)
    y = np.asarray(b, dtype=np.int16)
    changed = np.abs(x - y).max(axis=2) > 40
    left, top, right, bottom = panel
    changed[top:bottom, left:right] = False
    return float(changed.mean())


def wait_until(browser: Browser, expression: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = browser.evaluate(expression)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {expression}; console: {browser.console[-5:]}")


def test_bridges_viewer_draws_moving_stream_in_chromium(tmp_path):
    keep = Path(os.environ["HOP_SCREENSHOT_DIR"]) if os.environ.get("HOP_SCREENSHOT_DIR") else tmp_path
    keep.mkdir(parents=True, exist_ok=True)
    sink = WebSocketSink(WebSocketOptions(port=0))
    browser = Browser(tmp_path / "profile")
    feeder = None
    try:
        browser.call("Page.navigate", session=True, url=sink.viewer_url)
        wait_until(browser, "window.hopViewer && window.hopViewer.stats.connected")
        # Rest: the dataset's mean pose, held still.
        rest_pose = TED_GESTURE.mean_pose()
        feeder = Feeder(sink, lambda t: rest_pose)
        wait_until(browser, "window.hopViewer.stats.received > 10 && window.hopViewer.stats.rendered > 10")
        time.sleep(0.3)
        rest = browser.screenshot()
        feeder.close()
        # Speech: arms swinging and a nod; screenshots a quarter swing apart.
        feeder = Feeder(sink, swinging_arms_pose)
        received = browser.evaluate("window.hopViewer.stats.received")
        wait_until(browser, f"window.hopViewer.stats.received > {received + 10}")
        shots = []
        for k in range(3):
            time.sleep(0.5)
            shots.append(browser.screenshot())
        stats = browser.evaluate("window.hopViewer.stats")
        panel = browser.evaluate("(() => { const r = document.getElementById('panel').getBoundingClientRect();"
                                 " return [r.left, r.top, r.right, r.bottom].map(Math.round); })()")
        ratio = browser.evaluate("window.devicePixelRatio")
        panel = tuple(int(v * ratio) + (2 if k >= 2 else -2) for k, v in enumerate(panel))
        rest.save(keep / "viewer-rest.png")
        for k, shot in enumerate(shots):
            shot.save(keep / f"viewer-speech-{k}.png")
        # The figure is drawn: the rest screenshot is not just the empty scene's background.
        background = np.asarray(rest.getpixel((5, rest.size[1] // 2)), dtype=np.int16)
        figure = np.abs(np.asarray(rest, dtype=np.int16) - background).max(axis=2) > 60
        figure[panel[1]:panel[3], panel[0]:panel[2]] = False
        assert figure.mean() > 0.005, "nothing drawn over the background"
        for shot in shots:
            assert scene_difference(rest, shot, panel) > 0.002, "a speech frame looks like the rest pose"
        for a, b in itertools.combinations(shots, 2):
            assert scene_difference(a, b, panel) > 0.002, "two speech frames a half second apart look the same"
        assert stats["connected"] and stats["received"] > 20 and stats["renderFps"] > 0
        assert stats["latencyMs"] is not None and 0 < stats["latencyMs"] < 1000
        assert sink.stats()["errors"] == 0
        assert not [line for line in browser.console if "exceptionDetails" in line], browser.console
    finally:
        if feeder is not None:
            feeder.close()
        browser.close()
        sink.close()


def talking(t: float) -> dict[str, float]:
    """The mouth open ("aa" 0.8) in the first half of every second, closed in the second half."""
    open_now = (t % 1.0) < 0.5
    return {"aa": 0.8 if open_now else 0.0, "ih": 0.0, "ou": 0.0, "ee": 0.0, "oh": 0.0, "blink": 0.0}


def set_file(browser: Browser, selector: str, path: Path) -> None:
    root = browser.call("DOM.getDocument", session=True)["root"]["nodeId"]
    node = browser.call("DOM.querySelector", session=True, nodeId=root, selector=selector)["nodeId"]
    browser.call("DOM.setFileInputFiles", session=True, nodeId=node, files=[str(path)])


def test_bridges_viewer_json_stream_carries_expressions_and_favicon_is_served():
    import urllib.request

    sink = WebSocketSink(WebSocketOptions(port=0))
    try:
        with connect(sink.url + "?format=json") as client:
            assert json.loads(client.recv(timeout=5))["type"] == "hello"
            time.sleep(0.2)
            sink.send(PoseFrame(0, time.perf_counter(), TED_GESTURE.mean_pose(), speaking=True,
                                expressions={"aa": 0.61234567, "blink": 1.5}))
            sink.send(PoseFrame(1, time.perf_counter(), TED_GESTURE.mean_pose(), speaking=False))
            with_face, without = (json.loads(client.recv(timeout=5)) for _ in range(2))
        assert with_face["expressions"] == {"aa": 0.6123, "blink": 1.0}  # rounded, clipped to 0..1
        assert "expressions" not in without
        with urllib.request.urlopen(sink.viewer_url.rstrip("/") + "/favicon.ico", timeout=5) as reply:
            assert reply.status == 200 and reply.headers["Content-Type"].startswith("image/")
            assert reply.read(4) == b"\x00\x00\x01\x00"  # an ICO file
    finally:
        sink.close()


def expressive_pose(t: float) -> np.ndarray:
    """A TED Expressive pose (42 bones: body, head, fingers) drifting smoothly."""
    rng = np.random.default_rng(11)
    base, phase = rng.normal(size=(TED_EXPRESSIVE.n_bones, 3)), rng.uniform(0, 2 * np.pi, (TED_EXPRESSIVE.n_bones, 3))
    v = base + 0.6 * np.sin(2 * np.pi * 0.5 * t + phase)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).reshape(-1).astype(np.float32)


# The TED Expressive bones of the hands: wrist -> finger_1 (the hand), finger_1 -> _2 and _2 -> _3.
FINGERS = ("thumb", "index", "middle", "ring", "little")
HAND_BONES = [k for k, (_, child, _) in enumerate(TED_EXPRESSIVE.bones)
              if TED_EXPRESSIVE.joint_names[child].split("_")[1:2] in [[f] for f in FINGERS]]
# The VRM humanoid bones a TED Expressive stream turns in the hands (Unity names -> VRM 1.0 names,
# by the test kit's own table): the hand, and each finger's two bones between its three joints.
VRM_HAND_BONES = ["leftHand", "rightHand"] + [
    name for side in ("left", "right") for name in
    (f"{side}ThumbMetacarpal", f"{side}ThumbProximal",
     *(f"{side}{finger}{part}" for finger in ("Index", "Middle", "Ring", "Little")
       for part in ("Proximal", "Intermediate")))]

FINGER_ROTATIONS_JS = """(() => { const h = window.hopViewer.avatar.humanoid;
  return %s.map((name) => [h.getNormalizedBoneNode(name).quaternion.toArray(),
                           h.getRawBoneNode(name).quaternion.toArray()]); })()""" % json.dumps(VRM_HAND_BONES)
# The skeleton figure as drawn: its group in the scene (a sphere per joint, then a cylinder per bone).
SKELETON_JS = """(() => {
  const group = window.testScene.children.find((c) => c.isGroup
    && c.children.some((m) => m.geometry && m.geometry.type === 'CylinderGeometry'));
  const kind = (type) => group.children.filter((m) => m.geometry.type === type);
  return { visible: group.visible,
           joints: kind('SphereGeometry').map((m) => m.position.toArray()),
           bones: kind('CylinderGeometry').map((m) => ({ visible: m.visible, position: m.position.toArray(),
             quaternion: m.quaternion.toArray(), length: m.scale.y })) }; })()"""


def turned_degrees(quaternions: np.ndarray) -> tuple[float, float]:
    """(x, y, z, w) over time -> the most it is turned from identity, and from its first value."""
    from scipy.spatial.transform import Rotation

    q = Rotation.from_quat(quaternions)
    return float(np.degrees(q.magnitude().max())), float(np.degrees((q[0].inv() * q).magnitude().max()))


def check_skeleton_hands(drawn: dict) -> np.ndarray:
    """The skeleton figure draws every hand bone between its two joints; returns their directions."""
    from scipy.spatial.transform import Rotation

    names = TED_EXPRESSIVE.joint_names
    assert drawn["visible"] and len(drawn["joints"]) == len(names) and len(drawn["bones"]) == TED_EXPRESSIVE.n_bones
    joints = np.array(drawn["joints"])
    directions = []
    for k in HAND_BONES:
        parent, child, length = TED_EXPRESSIVE.bones[k]
        bone = drawn["bones"][k]
        span = joints[child] - joints[parent]
        label = f"{names[parent]} -> {names[child]}"
        assert bone["visible"], label
        # As long as the data's bone (a few centimetres), from one joint to the other.
        np.testing.assert_allclose(np.linalg.norm(span), length, rtol=0.05, err_msg=label)
        np.testing.assert_allclose(bone["length"], np.linalg.norm(span), rtol=1e-4, err_msg=label)
        np.testing.assert_allclose(bone["position"], joints[parent] + span / 2, atol=1e-4, err_msg=label)
        axis = Rotation.from_quat(bone["quaternion"]).apply([0.0, 1.0, 0.0])
        np.testing.assert_allclose(axis, span / np.linalg.norm(span), atol=1e-3, err_msg=label)
        directions.append(axis)
    return np.array(directions)


def test_bridges_viewer_keeps_every_frame_while_busy_and_moves_the_vrm_mouth_and_fingers(tmp_path):
    """A page busy for seconds (a big VRM parsing, shaders compiling) must not lose frames: the
    socket is read by a worker. A loaded VRM's mouth follows the stream's expressions and its
    hands and fingers turn; back on the skeleton view, the figure draws the moving finger bones.

    Large frames (TED Expressive) and a small server send buffer make a client that stops reading
    for 5 s lose frames for sure (the viewer that read on its page thread lost 25 of 150 here); a
    32-frame queue (1 s) absorbs the test process's own stalls on a loaded machine."""
    from avatar_testkit import make_avatar

    keep = Path(os.environ["HOP_SCREENSHOT_DIR"]) if os.environ.get("HOP_SCREENSHOT_DIR") else tmp_path
    keep.mkdir(parents=True, exist_ok=True)
    avatar = tmp_path / "mouth.vrm"
    make_avatar(avatar, version=1, scale=0.8, mouth=True)
    sink = WebSocketSink(WebSocketOptions(port=0, skeleton="ted_expressive", send_buffer_bytes=4096,
                                          client_queue_frames=32))
    browser = Browser(tmp_path / "profile")
    feeder = None
    try:
        browser.call("Page.navigate", session=True, url=sink.viewer_url)
        wait_until(browser, "window.hopViewer && window.hopViewer.stats.connected")
        assert browser.evaluate("window.hopViewer.stats.transport") == "worker"
        feeder = Feeder(sink, expressive_pose, expressions_at=talking, skeleton="ted_expressive")
        wait_until(browser, "window.hopViewer.stats.received > 10")
        # The page's thread blocked for 5 s: 150 frames arrive meanwhile.
        before = browser.evaluate("window.hopViewer.stats.received")
        sent_before = feeder.index
        browser.evaluate("(() => { const end = performance.now() + 5000; while (performance.now() < end) {} })()")
        sent_during = feeder.index - sent_before
        wait_until(browser, f"window.hopViewer.stats.received >= {before + sent_during}", timeout=10)
        (client,) = sink.client_stats()
        assert sent_during > 120 and client["dropped"] == 0, client
        assert browser.evaluate("window.hopViewer.stats.lost") == 0

        # Load the VRM while the stream runs; nothing is lost then either.
        set_file(browser, "#vrm-file", avatar)
        wait_until(browser, "window.hopViewer.avatar !== null && window.hopViewer.avatar !== undefined")
        wait_until(browser, "document.getElementById('reply').textContent.startsWith('loaded')")
        opened, closed, hands = [], [], []
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            value = browser.evaluate("window.hopViewer.avatar.expressionManager.getValue('aa')")
            morph = browser.evaluate("window.hopViewer.avatar.scene.getObjectByName('mouth')"
                                     "?.morphTargetInfluences?.[0] ?? window.hopViewer.avatar.scene"
                                     ".getObjectByProperty('type', 'Mesh').morphTargetInfluences[0]")
            (opened if value > 0.3 else closed).append((value, morph))
            hands.append(browser.evaluate(FINGER_ROTATIONS_JS))
            time.sleep(0.07)
        assert opened and closed, (opened, closed)
        assert max(v for v, _ in closed) < 0.05 or min(v for v, _ in closed) < 0.05
        # The mesh's own morph target (the mouth) moves with the expression.
        assert max(m for _, m in opened) > 0.3 and min(m for _, m in closed) < 0.05
        browser.screenshot().save(keep / "viewer-vrm.png")
        # The hands and every finger bone the stream drives turn over the 4 s: the normalized bones
        # setNormalizedPose() sets, and the avatar's own (raw) bones three-vrm copies them to.
        hands = np.array(hands)  # (samples, bones, normalized/raw, xyzw)
        assert len(hands) > 10
        for b, name in enumerate(VRM_HAND_BONES):
            for which, kind in enumerate(("normalized", "raw")):
                from_rest, from_first = turned_degrees(hands[:, b, which])
                assert from_rest > 5.0, f"{kind} {name} never leaves its rest pose ({from_rest:.2f} degrees)"
                assert from_first > 5.0, f"{kind} {name} frozen: within {from_first:.2f} degrees of its first pose"

        # Back to the skeleton view (the avatar is removed): the figure draws the hand and finger
        # bones, each a cylinder from joint to joint, and they move. The page exposes no scene;
        # the avatar's parent is the scene, kept before the avatar goes.
        browser.evaluate("window.testScene = window.hopViewer.avatar.scene.parent; "
                         "document.getElementById('show-skeleton').click()")
        wait_until(browser, "window.hopViewer.avatar === null")
        directions = []
        for _ in range(6):
            time.sleep(0.3)
            directions.append(check_skeleton_hands(browser.evaluate(SKELETON_JS)))
        directions = np.array(directions)  # (samples, hand bones, xyz)
        turned = np.degrees(np.arccos(np.clip(np.einsum("tbk,bk->tb", directions, directions[0]), -1, 1))).max(0)
        for k, angle in zip(HAND_BONES, turned):
            assert angle > 5.0, f"skeleton bone {TED_EXPRESSIVE.bones[k][:2]} frozen ({angle:.2f} degrees)"
        browser.screenshot().save(keep / "viewer-expressive-skeleton.png")
        (client,) = sink.client_stats()
        assert client["dropped"] == 0 and browser.evaluate("window.hopViewer.stats.lost") == 0
        assert not [line for line in browser.console if "exceptionDetails" in line], browser.console
    finally:
        if feeder is not None:
            feeder.close()
        browser.close()
        sink.close()


def test_bridges_viewer_says_disconnected_and_stops_latency_when_the_stream_ends(tmp_path):
    sink = WebSocketSink(WebSocketOptions(port=0))
    browser = Browser(tmp_path / "profile")
    feeder = Feeder(sink, swinging_arms_pose)
    try:
        browser.call("Page.navigate", session=True, url=sink.viewer_url)
        wait_until(browser, "window.hopViewer && window.hopViewer.stats.received > 10")
        wait_until(browser, "window.hopViewer.stats.latencyMs !== null")
        assert browser.evaluate("document.getElementById('status').textContent") == "connected"
        # The engine stops sending but the server stays: no frames, no latency, said so.
        feeder.close()
        wait_until(browser, "document.getElementById('status').textContent === 'connected, no frames'", timeout=5)
        assert browser.evaluate("window.hopViewer.stats.latencyMs") is None
        assert browser.evaluate("document.getElementById('latency').textContent") == "\u2013"
        # The stream ends (hop-live exits): disconnected, and the latency figure stays stopped.
        sink.close()
        wait_until(browser, "document.getElementById('status').textContent.startsWith('disconnected')", timeout=10)
        for _ in range(3):
            time.sleep(0.5)
            assert browser.evaluate("window.hopViewer.stats.latencyMs") is None
            assert browser.evaluate("document.getElementById('latency').textContent") == "\u2013"
            assert browser.evaluate("document.getElementById('status').textContent").startswith("disconnected")
    finally:
        feeder.close()
        browser.close()
        sink.close()
