"""A WebSocket client is told the truth about a style control: the reply comes from the same
style grammar and model check the engine applies (hop.engine.session.parse_style), so a style
the engine cannot apply is rejected with the reason, and nothing is queued for it."""

from __future__ import annotations

import json

import pytest
import torch
from websockets.sync.client import connect

from hop.bridges.ws import WebSocketOptions, WebSocketSink
from hop.engine.pipeline import FramePipeline
from hop.engine.ring import SampleRing
from hop.engine.runtime import Engine
from hop.engine.session import apply_control
from hop.model import Hop, HopConfig, HopStream
from hop.profiles import MotionOptions


class NoSource:
    state = name = message = ""

    def start(self):
        pass

    def stop(self):
        pass


@pytest.fixture(scope="module")
def engine():
    torch.manual_seed(0)
    model = Hop(HopConfig(n_prototypes=32)).eval()
    return Engine(FramePipeline(HopStream(model), MotionOptions(), 60.0), SampleRing(), NoSource(), [])


@pytest.mark.parametrize("style, accepted", [
    ("garbage", False), ("speaker_999999", False), ("sample_abc", False), ("speaker_64", False),
    ("speaker_", False), ("sample_", False), ("0", False), ("nan", False), ("inf", False), ("speaker_1e3", False),
    ("neutral", True), ("sample", True), ("sample_7", True), ("speaker_0", True), ("speaker_63", True),
])
def test_a_style_control_is_accepted_only_when_the_engine_can_apply_it(engine, style, accepted):
    sink = WebSocketSink(WebSocketOptions(port=0))
    sink.on_control(lambda control: apply_control(engine, control))
    queued = engine._controls.qsize()
    try:
        with connect(sink.url) as client:
            assert json.loads(client.recv(timeout=5))["type"] == "hello"
            client.send(json.dumps({"type": "control", "style": style, "mute": True}))
            reply = json.loads(client.recv(timeout=5))
    finally:
        sink.close()
    if accepted:
        assert reply == {"type": "accepted", "control": {"style": style, "mute": True}}
        assert engine._controls.qsize() == queued + 2  # mute and style, applied between steps
    else:
        assert reply["type"] == "error" and reply["error"] == "bad_value", reply
        assert reply["detail"].startswith(f"style {style!r}: ") and "speaker_N" in reply["detail"], reply
        assert engine._controls.qsize() == queued, "a rejected control must change nothing (not even mute)"
        assert any(style in e for e in engine.status.errors)


def test_the_grammar_is_one_for_flags_and_controls():
    from hop.engine.session import parse_style

    cfg = HopConfig()
    assert parse_style("speaker:3", cfg.style_dim, cfg.n_speakers).speaker == 3
    for bad in ("nan," * 15 + "nan", "inf," * 15 + "1", "1e39," * 15 + "0", "speaker:-1", "sample:x", ""):
        with pytest.raises(ValueError):
            parse_style(bad, cfg.style_dim, cfg.n_speakers)
