"""Skeleton drawings a person can check at a glance: front and side views of TED poses."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from hop.model.skeleton import TED_GESTURE, Skeleton  # noqa: E402


def draw_pose(ax, joints: np.ndarray, skeleton: Skeleton, view: str = "front") -> None:
    """Front view: the viewer faces the subject (subject's left, -x, on the viewer's right). Side: +z right."""
    horizontal = -joints[:, 0] if view == "front" else joints[:, 2]
    vertical = -joints[:, 1]
    for parent, child, _ in skeleton.bones:
        left_side = "left" in skeleton.joint_names[child]
        ax.plot(horizontal[[parent, child]], vertical[[parent, child]], "-o", ms=3,
                color="tab:red" if left_side else "tab:blue")
    ax.set_aspect("equal")
    ax.set_xlim(-1.0, 1.0)
    ax.set_ylim(-1.0, 1.0)
    ax.set_xticks([])
    ax.set_yticks([])


def render_frames(dir_vec: np.ndarray, frames: list[int], path: str | Path, skeleton: Skeleton = TED_GESTURE,
                  title: str = "") -> Path:
    """PNG of the chosen frames of (T, 3 * bones) directions, front view above side view."""
    joints = skeleton.dir_vec_to_joints(np.asarray(dir_vec)[frames])
    fig, axes = plt.subplots(2, len(frames), figsize=(2.2 * len(frames), 4.6), squeeze=False)
    for k, frame in enumerate(frames):
        draw_pose(axes[0, k], joints[k], skeleton, "front")
        draw_pose(axes[1, k], joints[k], skeleton, "side")
        axes[0, k].set_title(f"frame {frame}", fontsize=8)
    axes[0, 0].set_ylabel("front (red = subject's left)", fontsize=7)
    axes[1, 0].set_ylabel("side (facing right)", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)
