"""The real-time loop: every frame offline, catch-up by skipping, idle without audio,
and the whole capture path (virtual mic -> PortAudio -> engine -> OSC receiver process)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hop.engine.audio_file import FileSource, FileSourceOptions
from hop.engine.capture import CaptureOptions, MicCapture
from hop.profiles import EngineSettings, MotionOptions
from hop.engine.pipeline import FramePipeline, convert
from hop.engine.ring import RingOptions, SampleRing
from hop.engine.runtime import Engine
from hop.engine.status import SourceState
from hop.engine.session import DEFAULT_CHECKPOINT
from hop.model import Hop, HopConfig, HopStream, load_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bridges"))
from bridges_testkit import OscReceiverProcess, messages_of  # noqa: E402

from hop.bridges.osc import OscSink  # noqa: E402
from engine_testkit import ListSink, write_wav  # noqa: E402

SR = 16000


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    """Untrained: enough for timing, skipping and idle behaviour."""
    torch.manual_seed(0)
    return Hop(HopConfig(n_prototypes=64)).eval()


@pytest.fixture(scope="module")
def trained_model():
    """The shipped default checkpoint: an untrained model barely moves, so 'speech moves
    the avatar more than silence' needs one that learned to gesture."""
    if not DEFAULT_CHECKPOINT.is_file():
        pytest.skip(f"no default checkpoint at {DEFAULT_CHECKPOINT} (see README: training the default)")
    return load_checkpoint(DEFAULT_CHECKPOINT)[0]


def motion_per_frame(poses: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.diff(poses, axis=0), axis=1)


def pipeline(model, send_rate: float = 60.0, stream: HopStream | None = None) -> FramePipeline:
    return FramePipeline(stream or HopStream(model), MotionOptions(), send_rate)


def test_offline_conversion_gives_every_frame_in_order_and_speech_moves_more(trained_model, speech_source):
    model = trained_model
    fps = model.cfg.fps
    silence = np.zeros(2 * SR, np.float32)
    audio = np.concatenate([silence, 0.8 * speech_source(3.0), silence, np.zeros(100, np.float32)])
    frames = list(convert(pipeline(model, send_rate=fps), audio))
    # the last partial frame counts: frames x frame time covers the audio within one frame
    assert [f.number for f in frames] == list(range(len(frames)))
    assert 0 <= len(frames) / fps - len(audio) / SR < 1 / fps
    assert all(len(f.sends) == 1 for f in frames)
    poses = np.stack([f.sends[0] for f in frames])
    assert np.allclose(np.linalg.norm(poses.reshape(len(poses), -1, 3), axis=-1), 1.0, atol=1e-4)
    speaking = np.array([f.speaking for f in frames])
    speech, silence = slice(int(2.5 * fps), int(4.5 * fps)), slice(int(0.2 * fps), int(1.8 * fps))
    assert speaking[speech].mean() > 0.8 and speaking[silence].sum() == 0 and speaking[-fps:].sum() == 0
    moving = motion_per_frame(poses)
    assert moving[speech].mean() > 2 * moving[silence].mean(), "speech should move the avatar more than silence"
    assert (moving[silence] > 0).all(), "silence must show idle motion, not a frozen pose"
    # the same audio in other chunk sizes gives the same frames: no clock, no chunking in the result
    again = np.stack([f.sends[0] for f in convert(pipeline(model, send_rate=fps), audio, frames_per_step=3)])
    assert np.allclose(again, poses, atol=1e-5)


def test_falling_behind_skips_frames_instead_of_growing_latency(model, speech_source, tmp_path):
    wav = write_wav(tmp_path / "talk.wav", 0.8 * speech_source(4.0))
    ring = SampleRing()
    stream = HopStream(model)
    calls = {"n": 0}
    eager_step = stream._step

    def stalling_step(*args):
        calls["n"] += 1
        if calls["n"] % 25 == 0:
            time.sleep(0.3)  # the CPU was taken away for 9 frame periods
        return eager_step(*args)

    stream._step = stalling_step
    sink = ListSink()
    engine = Engine(pipeline(model, 30.0, stream), ring, FileSource(FileSourceOptions(wav), ring), [sink],
                    EngineSettings(skip_backlog_frames=4))
    engine.run()
    status = engine.status.snapshot()
    assert status["frames_skipped"] > 10
    latencies = np.array([time_sent for time_sent in engine.status._latency_ms.values()])
    # after each stall the next frame is late by the stall, but the one after is fresh again
    assert np.median(latencies) < 60
    assert (latencies[-20:] < 100).mean() > 0.8, "latency did not recover after the stalls"
    # Every send a frame owed is written, skipped with its frame, or superseded: the sum closes.
    account = engine.status.accounting
    assert account["sends_unaccounted"] == 0, account
    assert account["sends_written"] == len(sink.frames) and account["sends_pending"] == 0
    assert account["pose_frames"] == engine.pipeline.frames_done and account["pose_frames_skipped"] > 10


def test_a_send_lost_inside_the_engine_shows_as_unaccounted(model, speech_source, tmp_path):
    """The accounting is not a tautology: a send that vanishes from the queue is caught."""
    wav = write_wav(tmp_path / "talk.wav", 0.8 * speech_source(2.0))
    ring = SampleRing()
    sink = ListSink()
    engine = Engine(pipeline(model), ring, FileSource(FileSourceOptions(wav), ring), [sink], EngineSettings())
    schedule = engine._schedule
    calls = {"n": 0}

    def schedule_then_lose_one(*args, **kwargs):
        schedule(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 20:
            engine._sends.pop()  # the bug being simulated: a queued send disappears

    engine._schedule = schedule_then_lose_one
    engine.run()
    account = engine.status.accounting
    assert account["sends_unaccounted"] == 1, account
    assert account["capture_clock_drift_ppm"] is not None


class SilentSource:
    """A live source that delivers nothing, like a microphone that vanished."""
    state = SourceState.LOST
    message = "device gone"
    name = "gone"

    def start(self):
        pass

    def stop(self):
        pass


def test_no_audio_keeps_the_avatar_alive_with_idle_motion(model):
    sink = ListSink()
    engine = Engine(pipeline(model), SampleRing(), SilentSource(), [sink], EngineSettings(idle_after_s=0.1))
    runner = threading.Thread(target=engine.run)
    runner.start()
    time.sleep(1.5)
    engine.stop()
    runner.join(5)
    assert not runner.is_alive()
    idle_frames = len(sink.frames) / 2  # two sends per pose frame at 60 Hz
    assert 30 <= idle_frames <= 50, f"{idle_frames} idle pose frames in ~1.4 s"
    poses = np.stack([f.dir_vec for f in sink.frames[::2]])
    assert (motion_per_frame(poses) > 0).all()
    assert engine.status.snapshot()["source"]["state"] == "lost"


def test_live_capture_to_osc_receiver_process(trained_model, virtual_mic, speech_source):
    model = trained_model
    speech = 0.8 * speech_source(3.0)
    receiver = OscReceiverProcess()
    ring = SampleRing()
    capture = MicCapture(CaptureOptions(device="pulse", samplerate=16000, channels=1), ring)
    engine = Engine(pipeline(model), ring, capture, [OscSink("127.0.0.1", receiver.port)], EngineSettings())
    runner = threading.Thread(target=engine.run)
    try:
        runner.start()
        time.sleep(2.0)  # silence from the microphone first
        virtual_mic.feed(speech)
        virtual_mic.wait_drained(15)
        time.sleep(1.5)
        engine.stop()
        runner.join(10)
        lines = receiver.collect(2000, timeout=2.0)
    finally:
        engine.stop()
        receiver.close()
    frames = []
    for line in lines:
        values = {m["address"]: m["args"] for m in messages_of(line)}
        frames.append((values["/hop/frame"][0], values["/hop/speaking"][0], np.array(values["/hop/dirvec"]),
                       line["received"]))
    index = [f[0] for f in frames]
    assert index == sorted(index) and len(set(index)) == len(index), "frames out of order or repeated"
    received = np.array([f[3] for f in frames])
    rate = (len(received) - 1) / (received[-1] - received[0])
    assert 50 <= rate <= 66, f"send rate {rate:.1f} Hz, configured 60"
    poses = np.stack([f[2] for f in frames])
    speaking = np.array([f[1] for f in frames], bool)
    moving = motion_per_frame(poses)
    assert speaking.sum() > 60 and (~speaking).sum() > 60
    assert moving[speaking[1:]].mean() > 1.5 * moving[~speaking[1:]].mean()
    assert engine.status.snapshot()["latency_ms"]["p50"] < 100
    account = engine.status.snapshot()["accounting"]
    assert account["sends_unaccounted"] == 0, account
    # the virtual microphone is paced by the system clock: its drift is small
    assert abs(account["capture_clock_drift_ppm"]) < 50_000, account


def test_a_file_played_in_real_time_keeps_its_last_partial_frame(model, speech_source, tmp_path):
    samples = int(1.3 * SR) + 123  # not a whole number of pose frames
    wav = write_wav(tmp_path / "talk.wav", 0.8 * speech_source(2.0)[:samples])
    ring = SampleRing()
    sink = ListSink()
    engine = Engine(pipeline(model), ring, FileSource(FileSourceOptions(wav), ring), [sink], EngineSettings())
    engine.run()
    fps = model.cfg.mel.fps
    assert engine.pipeline.frames_done == -(-samples * fps // SR), "the recording's end was dropped"
    account = engine.status.accounting
    assert account["sends_unaccounted"] == 0 and account["sends_written"] == len(sink.frames)
