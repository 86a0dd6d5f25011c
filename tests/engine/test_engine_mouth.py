"""Lip sync and blinks (hop.engine.mouth) and their way out: pipeline frames, offline conversion,
the live driver and the native OSC bundle.

The check against a real face: ../shared/data/mixamo/1_fufu_0_7_7 holds a speaker's ARKit face
weights (jawOpen, mouthFunnel, mouthPucker, ...) at 30 fps with the speech. The estimator's
settings were chosen on the first 70 % of that take only; the last 30 % is the held-out part.
Print the figures with

    .venv/bin/python tests/engine/test_engine_mouth.py
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from hop.bridges.frame import PoseFrame
from hop.bridges.osc import encode_native_bundle
from hop.engine.audio_file import FileSource, FileSourceOptions, load_audio_16k_mono
from hop.engine.mouth import EXPRESSIONS, VOWELS, Blinker, MouthEstimator, MouthOptions
from hop.engine.pipeline import FramePipeline, offline_pose_frames
from hop.engine.ring import SampleRing
from hop.engine.runtime import Engine
from hop.engine.sanitize import AudioSanitizer
from hop.engine.session import DEMO_SPEECH
from hop.engine.vad import VadOptions, VoiceActivityDetector
from hop.model import Hop, HopConfig, HopStream
from hop.model.skeleton import TED_GESTURE
from hop.profiles import EngineSettings, MotionOptions

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bridges"))
from osc_decoder import decode_packet  # noqa: E402  (the independent decoder, not python-osc)
from engine_testkit import ListSink, write_wav  # noqa: E402

SR = 16_000
FPS = 30
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
FACE_TAKE = SHARED / "mixamo" / "1_fufu_0_7_7"
BEAT2_TAKE = SHARED / "beat2" / "2_scott_0_1_1"
LJSPEECH = SHARED / "speech" / "ljspeech" / "LJ001-0001.wav"
FIT_FRACTION = 0.7  # the estimator was tuned on the take's first 70 %; the rest is held out
# Measured once, on the held-out last 30 % (714 frames) after the settings were fixed on the first
# 70 %: openness (aa+ih+ou+ee+oh) vs jawOpen r = 0.582 at the same instant (the fit part: 0.333).
# The bar: well under that (room for deliberate changes to the estimator) and far above chance: the
# face weights are smooth (~10 frames), leaving roughly 70 independent samples, where unrelated
# signals pass |r| > 0.25 with p < 0.05; an estimator that ignores the level, lags by a syllable or
# is inverted lands near or below 0. The rounded shapes are not checked against the face: ou+oh vs
# mouthFunnel/mouthPucker was 0.28/0.26 on the fit part but 0.07/0.07 held out, no better than
# openness itself (0.08): this face's rounding does not follow the spectrum enough to test it.
JAW_MIN_CORRELATION = 0.45
# A second speaker never used for tuning (BEAT2 scott 0_1_1, SMPL-X jaw pitch): r = 0.439.
BEAT2_JAW_MIN_CORRELATION = 0.3


def mouth_track(audio: np.ndarray, options: MouthOptions = MouthOptions(), block: int = 1600) -> np.ndarray:
    """(frames, 6) weights in EXPRESSIONS order, fed as FramePipeline feeds it: sanitised audio
    in blocks, with the voice activity of each completed frame."""
    sanitizer = AudioSanitizer()
    vad = VoiceActivityDetector(VadOptions(sample_rate=SR, frame_rate=FPS))
    mouth = MouthEstimator(options)
    rows = []
    for start in range(0, len(audio), block):
        piece = audio[start:start + block].astype(np.float32).copy()
        sanitizer.process(piece)
        rows += mouth.process(piece, vad.process(piece))
    return np.array([[row[name] for name in EXPRESSIONS] for row in rows])


def with_silence(speech: np.ndarray, before_s: float = 1.0, after_s: float = 2.0, noise_dbfs: float = -65.0):
    """Speech between stretches of faint noise (a quiet room, not digital zero)."""
    rng = np.random.default_rng(3)
    audio = np.concatenate([np.zeros(int(before_s * SR)), speech, np.zeros(int(after_s * SR))])
    return (audio + rng.normal(scale=10 ** (noise_dbfs / 20), size=len(audio))).astype(np.float32)


def speech_recordings() -> dict[str, Path]:
    return {"demo_speech": DEMO_SPEECH, "ljspeech": LJSPEECH}


# -- the estimator ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(speech_recordings()))
def test_mouth_closed_in_silence_and_open_in_speech(name):
    path = speech_recordings()[name]
    if not path.is_file():
        pytest.skip(f"{path} is absent (the real data beside the project, ../shared/data)")
    speech = load_audio_16k_mono(path)[: 6 * SR]
    audio = with_silence(speech)
    track = mouth_track(audio)
    assert track.shape == (len(audio) * FPS // SR, len(EXPRESSIONS))
    mouth = track[:, :len(VOWELS)]
    assert (mouth >= 0).all() and (mouth <= 1).all()
    assert mouth.sum(axis=1).max() <= 1.0 + 1e-6, "the shapes share the openness"
    speech_end = (SR + len(speech)) * FPS // SR
    before, after = slice(0, FPS), slice(speech_end + FPS // 2, len(track))  # half a second to close
    assert mouth[before].max() < 0.05 and mouth[after].max() < 0.05, "the mouth must be closed in silence"
    assert (mouth[after] == 0).all(), "closed means exactly 0 once the release has passed"
    talking = mouth[FPS:speech_end]
    assert talking.max() > 0.3, "some shape must open past 0.3 while speaking"
    assert (talking.sum(axis=1) > 0.05).mean() > 0.3, "the mouth moves through the speech, not once"
    assert (talking.sum(axis=1) < 0.05).mean() > 0.05, "and closes between syllables and words"
    assert len(set(talking.argmax(axis=1)[talking.max(axis=1) > 0.2])) >= 3, "more than one vowel shape"


def test_blinks_at_a_natural_rate():
    fps, seconds = FPS, 300
    blinker = Blinker(MouthOptions(fps=fps))
    weights = np.array([blinker.step() for _ in range(seconds * fps)])
    starts = np.flatnonzero((weights[1:] > 0) & (weights[:-1] == 0)) + 1
    per_minute = len(starts) / (seconds / 60)
    assert 10 <= per_minute <= 30, f"{per_minute:.1f} blinks a minute (people: about 15-20 at rest)"
    assert blinker.blinks == len(starts)
    gaps = np.diff(starts) / fps
    assert gaps.min() >= 2.0 - 1 / fps and gaps.max() <= 6.0 + 1 / fps
    lengths = [np.argmax(weights[s:] == 0) for s in starts[:-1]]
    assert set(lengths) <= {4, 5}, "each blink lasts about 150 ms"
    assert weights.max() == 1.0, "the eyes close fully"
    assert (weights == 0).mean() > 0.9, "open most of the time"


def test_deterministic_and_independent_of_block_size():
    audio = with_silence(load_audio_16k_mono(DEMO_SPEECH)[: 3 * SR], after_s=4.0)
    first = mouth_track(audio)
    assert np.array_equal(first, mouth_track(audio)), "the same audio gives the same face"
    assert np.array_equal(first, mouth_track(audio, block=533)), "chunking changes nothing"
    assert np.array_equal(first, mouth_track(audio, block=4096))
    other = mouth_track(audio, MouthOptions(seed=1))
    assert np.array_equal(first[:, :5], other[:, :5]) and not np.array_equal(first[:, 5], other[:, 5])


def test_causal_later_audio_changes_nothing_before_it():
    audio = with_silence(load_audio_16k_mono(DEMO_SPEECH)[: 3 * SR])
    changed = audio.copy()
    cut = 2 * SR
    changed[cut:] = np.random.default_rng(0).normal(scale=0.3, size=len(audio) - cut)
    a, b = mouth_track(audio), mouth_track(changed)
    done = cut * FPS // SR  # frames complete before the change
    assert np.array_equal(a[:done], b[:done])
    assert not np.array_equal(a[done:], b[done:])


def test_bad_audio_keeps_the_mouth_in_range():
    mouth = MouthEstimator()
    loud = np.full(SR, 1.0, np.float32)  # DC at full scale, then clipping noise
    noise = np.clip(np.random.default_rng(0).normal(scale=3.0, size=SR), -1, 1).astype(np.float32)
    frames = mouth.process(np.zeros(SR, np.float32)) + mouth.process(loud) + mouth.process(noise)
    values = np.array([[f[name] for name in EXPRESSIONS] for f in frames])
    assert len(frames) == 3 * FPS and np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()


def face_correlations() -> dict:
    """Correlation of the estimator's output with the real face of FACE_TAKE: on the fit part
    (the first FIT_FRACTION, where the settings were chosen) and on the held-out rest; at the
    same instant (lag 0) and with the face 2 frames later (the face capture trails the audio by
    about 2 frames: the lag of best loudness-jaw correlation on the fit part)."""
    data = json.loads(FACE_TAKE.with_suffix(".json").read_text())
    names = data["names"]
    weights = np.array([frame["weights"] for frame in data["frames"]])
    times = np.array([frame["time"] for frame in data["frames"]])
    track = mouth_track(load_audio_16k_mono(FACE_TAKE.with_suffix(".wav")))
    ends = (np.arange(len(track)) + 1) / FPS  # each frame shows the audio up to its end
    face = {name: np.interp(ends, times, weights[:, names.index(name)])
            for name in ("jawOpen", "mouthFunnel", "mouthPucker")}
    ours = {"openness": track[:, :5].sum(axis=1), "rounded": track[:, 2] + track[:, 4]}
    pairs = {"openness~jawOpen": ("openness", "jawOpen"),
             "rounded(ou+oh)~mouthFunnel": ("rounded", "mouthFunnel"),
             "rounded(ou+oh)~mouthPucker": ("rounded", "mouthPucker"),
             "openness~mouthFunnel (baseline for the line above)": ("openness", "mouthFunnel")}
    split = int(FIT_FRACTION * len(track))
    result = {"frames": len(track), "fit_frames": split, "held_out_frames": len(track) - split}
    for part, (lo, hi) in {"fit": (0, split), "held_out": (split, len(track))}.items():
        for lag in (0, 2):
            for label, (mine, theirs) in pairs.items():
                x, y = ours[mine][lo:hi - lag], face[theirs][lo + lag:hi]
                result[f"{part} lag{lag} {label}"] = round(float(np.corrcoef(x, y)[0, 1]), 3)
    return result


def beat2_jaw_correlation() -> dict:
    """A second speaker never used for tuning: BEAT2 take 2_scott_0_1_1, whose SMPL-X pose holds
    the jaw (joint 22, axis-angle; opening is a positive rotation about x)."""
    take = np.load(BEAT2_TAKE.with_suffix(".npz"))
    jaw = take["poses"][:, 66]
    track = mouth_track(load_audio_16k_mono(BEAT2_TAKE.with_suffix(".wav")))
    ends = (np.arange(len(track)) + 1) / FPS
    jaw = np.interp(ends, np.arange(len(jaw)) / float(take["mocap_frame_rate"]), jaw)
    n = min(len(track), int(len(take["poses"]) * FPS / float(take["mocap_frame_rate"])))
    openness = track[:n, :5].sum(axis=1)
    return {f"beat2 whole take lag{lag} openness~jaw_pitch":
            round(float(np.corrcoef(openness[:n - lag], jaw[lag:n])[0, 1]), 3) for lag in (0, 2)}


def test_openness_follows_a_real_jaw_on_the_held_out_part():
    if not FACE_TAKE.with_suffix(".json").is_file() or not FACE_TAKE.with_suffix(".wav").is_file():
        pytest.skip(f"{FACE_TAKE}.json/.wav are absent (the real data beside the project, ../shared/data)")
    figures = face_correlations()
    assert figures["held_out lag0 openness~jawOpen"] > JAW_MIN_CORRELATION, figures


def test_openness_follows_the_jaw_of_a_speaker_never_tuned_on():
    if not BEAT2_TAKE.with_suffix(".npz").is_file() or not BEAT2_TAKE.with_suffix(".wav").is_file():
        pytest.skip(f"{BEAT2_TAKE}.npz/.wav are absent (the real data beside the project, ../shared/data)")
    figures = beat2_jaw_correlation()
    assert figures["beat2 whole take lag0 openness~jaw_pitch"] > BEAT2_JAW_MIN_CORRELATION, figures


# -- the way out: pipeline, offline conversion, live driver, native OSC -----------------------

@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Hop(HopConfig(n_prototypes=64)).eval()


@pytest.mark.usefixtures("one_torch_thread")
def test_offline_conversion_carries_expressions_in_every_frame(model):
    speech = load_audio_16k_mono(DEMO_SPEECH)[: 3 * SR]
    audio = with_silence(speech, before_s=0.5, after_s=1.5)
    frames = list(offline_pose_frames(FramePipeline(HopStream(model), MotionOptions(), 60.0), audio,
                                      model.cfg.skeleton))
    assert len(frames) == -(-len(audio) * 60 // SR)
    assert all(set(f.expressions) == set(EXPRESSIONS) for f in frames), "every frame carries the face"
    assert all(0.0 <= v <= 1.0 for f in frames for v in f.expressions.values())
    mouth = np.array([[f.expressions[v] for v in VOWELS] for f in frames])
    assert mouth.max() > 0.3 and mouth[-30:].max() < 0.05
    # both sends of a pose frame carry that frame's face, which is the estimator's on the same audio
    # (so as deterministic as it: see test_deterministic_and_independent_of_block_size)
    assert all(frames[i].expressions is frames[i + 1].expressions for i in range(0, len(frames) - 1, 2))
    direct = mouth_track(audio)
    per_frame = np.array([[f.expressions[n] for n in EXPRESSIONS] for f in frames[::2]])
    assert np.array_equal(per_frame, direct[:len(per_frame)])


def test_idle_frames_keep_the_mouth_closed_and_blink(model):
    pipeline = FramePipeline(HopStream(model), MotionOptions(), 30.0)
    frames = [pipeline.idle(i / 30) for i in range(30 * 8)]
    assert all(set(f.expressions) == set(EXPRESSIONS) for f in frames)
    assert max(f.expressions[v] for f in frames for v in VOWELS) == 0.0
    assert max(f.expressions["blink"] for f in frames) == 1.0


@pytest.mark.usefixtures("one_torch_thread")
def test_live_driver_sends_the_frames_expressions(model, tmp_path):
    audio = with_silence(load_audio_16k_mono(DEMO_SPEECH)[: 2 * SR], before_s=0.3, after_s=1.5)
    wav = write_wav(tmp_path / "talk.wav", audio)
    ring, sink = SampleRing(), ListSink()
    engine = Engine(FramePipeline(HopStream(model), MotionOptions(), 60.0), ring,
                    FileSource(FileSourceOptions(wav), ring), [sink], EngineSettings())
    runner = threading.Thread(target=engine.run)
    runner.start()
    runner.join(20)
    assert not runner.is_alive()
    assert len(sink.frames) > 80
    assert all(set(f.expressions) == set(EXPRESSIONS) for f in sink.frames)
    assert max(f.expressions[v] for f in sink.frames for v in VOWELS) > 0.3
    assert max(f.expressions[v] for f in sink.frames[-20:] for v in VOWELS) < 0.05


def test_native_osc_bundle_carries_expressions():
    expressions = {"aa": 0.75, "ih": 0.0, "ou": 0.125, "ee": 0.3, "oh": 1.0, "blink": 0.5}
    frame = PoseFrame(7, 12.5, TED_GESTURE.mean_pose(), speaking=True, expressions=expressions)
    bare = PoseFrame(7, 12.5, TED_GESTURE.mean_pose(), speaking=True)
    packet = decode_packet(encode_native_bundle(frame))
    messages = packet["elements"]
    assert [m["address"] for m in messages][-2:] == ["/hop/joints", "/hop/expressions"]
    last = messages[-1]
    assert last["types"] == "sf" * 6
    got = dict(zip(last["args"][::2], last["args"][1::2]))
    assert got == {name: float(np.float32(value)) for name, value in expressions.items()}
    # the rest of the bundle is the frame without a face, byte for byte; no face, no message
    bare_bytes = encode_native_bundle(bare)
    assert "/hop/expressions" not in [m["address"] for m in decode_packet(bare_bytes)["elements"]]
    assert len(encode_native_bundle(frame)) == len(bare_bytes) + 92  # as bridges/README.md says
    assert [m for m in messages[:-1]] == decode_packet(bare_bytes)["elements"]


if __name__ == "__main__":
    for key, value in face_correlations().items():
        print(f"{key}: {value}")
    if BEAT2_TAKE.with_suffix(".npz").is_file():
        for key, value in beat2_jaw_correlation().items():
            print(f"{key}: {value}")
