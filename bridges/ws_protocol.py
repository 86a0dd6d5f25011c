"""The WebSocket output's wire formats: what a client receives, as plain functions.

Endpoint: ``GET /ws?format=binary|json[&token=...]`` (``WS_PATH``, ``FORMATS``).
Every client first receives a JSON ``hello`` message describing the skeleton and
the control input's limits; then one message per pose frame:

  binary: little-endian, ``BINARY_HEADER`` (32 bytes) then float32 dir_vec
          (n_bones*3) then float32 joint positions (n_joints*3), both in TED axes
          (up -y, forward +z, subject's left -x), spine at 0.
  json:   ``{"type": "pose", "index", "stream", "speaking", "captureTime",
          "captureUnix", "pose": {boneName: {"rotation": [x,y,z,w]}, "hips":
          {..., "position": [0,0,0]}}, "joints": [[x,y,z], ...], "expressions":
          {"aa": w, ...}}``, "expressions" only when the frame has face weights
          (VRM 1.0 preset names, 0..1: three-vrm's expressionManager names for VRM
          0.x and 1.0 avatars alike; mouth closed = all 0); the pose is
          three-vrm's format for ``humanoid.setNormalizedPose()`` (lowerCamelCase
          VRM 1.0 bone names, rotations relative to the T-pose) and it and the
          joints are in the VRM 1.0 frame (``retarget.SPACES["vrm"]``: right-handed,
          Y up, metres, the figure facing +Z with its left hand at +X).

The control messages a client may send, and their replies, are ws_control's.
"""

from __future__ import annotations

import json
import struct

import numpy as np

from hop.bridges import retarget
from hop.bridges.frame import PoseFrame
from hop.model.skeleton import Skeleton

WS_PATH = "/ws"
FORMATS = ("binary", "json")

# Binary frame header, little-endian, 32 bytes so the float32 payload that follows
# is 4-byte aligned (a browser can view it with a Float32Array, no copy):
#   magic "HOPF", version u8, flags u8 (bit 0: speaking), stream u8, reserved u8,
#   n_bones u16, n_joints u16, frame index u32,
#   capture_time f64 (engine time.perf_counter() seconds),
#   capture_unix f64 (the same instant as Unix time, for clients on other clocks).
BINARY_HEADER = struct.Struct("<4sBBBBHHIdd")
BINARY_MAGIC = b"HOPF"
BINARY_VERSION = 1

VRM_RIG = "unity_humanoid"  # the rig the JSON pose is retargeted onto (HumanBodyBones names)
VRM_SPACE = "vrm"  # the space of the JSON pose and joints (see retarget.SPACES)


def hello_message(skeleton: Skeleton, wire_format: str, control: dict) -> str:
    """The first message on every connection; ``control`` describes the control input's limits."""
    return json.dumps({
        "type": "hello",
        "version": BINARY_VERSION,
        "format": wire_format,
        "skeleton": {"name": skeleton.name, "joints": list(skeleton.joint_names),
                     "bones": [[parent, child] for parent, child, _ in skeleton.bones]},
        "control": control,
    })


def validate_frame(frame: PoseFrame, skeleton: Skeleton) -> None:
    if frame.skeleton != skeleton.name:
        raise ValueError(f"frame skeleton {frame.skeleton!r} but the WebSocket sink announces {skeleton.name!r}; "
                         "set WebSocketOptions.skeleton")
    if np.shape(frame.dir_vec) != (skeleton.pose_dim,):
        raise ValueError(f"dir_vec has shape {np.shape(frame.dir_vec)}, expected ({skeleton.pose_dim},)")
    if not np.all(np.isfinite(frame.dir_vec)):
        raise ValueError("dir_vec holds NaN or inf")


def frame_joints(frame: PoseFrame, skeleton: Skeleton) -> np.ndarray:
    """Joint positions (n_joints, 3) in the TED convention, spine at the origin."""
    return skeleton.dir_vec_to_joints(np.asarray(frame.dir_vec, dtype=np.float64))


def encode_binary(frame: PoseFrame, skeleton: Skeleton, joints: np.ndarray, capture_unix: float) -> bytes:
    header = BINARY_HEADER.pack(
        BINARY_MAGIC, BINARY_VERSION, 1 if frame.speaking else 0, frame.stream & 0xFF, 0,
        skeleton.n_bones, skeleton.n_joints, frame.index & 0xFFFFFFFF, frame.capture_time, capture_unix)
    return header + np.asarray(frame.dir_vec, dtype="<f4").tobytes() + joints.astype("<f4").tobytes()


def encode_json(frame: PoseFrame, joints: np.ndarray, capture_unix: float, pose: dict) -> str:
    """The JSON pose message; ``joints`` in TED axes (they are converted here), ``pose`` from VrmPoseEncoder."""
    message = {
        "type": "pose",
        "index": frame.index,
        "stream": frame.stream,
        "speaking": frame.speaking,
        "captureTime": frame.capture_time,
        "captureUnix": capture_unix,
        "pose": pose,
        "joints": np.round(retarget.convert_points(joints, "ted", VRM_SPACE), 5).tolist(),
    }
    if frame.expressions:
        message["expressions"] = {str(name): round(min(1.0, max(0.0, float(value))), 4)
                                  for name, value in frame.expressions.items()}
    return json.dumps(message, separators=(",", ":"))


# Unity HumanBodyBones -> three-vrm (VRM 1.0) humanoid bone names. lowerCamelCase,
# except the thumb, whose three bones VRM 1.0 calls Metacarpal, Proximal, Distal.
_THUMB_RENAMES = {"ThumbProximal": "ThumbMetacarpal", "ThumbIntermediate": "ThumbProximal"}


def vrm_bone_name(unity_name: str) -> str:
    for old, new in _THUMB_RENAMES.items():
        if unity_name.endswith(old):
            unity_name = unity_name[: -len(old)] + new
            break
    return unity_name[0].lower() + unity_name[1:]


class VrmPoseEncoder:
    """Pose frames -> three-vrm normalized poses, one Retargeter per (stream, skeleton).

    ``{boneName: {"rotation": [x, y, z, w]}}`` for every bone the skeleton drives,
    plus ``hips`` with a zero ``position``: setNormalizedPose() takes each transform
    relative to the avatar's rest (T) pose, so the avatar keeps its own proportions.
    Rotations stay in one quaternion hemisphere from frame to frame per stream.
    """

    def __init__(self, rig: str = VRM_RIG):
        self.rig = retarget.load_rig(rig)
        self._retargeters: dict[tuple[int, str], tuple[retarget.Retargeter, list[int], list[str]]] = {}

    def __call__(self, frame: PoseFrame) -> dict[str, dict[str, list[float]]]:
        key = (frame.stream, frame.skeleton)
        entry = self._retargeters.get(key)
        if entry is None:
            retargeter = retarget.Retargeter(self.rig, frame.skeleton)
            driven = sorted({drive.bone for drive in self.rig.drives_for(frame.skeleton)})
            entry = (retargeter, driven, [vrm_bone_name(self.rig.bones[i].name) for i in driven])
            self._retargeters[key] = entry
        retargeter, driven, names = entry
        local = retarget.convert_rotations(retargeter(frame.dir_vec)[driven], self.rig.space, VRM_SPACE)
        quats = np.round(local, 6).tolist()
        pose: dict[str, dict[str, list[float]]] = {"hips": {"rotation": [0.0, 0.0, 0.0, 1.0], "position": [0.0, 0.0, 0.0]}}
        for name, quat in zip(names, quats):
            pose[name] = {"rotation": quat}
        return pose
