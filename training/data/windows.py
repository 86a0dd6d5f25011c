"""Resampling, direction vectors, windowing and the published TED window filters.

Facts reproduced from the TED Gesture preprocessing: poses at 15 fps; windows of
round(34 * 1.25) = 42 frames taken every 10 frames (the 8 extra frames are a margin
from which 34-frame training windows are cut); a window is kept only if it has at
least 2 words and its motion is neither a bent/lying spine, nor frozen wrists, nor
the mean pose held still.

The filters look at joint positions rebuilt from the unit directions with the
skeleton's bone lengths, so their thresholds mean the same for every source (TED
pixels-turned-3D, BEAT2 metres, BVH centimetres).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hop.model.skeleton import Skeleton

EXTENDED_WINDOW = round(34 * 1.25)  # 42
TRAIN_WINDOW = 34
WINDOW_STRIDE = 10


@dataclass(frozen=True)
class FilterOptions:
    min_words: int = 2
    min_mean_pose_distance: float = 0.02  # mean |joint - mean-pose joint| below this: the mean pose held
    max_spine_angle_deg: float = 30.0  # spine vs up, worst frame
    max_mean_spine_angle_deg: float = 20.0  # spine vs up, window mean
    min_wrist_variance: float = 0.0014  # both wrists (joints 6 and 9) below: a frozen speaker
    wrist_joints: tuple[int, int] = (6, 9)


def resample_frames(frames: np.ndarray, src_fps: float, dst_fps: float = 15.0) -> np.ndarray:
    """Linear interpolation along axis 0 from src_fps to dst_fps; frame 0 stays at time 0.

    The output covers the input's duration (n / src_fps) with round(duration * dst_fps) frames.
    """
    frames = np.asarray(frames, dtype=np.float64)
    n_src = frames.shape[0]
    if n_src == 0:
        raise ValueError("cannot resample an empty sequence")
    n_dst = max(1, int(round(n_src / src_fps * dst_fps)))
    src_pos = np.arange(n_dst) * (src_fps / dst_fps)  # output frame times in source frames
    lo = np.clip(np.floor(src_pos).astype(int), 0, n_src - 1)
    hi = np.minimum(lo + 1, n_src - 1)
    # past the last source frame lo == hi, so the weight no longer matters
    w = np.clip(src_pos - lo, 0.0, 1.0).reshape(-1, *([1] * (frames.ndim - 1)))
    return frames[lo] * (1 - w) + frames[hi] * w


def renormalise(dir_vec: np.ndarray) -> np.ndarray:
    """Rescale every bone of (..., 3 * n_bones) directions to unit length (after interpolation)."""
    shape = dir_vec.shape
    v = dir_vec.reshape(*shape[:-1], -1, 3)
    v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-8)
    return v.reshape(shape)


def subtract_mean(dir_vec: np.ndarray, mean_dir_vec: np.ndarray) -> np.ndarray:
    return np.asarray(dir_vec, dtype=np.float32) - np.asarray(mean_dir_vec, dtype=np.float32)


def window_starts(n_frames: int, window: int = EXTENDED_WINDOW, stride: int = WINDOW_STRIDE) -> list[int]:
    """Start frames of every full window of ``window`` frames, one every ``stride`` frames."""
    if n_frames < window:
        return []
    return list(range(0, n_frames - window + 1, stride))


def words_in_range(word_start: np.ndarray, word_end: np.ndarray, t0: float, t1: float) -> np.ndarray:
    """Indices of words that overlap [t0, t1)."""
    return np.flatnonzero((np.asarray(word_end) > t0) & (np.asarray(word_start) < t1))


# --- the published filters, each a plain predicate on one window -------------------

def spine_angles_deg(joints: np.ndarray) -> np.ndarray:
    """Angle between the spine (joint 0 -> joint 1) and up (-y), one per frame."""
    spine = joints[:, 1] - joints[:, 0]
    cos = -spine[:, 1] / np.maximum(np.linalg.norm(spine, axis=-1), 1e-8)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def spine_is_bent(joints: np.ndarray, opts: FilterOptions = FilterOptions()) -> bool:
    angles = spine_angles_deg(joints)
    return bool(angles.max() > opts.max_spine_angle_deg or angles.mean() > opts.max_mean_spine_angle_deg)


def wrist_variance(joints: np.ndarray, joint: int) -> float:
    """Summed per-axis variance over time of one joint's position."""
    return float(np.var(joints[:, joint], axis=0).sum())


def wrists_are_static(joints: np.ndarray, opts: FilterOptions = FilterOptions()) -> bool:
    return all(wrist_variance(joints, j) < opts.min_wrist_variance for j in opts.wrist_joints)


def mean_pose_distance(joints: np.ndarray, mean_joints: np.ndarray) -> float:
    return float(np.mean(np.abs(joints - mean_joints)))


def is_mean_pose(joints: np.ndarray, mean_joints: np.ndarray, opts: FilterOptions = FilterOptions()) -> bool:
    return mean_pose_distance(joints, mean_joints) < opts.min_mean_pose_distance


def rejection_reason(dir_vec: np.ndarray, n_words: int, skeleton: Skeleton, mean_dir_vec: np.ndarray,
                     opts: FilterOptions = FilterOptions()) -> str | None:
    """Why a window (frames, 3 * n_bones) of unit directions is dropped, or None to keep it.

    Same order as the published preprocessing: words, spine, static wrists, mean pose.
    """
    if n_words < opts.min_words:
        return "too_few_words"
    joints = skeleton.dir_vec_to_joints(dir_vec)
    if spine_is_bent(joints, opts):
        return "spine_angle"
    if wrists_are_static(joints, opts):
        return "static_wrists"
    if is_mean_pose(joints, skeleton.dir_vec_to_joints(np.asarray(mean_dir_vec)), opts):
        return "mean_pose"
    return None
