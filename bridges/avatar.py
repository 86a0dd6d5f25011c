"""Output helper: the user's avatar (VRM 1.0, VRM 0.x, or a glTF binary with a humanoid), read for the VMC output.

VMC receivers that apply ``/VMC/Ext/Bone/Pos`` positions (EVMC4U's
BonePositionSynchronize, VMC4B) set each bone's local position to what they
receive, so the positions must be the receiving avatar's own rest offsets. This
module reads them from the avatar file with pygltflib:

- which node is which humanoid bone: VRM 1.0 ``VRMC_vrm.humanoid.humanBones``,
  VRM 0.x ``VRM.humanoid.humanBones``, else node names (Unity HumanBodyBones
  names, or Mixamo's ``mixamorig:LeftArm`` ...);
- every node's rest transform, composed from the scene roots.

Axes: UniVRM imports a VRM 1.0 file by mirroring x and a VRM 0.x file by
mirroring z (VRM 0.x figures face -Z in the file, VRM 1.0 and plain glTF figures
face +Z), which is exactly ``retarget.SPACES["vrm"]`` / ``["vrm0"]`` -> "unity".
A plain glTF file is taken to face the way its arms say (left arm at +X: +Z).

What the VMC output uses:
- ``AvatarBone.local_position``: the node's own translation in Unity axes - the
  ``localPosition`` the receiver's transform has at rest, relative to its real
  parent node (which may be a non-humanoid node);
- ``Avatar.rig()``: a Unity-space retargeting rig with the avatar's real
  proportions (offsets between humanoid bones in world axes at rest) and the
  drives of a template rig (unity_humanoid), so rest directions are the avatar's;
- ``AvatarBone.rest_rotation`` / ``parent_rest_rotation``: world rest rotations of
  the node and of its real parent, for avatars whose bones are not "normalized"
  (identity rest rotations): a bone's sent local rotation is
  ``parent_rest^-1 * delta * rest``, the delta being the retargeted rotation.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from hop.bridges.retarget import Rig, convert_points, convert_rotations, parse_rig

# Bones the gesture output needs; a file without them is not a usable humanoid.
REQUIRED_BONES = ("Hips", "Spine", "Head", "LeftUpperArm", "LeftLowerArm", "LeftHand",
                  "RightUpperArm", "RightLowerArm", "RightHand")

# Unity HumanBodyBones in parent-before-child order, with each bone's humanoid parent when
# every optional bone is present (VRM's humanoid hierarchy).
HUMANOID_PARENTS: dict[str, str | None] = {"Hips": None}
for _side in ("Left", "Right"):
    HUMANOID_PARENTS.update({f"{_side}UpperLeg": "Hips", f"{_side}LowerLeg": f"{_side}UpperLeg",
                             f"{_side}Foot": f"{_side}LowerLeg", f"{_side}Toes": f"{_side}Foot"})
HUMANOID_PARENTS.update({"Spine": "Hips", "Chest": "Spine", "UpperChest": "Chest", "Neck": "UpperChest",
                         "Head": "Neck", "LeftEye": "Head", "RightEye": "Head", "Jaw": "Head"})
for _side in ("Left", "Right"):
    HUMANOID_PARENTS.update({f"{_side}Shoulder": "UpperChest", f"{_side}UpperArm": f"{_side}Shoulder",
                             f"{_side}LowerArm": f"{_side}UpperArm", f"{_side}Hand": f"{_side}LowerArm"})
    for _finger in ("Thumb", "Index", "Middle", "Ring", "Little"):
        HUMANOID_PARENTS.update({f"{_side}{_finger}Proximal": f"{_side}Hand",
                                 f"{_side}{_finger}Intermediate": f"{_side}{_finger}Proximal",
                                 f"{_side}{_finger}Distal": f"{_side}{_finger}Intermediate"})

# Mixamo's joint names (after the "mixamorig:" prefix) -> HumanBodyBones.
_MIXAMO = {"Hips": "Hips", "Spine": "Spine", "Spine1": "Chest", "Spine2": "UpperChest", "Neck": "Neck",
           "Head": "Head", "LeftEye": "LeftEye", "RightEye": "RightEye"}
for _side in ("Left", "Right"):
    _MIXAMO.update({f"{_side}Shoulder": f"{_side}Shoulder", f"{_side}Arm": f"{_side}UpperArm",
                    f"{_side}ForeArm": f"{_side}LowerArm", f"{_side}Hand": f"{_side}Hand",
                    f"{_side}UpLeg": f"{_side}UpperLeg", f"{_side}Leg": f"{_side}LowerLeg",
                    f"{_side}Foot": f"{_side}Foot", f"{_side}ToeBase": f"{_side}Toes"})
    for _mixamo, _unity in (("Thumb", "Thumb"), ("Index", "Index"), ("Middle", "Middle"), ("Ring", "Ring"),
                            ("Pinky", "Little")):
        for _k, _part in enumerate(("Proximal", "Intermediate", "Distal"), start=1):
            _MIXAMO[f"{_side}Hand{_mixamo}{_k}"] = f"{_side}{_unity}{_part}"

# A drive whose 'to' bone the avatar lacks aims at the next bone up the chain instead.
_TO_FALLBACK = {"UpperChest": "Neck", "Neck": "Head"}


class AvatarError(ValueError):
    """The avatar file cannot be used; the message (one line) says why and what would work."""


@dataclass(frozen=True)
class AvatarBone:
    name: str  # Unity HumanBodyBones name
    node: int  # glTF node index
    parent: int  # index into Avatar.bones of the nearest humanoid ancestor, -1 for the root
    local_position: np.ndarray  # the node's translation, Unity axes, metres (its localPosition at rest)
    world_position: np.ndarray  # rest position, Unity axes, metres
    rest_rotation: np.ndarray  # world rest rotation of the node, Unity axes, (x, y, z, w)
    parent_rest_rotation: np.ndarray  # world rest rotation of the node's real parent node (identity at a scene root)


@dataclass(frozen=True)
class Avatar:
    path: Path
    kind: str  # "vrm1", "vrm0" or "gltf"
    space: str  # retarget space of the file's coordinates ("vrm", "vrm0" or "gltf")
    title: str
    bones: tuple[AvatarBone, ...]  # parents before children

    @property
    def bone_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.bones)

    @property
    def normalized(self) -> bool:
        """Whether every humanoid bone and its parent rest with identity rotation (VRM 0.x always do)."""
        rotations = np.concatenate([[b.rest_rotation, b.parent_rest_rotation] for b in self.bones])
        return bool(np.all(np.abs(np.abs(rotations[:, 3]) - 1.0) < 1e-6))

    def bone(self, name: str) -> AvatarBone:
        return self.bones[self.bone_names.index(name)]

    def rig(self, template: str = "unity_humanoid") -> Rig:
        """A Unity-space rig of this avatar's humanoid bones at its real proportions, with the
        template rig's drives (bones the avatar lacks are left out, drives aimed at a missing
        bone aim at the next one up the chain)."""
        source = resources.files("hop.profiles") / "rigs" / f"{template}.toml"
        if not source.is_file():
            raise AvatarError(f"no rig {template!r} to take the drives from")
        drives_in = tomllib.loads(source.read_text()).get("drives", {})
        present = set(self.bone_names)
        drives: dict[str, dict] = {}
        for skeleton, table in drives_in.items():
            kept = {}
            for bone, spec in table.items():
                if bone not in present:
                    continue
                spec = dict(spec)
                to = spec.get("to")
                while isinstance(to, str) and to != "end" and to not in present:
                    to = _TO_FALLBACK.get(to)
                if to is None:
                    continue  # e.g. a hand without fingers: it stays rigid on the forearm
                spec["to"] = to
                kept[bone] = spec
            drives[skeleton] = kept
        bones = []
        for bone in self.bones:
            if bone.parent < 0:
                offset = bone.world_position
            else:
                offset = bone.world_position - self.bones[bone.parent].world_position
            bones.append({"name": bone.name, "parent": self.bones[bone.parent].name if bone.parent >= 0 else "",
                          "offset": [float(v) for v in offset]})
        data = {"name": f"avatar:{self.path.name}", "space": "unity",
                "description": f"{self.title} ({self.kind}) from {self.path}", "bones": bones, "drives": drives}
        return parse_rig(data, f"avatar {self.path.name}")


def load_avatar(path: str | Path) -> Avatar:
    """Read the rest skeleton of a VRM 1.0 / VRM 0.x / glTF humanoid; AvatarError (one line) if it cannot."""
    import pygltflib  # imported here: only --avatar needs it

    path = Path(path)
    if str(path) in ("", "."):
        raise AvatarError("avatar file '': an empty path; pass a .vrm or .glb file")
    if path.is_dir():
        raise AvatarError(f"avatar file {str(path)!r} is a directory; pass a .vrm or .glb file")
    if not path.is_file():
        raise AvatarError(f"avatar file {str(path)!r} not found; pass a .vrm or .glb file")
    try:
        head = path.read_bytes()[:4]
    except OSError as error:
        raise AvatarError(f"cannot read avatar file {str(path)!r}: {error.strerror}") from None
    try:
        gltf = pygltflib.GLTF2.load_binary(path) if head == b"glTF" else pygltflib.GLTF2.load_json(path)
        if gltf is None or not isinstance(gltf.nodes, list):
            raise ValueError("no glTF JSON chunk")
    except Exception as error:  # pygltflib raises whatever its parser hits on a non-glTF file
        detail = str(error).strip().splitlines()[0][:120] if str(error).strip() else type(error).__name__
        raise AvatarError(f"avatar file {str(path)!r} is not a readable glTF/VRM file ({detail}); "
                          "pass a .vrm (VRM 0.x or 1.0) or a .glb with a humanoid skeleton") from None
    try:
        return _read(gltf, path)
    except AvatarError:
        raise
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise AvatarError(f"avatar file {str(path)!r} has a malformed node or humanoid table "
                          f"({type(error).__name__}: {str(error)[:120]})") from None


def _read(gltf, path: Path) -> Avatar:
    extensions = gltf.extensions or {}
    nodes = gltf.nodes
    if "VRMC_vrm" in extensions:
        vrm = extensions["VRMC_vrm"]
        kind, space = "vrm1", "vrm"
        mapping = {_from_vrm1(name): int(entry["node"]) for name, entry in vrm["humanoid"]["humanBones"].items()}
        title = str((vrm.get("meta") or {}).get("name") or path.stem)
    elif "VRM" in extensions:
        vrm = extensions["VRM"]
        kind, space = "vrm0", "vrm0"
        mapping = {entry["bone"][0].upper() + entry["bone"][1:]: int(entry["node"])
                   for entry in vrm["humanoid"]["humanBones"] if entry.get("node", -1) >= 0}
        title = str((vrm.get("meta") or {}).get("title") or path.stem)
    else:
        kind, space, title = "gltf", "gltf", path.stem
        mapping = _by_node_names(nodes)
    mapping = {name: node for name, node in mapping.items() if name in HUMANOID_PARENTS}
    missing = [name for name in REQUIRED_BONES if name not in mapping]
    if missing:
        what = {"vrm1": "its VRMC_vrm humanoid", "vrm0": "its VRM humanoid",
                "gltf": "its node names (no VRM extension; Unity HumanBodyBones or Mixamo names are recognised)"}[kind]
        raise AvatarError(f"avatar file {str(path)!r} is not a usable humanoid: {what} lacks {', '.join(missing)}")
    for name, node in mapping.items():
        if not 0 <= node < len(nodes):
            raise AvatarError(f"avatar file {str(path)!r}: humanoid bone {name} names node {node}, "
                              f"but the file has {len(nodes)} nodes")

    parent_of = {}
    for index, node in enumerate(nodes):
        for child in node.children or []:
            parent_of[int(child)] = index
    local = [_local_matrix(node) for node in nodes]
    world: dict[int, np.ndarray] = {}

    def world_of(index: int, depth: int = 0) -> np.ndarray:
        if index not in world:
            if depth > len(nodes):
                raise AvatarError(f"avatar file {str(path)!r}: its node hierarchy has a cycle")
            parent = parent_of.get(index)
            world[index] = local[index] if parent is None else world_of(parent, depth + 1) @ local[index]
        return world[index]

    if kind == "gltf":
        # glTF's own rule is that a figure faces +Z (its left arm at +X); some exporters face -Z.
        hips = world_of(mapping["Hips"])[:3, 3]
        left, right = world_of(mapping["LeftUpperArm"])[:3, 3], world_of(mapping["RightUpperArm"])[:3, 3]
        if left[0] - hips[0] < right[0] - hips[0]:
            space = "vrm0"

    names = [name for name in HUMANOID_PARENTS if name in mapping]  # parents first
    index_of = {name: i for i, name in enumerate(names)}
    nodes_of_bones = {mapping[name] for name in names}
    bones = []
    for name in names:
        node = mapping[name]
        # The nearest humanoid ancestor in the file's own hierarchy.
        walker, parent = parent_of.get(node), -1
        while walker is not None:
            if walker in nodes_of_bones:
                parent = index_of[next(n for n in names if mapping[n] == walker)]
                break
            walker = parent_of.get(walker)
        if name != "Hips" and parent < 0:
            raise AvatarError(f"avatar file {str(path)!r}: humanoid bone {name} is not below the hips in the node tree")
        real_parent = parent_of.get(node)
        bones.append(AvatarBone(
            name=name, node=node, parent=parent,
            local_position=convert_points(local[node][:3, 3], space, "unity"),
            world_position=convert_points(world_of(node)[:3, 3], space, "unity"),
            rest_rotation=convert_rotations(_rotation_of(world_of(node)), space, "unity"),
            parent_rest_rotation=(np.array([0.0, 0.0, 0.0, 1.0]) if real_parent is None else
                                  convert_rotations(_rotation_of(world_of(real_parent)), space, "unity"))))
    if bones[0].name != "Hips":
        raise AvatarError(f"avatar file {str(path)!r}: the hips are not the humanoid's root")
    return Avatar(path=path, kind=kind, space=space, title=title, bones=tuple(bones))


def _from_vrm1(name: str) -> str:
    """VRM 1.0 humanoid bone name -> Unity HumanBodyBones (VRM 1.0 renamed the thumb's bones)."""
    unity = name[0].upper() + name[1:]
    for old, new in (("ThumbProximal", "ThumbIntermediate"), ("ThumbMetacarpal", "ThumbProximal")):
        if unity.endswith(old):
            return unity[: -len(old)] + new
    return unity


def _by_node_names(nodes) -> dict[str, int]:
    """Humanoid bones found by node name: HumanBodyBones names (any case) or Mixamo's."""
    unity = {name.lower(): name for name in HUMANOID_PARENTS}
    found: dict[str, int] = {}
    for index, node in enumerate(nodes):
        raw = (node.name or "").strip()
        bare = raw.rsplit(":", 1)[-1]
        if bare.lower().startswith("mixamorig"):
            bare = bare[len("mixamorig"):]
        name = unity.get(bare.lower()) or _MIXAMO.get(bare)
        if name and name not in found:
            found[name] = index
    return found


def _local_matrix(node) -> np.ndarray:
    if node.matrix is not None and len(node.matrix) == 16:
        return np.array(node.matrix, dtype=np.float64).reshape(4, 4).T  # glTF matrices are column-major
    matrix = np.eye(4)
    x, y, z, w = node.rotation if node.rotation is not None else (0.0, 0.0, 0.0, 1.0)
    rotation = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])
    scale = np.asarray(node.scale if node.scale is not None else (1.0, 1.0, 1.0), dtype=np.float64)
    matrix[:3, :3] = rotation * scale
    matrix[:3, 3] = node.translation if node.translation is not None else (0.0, 0.0, 0.0)
    return matrix


def _rotation_of(matrix: np.ndarray) -> np.ndarray:
    """The rotation (x, y, z, w) in a rest transform, scale taken out."""
    from scipy.spatial.transform import Rotation

    basis = matrix[:3, :3]
    norms = np.linalg.norm(basis, axis=0)
    if np.any(norms < 1e-12):
        return np.array([0.0, 0.0, 0.0, 1.0])
    q = Rotation.from_matrix(basis / norms).as_quat()
    return q if q[3] >= 0 else -q
