"""From a source body's joint positions to the TED 10-joint skeleton's directions.

Sources (SMPL-X, BVH) are y-up, right-handed, the subject's left +x and forward +z.
TED is up -y, forward +z, the subject's left -x: a half turn about z, (x, y, z) ->
(-x, -y, z). Before that each frame is turned about the vertical so the hip line
points to the subject's left: the person faces the camera whatever way they walked.
"""

from __future__ import annotations

import numpy as np

from hop.model.skeleton import TED_GESTURE

TED_JOINTS = TED_GESTURE.joint_names


def face_forward(points: np.ndarray, left_hip: np.ndarray, right_hip: np.ndarray) -> np.ndarray:
    """Rotate (frames, joints, 3) y-up points about y so that left_hip - right_hip lies along +x."""
    across = left_hip - right_hip
    heading = np.arctan2(across[:, 2], across[:, 0])
    c, s = np.cos(heading)[:, None], np.sin(heading)[:, None]
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    return np.stack([x * c + z * s, y, -x * s + z * c], axis=-1)


def yup_to_ted(points: np.ndarray) -> np.ndarray:
    return points * np.array([-1.0, -1.0, 1.0])


def ted_dir_vec(named: dict[str, np.ndarray], left_hip: np.ndarray, right_hip: np.ndarray) -> np.ndarray:
    """(frames, 27) TED directions from y-up positions of the ten TED joints, named as TED names them."""
    missing = [n for n in TED_JOINTS if n not in named]
    if missing:
        raise ValueError(f"no source joint for TED joints {missing}")
    joints = np.stack([named[n] for n in TED_JOINTS], axis=1)
    joints = yup_to_ted(face_forward(joints, left_hip, right_hip))
    return TED_GESTURE.joints_to_dir_vec(joints).astype(np.float32)
