"""BVH motion -> TED 10-joint directions (and hop-clips, with or without speech).

A BVH file carries its own rest skeleton (joint OFFSETs) and per-frame channels, so
forward kinematics needs nothing else: every joint's world rotation is its
parent's times its local rotation, the local rotation being the product of the
rotation channels in the order the file lists them (``Zrotation Yrotation
Xrotation`` -> Rz @ Ry @ Rx, angles in degrees). A joint's local translation is its
position channels when it has them (the root, usually), else its OFFSET.

Assumptions, true of CMU, Mixamo, PyMO and most exports: y is up, and the rest pose
(all channels zero) stands upright. The facing direction is not assumed: as for
BEAT2, each frame is turned about the vertical so that the hip line points to the
subject's left (``retarget.face_forward``).

Joints are found by name (a ``prefix:`` such as ``mixamorig:`` is ignored, case
does not matter), first match wins:

    spine      Spine1, Chest, Spine, Spine2, UpperBack, LowerBack (skipping one that sits
               on the neck in the rest pose: it would give the spine bone no direction)
    neck       Neck, Neck1, Neck_01; else the point midway between the two clavicle
               roots (LeftShoulder/RightShoulder), for rigs without a neck joint
    shoulder   LeftArm, LeftUpArm, LeftUpperArm, upperarm_l, l_shoulder (the upper
               arm's root, NOT the clavicle that CMU calls LeftShoulder)
    elbow      LeftForeArm, LeftLowArm, LeftLowerArm, lowerarm_l, l_elbow
    wrist      LeftHand, LeftWrist, hand_l, l_wrist
    hips       LeftUpLeg, LeftHip, LeftUpperLeg, thigh_l, l_hip (for the heading)
    head       Head (its frame carries nose and head top)

and the same with Right/r for the right side. BVH has no nose and head top: they
are placed in the rest pose above the neck along the TED mean pose's two head bones
(scaled by the rest shoulder width over TED's 0.44), then ride rigidly on the head
joint. ``joint_map`` overrides any of these choices.

Command line (``hop-convert-bvh``)::

    hop-convert-bvh OUT_CORPUS FILE.bvh [FILE.bvh ...] [--speaker NAME]

Files are read leniently: when the header's "Frames:" disagrees with the rows, the
rows are read and the decision is warned (``parse_bvh(strict=False)``; BEAT v1's
shipped take 0_1_1 is a 15 fps file that kept its 120 fps header).

A ``.wav`` (any rate) and ``.TextGrid`` with the BVH's stem beside it become the
clip's speech and words (both must start with the motion). Without a wav the clip's
audio is silence of the motion's length and it has no words: usable for motion-only
work (the FGD feature autoencoder), filtered out by the 2-word window filter.
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from hop.model.skeleton import TED_GESTURE

from .clips import POSE_FPS, SAMPLE_RATE, Clip, ClipWriter, make_clip
from .retarget import ted_dir_vec
from .windows import renormalise, resample_frames


@dataclass
class BvhJoint:
    name: str
    parent: int  # index into Bvh.joints, -1 for the root
    offset: np.ndarray
    channels: list[str] = field(default_factory=list)
    channel_start: int = 0


@dataclass
class Bvh:
    joints: list[BvhJoint]
    frame_time: float
    motion: np.ndarray  # (frames, channels)
    header_frames: int | None = None  # the header's "Frames:" when it disagrees with the rows read
    notes: list[str] = field(default_factory=list)  # what a lenient read had to decide, for the user

    @property
    def fps(self) -> float:
        """1 / frame time, snapped to a whole rate when within 0.01 of one (files round the frame
        time: CMU's .0083333 is 120 fps, not 120.0005, which would drift 1 frame in 4 minutes)."""
        fps = 1.0 / self.frame_time
        return float(round(fps)) if abs(fps - round(fps)) < 0.01 else fps

    def index(self, name: str) -> int:
        for i, joint in enumerate(self.joints):
            if joint.name == name:
                return i
        raise KeyError(name)


def parse_bvh(text: str, strict: bool = True, fps: float | None = None) -> Bvh:
    """Parse BVH text.

    ``strict`` (the default) refuses a file whose rows disagree with its header's
    "Frames:". With ``strict=False`` the rows decide: every whole row is read, the
    header's count is kept in ``header_frames`` and the decision is written to
    ``notes`` (and warned). When the header's count is close to a whole multiple k
    of the rows (within 1 %), the file is taken for a k-fold decimated export that
    kept its original header: the frame time becomes k times the header's (BEAT v1's
    shipped take 0_1_1 says 7669 frames at 1/120 s and holds 957 rows at 15 fps).
    ``fps`` overrides the frame time whatever the header says.
    """
    tokens = text.split()
    pos = 0

    def take() -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError("BVH ended early")
        pos += 1
        return tokens[pos - 1]

    if take().upper() != "HIERARCHY":
        raise ValueError("not a BVH file (no HIERARCHY)")
    joints: list[BvhJoint] = []
    stack: list[int] = []
    n_channels = 0
    while True:
        word = take()
        upper = word.upper()
        if upper in ("ROOT", "JOINT"):
            name = take()
            joints.append(BvhJoint(name, stack[-1] if stack else -1, np.zeros(3)))
            if take() != "{":
                raise ValueError(f"expected '{{' after joint {name}")
            stack.append(len(joints) - 1)
        elif upper == "END":
            take()  # "Site"
            if take() != "{":
                raise ValueError("expected '{' after End Site")
            stack.append(-2)  # an end site: its offset is not needed
        elif upper == "OFFSET":
            values = np.array([float(take()) for _ in range(3)])
            if stack and stack[-1] >= 0:
                joints[stack[-1]].offset = values
        elif upper == "CHANNELS":
            count = int(take())
            joint = joints[stack[-1]]
            joint.channels = [take() for _ in range(count)]
            joint.channel_start = n_channels
            n_channels += count
        elif word == "}":
            stack.pop()
        elif upper == "MOTION":
            break
        else:
            raise ValueError(f"unexpected BVH token {word!r}")
    if stack:
        raise ValueError("unbalanced braces in BVH hierarchy")
    if take().rstrip(":").upper() != "FRAMES":
        raise ValueError("expected 'Frames:' after MOTION")
    n_frames = int(take())
    if take().upper() != "FRAME" or take().rstrip(":").upper() != "TIME":
        raise ValueError("expected 'Frame Time:'")
    frame_time = float(take())
    if strict:
        values = np.array(tokens[pos:pos + n_frames * n_channels], dtype=np.float64)
        if values.size != n_frames * n_channels:
            raise ValueError(f"BVH declares {n_frames} frames of {n_channels} channels but holds {values.size} "
                             "values (parse with strict=False to read the rows there are)")
        bvh = Bvh(joints, frame_time, values.reshape(n_frames, n_channels))
    else:
        bvh = _lenient_motion(joints, n_frames, frame_time, tokens[pos:], n_channels)
    if fps is not None:
        bvh.notes.append(f"frame time set to 1/{fps:g} s by the caller (header: {bvh.frame_time:g} s)")
        bvh.frame_time = 1.0 / fps
    return bvh


def _lenient_motion(joints: list[BvhJoint], n_frames: int, frame_time: float, values: list[str],
                    n_channels: int) -> Bvh:
    rows, extra = divmod(len(values), max(n_channels, 1))
    notes = []
    if extra:
        notes.append(f"the last {extra} values do not fill a row of {n_channels} channels: dropped")
    if rows == 0:
        raise ValueError(f"BVH holds no whole row of {n_channels} channels")
    motion = np.array(values[:rows * n_channels], dtype=np.float64).reshape(rows, n_channels)
    header_frames = None
    if rows != n_frames:
        header_frames = n_frames
        k = round(n_frames / rows)
        if k >= 2 and abs(n_frames - k * rows) <= 0.01 * n_frames:
            notes.append(f"header says {n_frames} frames at {frame_time:g} s but the file holds {rows} rows "
                         f"(about 1 in {k}): read as a {k}-fold decimated export, {k * frame_time:g} s per row "
                         f"({1.0 / (k * frame_time):.4g} fps)")
            frame_time *= k
        else:
            notes.append(f"header says {n_frames} frames but the file holds {rows} rows: "
                         f"read {rows} rows at the header's {frame_time:g} s")
    for note in notes:
        warnings.warn(f"BVH: {note}", stacklevel=3)
    return Bvh(joints, frame_time, motion, header_frames, notes)


def read_bvh(path: str | Path, strict: bool = True, fps: float | None = None) -> Bvh:
    return parse_bvh(Path(path).read_text(encoding="utf-8", errors="replace"), strict=strict, fps=fps)


def forward_kinematics(bvh: Bvh, zero_pose: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """World positions (frames, joints, 3) and rotations (frames, joints, 3, 3).

    ``zero_pose`` gives the rest pose (all channels zero; one frame).
    """
    motion = np.zeros((1, bvh.motion.shape[1])) if zero_pose else bvh.motion
    frames = motion.shape[0]
    positions = np.zeros((frames, len(bvh.joints), 3))
    rotations = np.zeros((frames, len(bvh.joints), 3, 3))
    for i, joint in enumerate(bvh.joints):
        local_rot = np.broadcast_to(np.eye(3), (frames, 3, 3))
        translation = np.broadcast_to(joint.offset, (frames, 3)).copy()
        axes, angles = "", []
        for k, channel in enumerate(joint.channels):
            column = motion[:, joint.channel_start + k]
            kind = channel.lower()
            if kind.endswith("position"):
                translation[:, "xyz".index(kind[0])] = column
            elif kind.endswith("rotation"):
                axes += kind[0].upper()
                angles.append(column)
        if axes:
            local_rot = Rotation.from_euler(axes, np.stack(angles, axis=1), degrees=True).as_matrix()
        if joint.parent < 0:
            positions[:, i] = translation
            rotations[:, i] = local_rot
        else:
            parent_rot = rotations[:, joint.parent]
            positions[:, i] = positions[:, joint.parent] + np.einsum("fij,fj->fi", parent_rot, translation)
            rotations[:, i] = parent_rot @ local_rot
    return positions, rotations


_CANDIDATES = {
    "spine": ["spine1", "chest", "spine", "spine2", "upperback", "lowerback"],
    "neck": ["neck", "neck1", "neck_01"],
    "head": ["head"],
    "left_shoulder": ["leftarm", "leftuparm", "leftupperarm", "upperarm_l", "l_shoulder"],
    "left_elbow": ["leftforearm", "leftlowarm", "leftlowerarm", "lowerarm_l", "l_elbow"],
    "left_wrist": ["lefthand", "leftwrist", "hand_l", "l_wrist"],
    "left_hip": ["leftupleg", "lefthip", "leftupperleg", "thigh_l", "l_hip"],
    "left_clavicle": ["leftshoulder", "leftcollar", "clavicle_l", "l_collar"],
    "right_shoulder": ["rightarm", "rightuparm", "rightupperarm", "upperarm_r", "r_shoulder"],
    "right_elbow": ["rightforearm", "rightlowarm", "rightlowerarm", "lowerarm_r", "r_elbow"],
    "right_wrist": ["righthand", "rightwrist", "hand_r", "r_wrist"],
    "right_hip": ["rightupleg", "righthip", "rightupperleg", "thigh_r", "r_hip"],
    "right_clavicle": ["rightshoulder", "rightcollar", "clavicle_r", "r_collar"],
}


def _plain(name: str) -> str:
    return name.split(":")[-1].lower()


def find_joints(bvh: Bvh, joint_map: dict[str, str] | None = None, rest: np.ndarray | None = None) -> dict[str, int]:
    """Role (TED joint name, hips, head, clavicles) -> BVH joint index, by the table above.

    With the rest positions given, a spine candidate sitting (almost) on the neck is
    skipped (CMU's Neck starts exactly at Spine1), so the spine bone has a direction.
    """
    by_name = {_plain(j.name): i for i, j in enumerate(bvh.joints)}
    found: dict[str, int] = {}
    for role, names in _CANDIDATES.items():
        if role == "spine":
            continue
        for candidate in names:
            if candidate in by_name:
                found[role] = by_name[candidate]
                break
    neck = None
    if rest is not None:
        if "neck" in found:
            neck = rest[found["neck"]]
        elif {"left_clavicle", "right_clavicle"} <= found.keys():
            neck = 0.5 * (rest[found["left_clavicle"]] + rest[found["right_clavicle"]])
    for candidate in _CANDIDATES["spine"]:
        if candidate in by_name:
            if neck is not None and "left_shoulder" in found and "right_shoulder" in found:
                width = np.linalg.norm(rest[found["left_shoulder"]] - rest[found["right_shoulder"]])
                if np.linalg.norm(rest[by_name[candidate]] - neck) < 0.2 * width:
                    continue
            found["spine"] = by_name[candidate]
            break
    for role, name in (joint_map or {}).items():
        if _plain(name) not in by_name:
            raise ValueError(f"joint_map: no joint {name!r} in the BVH")
        found[role] = by_name[_plain(name)]
    needed = ["spine", "left_shoulder", "left_elbow", "left_wrist", "right_shoulder", "right_elbow", "right_wrist"]
    missing = [r for r in needed if r not in found]
    if "neck" not in found and not {"left_clavicle", "right_clavicle"} <= found.keys():
        missing.append("neck (or both clavicles)")
    if missing:
        names = ", ".join(j.name for j in bvh.joints)
        raise ValueError(f"BVH joints for {missing} not found among: {names}; pass joint_map")
    return found


def bvh_to_ted(bvh: Bvh, joint_map: dict[str, str] | None = None) -> np.ndarray:
    """(frames, 27) TED directions at the BVH's own frame rate."""
    rest, _ = forward_kinematics(bvh, zero_pose=True)
    rest = rest[0]
    roles = find_joints(bvh, joint_map, rest)
    positions, rotations = forward_kinematics(bvh)

    def point(frames_positions, role):
        if role == "neck" and "neck" not in roles:
            return 0.5 * (frames_positions[..., roles["left_clavicle"], :]
                          + frames_positions[..., roles["right_clavicle"], :])
        return frames_positions[..., roles[role], :]

    named = {name: point(positions, name) for name in TED_GESTURE.joint_names if name in roles or name == "neck"}

    # nose and head top: placed in the rest pose, then carried by the head (or neck) joint
    rest_across = rest[roles["left_shoulder"]] - rest[roles["right_shoulder"]]
    scale = np.linalg.norm(rest_across) / 0.44
    up = np.array([0.0, 1.0, 0.0])
    across = rest_across - (rest_across @ up) * up
    across /= max(np.linalg.norm(across), 1e-9)
    forward = np.cross(across, up)  # left +x, up +y -> forward +z
    mean = TED_GESTURE.mean_pose().reshape(9, 3).astype(np.float64)

    def yup(ted_dir):  # a TED-space direction (left -x, up -y, forward +z) in the BVH's rest frame
        d = ted_dir / np.linalg.norm(ted_dir)
        return -d[0] * across - d[1] * up + d[2] * forward

    rest_neck = point(rest, "neck")
    rest_nose = rest_neck + scale * 0.18 * yup(mean[1])
    rest_top = rest_nose + scale * 0.14 * yup(mean[2])
    carrier = roles.get("head", roles.get("neck"))
    if carrier is None:  # no head and no neck joint: the head follows the spine's top
        carrier = roles["spine"]
    for name, p in (("nose", rest_nose), ("head_top", rest_top)):
        local = p - rest[carrier]  # rest rotations are identity by the BVH convention
        named[name] = positions[:, carrier] + np.einsum("fij,j->fi", rotations[:, carrier], local)
    if "left_hip" in roles and "right_hip" in roles:
        left_hip, right_hip = positions[:, roles["left_hip"]], positions[:, roles["right_hip"]]
    else:  # no legs: head the shoulders' line instead
        left_hip, right_hip = named["left_shoulder"], named["right_shoulder"]
    return ted_dir_vec(named, left_hip=left_hip, right_hip=right_hip)


def convert_bvh(path: str | Path, wav: str | Path | None = None, textgrid: str | Path | None = None,
                joint_map: dict[str, str] | None = None) -> Clip:
    """One BVH (+ optional speech and words starting with the motion) -> one 15 fps clip."""
    from hop.engine.audio_file import load_audio_16k_mono
    from .textgrid import read_words

    bvh = read_bvh(path, strict=False)  # a header frame count that disagrees with the rows: warned, rows read
    dir_vec = renormalise(resample_frames(bvh_to_ted(bvh, joint_map), src_fps=bvh.fps, dst_fps=POSE_FPS))
    if wav is not None:
        audio = load_audio_16k_mono(wav)
        n_frames = min(len(dir_vec), audio.size * POSE_FPS // SAMPLE_RATE)
    else:
        n_frames = len(dir_vec)
        audio = np.zeros(-(-n_frames * SAMPLE_RATE // POSE_FPS), dtype=np.float32)
    duration = n_frames / POSE_FPS
    words = []
    if textgrid is not None:
        words = [(w, s, min(e, duration)) for w, s, e in read_words(textgrid) if s < duration]
    n_samples = -(-n_frames * SAMPLE_RATE // POSE_FPS)
    return make_clip(dir_vec[:n_frames], audio[:n_samples], words)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hop-convert-bvh",
                                     description="Convert BVH files (with optional same-stem .wav/.TextGrid) "
                                                 "to a hop-clips corpus with the TED 10-joint skeleton")
    parser.add_argument("target", type=Path, help="corpus directory to create")
    parser.add_argument("files", type=Path, nargs="+", help="BVH files")
    parser.add_argument("--speaker", default=None, help="speaker name for every clip (default: the file stem)")
    parser.add_argument("--map", action="append", default=[], metavar="ROLE=JOINT",
                        help="override a joint choice, e.g. --map neck=Neck1 (roles: spine, neck, head, "
                             "left_shoulder, left_elbow, left_wrist, left_hip, left_clavicle, right_...)")
    args = parser.parse_args(argv)
    joint_map = dict(item.split("=", 1) for item in args.map)
    writer = ClipWriter(args.target, description="BVH files: " + ", ".join(p.name for p in args.files))
    for path in args.files:
        wav, grid = path.with_suffix(".wav"), path.with_suffix(".TextGrid")
        clip = convert_bvh(path, wav if wav.exists() else None, grid if grid.exists() else None, joint_map)
        writer.add(path.stem, clip, args.speaker or path.stem,
                   {"bvh": path.name, "speech": wav.name if wav.exists() else None})
        print(f"{path.name}: {clip.n_frames} frames, {len(clip.word_text)} words")
    writer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
