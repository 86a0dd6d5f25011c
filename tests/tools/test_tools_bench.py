"""hop-bench: its building blocks cut audio where the engine does, its windowed mode refuses
gaps, and the latency benchmark runs end to end on the virtual microphone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hop.tools import bench
from hop.tools.virtual_mic import available as virtual_mic_unavailable
from hop.model import HopStream

SR = 16000


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_windowed_mode_refuses_gaps_and_short_audio(paper_model):
    with pytest.raises(ValueError, match="stride"):
        bench.WindowedRunner(paper_model, np.zeros(3 * SR, np.float32), stride=31)  # frames no window covers
    with pytest.raises(ValueError, match="too short"):
        bench.WindowedRunner(paper_model, np.zeros(2 * SR, np.float32))  # 30 frames < 34


def test_latency_command_end_to_end_on_the_virtual_mic(streaming_model, tmp_path, monkeypatch):
    reason = virtual_mic_unavailable()
    if reason:
        pytest.skip(reason)
    monkeypatch.setattr(bench, "load_streaming_model", lambda checkpoint: (streaming_model, "test model (untrained)"))
    out = tmp_path / "latency.json"
    assert bench.main(["latency", "--seconds", "5", "--asr", "off", "--threads", "1", "--lm-weights", "fp32,int8",
                       "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    machine = result["machine"]
    assert machine["cpu_model"] and machine["cpu_model"] != "unknown"
    assert machine["logical_cores"] >= 1 and machine["torch"] == torch.__version__
    assert len(machine["loadavg_at_start"]) == 3 and len(machine["loadavg_at_end"]) == 3
    assert result["benchmark"] == "latency" and result["pose_fps"] == 30
    run, int8 = result["conditions"]  # side by side in one run, the LM's weight formats as asked
    assert (run["lm_weights"], int8["lm_weights"]) == ("fp32", "int8")
    assert int8["fresh_frames"] + int8["frames_skipped"] >= 0.9 * 30 * int8["speech_seconds"]
    assert run["threads"] == 1 and run["threads_in_engine_thread"] == 1 and run["asr"] is False
    assert 4.5 <= run["speech_seconds"] <= 6.0
    expected = 30 * run["speech_seconds"]
    # under load the engine skips frames to stay current, but every frame is either sent or skipped
    assert run["fresh_frames"] >= 0.3 * expected
    assert run["fresh_frames"] + run["frames_skipped"] >= 0.9 * expected
    lat = run["latency_capture_to_socket_ms"]
    assert lat["count"] == run["fresh_frames"]
    assert 0 < lat["min"] <= lat["median"] <= lat["p95"] <= lat["p99"] <= lat["max"] < 2000
    rx = run["latency_capture_to_receiver_ms"]
    assert rx["count"] >= 0.9 * lat["count"], "datagrams were lost on loopback"
    # The receiver stamps arrivals on the same system-wide clock as the capture stamps: none can
    # precede its audio. (Not compared with the send stamps: the engine stamps "sent" after sendto
    # returns, and on a starved CPU the receiver can run before the engine thread does again.)
    assert 0 < rx["min"] <= rx["median"] <= rx["max"] < 2000, "receiver and capture clocks disagree"
    assert run["capture_stamps"]["blocks"] > 100 and run["capture_stamps"]["clamped"] is True
    assert run["input_overflows"] == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_backends_on_cuda_without_a_gpu_says_so(tmp_path):
    out = tmp_path / "backends.json"
    assert bench.main(["backends", "--device", "cuda", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["device"] == "cuda" and result["gpu"].startswith("no GPU")
    assert result["backends"] == [] and result["machine"]["cuda_available"] is False


def test_streaming_stepper_cuts_audio_at_frame_boundaries(streaming_model):
    audio = np.random.default_rng(0).normal(scale=0.1, size=SR).astype(np.float32)
    chunks = bench.frame_chunks(audio, streaming_model.cfg.mel)
    assert len(chunks) == 30 and sum(len(c) for c in chunks) == streaming_model.cfg.mel.samples_for(30)
    reference = HopStream(streaming_model).push_audio(audio[: streaming_model.cfg.mel.samples_for(30)])[0]
    stepper = bench.StreamingStepper(streaming_model, audio)
    stepped = [stepper()[0] for _ in range(30)]
    assert all(len(frame) == 1 for frame in stepped), "every chunk must complete exactly one frame"
    stepped = np.concatenate(stepped)
    assert np.allclose(stepped, reference, atol=1e-4), "one frame per push must equal one push of it all"
