"""Offline conversion (`hop-live --input FILE --fast --bvh OUT`): exact and deterministic.

Every frame of the recording is written (the last partial one too), nothing is dropped
however slow the disk, and two runs give byte-identical BVH files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import soundfile

from hop.engine.audio_file import load_audio_16k_mono, read_audio_info
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
    duration = read_audio_info(recording).duration_s
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


ENCODINGS = {  # name: (format, subtype, sample rate, file name)
    "flac": ("FLAC", "PCM_16", 44100, "talk.flac"),
    "ogg-vorbis": ("OGG", "VORBIS", 22050, "talk.ogg"),
    "opus": ("OGG", "OPUS", 48000, "talk.opus"),
    "mp3": ("MP3", "MPEG_LAYER_III", 44100, "talk.mp3"),
    "mp3-named-wav": ("MP3", "MPEG_LAYER_III", 24000, "talk.wav"),  # the format comes from the content
}


@pytest.mark.parametrize("name", list(ENCODINGS))
def test_any_common_audio_file_converts_exactly(model, tmp_path, name):
    """hop-live --input X --fast --bvh out.bvh for FLAC, OGG, Opus, MP3 and an MP3 named .wav."""
    from scipy.signal import resample_poly

    fmt, subtype, rate, filename = ENCODINGS[name]
    speech = load_audio_16k_mono(DEMO_SPEECH)[: 16000 * 4]
    stereo = np.stack([speech, 0.5 * speech], axis=1)
    recording = tmp_path / filename
    soundfile.write(recording, resample_poly(stereo, rate // 1000, 16).astype(np.float32), rate,
                    format=fmt, subtype=subtype)
    duration = read_audio_info(recording).duration_s
    bvh = tmp_path / "out.bvh"
    options = SessionOptions(input=recording, fast=True, engine=EngineSettings(asr=False),
                             outputs=(OutputSpec("bvh", path=bvh),))
    summary = build_session(options, model=model).run()["summary"]
    frames, frame_time = bvh_frames(bvh)
    assert duration - 1e-6 <= frames * frame_time <= duration + frame_time + 1e-6, (frames, frame_time, duration)
    assert summary["frames_emitted"] == frames
    # what was decoded is the speech: its loudness envelope follows the original's
    decoded = load_audio_16k_mono(recording)
    n = min(len(decoded), len(speech)) // 1600 * 1600
    envelope = [np.sqrt((x[:n].reshape(-1, 1600) ** 2).mean(axis=1)) for x in (decoded, speech)]
    assert np.corrcoef(*envelope)[0, 1] > 0.9
