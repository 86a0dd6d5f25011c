"""Each metric on inputs whose answer is known by construction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hop.model.skeleton import TED_GESTURE
from hop.training import metrics as M
from hop.training.motion_ae import MotionAutoencoder, load_motion_ae, save_motion_ae

SR, FPS = 16000, 15
MEAN = TED_GESTURE.mean_pose()


# --- FGD -------------------------------------------------------------------------------

def test_fgd_identical_sets_is_zero():
    feats = np.random.default_rng(0).normal(size=(200, 8))
    assert M.fgd(feats, feats) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))  # 5 + (1 + 1 + 4)
    assert M.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected)
    assert expected == 11.0


def test_fgd_grows_with_mean_shift_and_matches_it_for_equal_covariances():
    feats = np.random.default_rng(1).normal(size=(500, 4))
    shift = np.array([3.0, 0.0, 0.0, 4.0])
    assert M.fgd(feats, feats + shift) == pytest.approx(25.0, rel=1e-6)
    assert M.fgd(feats, feats + shift / 5) < M.fgd(feats, feats + shift)


def test_fgd_of_a_constant_set_is_finite():
    feats = np.random.default_rng(2).normal(size=(100, 4))
    const = np.zeros_like(feats)  # singular covariance: a mean-pose baseline
    value = M.fgd(feats, const)
    assert np.isfinite(value) and value > 1.0


# --- Diversity --------------------------------------------------------------------------

def test_diversity_known_values():
    assert M.diversity(np.ones((10, 5))) == 0.0
    two = np.array([[0.0, 0.0], [3.0, -1.0]])
    assert M.diversity(two) == pytest.approx(4.0)  # every pair is the two points: L1 = 3 + 1
    spread = np.random.default_rng(3).normal(size=(300, 6))
    assert M.diversity(2 * spread) == pytest.approx(2 * M.diversity(spread))


# --- Joint MAE ---------------------------------------------------------------------------

def test_joint_mae_zero_for_same_motion_and_known_for_one_bone():
    poses = np.tile(MEAN, (34, 1))
    assert M.joint_mae(poses, poses, TED_GESTURE) == 0.0
    moved = poses.copy()
    # head-top bone (2: joint 2 -> 3, length 0.14) flipped: only joint 3 moves, by 2 * 0.14 * |dir| per axis
    moved[:, 6:9] = -poses[:, 6:9]
    d = np.asarray(MEAN[6:9]) / np.linalg.norm(MEAN[6:9])
    expected = np.abs(2 * 0.14 * d).sum() / (10 * 3)
    assert M.joint_mae(moved, poses, TED_GESTURE) == pytest.approx(expected, rel=1e-5)


# --- Beats ------------------------------------------------------------------------------

def test_bc_perfectly_synchronised_is_one_and_falls_with_offset():
    beats = np.array([0.3, 0.9, 1.5, 2.0])
    assert M.beat_consistency(beats, beats) == 1.0
    assert M.beat_consistency(beats, beats + 0.1) == pytest.approx(np.exp(-0.5))
    assert M.beat_consistency(beats, np.array([10.0])) < 1e-6
    assert M.beat_consistency(beats, np.zeros(0)) == 0.0
    assert np.isnan(M.beat_consistency(np.zeros(0), beats))


def _arm_motion(stop_frames: list[int], n: int = 61) -> np.ndarray:
    """Right forearm swings between two angles; it stops (zero speed) exactly at ``stop_frames``.

    Segments between stops have equal lengths, so each stop is a symmetric (flat) minimum.
    """
    angle = np.zeros(n)
    stops = [0] + list(stop_frames) + [n - 1]
    for k, (a, b) in enumerate(zip(stops[:-1], stops[1:])):
        u = np.linspace(0, 1, b - a + 1)
        ease = u * u * (3 - 2 * u)  # smoothstep: zero velocity at both ends
        lo, hi = (0.0, 1.0) if k % 2 == 0 else (1.0, 0.0)
        angle[a:b + 1] = lo + (hi - lo) * ease
    poses = np.tile(MEAN, (n, 1)).astype(np.float64)
    upper = poses[0, 21:24] / np.linalg.norm(poses[0, 21:24])
    axis = np.cross(upper, [0.0, 0.0, 1.0])
    axis /= np.linalg.norm(axis)
    for t in range(n):  # forearm (bone 8) rotates away from the upper arm (bone 7) by up to 60 degrees
        th = np.radians(10 + 60 * angle[t])
        fore = upper * np.cos(th) + np.cross(axis, upper) * np.sin(th)
        poses[t, 24:27] = fore
    return poses


def test_motion_beats_at_the_stops_of_a_swinging_arm():
    stops = [15, 30, 45]
    beats = M.motion_beats(_arm_motion(stops), FPS)
    assert np.allclose(beats, np.array(stops) / FPS)


def test_static_motion_has_no_beats():
    assert M.motion_beats(np.tile(MEAN, (34, 1)), FPS).size == 0


def _clicks(times: list[float], seconds: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    audio = 0.001 * rng.standard_normal(int(seconds * SR))
    for t in times:
        i = int(t * SR)
        n = int(0.08 * SR)
        audio[i:i + n] += 0.3 * rng.standard_normal(n) * np.exp(-np.arange(n) / (0.02 * SR))  # a broadband tap
    return audio.astype(np.float32)


def test_audio_onsets_find_clicks():
    times = [0.5, 1.2, 1.9, 2.6, 3.1]
    onsets = M.audio_onsets(_clicks(times, 3.5), SR)
    assert len(onsets) == len(times)
    assert np.abs(onsets - times).max() < 0.03
    assert M.audio_onsets(np.zeros(SR, np.float32), SR).size == 0


def test_bc_end_to_end_synchronised_vs_shifted():
    stops = [15, 30, 45]
    motion = _arm_motion(stops)
    in_sync = _clicks([s / FPS for s in stops], 4.0)
    late = _clicks([s / FPS + 0.33 for s in stops], 4.0)
    assert M.bc_over_windows([in_sync], [motion], FPS, SR) > 0.9
    assert M.bc_over_windows([late], [motion], FPS, SR) < 0.1


# --- the FGD autoencoder ------------------------------------------------------------------

def test_motion_ae_round_trip_and_skeleton_check(tmp_path):
    torch.manual_seed(0)
    ae = MotionAutoencoder(27, 34, 8)
    save_motion_ae(tmp_path / "ae.pt", ae.eval(), "ted_gesture", MEAN)
    loaded = load_motion_ae(tmp_path / "ae.pt", "ted_gesture")
    x = np.random.default_rng(0).normal(size=(5, 34, 27)).astype(np.float32)
    with torch.no_grad():
        expected = ae.eval().encode(torch.from_numpy(x)).numpy()
    assert np.allclose(loaded.features(x), expected, atol=1e-5)
    with pytest.raises(ValueError, match="ted_gesture"):
        load_motion_ae(tmp_path / "ae.pt", "ted_expressive")
    with pytest.raises(ValueError, match=r"\(34, 27\)"):
        loaded.features(x[:, :30])
