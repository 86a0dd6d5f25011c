"""The CI-sized soak: `hop-soak` for three minutes, the real engine end to end (virtual mic through
PortAudio, speech with silences, ASR on, OSC + WebSocket + BVH), and its JSON report checked.

The full 60-minute run is not a test; its report is under results/ (see the README, "Faults and reliability").
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hop.tools import soak
from hop.tools.virtual_mic import available

HOP_SOAK = Path(sys.executable).with_name("hop-soak")


def test_short_soak_meets_the_goals(tmp_path):
    reason = available()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "soak.json"
    bvh = tmp_path / "soak.bvh"
    command = [str(HOP_SOAK)] if HOP_SOAK.exists() else [sys.executable, "-m", "hop.tools.soak"]
    done = subprocess.run(command + ["--minutes", "3", "--warmup-minutes", "0.5", "--interval-s", "15",
                                     "--out", str(out), "--bvh", str(bvh), "--quiet"],
                          capture_output=True, text=True, timeout=330)
    assert out.exists(), f"no report (exit {done.returncode}):\n{done.stderr[-3000:]}"
    report = json.loads(out.read_text())
    goals = report["goals"]
    # The report has what the issue asks for.
    assert len(report["timeline"]) == 12
    for entry in report["timeline"]:
        assert {"sends", "skipped", "latency_ms", "rss_mb", "ring_overruns", "input_overflows",
                "loadavg"} <= set(entry)
        assert entry["source"] == "live"
    assert set(goals) == {"zero_exceptions", "rss_growth_after_warmup", "p99_drift", "frames_vs_expected"}
    assert report["speech_fed_s"] > 60 and report["silence_fed_s"] > 15, "speech with silences was not fed"
    # It really ran end to end: ASR loaded and heard words, both receivers got the stream.
    assert report["final_status"]["asr"]["state"] == "running" and report["final_status"]["asr"]["words"] > 0
    osc_received = int(report["receivers"]["osc_receiver"].split()[0])
    ws_received = int(report["receivers"]["ws_client"].split()[0])
    sends = report["final_status"]["frames_emitted"]
    assert osc_received >= 0.99 * sends and ws_received >= 0.9 * sends
    assert report["outputs"]["bvh"] == str(bvh)
    text = bvh.read_text()
    assert text.startswith("HIERARCHY") and "\nMOTION\n" in text
    frames_line, time_line = text.split("\nMOTION\n", 1)[1].splitlines()[:2]
    assert int(frames_line.split()[1]) > 0.4 * sends, frames_line
    # every send is a BVH frame, so the file plays at the wire rate
    assert abs(float(time_line.split(":")[1]) - 1.0 / report["send_rate"]) < 1e-6, time_line
    # The goals that do not depend on what else this shared machine runs.
    assert goals["zero_exceptions"]["pass"], report["recorded_errors"]
    assert goals["rss_growth_after_warmup"]["pass"], goals["rss_growth_after_warmup"]
    # Every send is accounted for against the audio captured: written, in flight, or lost for
    # a counted reason; nothing vanishes (the engine's closed sum), and the rest is rounding.
    frames = goals["frames_vs_expected"]
    assert frames["sends_unaccounted"] == 0, frames
    assert abs(frames["residual"]) < 1.0, frames
    assert frames["capture_clock_drift_ppm"] is not None and report["capture_clock_drift_ppm"] is not None
    assert "accounting" in report["final_status"] and report["final_status"]["accounting"]["sends_unaccounted"] == 0
    # p99 drift is judged by the 60-minute run; here only that it is measured and bounded.
    assert goals["p99_drift"]["last_p99_ms"] < 1000, goals["p99_drift"]
    assert done.returncode in (0, 1) and ("PASS" in done.stderr or "FAIL" in done.stderr)


def _sample(at: float, frames: int, pending: int = 0, superseded: int = 0, unaccounted: int = 0) -> soak.Sample:
    """The accounting of an engine at 30 pose fps, 2 sends per frame, 16 kHz, after ``frames``
    model frames: each frame's two sends are written unless pending, superseded or lost."""
    consumed = -(-frames * 16000 // 30)
    written = 2 * frames - pending - superseded - unaccounted
    return soak.Sample(at, written, 0, {
        "at": at, "sample_rate": 16000, "pose_fps": 30, "audio_samples_captured": consumed + 200,
        "audio_samples_consumed": consumed, "pose_frames": frames, "pose_frames_computed": frames,
        "pose_frames_skipped": 0, "sends_per_frame": 2, "sends_written": written, "sends_idle_written": 0,
        "sends_pending": pending, "sends_superseded": superseded, "sends_unaccounted": unaccounted,
        "capture_clock_drift_ppm": 0.0})


def test_send_accounting_follows_the_captured_audio_and_catches_a_real_drop():
    # A device clock 0.3 % slow: 150 s of wall time bring 149.55 s of audio (4486 frames, 8973
    # sends), not 9000 sends. Judged against the audio nothing is missing; the drift is its own figure.
    start = _sample(30.0, 900)
    ok = soak.account_sends([start, _sample(180.0, 900 + 4486, pending=1)])
    assert ok["pass"] and ok["sends_unaccounted"] == 0 and abs(ok["residual"]) < 1.0, ok
    assert ok["expected_from_wall_clock"] == 9000.0 and ok["written"] == 8971, ok
    assert -3200 < ok["capture_clock_drift_ppm"] < -2900, ok
    # One send lost without a reason (the engine's closed sum is off by one): the goal fails.
    dropped = soak.account_sends([start, _sample(180.0, 900 + 4486, unaccounted=1)])
    assert not dropped["pass"] and dropped["sends_unaccounted"] == 1, dropped
    # Counted losses are explained but still judged: 0.1 % of the expected sends at most.
    superseded = soak.account_sends([start, _sample(180.0, 900 + 4486, superseded=20)])
    assert not superseded["pass"] and superseded["sends_unaccounted"] == 0, superseded
    assert superseded["lost_to_superseded_extrapolations"] == 20 and abs(superseded["residual"]) < 1.0
