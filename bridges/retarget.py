"""Bone direction vectors -> local rotations of a humanoid rig, and every change of axes.

This module is the only place in hop.bridges that knows how one coordinate
frame maps onto another (``SPACES``, ``convert_points``, ``convert_rotations``);
the outputs name a space and call these.

The model speaks in unit bone directions (TED convention: up -y, +z forward,
subject's left -x). Game engines want one local rotation per rig bone. A rig is
data (profiles/rigs/*.toml): bone names, parents, rest offsets, and which source
bone turns which rig bone.

Conventions, chosen so that the result is unique and stable:
- Rest rotations are identity: a rig's offsets are in world axes at rest (the
  VRM "normalized pose"). A produced rotation is a delta from the rest pose.
- Parent to child, each driven bone gets the *minimal-arc swing* that takes its
  rest direction (already carried along by its parent) onto the generated
  direction; twist about the bone is zero. Undriven bones keep their rest
  rotation and follow their parent.
- Quaternions are (x, y, z, w), Hamilton product, the algebra Unity and Unreal
  use. The math runs in the rig's own space, so its output needs no conversion.
- Consecutive frames are kept in one quaternion hemisphere (q and -q are the
  same rotation; receivers that interpolate would otherwise spin the long way).
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from hop.model.skeleton import Skeleton, get_skeleton

# Each space: the matrix taking TED-convention vectors into it, and how many of
# its length units make one metre. Handedness flips are part of the matrix.
SPACES: dict[str, tuple[np.ndarray, float]] = {
    # TED data: right-handed, x = subject's right, y = down, z = forward.
    "ted": (np.eye(3), 1.0),
    # Unity: left-handed, Y up, Z forward, avatar's left at -X, metres.
    "unity": (np.diag([1.0, -1.0, 1.0]), 1.0),
    # glTF 2.0 as its specification puts a figure: right-handed, Y up, metres, the figure
    # FACING +Z with its left hand at +X (from TED: (-x, -y, z)); the same as "vrm" below.
    "gltf": (np.diag([-1.0, -1.0, 1.0]), 1.0),
    # VRM 0.x files (UniVRM 0.x): glTF axes, but the figure faces -Z, its left hand at -X
    # (from TED: (x, -y, -z); from Unity: (x, y, -z), the z mirror UniVRM 0.x imports with).
    "vrm0": (np.diag([1.0, -1.0, -1.0]), 1.0),
    # Unreal: left-handed, Z up, X forward, Y right, centimetres.
    "unreal": (np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]), 100.0),
    # BVH tools: right-handed, Y up, Z forward, character's left at +X, centimetres.
    "bvh": (np.diag([-1.0, -1.0, 1.0]), 100.0),
    # VRM 1.0 / three-vrm (the WebSocket JSON stream and the browser viewer): glTF axes
    # as VRM 1.0 uses them - right-handed, Y up, the figure FACING +Z (towards
    # three.js's default camera), its left hand at +X, metres. From Unity that is a
    # mirror of x (what UniVRM 1.0 imports with). three-vrm turns VRM 0.x avatars
    # ("vrm0" above) round with VRMUtils.rotateVRM0, so this one frame serves both.
    "vrm": (np.diag([-1.0, -1.0, 1.0]), 1.0),
}

IDENTITY = np.array([0.0, 0.0, 0.0, 1.0])


# ---------------------------------------------------------------- quaternions
# All take and return arrays with the quaternion (x, y, z, w) or vector on the
# last axis and broadcast over the leading ones.

def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ax, ay, az, aw = a[..., 0], a[..., 1], a[..., 2], a[..., 3]
    bx, by, bz, bw = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    out = np.empty(np.broadcast_shapes(a.shape, b.shape))
    out[..., 0] = aw * bx + ax * bw + ay * bz - az * by
    out[..., 1] = aw * by - ax * bz + ay * bw + az * bx
    out[..., 2] = aw * bz + ax * by - ay * bx + az * bw
    out[..., 3] = aw * bw - ax * bx - ay * by - az * bz
    return out


def cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """np.cross for (..., 3), without its large per-call overhead on single vectors."""
    ax, ay, az = a[..., 0], a[..., 1], a[..., 2]
    bx, by, bz = b[..., 0], b[..., 1], b[..., 2]
    out = np.empty(np.broadcast_shapes(a.shape, b.shape))
    out[..., 0] = ay * bz - az * by
    out[..., 1] = az * bx - ax * bz
    out[..., 2] = ax * by - ay * bx
    return out


def quat_conjugate(q: np.ndarray) -> np.ndarray:
    return q * np.array([-1.0, -1.0, -1.0, 1.0])


def quat_rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vectors v by unit quaternions q."""
    u, w = q[..., :3], q[..., 3:]
    t = 2.0 * cross(u, v)
    return v + w * t + cross(u, t)


def swing_between(rest: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Minimal-arc rotation taking unit vector `rest` onto unit vector `target`.

    A zero target (no data) gives identity. Exactly opposite vectors have no
    unique minimal arc; a half turn about an axis perpendicular to `rest` is used.
    """
    rest, target = np.broadcast_arrays(rest, target)
    q = np.concatenate([cross(rest, target), 1.0 + np.sum(rest * target, axis=-1, keepdims=True)], axis=-1)
    target_norm = np.linalg.norm(target, axis=-1)
    opposite = (q[..., 3] < 1e-9) & (target_norm > 0.5)
    if np.any(opposite):
        r = rest[opposite]
        helper = np.where(np.abs(r[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
        axis = cross(r, helper)
        q[opposite] = np.concatenate([axis / np.linalg.norm(axis, axis=-1, keepdims=True), np.zeros((len(r), 1))], axis=-1)
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(norm > 1e-12, q / np.maximum(norm, 1e-12), IDENTITY)


def continue_hemisphere(q: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """Flip each quaternion onto the side of the previous frame's (same rotation, no sign jump)."""
    return np.where(np.sum(q * previous, axis=-1, keepdims=True) < 0.0, -q, q)


def make_sequence_continuous(quats: np.ndarray) -> np.ndarray:
    """(T, ..., 4) -> the same rotations with no sign flip between consecutive frames."""
    out = np.array(quats, dtype=np.float64, copy=True)
    for t in range(1, len(out)):
        out[t] = continue_hemisphere(out[t], out[t - 1])
    return out


# ---------------------------------------------------------------- spaces

@functools.cache
def _change(source: str, target: str) -> tuple[np.ndarray, float, float]:
    """The axis change from one space to another, its unit scale and its determinant (+-1)."""
    for name in (source, target):
        if name not in SPACES:
            raise ValueError(f"unknown space {name!r}; choose one of {sorted(SPACES)}")
    from_ted, from_scale = SPACES[source]
    to_ted, to_scale = SPACES[target]
    change = to_ted @ from_ted.T
    change.setflags(write=False)
    return change, to_scale / from_scale, float(np.linalg.det(change))


def convert_points(points: np.ndarray, source: str, target: str) -> np.ndarray:
    """Positions or directions (..., 3) given in one space, expressed in another (units included)."""
    change, scale, _ = _change(source, target)
    return np.asarray(points) @ change.T * scale


def convert_rotations(quats: np.ndarray, source: str, target: str) -> np.ndarray:
    """Rotations (..., 4) (x, y, z, w) given in one space, expressed in another.

    A change of axes C turns a rotation R into C R C^-1: the quaternion's vector
    part maps like an axis, times det(C) when handedness flips.
    """
    change, _, det = _change(source, target)
    q = np.asarray(quats)
    return np.concatenate([det * (q[..., :3] @ change.T), q[..., 3:]], axis=-1)


def convert_space(positions: np.ndarray, quats: np.ndarray, source: str, target: str) -> tuple[np.ndarray, np.ndarray]:
    """Express positions (..., 3) and rotations (..., 4) given in one space in another."""
    return convert_points(positions, source, target), convert_rotations(quats, source, target)


# ---------------------------------------------------------------- rigs

@dataclass(frozen=True)
class RigBone:
    name: str
    parent: int  # index into Rig.bones, -1 for the root
    offset: np.ndarray  # rest translation from the parent, in the rig's space and units
    end: np.ndarray | None  # BVH End Site of a leaf, if the rig gives one


@dataclass(frozen=True)
class Drive:
    bone: int  # rig bone this drive rotates
    source: int  # skeleton bone whose direction it follows
    rest_direction: np.ndarray  # unit vector in the rig bone's rest frame that must follow the source


@dataclass(frozen=True)
class Rig:
    name: str
    space: str
    description: str
    bones: tuple[RigBone, ...]
    drives: dict[str, tuple[Drive, ...]]  # skeleton name -> drives, parents before children

    @property
    def bone_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.bones)

    def drives_for(self, skeleton: str) -> tuple[Drive, ...]:
        if skeleton not in self.drives:
            raise ValueError(f"rig {self.name!r} has no drives for skeleton {skeleton!r}; "
                             f"add a [drives.{skeleton}] table (it has {sorted(self.drives)})")
        return self.drives[skeleton]

    def rest_offsets(self) -> np.ndarray:
        return np.stack([b.offset for b in self.bones])


_RIG_KEYS = {"name", "space", "description", "bones", "drives"}
_BONE_KEYS = {"name", "parent", "offset", "end"}
_DRIVE_KEYS = {"source", "to", "from"}


def load_rig(name_or_path: str | Path) -> Rig:
    """Load a rig by name (profiles/rigs/NAME.toml) or from a .toml path."""
    path = Path(name_or_path)
    if path.suffix == ".toml":
        text = path.read_text()
        origin = str(path)
    else:
        rig_file = resources.files("hop.profiles") / "rigs" / f"{name_or_path}.toml"
        if not rig_file.is_file():
            known = sorted(p.name.removesuffix(".toml") for p in (resources.files("hop.profiles") / "rigs").iterdir()
                           if p.name.endswith(".toml"))
            raise ValueError(f"unknown rig {name_or_path!r}; choose one of {known} or pass a path to a .toml file")
        text = rig_file.read_text()
        origin = f"rig {name_or_path!r}"
    return parse_rig(tomllib.loads(text), origin)


def parse_rig(data: dict, origin: str = "rig") -> Rig:
    _reject_unknown(data, _RIG_KEYS, origin)
    for key in ("name", "space", "bones"):
        if key not in data:
            raise ValueError(f"{origin}: missing key {key!r}")
    if data["space"] not in SPACES:
        raise ValueError(f"{origin}: space {data['space']!r} unknown; choose one of {sorted(SPACES)}")

    bones: list[RigBone] = []
    index: dict[str, int] = {}
    for i, raw in enumerate(data["bones"]):
        where = f"{origin}: bones[{i}]"
        _reject_unknown(raw, _BONE_KEYS, where)
        name, parent = raw.get("name"), raw.get("parent", "")
        if not name or name in index:
            raise ValueError(f"{where}: bone name {name!r} is empty or repeated")
        if parent and parent not in index:
            raise ValueError(f"{where}: parent {parent!r} of {name!r} must be listed before it")
        if not parent and bones:
            raise ValueError(f"{where}: only the first bone may be the root (give {name!r} a parent)")
        end = raw.get("end")
        bones.append(RigBone(name, index[parent] if parent else -1, _vector(raw.get("offset"), f"{where}.offset"),
                             None if end is None else _vector(end, f"{where}.end")))
        index[name] = len(bones) - 1

    drives = {skeleton: _parse_drives(table, bones, index, get_skeleton(skeleton), f"{origin}: drives.{skeleton}")
              for skeleton, table in data.get("drives", {}).items()}
    return Rig(data["name"], data["space"], data.get("description", ""), tuple(bones), drives)


def _parse_drives(table: dict, bones: list[RigBone], index: dict[str, int], skeleton: Skeleton, where: str) -> tuple[Drive, ...]:
    source_index = {(skeleton.joint_names[p], skeleton.joint_names[c]): i for i, (p, c, _) in enumerate(skeleton.bones)}
    drives = []
    for bone_name, spec in table.items():
        here = f"{where}.{bone_name}"
        if bone_name not in index:
            raise ValueError(f"{here}: no rig bone named {bone_name!r}")
        _reject_unknown(spec, _DRIVE_KEYS, here)
        source = tuple(spec.get("source", ()))
        if source not in source_index:
            raise ValueError(f"{here}: source {list(source)} is not a bone of {skeleton.name}; "
                             f"use a [parent_joint, child_joint] pair from {sorted(source_index)}")
        bone = index[bone_name]
        start = _vector(spec["from"], f"{here}.from") if "from" in spec else np.zeros(3)
        direction = _drive_point(spec.get("to"), bone, bones, index, here) - start
        if np.linalg.norm(direction) < 1e-9:
            raise ValueError(f"{here}: 'from' and 'to' are the same point; the bone needs a direction")
        drives.append(Drive(bone, source_index[source], direction / np.linalg.norm(direction)))
    return tuple(sorted(drives, key=lambda d: d.bone))


def _drive_point(to, bone: int, bones: list[RigBone], index: dict[str, int], here: str) -> np.ndarray:
    """The 'to' point of a drive, in the driven bone's rest frame."""
    if to == "end":
        if bones[bone].end is None:
            raise ValueError(f"{here}: to = 'end' but bone {bones[bone].name!r} has no 'end' site")
        return bones[bone].end
    if isinstance(to, str):
        if to not in index:
            raise ValueError(f"{here}: 'to' bone {to!r} does not exist")
        point, walker = np.zeros(3), index[to]
        while walker != bone:
            if walker == -1:
                raise ValueError(f"{here}: 'to' bone {to!r} is not a descendant of {bones[bone].name!r}")
            point, walker = point + bones[walker].offset, bones[walker].parent
        return point
    return _vector(to, f"{here}.to")


def _vector(value, where: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64) if value is not None else None
    if array is None or array.shape != (3,) or not np.all(np.isfinite(array)):
        raise ValueError(f"{where}: expected three finite numbers [x, y, z], got {value!r}")
    return array


def _reject_unknown(table: dict, allowed: set[str], where: str) -> None:
    if not isinstance(table, dict):
        raise ValueError(f"{where}: expected a table, got {table!r}")
    unknown = set(table) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")


# ---------------------------------------------------------------- retargeting

def source_directions(dir_vec: np.ndarray, skeleton: Skeleton, space: str) -> np.ndarray:
    """(..., n_bones*3) TED-convention directions -> (..., n_bones, 3) unit vectors in `space`."""
    dir_vec = np.asarray(dir_vec, dtype=np.float64)
    if dir_vec.shape[-1] != skeleton.pose_dim:
        raise ValueError(f"pose has {dir_vec.shape[-1]} numbers but skeleton {skeleton.name!r} needs "
                         f"{skeleton.pose_dim} ({skeleton.n_bones} bones x 3); pass the matching skeleton name")
    if not np.all(np.isfinite(dir_vec)):
        raise ValueError("pose contains NaN or infinity; sanitise model output before sending it")
    dirs = dir_vec.reshape(*dir_vec.shape[:-1], skeleton.n_bones, 3) @ SPACES[space][0].T
    norm = np.linalg.norm(dirs, axis=-1, keepdims=True)
    return dirs / np.maximum(norm, 1e-12)  # zero vectors stay zero: their bone keeps its rest rotation


def retarget(rig: Rig, dir_vec: np.ndarray, skeleton: str = "ted_gesture") -> np.ndarray:
    """(..., n_bones*3) directions -> (..., n_rig_bones, 4) local rotations (x, y, z, w) in the rig's space."""
    drives = rig.drives_for(skeleton)
    targets = source_directions(dir_vec, get_skeleton(skeleton), rig.space)
    batch = targets.shape[:-2]
    local = np.zeros((*batch, len(rig.bones), 4))
    local[..., 3] = 1.0
    world: dict[int, np.ndarray] = {}  # world rotation of each driven bone; undriven bones add nothing
    for drive, ancestor in zip(drives, _driven_ancestors(rig, skeleton)):
        parent_world = world[ancestor] if ancestor >= 0 else np.broadcast_to(IDENTITY, (*batch, 4))
        # The target, seen from the parent's frame, is what this bone must swing to.
        target_in_parent = quat_rotate(quat_conjugate(parent_world), targets[..., drive.source, :])
        swing = swing_between(drive.rest_direction, target_in_parent)
        local[..., drive.bone, :] = swing
        world[drive.bone] = quat_multiply(parent_world, swing)
    return local


def _driven_ancestors(rig: Rig, skeleton: str) -> list[int]:
    """For each drive, the nearest driven ancestor bone (-1 if none): the only rotation above it."""
    driven = {d.bone for d in rig.drives_for(skeleton)}
    ancestors = []
    for drive in rig.drives_for(skeleton):
        walker = rig.bones[drive.bone].parent
        while walker >= 0 and walker not in driven:
            walker = rig.bones[walker].parent
        ancestors.append(walker)
    return ancestors


class Retargeter:
    """Frame-by-frame retargeting for one stream, with hemisphere continuity."""

    def __init__(self, rig: Rig | str, skeleton: str = "ted_gesture"):
        self.rig = load_rig(rig) if isinstance(rig, (str, Path)) else rig
        self.skeleton = skeleton
        self.rig.drives_for(skeleton)  # fail at construction, not on the first frame
        self._previous: np.ndarray | None = None

    def __call__(self, dir_vec: np.ndarray) -> np.ndarray:
        quats = retarget(self.rig, dir_vec, self.skeleton)
        if self._previous is None:
            quats = np.where(quats[..., 3:] < 0.0, -quats, quats)  # start on the w >= 0 side
        else:
            quats = continue_hemisphere(quats, self._previous)
        self._previous = quats
        return quats
