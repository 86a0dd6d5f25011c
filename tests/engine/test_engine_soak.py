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

from hop.engine.virtual_mic import available

HOP_SOAK = Path(sys.executable).with_name("hop-soak")


def test_short_soak_meets_the_goals(tmp_path):
    reason = available()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "soak.json"
    bvh = tmp_path / "soak.bvh"
    command = [str(HOP_SOAK)] if HOP_SOAK.exists() else [sys.executable, "-m", "hop.engine.soak"]
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
    # Every send short of the wall-clock expectation is one a counted skip explains (2 sends
    # per skipped pose frame at 60 Hz), so nothing is lost silently even on a loaded box.
    frames = goals["frames_vs_expected"]
    missing = frames["expected"] - frames["emitted"]
    explained = frames["skipped_model_frames"] * report["send_rate"] / report["pose_fps"]
    assert missing <= explained + 0.001 * frames["expected"] + 2, frames
    # p99 drift is judged by the 60-minute run; here only that it is measured and bounded.
    assert goals["p99_drift"]["last_p99_ms"] < 1000, goals["p99_drift"]
    assert done.returncode in (0, 1) and ("PASS" in done.stderr or "FAIL" in done.stderr)
