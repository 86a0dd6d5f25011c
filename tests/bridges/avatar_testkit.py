"""Synthetic VRM avatars for the bridge tests, written with pygltflib.

``make_avatar`` writes a .vrm (glTF binary) whose humanoid is the generic rig
(profiles/rigs/unity_humanoid.toml) scaled by ``scale``, as VRM 1.0 or VRM 0.x,
and returns the local offset every humanoid bone has *in Unity*, computed here
from the rig and each version's axis rule written out by hand (UniVRM imports
VRM 1.0 mirroring x, VRM 0.x mirroring z), not with hop.bridges' own conversions.

Options make it less tidy, as real avatars are: optional bones left out, a
non-humanoid node between two humanoid bones, non-identity rest rotations
(VRM 1.0 allows them), a mouth mesh with one morph target bound to the "aa"
expression (the browser viewer test watches it).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pygltflib
from scipy.spatial.transform import Rotation

from hop.bridges.retarget import load_rig

RIG = load_rig("unity_humanoid")
VRM1_LICENSE = "https://vrm.dev/licenses/1.0/"


def unity_to_file(vector: np.ndarray, version: int) -> np.ndarray:
    """A Unity-space vector as the file stores it: VRM 1.0 mirrors x, VRM 0.x mirrors z."""
    return np.asarray(vector, dtype=np.float64) * ([-1.0, 1.0, 1.0] if version == 1 else [1.0, 1.0, -1.0])


def file_to_unity(vector: np.ndarray, version: int) -> np.ndarray:
    return unity_to_file(vector, version)  # each mirror is its own inverse


def vrm_bone_name(unity: str, version: int) -> str:
    if version == 1:
        for old, new in (("ThumbProximal", "ThumbMetacarpal"), ("ThumbIntermediate", "ThumbProximal")):
            if unity.endswith(old):
                unity = unity[: -len(old)] + new
                break
    return unity[0].lower() + unity[1:]


def make_avatar(path: Path, version: int = 1, scale: float = 0.8, drop: tuple[str, ...] = (),
                between: tuple[str, str] | None = None, rest_rotations: bool = False, mouth: bool = False,
                seed: int = 0) -> dict[str, np.ndarray]:
    """Write the avatar; returns {HumanBodyBones name: its local offset (the node's translation) in Unity axes}.

    ``between=("Spine", "Chest")`` puts a non-humanoid node "J_Adj" under Spine and above Chest.
    ``rest_rotations`` gives every humanoid node a random rest rotation (world positions unchanged).
    """
    rng = np.random.default_rng(seed)
    bones = [b for b in RIG.bones if b.name not in drop]
    parent_of = {}
    world_unity = {}
    for bone in RIG.bones:  # world rest positions of the generic rig, scaled
        parent = RIG.bones[bone.parent].name if bone.parent >= 0 else None
        world_unity[bone.name] = bone.offset * scale + (world_unity[parent] if parent else 0.0)
    for bone in bones:
        parent = RIG.bones[bone.parent].name if bone.parent >= 0 else None
        while parent in drop:
            parent = RIG.bones[RIG.bone_names.index(parent)].parent
            parent = RIG.bones[parent].name if parent >= 0 else None
        parent_of[bone.name] = parent

    # Nodes: 0 is the root "Armature" (identity), then the humanoid bones and any extra node.
    names = ["Armature"] + [b.name for b in bones]
    world_file = {"Armature": np.zeros(3)}
    node_parent = {"Armature": None}
    for bone in bones:
        world_file[bone.name] = unity_to_file(world_unity[bone.name], version)
        node_parent[bone.name] = parent_of[bone.name] or "Armature"
    if between:
        upper, lower = between
        names.append("J_Adj")
        # Part way from the upper bone to the lower one, a little to the side.
        world_file["J_Adj"] = 0.5 * (world_file[upper] + world_file[lower]) + [0.0, 0.0, 0.01]
        node_parent["J_Adj"] = upper
        node_parent[lower] = "J_Adj"
    world_rotation = {name: Rotation.identity() for name in names}
    if rest_rotations:
        for name in names[1:]:
            world_rotation[name] = Rotation.from_rotvec(rng.normal(scale=0.6, size=3))

    index = {name: i for i, name in enumerate(names)}
    nodes = [pygltflib.Node(name=name) for name in names]
    expected = {}
    for name in names[1:]:
        parent = node_parent[name]
        local_rotation = world_rotation[parent].inv() * world_rotation[name]
        translation = world_rotation[parent].inv().apply(world_file[name] - world_file[parent])
        nodes[index[name]].translation = [float(v) for v in translation]
        if rest_rotations:
            nodes[index[name]].rotation = [float(v) for v in local_rotation.as_quat()]
        nodes[index[parent]].children = (nodes[index[parent]].children or []) + [index[name]]
        if name in world_unity:
            expected[name] = file_to_unity(translation, version)

    gltf = pygltflib.GLTF2(scene=0, scenes=[pygltflib.Scene(nodes=[0])], nodes=nodes)
    blob = b""
    if mouth:
        blob = _add_mouth(gltf, index["Head"], scale, world_rotation["Head"], version)
    expressions = _expressions(gltf, version, mouth)
    if version == 1:
        gltf.extensionsUsed = ["VRMC_vrm"]
        gltf.extensions = {"VRMC_vrm": {
            "specVersion": "1.0",
            "meta": {"name": f"test avatar x{scale}", "authors": ["hop-live tests"], "licenseUrl": VRM1_LICENSE,
                     "avatarPermission": "everyone", "commercialUsage": "personalNonProfit",
                     "creditNotation": "unnecessary", "modification": "allowModification"},
            "humanoid": {"humanBones": {vrm_bone_name(b.name, 1): {"node": index[b.name]} for b in bones}},
            "expressions": expressions,
        }}
    else:
        gltf.extensionsUsed = ["VRM"]
        gltf.extensions = {"VRM": {
            "exporterVersion": "hop-live tests", "specVersion": "0.0",
            "meta": {"title": f"test avatar x{scale}", "version": "1", "author": "hop-live tests",
                     "allowedUserName": "Everyone", "violentUssageName": "Disallow",
                     "sexualUssageName": "Disallow", "commercialUssageName": "Disallow", "licenseName": "CC0"},
            "humanoid": {"humanBones": [{"bone": vrm_bone_name(b.name, 0), "node": index[b.name],
                                         "useDefaultValues": True} for b in bones]},
            "firstPerson": {}, "blendShapeMaster": expressions,
            "secondaryAnimation": {"boneGroups": [], "colliderGroups": []}, "materialProperties": [],
        }}
    if blob:
        gltf.buffers = [pygltflib.Buffer(byteLength=len(blob))]
        gltf.set_binary_blob(blob)
    gltf.save_binary(str(path))
    return expected


def _add_mouth(gltf: pygltflib.GLTF2, head: int, scale: float, head_rotation: Rotation, version: int) -> bytes:
    """A small quad in front of the head whose one morph target opens it downwards."""
    # In the file's frame, then undone by the head's rest rotation so it sits upright.
    quad = np.array([[-0.03, -0.01, 0.0], [0.03, -0.01, 0.0], [0.03, 0.01, 0.0], [-0.03, 0.01, 0.0]]) * scale * 3
    quad += [0.0, 0.05 * scale, 0.12 * scale * (1.0 if version == 1 else -1.0)]  # in front of the face
    quad = head_rotation.inv().apply(quad).astype(np.float32)
    opened = np.zeros_like(quad)
    opened[:2] = head_rotation.inv().apply([[0.0, -0.08 * scale, 0.0]] * 2)
    opened = opened.astype(np.float32)
    indices = np.array([0, 1, 2, 0, 2, 3, 0, 2, 1, 0, 3, 2], dtype=np.uint16)  # both faces
    blob = quad.tobytes() + opened.tobytes() + indices.tobytes()
    gltf.bufferViews = [
        pygltflib.BufferView(buffer=0, byteOffset=0, byteLength=quad.nbytes, target=pygltflib.ARRAY_BUFFER),
        pygltflib.BufferView(buffer=0, byteOffset=quad.nbytes, byteLength=opened.nbytes, target=pygltflib.ARRAY_BUFFER),
        pygltflib.BufferView(buffer=0, byteOffset=2 * quad.nbytes, byteLength=indices.nbytes,
                             target=pygltflib.ELEMENT_ARRAY_BUFFER),
    ]
    gltf.accessors = [
        pygltflib.Accessor(bufferView=0, componentType=pygltflib.FLOAT, count=4, type=pygltflib.VEC3,
                           min=quad.min(axis=0).tolist(), max=quad.max(axis=0).tolist()),
        pygltflib.Accessor(bufferView=1, componentType=pygltflib.FLOAT, count=4, type=pygltflib.VEC3,
                           min=opened.min(axis=0).tolist(), max=opened.max(axis=0).tolist()),
        pygltflib.Accessor(bufferView=2, componentType=pygltflib.UNSIGNED_SHORT, count=len(indices),
                           type=pygltflib.SCALAR),
    ]
    gltf.materials = [pygltflib.Material(name="mouth", doubleSided=True,
                                         pbrMetallicRoughness=pygltflib.PbrMetallicRoughness(
                                             baseColorFactor=[0.9, 0.1, 0.1, 1.0], metallicFactor=0.0))]
    gltf.meshes = [pygltflib.Mesh(name="mouth", primitives=[pygltflib.Primitive(
        attributes=pygltflib.Attributes(POSITION=0), indices=2, material=0, targets=[{"POSITION": 1}])],
        weights=[0.0], extras={"targetNames": ["open"]})]
    gltf.nodes.append(pygltflib.Node(name="mouth", mesh=0))
    gltf.nodes[head].children = (gltf.nodes[head].children or []) + [len(gltf.nodes) - 1]
    return blob


def _expressions(gltf: pygltflib.GLTF2, version: int, mouth: bool) -> dict:
    mouth_node = len(gltf.nodes) - 1
    presets = ("aa", "ih", "ou", "ee", "oh", "blink")
    if version == 1:
        preset = {name: {"morphTargetBinds": [], "isBinary": False} for name in presets}
        if mouth:
            preset["aa"]["morphTargetBinds"] = [{"node": mouth_node, "index": 0, "weight": 1.0}]
        return {"preset": preset}
    vrm0 = {"aa": ("A", "a"), "ih": ("I", "i"), "ou": ("U", "u"), "ee": ("E", "e"), "oh": ("O", "o"),
            "blink": ("Blink", "blink")}
    groups = []
    for name in presets:
        title, preset_name = vrm0[name]
        binds = [{"mesh": 0, "index": 0, "weight": 100.0}] if mouth and name == "aa" else []
        groups.append({"name": title, "presetName": preset_name, "binds": binds, "materialValues": []})
    return {"blendShapeGroups": groups}


def glb_json(path: Path) -> dict:
    """The JSON chunk of a .glb/.vrm, read with struct/json alone (an independent look at the file)."""
    import json

    data = Path(path).read_bytes()
    magic, _, _ = struct.unpack("<4sII", data[:12])
    assert magic == b"glTF"
    length, kind = struct.unpack("<I4s", data[12:20])
    assert kind == b"JSON"
    return json.loads(data[20:20 + length])
