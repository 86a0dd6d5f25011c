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
from hop.model.skeleton import TED_GESTURE

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
    """Sends a pose function's frames to the sink at `fps` from its own thread, like the engine."""

    def __init__(self, sink: WebSocketSink, pose_at, fps: float = 30.0):
        self.sink, self.pose_at, self.fps = sink, pose_at, fps
        self.stop = threading.Event()
        self.index = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        start = time.perf_counter()
        while not self.stop.is_set():
            t = self.index / self.fps
            self.sink.send(PoseFrame(self.index, time.perf_counter(), self.pose_at(t), speaking=True))
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
