"""Resampling, windowing and the published filters on hand-made skeletons."""

import numpy as np
import pytest

from hop.model.skeleton import TED_GESTURE
from hop.training.data.windows import (
    EXTENDED_WINDOW, FilterOptions, rejection_reason, renormalise, resample_frames, spine_angles_deg,
    spine_is_bent, subtract_mean, window_starts, words_in_range, wrist_variance, wrists_are_static,
)

MEAN = TED_GESTURE.mean_pose()
MEAN_JOINTS = TED_GESTURE.dir_vec_to_joints(MEAN)


def still(n=42):
    return np.repeat(MEAN_JOINTS[None], n, axis=0)


def with_spine_tilt(joints, degrees):
    """Move the neck (and everything above it) so the spine leans forward by `degrees`."""
    out = joints.copy()
    a = np.radians(np.asarray(degrees, dtype=float).reshape(-1, 1))
    spine_top = out[:, 0] + 0.26 * np.concatenate([np.zeros_like(a), -np.cos(a), np.sin(a)], axis=1)
    out[:, 1:] += (spine_top - out[:, 1])[:, None]
    return out


def gesturing(n=42):
    """Both arms raised sideways to shoulder height, forearms swinging up and down by +-40 degrees."""
    dirs = np.repeat(MEAN.reshape(1, 9, 3).astype(float), n, axis=0)
    swing = np.radians(40) * np.sin(np.linspace(0, 4 * np.pi, n))
    dirs[:, 4] = [-1, 0, 0]  # left upper arm: out to the subject's left (-x)
    dirs[:, 7] = [1, 0, 0]
    dirs[:, 5] = np.stack([np.zeros(n), -np.sin(swing), np.cos(swing)], axis=1)  # forearms forward, swinging
    dirs[:, 8] = dirs[:, 5]
    return TED_GESTURE.dir_vec_to_joints(dirs.reshape(n, 27))


def test_resample_30_to_15_fps_takes_every_other_frame():
    ramp = np.arange(60, dtype=float)[:, None] * [1.0, 2.0]
    np.testing.assert_allclose(resample_frames(ramp, 30, 15), ramp[::2])


def test_resample_10_to_15_fps_interpolates_linearly():
    ramp = np.arange(10, dtype=float)  # value = source frame number
    out = resample_frames(ramp, 10, 15)
    assert out.shape == (15,)
    np.testing.assert_allclose(out[:4], [0, 2 / 3, 4 / 3, 2])
    assert out[-1] == 9  # held at the last source frame, never extrapolated


def test_renormalise_makes_unit_bones():
    v = renormalise(np.array([[3.0, 0, 4] * 9]))
    np.testing.assert_allclose(v.reshape(9, 3), np.tile([0.6, 0, 0.8], (9, 1)))


def test_subtract_mean_of_mean_pose_is_zero():
    np.testing.assert_allclose(subtract_mean(MEAN[None], MEAN), 0, atol=1e-7)


def test_windows_of_42_every_10_frames():
    assert EXTENDED_WINDOW == 42
    assert window_starts(100) == [0, 10, 20, 30, 40, 50]
    assert window_starts(42) == [0] and window_starts(41) == []


def test_words_in_range_counts_overlaps():
    starts, ends = np.array([0.0, 1.0, 2.9, 5.0]), np.array([0.5, 1.5, 3.1, 6.0])
    assert words_in_range(starts, ends, 1.2, 3.0).tolist() == [1, 2]


def test_spine_angle_known_values():
    np.testing.assert_allclose(spine_angles_deg(with_spine_tilt(still(3), [0, 25, 45])), [0, 25, 45], atol=1e-6)


@pytest.mark.parametrize("tilts, bent", [
    ([10] * 42, False),
    ([25] * 42, True),  # mean above 20 degrees
    ([0] * 41 + [35], True),  # one frame above 30 degrees
    ([0] * 41 + [29], False),
])
def test_spine_filter(tilts, bent):
    assert spine_is_bent(with_spine_tilt(still(), tilts)) is bent


def test_wrist_variance_of_a_known_oscillation():
    joints = still(1000)
    joints[:, 9, 0] += 0.1 * np.where(np.arange(1000) % 2, 1.0, -1.0)  # +-0.1: variance 0.01
    assert wrist_variance(joints, 9) == pytest.approx(0.01)
    assert not wrists_are_static(joints)
    assert wrists_are_static(still())


def test_rejection_reasons_in_published_order():
    moving = gesturing()
    dir_vec = lambda j: TED_GESTURE.joints_to_dir_vec(j)  # noqa: E731
    assert rejection_reason(dir_vec(moving), 1, TED_GESTURE, MEAN) == "too_few_words"
    assert rejection_reason(dir_vec(with_spine_tilt(moving, 40)), 3, TED_GESTURE, MEAN) == "spine_angle"
    assert rejection_reason(dir_vec(still()), 3, TED_GESTURE, MEAN) == "static_wrists"
    assert rejection_reason(dir_vec(moving), 3, TED_GESTURE, MEAN) is None


def test_mean_pose_filter_needs_small_motion_near_the_mean():
    # wrists move enough to pass the static test but the pose stays on the mean
    jitter = still()
    jitter[:, 6, 0] += 0.06 * np.where(np.arange(42) % 2, 1.0, -1.0)
    dir_vec = TED_GESTURE.joints_to_dir_vec(jitter)
    opts = FilterOptions()
    assert rejection_reason(dir_vec, 3, TED_GESTURE, MEAN, opts) == "mean_pose"
    assert rejection_reason(dir_vec, 3, TED_GESTURE, MEAN, FilterOptions(min_mean_pose_distance=0.001)) is None
