"""Offline conversion (`hop-live --input FILE --fast --bvh OUT`): exact and deterministic.

Every frame of the recording is written (the last partial one too), nothing is dropped
however slow the disk, and two runs give byte-identical BVH files.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hop.engine.audio_file import read_wav_info
from hop.engine.session import DEMO_SPEECH, OutputSpec, SessionOptions, build_session, load_model
from hop.profiles import EngineSettings

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
RECORDINGS = {
    "ljspeech-22khz": SHARED / "speech" / "ljspeech" / "LJ001-0001.wav",
    "beat2-scott-16khz": SHARED / "beat2" / "2_scott_0_111_111.wav",
    "demo-sample": DEMO_SPEECH,
}


@pytest.fixture(scope="module")
def model():
    return load_model(None)


def bvh_frames(path: Path) -> tuple[int, float]:
    text = path.read_text()
    motion = text.split("\nMOTION\n", 1)[1].splitlines()
    frames, frame_time = int(motion[0].split(":")[1]), float(motion[1].split(":")[1])
    assert len(motion) - 2 == frames, "the header's frame count disagrees with the rows"
    return frames, frame_time


@pytest.mark.parametrize("name", list(RECORDINGS))
def test_offline_conversion_is_complete_and_byte_identical(model, tmp_path, name):
    recording = RECORDINGS[name]
    if not recording.is_file():
        pytest.skip(f"{recording} is absent (the real data beside the project, ../shared/data)")
    duration = read_wav_info(recording).duration_s
    outputs = []
    for run in (1, 2):
        bvh = tmp_path / f"run{run}.bvh"
        options = SessionOptions(input=recording, fast=True, engine=EngineSettings(asr=False),
                                 outputs=(OutputSpec("bvh", path=bvh),))
        summary = build_session(options, model=model).run()["summary"]
        recorder = next(iter(summary["outputs"].values()))
        assert recorder["dropped"] == 0 and recorder["errors"] == 0, recorder
        outputs.append(bvh.read_bytes())
    frames, frame_time = bvh_frames(tmp_path / "run1.bvh")
    assert abs(frames * frame_time - duration) <= frame_time + 1e-6, \
        f"{frames} frames x {frame_time} s for {duration:.3f} s of audio"
    assert frames * frame_time >= duration - 1e-6, "the end of the recording is missing"
    assert summary["frames_emitted"] == frames
    assert outputs[0] == outputs[1], "two conversions of the same file differ"
