"""Skeletons the model speaks in: bones as unit direction vectors.

A pose is one unit vector per bone (child joint minus parent joint, normalised),
flattened to ``3 * n_bones`` numbers. Models see the pose minus the dataset's
mean pose. Conventions follow the TED Gesture dataset: up is -y, +z faces
forward, and the subject's left is -x.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Skeleton:
    name: str
    joint_names: tuple[str, ...]
    bones: tuple[tuple[int, int, float], ...]  # (parent joint, child joint, length in metres-ish units)
    mean_dir_vec: tuple[float, ...] | None  # published dataset mean, or None when it must come from data

    @property
    def n_joints(self) -> int:
        return len(self.joint_names)

    @property
    def n_bones(self) -> int:
        return len(self.bones)

    @property
    def pose_dim(self) -> int:
        return 3 * self.n_bones

    def mean_pose(self) -> np.ndarray:
        if self.mean_dir_vec is None:
            raise ValueError(f"skeleton {self.name!r} has no published mean pose; compute it from the training data")
        return np.asarray(self.mean_dir_vec, dtype=np.float32)

    def bone_adjacency(self) -> np.ndarray:
        """Bones are adjacent when they share a joint; used as the graph encoder's fixed support."""
        n = self.n_bones
        adjacency = np.zeros((n, n), dtype=np.float32)
        for i, (pi, ci, _) in enumerate(self.bones):
            for j, (pj, cj, _) in enumerate(self.bones):
                if i != j and {pi, ci} & {pj, cj}:
                    adjacency[i, j] = 1.0
        return adjacency

    def joints_to_dir_vec(self, joints: np.ndarray) -> np.ndarray:
        """(..., n_joints, 3) joint positions -> (..., n_bones * 3) unit bone directions."""
        parents = [b[0] for b in self.bones]
        children = [b[1] for b in self.bones]
        vec = joints[..., children, :] - joints[..., parents, :]
        norm = np.linalg.norm(vec, axis=-1, keepdims=True)
        vec = vec / np.maximum(norm, 1e-8)
        return vec.reshape(*joints.shape[:-2], self.pose_dim)

    def dir_vec_to_joints(self, dir_vec: np.ndarray, root: np.ndarray | None = None) -> np.ndarray:
        """(..., n_bones * 3) directions -> (..., n_joints, 3) positions using the bone lengths.

        Bones are listed parent before child, so one pass places every joint.
        """
        dirs = np.asarray(dir_vec).reshape(*np.shape(dir_vec)[:-1], self.n_bones, 3)
        norm = np.linalg.norm(dirs, axis=-1, keepdims=True)
        dirs = dirs / np.maximum(norm, 1e-8)
        joints = np.zeros((*dirs.shape[:-2], self.n_joints, 3), dtype=np.float64)
        if root is not None:
            joints[..., 0, :] = root
        for i, (parent, child, length) in enumerate(self.bones):
            joints[..., child, :] = joints[..., parent, :] + length * dirs[..., i, :]
        return joints


TED_GESTURE = Skeleton(
    name="ted_gesture",
    joint_names=(
        "spine", "neck", "nose", "head_top",
        "left_shoulder", "left_elbow", "left_wrist",
        "right_shoulder", "right_elbow", "right_wrist",
    ),
    bones=(
        (0, 1, 0.26), (1, 2, 0.18), (2, 3, 0.14),
        (1, 4, 0.22), (4, 5, 0.36), (5, 6, 0.33),
        (1, 7, 0.22), (7, 8, 0.36), (8, 9, 0.33),
    ),
    mean_dir_vec=(
        0.0154009, -0.9690125, -0.0884354, -0.0022264, -0.8655276, 0.4342174,
        -0.0035145, -0.8755367, -0.4121039, -0.9236511, 0.3061306, -0.0012415,
        -0.5155854, 0.8129665, 0.0871897, 0.2348464, 0.1846561, 0.8091402,
        0.9271948, 0.2960011, -0.013189, 0.5233978, 0.8092403, 0.0725451,
        -0.2037076, 0.1924306, 0.8196916,
    ),
)


def _expressive() -> Skeleton:
    # Body and head: the first 13 joints of TED Expressive; then three joints per
    # finger (thumb, index, middle, ring, little), left hand then right hand.
    body = ["spine", "neck", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
            "left_wrist", "right_wrist", "nose", "left_eye", "right_eye", "left_ear", "right_ear"]
    bones = [(0, 1, 0.26), (1, 2, 0.22), (1, 3, 0.22), (2, 4, 0.36), (4, 6, 0.33),
             (3, 5, 0.36), (5, 7, 0.33), (1, 8, 0.18), (8, 9, 0.14), (8, 10, 0.14),
             (9, 11, 0.15), (10, 12, 0.15)]
    names = list(body)
    finger_lengths = {"thumb": (0.05, 0.035, 0.03), "index": (0.09, 0.03, 0.025),
                      "middle": (0.095, 0.035, 0.025), "ring": (0.09, 0.03, 0.025),
                      "little": (0.08, 0.025, 0.02)}
    for side, wrist in (("left", 6), ("right", 7)):
        for finger, lengths in finger_lengths.items():
            parent = wrist
            for k, length in enumerate(lengths):
                names.append(f"{side}_{finger}_{k + 1}")
                child = len(names) - 1
                bones.append((parent, child, length))
                parent = child
    return Skeleton(name="ted_expressive", joint_names=tuple(names), bones=tuple(bones), mean_dir_vec=None)


TED_EXPRESSIVE = _expressive()

SKELETONS = {s.name: s for s in (TED_GESTURE, TED_EXPRESSIVE)}


def get_skeleton(name: str) -> Skeleton:
    try:
        return SKELETONS[name]
    except KeyError:
        raise ValueError(f"unknown skeleton {name!r}; choose one of {sorted(SKELETONS)}") from None
