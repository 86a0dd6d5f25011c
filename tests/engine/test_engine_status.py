"""The live status: figures, JSON form, terminal line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hop.engine.status import AsrState, EngineStatus, SourceState, StatusOptions


def test_snapshot_has_the_figures_and_survives_json():
    status = EngineStatus(StatusOptions(window_frames=100))
    latencies = np.linspace(0.010, 0.030, 200)  # 10..30 ms; only the last 100 count
    for index, latency in enumerate(latencies):
        status.record_frame(float(latency), emitted_at=index / 30)
    status.frames_skipped = 2
    status.source_state = SourceState.LIVE
    status.asr_state = AsrState.RUNNING
    status.record_asr_lag(1.5)
    status.sanitizer = {"nonfinite_samples": 1, "denormal_samples": 0, "clipped_samples": 7}
    snapshot = json.loads(json.dumps(status.snapshot()))
    recent = latencies[100:] * 1000
    assert snapshot["latency_ms"]["p50"] == pytest.approx(np.percentile(recent, 50), abs=1e-3)
    assert snapshot["latency_ms"]["p99"] == pytest.approx(np.percentile(recent, 99), abs=1e-3)
    assert snapshot["fps"] == pytest.approx(30.0, abs=0.01)
    assert snapshot["frames_emitted"] == 200 and snapshot["frames_skipped"] == 2
    assert snapshot["asr"]["lag_ms"]["p50"] == 1500.0
    line = status.status_line()
    assert line.startswith("live") and "30.0 fps" in line and "clipped 7" in line and "asr 1500 ms lag" in line


def test_empty_status_reads_as_zeros():
    snapshot = EngineStatus().snapshot()
    assert snapshot["fps"] == 0.0 and snapshot["latency_ms"]["count"] == 0
    assert snapshot["source"]["state"] == "starting"
