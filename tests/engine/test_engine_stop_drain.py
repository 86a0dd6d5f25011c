"""Stopping the live driver loses no captured audio: what is in the ring at the stop becomes
frames and every send they owe is written; abort() (a second Ctrl-C) skips that drain."""

from __future__ import annotations

import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from hop.engine.audio_file import FileSource, FileSourceOptions
from hop.engine.pipeline import FramePipeline
from hop.engine.ring import SampleRing
from hop.engine.runtime import Engine
from hop.model import Hop, HopConfig, HopStream
from hop.profiles import EngineSettings, MotionOptions
from engine_testkit import ListSink  # noqa: E402

SR = 16_000


@pytest.fixture(scope="module")
def model(small_untrained_model):
    return small_untrained_model


def speechlike_wav(path: Path, seconds: float) -> Path:
    t = np.arange(int(seconds * SR)) / SR
    audio = 0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 1.5 * t) > 0)
    with wave.open(str(path), "wb") as file:
        file.setnchannels(1), file.setsampwidth(2), file.setframerate(SR)
        file.writeframes((audio * 32767).astype("<i2").tobytes())
    return path


def run_stopped_mid_compute(model, wav: Path, abort: bool) -> tuple[Engine, ListSink]:
    """The engine is stopped while a model step stalls for 0.6 s: the file source keeps
    capturing meanwhile, so the ring holds about nine frames of audio nobody has consumed."""
    ring = SampleRing()
    stream = HopStream(model)
    step = stream._step
    calls = {"n": 0}
    engine_box: list[Engine] = []

    def stalling_step(*args):
        calls["n"] += 1
        if calls["n"] == 20:
            time.sleep(0.6)
            engine_box[0].abort() if abort else engine_box[0].stop()  # e.g. a signal handler's stop
        return step(*args)

    stream._step = stalling_step
    sink = ListSink()
    engine = Engine(FramePipeline(stream, MotionOptions(), 60.0), ring, FileSource(FileSourceOptions(wav), ring),
                    [sink], EngineSettings())
    engine_box.append(engine)
    runner = threading.Thread(target=engine.run)
    runner.start()
    runner.join(60)
    assert not runner.is_alive()
    return engine, sink


def test_a_stop_turns_the_audio_already_captured_into_frames(model, tmp_path):
    engine, sink = run_stopped_mid_compute(model, speechlike_wav(tmp_path / "a.wav", 6.0), abort=False)
    account = engine.status.accounting
    per_frame = SR / account["pose_fps"]
    backlog = account["audio_samples_captured"] - account["audio_samples_consumed"]
    assert account["audio_samples_captured"] > 20 * per_frame, "the stop came after the file ended"
    assert backlog < per_frame, f"{backlog / per_frame:.1f} frames of captured audio were not turned into frames"
    # ... and every send those frames owe was written, in order, before run() returned.
    assert account["sends_pending"] == 0 and account["sends_unaccounted"] == 0, account
    assert len(sink.frames) == account["sends_written"]
    assert [f.index for f in sink.frames] == list(range(len(sink.frames)))
    times = [f.capture_time for f in sink.frames]
    assert times == sorted(times)


def test_abort_skips_the_drain(model, tmp_path):
    engine, sink = run_stopped_mid_compute(model, speechlike_wav(tmp_path / "b.wav", 6.0), abort=True)
    account = engine.status.accounting
    per_frame = SR / account["pose_fps"]
    assert account["audio_samples_captured"] - account["audio_samples_consumed"] > 3 * per_frame, account
