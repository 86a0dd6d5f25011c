"""Helpers for the bridge tests: forward kinematics with scipy's Rotation, test poses, an OSC receiver."""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.transform import Rotation

from hop.bridges.retarget import Rig
from hop.model.skeleton import get_skeleton


def world_rotations(rig: Rig, local_quats: np.ndarray) -> list[Rotation]:
    """Compose local (x, y, z, w) rotations root to leaf."""
    world: list[Rotation] = []
    for i, bone in enumerate(rig.bones):
        local = Rotation.from_quat(local_quats[i])
        world.append(local if bone.parent < 0 else world[bone.parent] * local)
    return world


def world_positions(rig: Rig, local_quats: np.ndarray) -> np.ndarray:
    rotations = world_rotations(rig, local_quats)
    positions = np.zeros((len(rig.bones), 3))
    for i, bone in enumerate(rig.bones):
        if bone.parent < 0:
            positions[i] = bone.offset
        else:
            positions[i] = positions[bone.parent] + rotations[bone.parent].apply(bone.offset)
    return positions


def angle_degrees(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    return float(np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b)), np.dot(a, b))))


def random_unit_pose(rng: np.random.Generator, n_bones: int) -> np.ndarray:
    v = rng.normal(size=(n_bones, 3))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).reshape(-1).astype(np.float32)


def swinging_arms_pose(t: float) -> np.ndarray:
    """A moving TED Gesture pose without the model: the dataset's mean pose with both
    arms swinging sideways (0.5 Hz) and a slight nod."""
    skeleton = get_skeleton("ted_gesture")
    bones = skeleton.mean_pose().reshape(-1, 3).astype(np.float64)
    swing = math.radians(35) * math.sin(2 * math.pi * 0.5 * t)
    for arm_bones, angle in (((4, 5), swing), ((7, 8), -swing)):  # left arm, right arm mirrored
        # Rotation about z (the forward axis) raises an arm out to its side.
        c, s = math.cos(angle), math.sin(angle)
        rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        bones[list(arm_bones)] = bones[list(arm_bones)] @ rotation.T
    nod = math.radians(10) * math.sin(2 * math.pi * 1.0 * t)
    c, s = math.cos(nod), math.sin(nod)
    bones[[1, 2]] = bones[[1, 2]] @ np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]]).T
    bones /= np.linalg.norm(bones, axis=1, keepdims=True)
    return bones.reshape(-1).astype(np.float32)


def perturbed(pose: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    v = pose.reshape(-1, 3) + rng.normal(scale=scale, size=(len(pose) // 3, 3))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).reshape(-1).astype(np.float32)


class OscReceiverProcess:
    """osc_decoder.py running as a UDP receiver in its own process; decoded packets come back as JSON lines."""

    def __init__(self):
        import json
        import queue
        import subprocess
        import sys
        import threading
        from pathlib import Path

        self._json = json
        self._process = subprocess.Popen([sys.executable, str(Path(__file__).with_name("osc_decoder.py"))],
                                         stdout=subprocess.PIPE, text=True)
        self.port = json.loads(self._process.stdout.readline())["port"]
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self._process.stdout:
            self._lines.put(self._json.loads(line))

    def collect(self, count: int, timeout: float = 10.0) -> list[dict]:
        import queue
        import time

        deadline = time.monotonic() + timeout
        lines = []
        while len(lines) < count:
            try:
                lines.append(self._lines.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return lines

    def close(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=5)


def messages_of(line: dict) -> list[dict]:
    assert "error" not in line, line
    packet = line["packet"]
    assert packet.get("bundle"), "expected one bundle per frame"
    assert packet["timetag"] == 1, "timetag should be 'immediately'"
    return packet["elements"]
