"""Real motion -> the TED Expressive skeleton (13 body and face joints, 30 finger joints, 42 bones).

One generic converter; what differs between sources is DATA, a joint map per source
in ``joint_maps/<name>.toml``:

    beat1    BEAT (v1) motion-capture BVH, 75 joints with full hands
    mixamo   Mixamo BVH, 52 joints with fingers
    smplx    SMPL-X rotations (BEAT2 npz), run on a generic adult rest skeleton that
             the map carries (the SMPL-X model and its offsets are licence-gated)

A map names, for every TED Expressive joint the source has, the source joint that
is it (``[joints]``), the two hip joints that give each frame's heading
(``[heading]``) and the head joint (``[head]``) that carries the face points no
source has as joints (nose, eyes, ears: ``face.toml``, a generic adult head scaled
by the source's shoulder width).

Forward kinematics gives y-up world positions; then, exactly as for the TED Gesture
converters (``retarget``), each frame is turned about the vertical so that the hip
line points to the subject's left, and mapped to TED's axes (up -y, forward +z, the
subject's left -x). The result is the unit direction of every bone of
``TED_EXPRESSIVE`` (child minus parent), (frames, 126), resampled to the requested
rate by direction interpolation (linear blend of neighbouring unit vectors,
renormalised; at a 2:1 or 1:2 rate change this is slerp exactly).

BVH files are read leniently: a header frame count that disagrees with the rows is
reported in ``Expressive.notes`` (BEAT v1's shipped take says 7669 frames at
1/120 s and holds 957 rows at 15 fps; see ``bvh.parse_bvh``).

Command line::

    python -m hop.training.data.expressive FILE (--map beat1|mixamo|smplx|MAP.toml) [--fps 15] [--out OUT.npy]

prints a JSON summary (frames, rates, notes, how much each part moves) and writes
the directions when ``--out`` is given.
"""

from __future__ import annotations

import argparse
import json
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from hop.model.skeleton import TED_EXPRESSIVE

from .bvh import _plain, forward_kinematics, read_bvh
from .clips import POSE_FPS
from .retarget import face_forward, yup_to_ted
from .windows import renormalise, resample_frames

MAPS_DIR = Path(__file__).resolve().with_name("joint_maps")
BUILTIN_MAPS = ("beat1", "mixamo", "smplx")
FACE_JOINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear")


@dataclass(frozen=True)
class JointMap:
    name: str
    description: str
    format: str  # "bvh" or "smplx"
    joints: dict[str, str]  # TED Expressive joint -> source joint name
    heading: tuple[str, str]  # (left hip, right hip) source joints
    head: str  # source joint that carries the face points
    face: dict[str, np.ndarray]  # TED face joint -> offset in the head's rest frame, metres of the generic adult
    face_shoulder_width: float  # the generic adult's shoulder width, metres
    rest: dict[str, tuple[int, str, np.ndarray]] = field(default_factory=dict)  # smplx: name -> (index, parent, at)


def load_joint_map(name: str | Path) -> JointMap:
    """A built-in map by name (``beat1``, ``mixamo``, ``smplx``) or a TOML file by path; checked."""
    path = Path(name)
    if path.suffix != ".toml":
        path = MAPS_DIR / f"{name}.toml"
        if not path.is_file():
            raise ValueError(f"no joint map {name!r}; built in: {', '.join(BUILTIN_MAPS)} (or give a .toml path)")
    with open(path, "rb") as f:
        data = tomllib.load(f)
    with open(MAPS_DIR / "face.toml", "rb") as f:
        face = tomllib.load(f)
    points = {**face["points"], **data.get("head", {}).get("points", {})}
    rest = {}
    for joint, entry in data.get("rest", {}).items():
        rest[joint] = (int(entry["index"]), str(entry["parent"]), np.asarray(entry["at"], dtype=np.float64))
    joint_map = JointMap(
        name=path.stem,
        description=str(data.get("description", path.stem)),
        format=str(data["format"]),
        joints={str(k): str(v) for k, v in data["joints"].items()},
        heading=(str(data["heading"]["left"]), str(data["heading"]["right"])),
        head=str(data["head"]["joint"]),
        face={k: np.asarray(v, dtype=np.float64) for k, v in points.items()},
        face_shoulder_width=float(data.get("head", {}).get("shoulder_width", face["shoulder_width"])),
        rest=rest,
    )
    check_joint_map(joint_map)
    return joint_map


def check_joint_map(joint_map: JointMap) -> None:
    """Every TED Expressive joint comes from exactly one place (a source joint or a face point)."""
    problems = []
    names = set(TED_EXPRESSIVE.joint_names)
    unknown = sorted((set(joint_map.joints) | set(joint_map.face)) - names)
    if unknown:
        problems.append(f"not TED Expressive joints: {unknown}")
    both = sorted(set(joint_map.joints) & set(joint_map.face))
    if both:
        problems.append(f"mapped to a source joint and a face point at once: {both}")
    missing = [n for n in TED_EXPRESSIVE.joint_names if n not in joint_map.joints and n not in joint_map.face]
    if missing:
        problems.append(f"no source for {missing}")
    if joint_map.format not in ("bvh", "smplx"):
        problems.append(f"format must be 'bvh' or 'smplx', not {joint_map.format!r}")
    if joint_map.format == "smplx":
        needed = set(joint_map.joints.values()) | set(joint_map.heading) | {joint_map.head}
        absent = sorted(needed - set(joint_map.rest))
        if absent:
            problems.append(f"[rest] lacks {absent}")
        seen: set[str] = set()
        for joint, (_, parent, _) in joint_map.rest.items():
            if parent and parent not in seen:
                problems.append(f"[rest] lists {joint} before its parent {parent!r}")
            seen.add(joint)
        indices = [index for index, _, _ in joint_map.rest.values()]
        if len(set(indices)) != len(indices) or min(indices, default=0) < 0:
            problems.append("[rest] joint indices must be distinct and >= 0")
    if problems:
        raise ValueError(f"joint map {joint_map.name!r}: " + "; ".join(problems))


@dataclass
class SourceMotion:
    """World motion of a source skeleton: y up, facing +z at rest, any length unit."""

    names: list[str]
    positions: np.ndarray  # (frames, joints, 3)
    rotations: np.ndarray  # (frames, joints, 3, 3) world rotations
    fps: float
    notes: list[str] = field(default_factory=list)

    def index(self, name: str) -> int:
        plain = [_plain(n) for n in self.names]
        try:
            return plain.index(_plain(name))
        except ValueError:
            raise KeyError(name) from None


def bvh_motion(path: str | Path, fps: float | None = None) -> SourceMotion:
    """Forward kinematics of a BVH file, read leniently (``fps`` overrides the header's frame time)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the notes travel with the motion instead
        bvh = read_bvh(path, strict=False, fps=fps)
    positions, rotations = forward_kinematics(bvh)
    return SourceMotion([j.name for j in bvh.joints], positions, rotations, bvh.fps, list(bvh.notes))


def smplx_motion(poses: np.ndarray, fps: float, joint_map: JointMap) -> SourceMotion:
    """(frames, 3 * 55) SMPL-X axis-angle -> forward kinematics on the map's generic rest skeleton."""
    poses = np.asarray(poses, dtype=np.float64)
    need = 3 * (max(index for index, _, _ in joint_map.rest.values()) + 1)
    if poses.ndim != 2 or poses.shape[1] < need:
        raise ValueError(f"expected SMPL-X poses (frames, >= {need}) in axis-angle, got {poses.shape}")
    frames = poses.shape[0]
    names = list(joint_map.rest)
    positions = np.zeros((frames, len(names), 3))
    rotations = np.zeros((frames, len(names), 3, 3))
    for i, (joint, (index, parent, at)) in enumerate(joint_map.rest.items()):
        local = Rotation.from_rotvec(poses[:, 3 * index:3 * index + 3]).as_matrix()
        if not parent:
            positions[:, i] = at
            rotations[:, i] = local
            continue
        p = names.index(parent)
        offset = at - joint_map.rest[parent][2]
        positions[:, i] = positions[:, p] + rotations[:, p] @ offset
        rotations[:, i] = rotations[:, p] @ local
    return SourceMotion(names, positions, rotations, float(fps))


def read_smplx_npz(path: str | Path, joint_map: JointMap | None = None) -> SourceMotion:
    with np.load(path, allow_pickle=False) as take:
        poses = take["poses"]
        fps = float(take["mocap_frame_rate"]) if "mocap_frame_rate" in take.files else 30.0
    return smplx_motion(poses, fps, joint_map or load_joint_map("smplx"))


def motion_to_expressive(motion: SourceMotion, joint_map: JointMap) -> np.ndarray:
    """(frames, 126) TED Expressive directions at the motion's own frame rate."""
    def column(name: str) -> np.ndarray:
        try:
            return motion.positions[:, motion.index(name)]
        except KeyError:
            raise ValueError(f"joint map {joint_map.name!r}: no joint {name!r} in the source "
                             f"(it has {', '.join(motion.names)})") from None

    named = {ted: column(src) for ted, src in joint_map.joints.items()}
    width = np.median(np.linalg.norm(named["left_shoulder"] - named["right_shoulder"], axis=-1))
    scale = width / joint_map.face_shoulder_width  # source units per metre of the generic adult
    try:
        head = motion.index(joint_map.head)
    except KeyError:
        raise ValueError(f"joint map {joint_map.name!r}: no head joint {joint_map.head!r} in the source") from None
    for ted, offset in joint_map.face.items():
        named[ted] = motion.positions[:, head] + motion.rotations[:, head] @ (scale * offset)
    joints = np.stack([named[n] for n in TED_EXPRESSIVE.joint_names], axis=1)
    left_hip, right_hip = column(joint_map.heading[0]), column(joint_map.heading[1])
    joints = yup_to_ted(face_forward(joints, left_hip, right_hip))
    return TED_EXPRESSIVE.joints_to_dir_vec(joints).astype(np.float32)


def resample_dir_vec(dir_vec: np.ndarray, src_fps: float, dst_fps: float) -> np.ndarray:
    """Direction interpolation from src_fps to dst_fps (frame 0 stays at time 0), unit bones out."""
    if abs(src_fps - dst_fps) < 1e-9:
        return np.asarray(dir_vec, dtype=np.float32)
    return renormalise(resample_frames(dir_vec, src_fps=src_fps, dst_fps=dst_fps)).astype(np.float32)


@dataclass
class Expressive:
    dir_vec: np.ndarray  # (frames, 126) unit bone directions of TED_EXPRESSIVE
    fps: float
    source: str  # the joint map's name
    source_fps: float
    source_frames: int
    notes: list[str] = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        return int(self.dir_vec.shape[0])


def read_expressive(path: str | Path, joint_map: str | Path | JointMap | None = None,
                    fps: float | None = POSE_FPS, source_fps: float | None = None) -> Expressive:
    """A motion file -> TED Expressive directions at ``fps`` (None: the source's own rate).

    ``joint_map`` defaults to ``smplx`` for an .npz; a BVH needs its map named (BEAT v1
    and Mixamo files share most joint names, so guessing would be unsafe).
    ``source_fps`` overrides a BVH header's frame time.
    """
    path = Path(path)
    if joint_map is None:
        if path.suffix.lower() != ".npz":
            raise ValueError(f"{path.name}: name the joint map of a BVH ({', '.join(BUILTIN_MAPS)} or a .toml)")
        joint_map = "smplx"
    if not isinstance(joint_map, JointMap):
        joint_map = load_joint_map(joint_map)
    if joint_map.format == "smplx":
        motion = read_smplx_npz(path, joint_map)
        if source_fps is not None:
            motion.fps = float(source_fps)
    else:
        motion = bvh_motion(path, fps=source_fps)
    dir_vec = motion_to_expressive(motion, joint_map)
    out_fps = motion.fps if fps is None else float(fps)
    return Expressive(resample_dir_vec(dir_vec, motion.fps, out_fps), out_fps, joint_map.name, motion.fps,
                      len(dir_vec), list(motion.notes))


# --- body parts and how much they move ---------------------------------------------

FINGERS = ("thumb", "index", "middle", "ring", "little")


def body_parts() -> dict[str, list[int]]:
    """Bone indices of TED_EXPRESSIVE by part, from the bones' child joints' names."""
    parts: dict[str, list[int]] = {"torso_head": [], "left_arm": [], "right_arm": [],
                                   "left_fingers": [], "right_fingers": []}
    for i, (_, child, _) in enumerate(TED_EXPRESSIVE.bones):
        name = TED_EXPRESSIVE.joint_names[child]
        side = name.split("_")[0]
        if any(f"_{finger}_" in name for finger in FINGERS):
            parts[f"{side}_fingers"].append(i)
        elif name in ("left_shoulder", "left_elbow", "left_wrist", "right_shoulder", "right_elbow", "right_wrist"):
            parts[f"{side}_arm"].append(i)
        else:
            parts["torso_head"].append(i)
    return parts


def finger_flexion_deg(dir_vec: np.ndarray) -> np.ndarray:
    """(frames, 30) angle between each finger bone and the bone before it (the wrist's forearm for
    the first), degrees: 0 is a straight finger, the knuckles' and joints' bend."""
    bones = np.asarray(dir_vec, dtype=np.float64).reshape(len(dir_vec), -1, 3)
    by_child = {child: i for i, (_, child, _) in enumerate(TED_EXPRESSIVE.bones)}
    parts = body_parts()
    angles = []
    for i in parts["left_fingers"] + parts["right_fingers"]:
        parent = TED_EXPRESSIVE.bones[i][0]
        before = by_child[parent]
        cos = np.sum(bones[:, i] * bones[:, before], axis=-1)
        angles.append(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
    return np.stack(angles, axis=1)


def motion_summary(exp: Expressive) -> dict:
    """Frames, rates, notes and how much each part moves (mean angular speed, degrees per second)."""
    bones = exp.dir_vec.reshape(exp.n_frames, -1, 3).astype(np.float64)
    cos = np.clip(np.sum(bones[1:] * bones[:-1], axis=-1), -1.0, 1.0)
    speed = np.degrees(np.arccos(cos)) * exp.fps
    flexion = finger_flexion_deg(exp.dir_vec)
    half = flexion.shape[1] // 2
    return {
        "source": exp.source, "frames": exp.n_frames, "fps": exp.fps, "seconds": round(exp.n_frames / exp.fps, 3),
        "source_fps": exp.source_fps, "source_frames": exp.source_frames, "notes": exp.notes,
        "mean_speed_deg_per_s": {part: round(float(speed[:, idx].mean()), 2) for part, idx in body_parts().items()},
        "finger_flexion_std_deg": {"left": round(float(flexion[:, :half].std(axis=0).mean()), 2),
                                   "right": round(float(flexion[:, half:].std(axis=0).mean()), 2)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hop.training.data.expressive",
                                     description="Motion file (BVH or SMPL-X npz) -> TED Expressive directions")
    parser.add_argument("file", type=Path)
    parser.add_argument("--map", default=None, help=f"joint map: {', '.join(BUILTIN_MAPS)} or a .toml "
                                                     "(default: smplx for an .npz)")
    parser.add_argument("--fps", type=float, default=float(POSE_FPS), help="output rate (default 15)")
    parser.add_argument("--source-fps", type=float, default=None, help="override the file's own frame rate")
    parser.add_argument("--out", type=Path, default=None, help="write the (frames, 126) directions as .npy")
    args = parser.parse_args(argv)
    exp = read_expressive(args.file, args.map, fps=args.fps, source_fps=args.source_fps)
    if args.out is not None:
        np.save(args.out, exp.dir_vec)
    print(json.dumps(motion_summary(exp), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
