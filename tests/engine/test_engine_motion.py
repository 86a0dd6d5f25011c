"""Motion shaping: idle life, voice-gated crossfade, intensity, smoothing, send-rate spreading."""

import numpy as np
import pytest

from hop.engine.motion import IdleMotion, MotionShaper, OneEuroFilter, SendClock, normalize_bones
from hop.model.skeleton import TED_GESTURE
from hop.profiles import MotionOptions

REST = TED_GESTURE.mean_pose()


def _bone_norms(pose):
    return np.linalg.norm(pose.reshape(-1, 3), axis=1)


def test_idle_motion_breathes_and_never_freezes():
    idle = IdleMotion(REST, MotionOptions())
    poses = np.stack([idle.at(t / 30) for t in range(300)])
    assert np.allclose(_bone_norms(poses.reshape(-1)), 1.0, atol=1e-5)
    step = np.abs(np.diff(poses, axis=0)).max(axis=1)
    assert (step > 0).all(), "some frame repeats its predecessor exactly: the avatar froze"
    # small: idle stays near the rest pose (within ~0.1 per component)
    assert np.abs(poses - normalize_bones(REST)).max() < 0.1
    assert np.abs(poses - normalize_bones(REST)).max() > 0.005


def test_crossfade_follows_voice_activity_with_onset_and_release_times():
    options = MotionOptions(onset_s=0.1, release_s=0.5, smoothing_min_cutoff_hz=0.0)
    shaper = MotionShaper(REST, options)
    gesture = normalize_bones(REST + np.tile([0.0, -0.6, 0.3], 9))
    weights = []
    for i in range(60):
        speaking = 10 <= i < 30
        shaper(gesture, speaking, i / 30)
        weights.append(shaper.speech_weight)
    weights = np.array(weights)
    assert (weights[:10] == 0).all()
    assert weights[10 + 3] == 1.0  # 0.1 s onset = 3 frames at 30 fps
    assert 0 < weights[30 + 7] < 1  # 0.5 s release = 15 frames
    assert weights[30 + 15] == 0.0


def test_intensity_scales_the_deviation_from_rest():
    gesture = normalize_bones(REST + np.tile([0.2, -0.5, 0.1], 9))
    out = {}
    for intensity in (0.0, 0.5, 1.0):
        shaper = MotionShaper(REST, MotionOptions(intensity=intensity, onset_s=0, smoothing_min_cutoff_hz=0,
                                                  breathing_amount=0, sway_amount=0))
        out[intensity] = shaper(gesture, True, 0.0)
    rest = normalize_bones(REST)
    assert np.allclose(out[0.0], rest, atol=1e-6)
    assert np.allclose(out[1.0], gesture, atol=1e-6)
    d_half, d_full = np.linalg.norm(out[0.5] - rest), np.linalg.norm(out[1.0] - rest)
    assert 0.3 * d_full < d_half < 0.7 * d_full
    with pytest.raises(ValueError, match="intensity"):
        MotionOptions(intensity=7.0)
    with pytest.raises(ValueError, match="intensity"):
        MotionShaper(REST, MotionOptions()).set_intensity(3.5)


def test_one_euro_filter_removes_jitter_but_follows_fast_moves():
    rng = np.random.default_rng(0)
    still = 0.5 + 0.02 * rng.standard_normal((120, 3))
    f = OneEuroFilter(30.0, min_cutoff_hz=1.0, beta=0.5)
    smoothed = np.stack([f(x) for x in still])
    assert smoothed[30:].std(axis=0).max() < 0.4 * still[30:].std(axis=0).min()
    f.reset()
    ramp = np.linspace(0, 3, 60)[:, None].repeat(3, 1)  # a fast stroke
    followed = np.stack([f(x) for x in ramp])
    assert np.abs(followed[-1] - ramp[-1]).max() < 0.25


def test_send_clock_sends_the_new_frame_first_then_extrapolates():
    clock = SendClock(30, 60)
    assert clock.per_frame == 2 and clock.interval_s == pytest.approx(1 / 60)
    a = normalize_bones(REST)
    b = normalize_bones(REST + np.tile([0.05, 0.0, 0.0], 9))
    assert len(clock.expand(a)) == 2
    sends = clock.expand(b)
    assert np.array_equal(sends[0], b)
    # continues the motion a -> b beyond b, but by less than a whole frame step
    ahead = (sends[1] - b) @ (b - a)
    assert ahead > 0
    assert np.linalg.norm(sends[1] - b) < np.linalg.norm(b - a)
    with pytest.raises(ValueError, match="below the pose rate"):
        SendClock(30, 20)
