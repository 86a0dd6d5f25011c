"""Control messages from a real WebSocket client reach the running engine; bad ones change nothing.
Also: --audio-delay holds poses back by the asked amount."""

import json
import socket
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from websockets.sync.client import connect

from hop.bridges.ws import WebSocketOptions, WebSocketSink
from hop.engine.audio_file import FileSource, FileSourceOptions
from hop.engine.ring import SampleRing
from hop.engine.runtime import Engine
from hop.profiles import EngineSettings, MotionOptions
from hop.engine.pipeline import FramePipeline
from hop.engine.session import apply_control
from hop.model import Hop, HopConfig, HopStream


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the engine's profiles run it
    yield Hop(HopConfig(n_prototypes=32)).eval()
    torch.set_num_threads(threads)


def _wav(path: Path, seconds: float) -> Path:
    t = np.arange(int(seconds * 16000)) / 16000
    audio = 0.3 * np.sin(2 * np.pi * 200 * t) * (np.sin(2 * np.pi * 2 * t) > 0)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes((audio * 32767).astype("<i2").tobytes())
    return path


def _wait(predicate, timeout=3.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


def test_websocket_controls_reach_the_engine(model, tmp_path):
    sink = WebSocketSink(WebSocketOptions(port=0))
    ring = SampleRing()
    source = FileSource(FileSourceOptions(_wav(tmp_path / "a.wav", 6.0)), ring)
    engine = Engine(FramePipeline(HopStream(model), MotionOptions(), 60.0), ring, source, [sink], EngineSettings())
    sink.on_control(lambda control: apply_control(engine, control))
    runner = threading.Thread(target=engine.run)
    runner.start()
    try:
        with connect(sink.url + "?format=json", max_size=None) as client:
            client.send(json.dumps({"type": "control", "intensity": 0.5}))
            assert _wait(lambda: engine.pipeline.shaper.intensity == 0.5)
            client.send(json.dumps({"type": "control", "mute": True}))
            assert _wait(lambda: engine.pipeline.shaper.muted)
            for bad in ('{"type": "control", "intensity": 99}', "not json", '{"type": "control", "x": 1}',
                        '{"type": "control", "style": "speaker:999"}'):
                client.send(bad)
            time.sleep(0.3)
            assert engine.pipeline.shaper.intensity == 0.5 and engine.pipeline.shaper.muted
            # a well-formed style the model cannot take is reported, not applied
            client.send(json.dumps({"type": "control", "style": "speaker_999"}))
            assert _wait(lambda: any("speaker id 999" in e for e in engine.status.errors))
            client.send(json.dumps({"type": "control", "style": "speaker_3"}))
            expected = model.style.table.weight[3].chunk(2)[0]
            assert _wait(lambda: torch.allclose(engine.pipeline.stream.style[0], expected))
    finally:
        engine.stop()
        runner.join(10)
        sink.close()


def test_audio_delay_holds_poses_back(model, tmp_path):
    ring = SampleRing()
    source = FileSource(FileSourceOptions(_wav(tmp_path / "d.wav", 2.0)), ring)
    engine = Engine(FramePipeline(HopStream(model), MotionOptions(), 60.0), ring, source, [],
                    EngineSettings(audio_delay_s=0.25))
    engine.run()
    latency_ms = engine.status._latency_ms.values()
    assert len(latency_ms) > 20
    assert latency_ms.min() >= 250  # never early
    assert np.median(latency_ms) < 250 + 60  # and not much later than asked


def test_osc_controls_reach_a_running_session(tmp_path):
    """hop-live's session with --osc-control: datagrams from another socket mute the avatar."""
    from hop.bridges.osc import osc_message
    from hop.engine.session import OutputSpec, SessionOptions, run_session

    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    options = SessionOptions(input=_wav(tmp_path / "a.wav", 5.0), outputs=(OutputSpec("bvh", path=tmp_path / "a.bvh"),),
                             osc_control=("127.0.0.1", port), stats_json=tmp_path / "stats.json")
    result = {}
    runner = threading.Thread(target=lambda: result.update(run_session(options)))
    runner.start()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        while runner.is_alive():
            sender.sendto(osc_message("/hop/control/mute", "T", [True]).dgram, ("127.0.0.1", port))
            sender.sendto(osc_message("/hop/control/mute", "s", ["yes"]).dgram, ("127.0.0.1", port))
            time.sleep(0.25)
    finally:
        sender.close()
        runner.join(30)
    figures = result["summary"]["control_inputs"]["osc"]
    assert figures["accepted"] >= 3 and figures["rejected"] >= 3, figures
    assert figures["rejected_by_reason"] == {"bad_value": figures["rejected"]}
    # --stats-json carries the same figures
    assert "osc" in json.loads((tmp_path / "stats.json").read_text())["control_inputs"]
