"""Output: the VMC protocol (OSC over UDP), for EVMC4U, VSeeFace, VMC4UE, VMC Live Link, VMC4B.

Per frame, in this order (DESIGN.md section 5; protocol V2.5):

    /VMC/Ext/Root/Pos  s f*7    "root", position xyz, rotation xyzw: the avatar's root
                                object, kept where the receiver put it (origin, identity:
                                the engine makes no locomotion)
    /VMC/Ext/Bone/Pos  s f*7    per humanoid bone: HumanBodyBones name, LOCAL position and
                                LOCAL rotation. The position is a rest offset, never zero:
                                the avatar's own (VmcOptions.avatar, read from its file) or,
                                without one, the rig's (profiles/rigs/unity_humanoid.toml)
    /VMC/Ext/Blend/Val s f      per blend shape: the frame's expressions (VRM 0.x names
                                A I U E O Blink ... by default) and any constant ones
    /VMC/Ext/Blend/Apply        (some receivers publish nothing without it)
    /VMC/Ext/OK        i i i    1 = avatar loaded, calibration state 3 (calibrated),
                                calibration mode 0 (normal)
    /VMC/Ext/T         f        the sender's clock: seconds since the stream's first frame,
                                advancing by the send period (frame index / send rate)

All in Unity space: left-handed, Y up, Z forward, metres, quaternion x, y, z, w.

A frame goes out as one OSC bundle when it fits the datagram limit, else as
several bundles in the order above (each message whole, Apply/OK/T in the last).
The limit (VmcOptions.max_datagram_bytes) defaults to 1,472 bytes - what fits
a 1,500-byte Ethernet/Wi-Fi MTU without IP fragmentation (1,452 over IPv6) - for
a target that is not loopback, and to one datagram per frame on loopback.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hop.bridges.frame import PoseFrame
from hop.bridges.osc import UdpSender
from hop.bridges.osc_wire import osc_message
from hop.bridges.retarget import Retargeter, Rig, load_rig, quat_conjugate, quat_multiply

VMC_PORT = 39539
MTU_SAFE_DATAGRAM = 1472  # 1500-byte MTU - 20 (IPv4 header) - 8 (UDP header)
MTU_SAFE_DATAGRAM_IPV6 = 1452  # 1500 - 40 (IPv6 header) - 8
LOOPBACK_DATAGRAM = 65507  # the most a UDP/IPv4 datagram can carry
BUNDLE_HEADER = 16  # "#bundle\0" and the 8-byte timetag

# Unity's HumanBodyBones (without LastBone): the names VMC receivers look up.
HUMAN_BODY_BONES = frozenset("""
Hips LeftUpperLeg RightUpperLeg LeftLowerLeg RightLowerLeg LeftFoot RightFoot Spine Chest UpperChest Neck Head
LeftShoulder RightShoulder LeftUpperArm RightUpperArm LeftLowerArm RightLowerArm LeftHand RightHand LeftToes
RightToes LeftEye RightEye Jaw
LeftThumbProximal LeftThumbIntermediate LeftThumbDistal LeftIndexProximal LeftIndexIntermediate LeftIndexDistal
LeftMiddleProximal LeftMiddleIntermediate LeftMiddleDistal LeftRingProximal LeftRingIntermediate LeftRingDistal
LeftLittleProximal LeftLittleIntermediate LeftLittleDistal
RightThumbProximal RightThumbIntermediate RightThumbDistal RightIndexProximal RightIndexIntermediate RightIndexDistal
RightMiddleProximal RightMiddleIntermediate RightMiddleDistal RightRingProximal RightRingIntermediate RightRingDistal
RightLittleProximal RightLittleIntermediate RightLittleDistal
""".split())

# PoseFrame.expressions speaks VRM 1.0 preset names; VRM 0.x receivers (EVMC4U with UniVRM 0.x,
# VSeeFace, VMC4B) know the BlendShapeProxy presets by their 0.x names.
VRM0_BLEND_NAMES = {"aa": "A", "ih": "I", "ou": "U", "ee": "E", "oh": "O", "blink": "Blink",
                    "blinkLeft": "Blink_L", "blinkRight": "Blink_R", "happy": "Joy", "angry": "Angry",
                    "sad": "Sorrow", "relaxed": "Fun", "neutral": "Neutral", "lookUp": "LookUp",
                    "lookDown": "LookDown", "lookLeft": "LookLeft", "lookRight": "LookRight"}
# Sent (0 when a frame has expressions but not this one) whenever a frame carries expressions,
# so a mouth shape that ends is closed by the next frame and the bundle layout stays the same.
MOUTH_AND_BLINK = ("aa", "ih", "ou", "ee", "oh", "blink")
BLEND_NAME_SETS = ("vrm0", "vrm1")
CALIBRATED, NORMAL_MODE = 3, 0  # /VMC/Ext/OK's V2.5 fields


@dataclass(frozen=True)
class VmcOptions:
    # A rig in Unity space with HumanBodyBones names. Without an avatar its rest offsets are
    # the positions sent; with one, only its drives (which source bone turns which bone) are used.
    rig: str = "unity_humanoid"
    # The receiving avatar (.vrm VRM 0.x/1.0, or .glb with a humanoid): positions become its
    # own rest offsets and retargeting uses its proportions (see hop.bridges.avatar).
    avatar: str | Path | None = None
    stream: int = 0  # one VMC target drives one avatar: frames of other streams are ignored
    # Send every bone (of the avatar, else of the rig), holding undriven ones (legs, fingers)
    # at rest so the avatar is in a known pose; False sends only bones the model moves,
    # leaving the rest to another source (e.g. leg tracking mixed in by the receiver).
    all_bones: bool = True
    # Constant blend shape values sent with every frame, e.g. (("Joy", 0.2),); a frame's own
    # expressions of the same name win.
    blend_shapes: tuple[tuple[str, float], ...] = ()
    blend_names: str = "vrm0"  # "vrm0": A I U E O Blink ...; "vrm1": aa ih ou ee oh blink ...
    # Frames per second the engine sends at: /VMC/Ext/T = frame index / send_rate. None: the
    # sender's monotonic clock at each send.
    send_rate: float | None = None
    # Largest UDP datagram; a frame that does not fit is split into several bundles.
    # None: 1472 for a target that is not loopback (1452 over IPv6), one datagram per frame on loopback.
    max_datagram_bytes: int | None = None


def check_vmc_rig(rig: Rig) -> None:
    if rig.space != "unity":
        raise ValueError(f"VMC sends Unity-space transforms; rig {rig.name!r} is in {rig.space!r} space "
                         "(use rig 'unity_humanoid' or another rig with space = \"unity\")")
    unknown = sorted(set(rig.bone_names) - HUMAN_BODY_BONES)
    if unknown:
        raise ValueError(f"VMC receivers look bones up by Unity HumanBodyBones names; rig {rig.name!r} has "
                         f"{unknown[:5]}{'...' if len(unknown) > 5 else ''}; rename them in the rig file")


def check_vmc_options(options: VmcOptions) -> None:
    if options.blend_names not in BLEND_NAME_SETS:
        raise ValueError(f"blend_names must be one of {BLEND_NAME_SETS}, got {options.blend_names!r}")
    if options.send_rate is not None and not 0 < options.send_rate <= 1000:
        raise ValueError(f"send_rate must lie in (0, 1000] frames per second, got {options.send_rate}")
    if options.max_datagram_bytes is not None and not 512 <= options.max_datagram_bytes <= LOOPBACK_DATAGRAM:
        raise ValueError(f"max_datagram_bytes must lie in 512..{LOOPBACK_DATAGRAM}, got {options.max_datagram_bytes}")


def blend_name(preset: str, names: str = "vrm0") -> str:
    """A PoseFrame.expressions name (VRM 1.0) as the receiver knows it; custom names pass as they are."""
    return VRM0_BLEND_NAMES.get(preset, preset) if names == "vrm0" else preset


@dataclass(frozen=True)
class VmcBone:
    """What the encoder sends for one bone: its rest position and how a delta becomes its local rotation."""
    index: int  # bone index in the retargeting rig
    name: str
    position: np.ndarray  # the local position sent (Unity axes, metres)
    parent_rest_inverse: np.ndarray  # (x, y, z, w); identity for a normalized avatar or a rig
    rest: np.ndarray  # (x, y, z, w); identity for a normalized avatar or a rig


def rig_bones(rig: Rig, indices: list[int]) -> list[VmcBone]:
    identity = np.array([0.0, 0.0, 0.0, 1.0])
    return [VmcBone(i, rig.bones[i].name, rig.bones[i].offset, identity, identity) for i in indices]


class VmcBundleEncoder:
    """Builds the frame's bundles once with python-osc, then patches only the numbers that change.

    Names, type tags and rest positions never change, and python-osc re-parses
    everything it builds (about 1 ms for 55 bones); writing the rotations, blend
    values and time into templates costs a few microseconds.
    """

    def __init__(self, bones: list[VmcBone], blend_names: tuple[str, ...] = (),
                 max_datagram_bytes: int = LOOPBACK_DATAGRAM):
        self.bones = bones
        self.blend_names = blend_names
        self._indices = np.array([b.index for b in bones], dtype=np.intp)
        self._parent_rest_inverse = np.stack([b.parent_rest_inverse for b in bones]) if bones else np.zeros((0, 4))
        self._rest = np.stack([b.rest for b in bones]) if bones else np.zeros((0, 4))
        self._normalized = bool(np.allclose(self._parent_rest_inverse[:, 3], 1.0) and np.allclose(self._rest[:, 3], 1.0))
        # Every message, and which of the frame's variable floats its last numbers are:
        # variables = 4 per bone (rotation), 1 per blend shape, 1 for T.
        messages: list[tuple[bytes, list[int]]] = [
            (osc_message("/VMC/Ext/Root/Pos", "sfffffff", ["root", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]).dgram, [])]
        for k, bone in enumerate(bones):
            p = bone.position
            dgram = osc_message("/VMC/Ext/Bone/Pos", "sfffffff", [
                bone.name, float(p[0]), float(p[1]), float(p[2]), 0.0, 0.0, 0.0, 1.0]).dgram
            messages.append((dgram, [4 * k + j for j in range(4)]))
        first_blend = 4 * len(bones)
        for k, name in enumerate(blend_names):
            messages.append((osc_message("/VMC/Ext/Blend/Val", "sf", [name, 0.0]).dgram, [first_blend + k]))
        self._time_variable = first_blend + len(blend_names)
        tail = [(osc_message("/VMC/Ext/Blend/Apply", "", []).dgram, []),
                (osc_message("/VMC/Ext/OK", "iii", [1, CALIBRATED, NORMAL_MODE]).dgram, []),
                (osc_message("/VMC/Ext/T", "f", [0.0]).dgram, [self._time_variable])]
        self.n_variables = self._time_variable + 1
        self._templates: list[np.ndarray] = []
        self._targets: list[np.ndarray] = []  # byte positions in the template
        self._sources: list[np.ndarray] = []  # byte positions in the big-endian variables
        for group in _pack(messages, tail, max_datagram_bytes):
            packet = osc_bundle_bytes([dgram for dgram, _ in group])
            targets, sources = [], []
            position = BUNDLE_HEADER
            for dgram, variables in group:
                end = position + 4 + len(dgram)
                for j, variable in enumerate(variables):
                    start = end - 4 * (len(variables) - j)
                    targets.extend(range(start, start + 4))
                    sources.extend(range(4 * variable, 4 * variable + 4))
                position = end
            self._templates.append(np.frombuffer(packet, dtype=np.uint8).copy())
            self._targets.append(np.array(targets, dtype=np.intp))
            self._sources.append(np.array(sources, dtype=np.intp))
        self.max_datagram_bytes = max_datagram_bytes

    def local_rotations(self, deltas: np.ndarray) -> np.ndarray:
        """Retargeted rotations (all rig bones) -> the local rotations sent, one per encoder bone."""
        q = deltas[self._indices]
        if self._normalized:
            return q
        return quat_multiply(self._parent_rest_inverse, quat_multiply(q, self._rest))

    def encode(self, deltas: np.ndarray, seconds: float, blend_values: np.ndarray | None = None) -> list[bytes]:
        """The frame's datagrams: ``deltas`` from the Retargeter, blend values in ``blend_names`` order."""
        variables = np.zeros(self.n_variables, dtype=">f4")
        variables[:4 * len(self.bones)] = self.local_rotations(deltas).reshape(-1)
        if self.blend_names:
            variables[4 * len(self.bones):self._time_variable] = blend_values
        variables[self._time_variable] = seconds
        raw = variables.view(np.uint8)
        packets = []
        for template, targets, sources in zip(self._templates, self._targets, self._sources):
            packet = template.copy()
            packet[targets] = raw[sources]
            packets.append(packet.tobytes())
        return packets


def osc_bundle_bytes(dgrams: list[bytes]) -> bytes:
    """A bundle (timetag 1, "immediately") of already-encoded messages, as osc_wire.osc_bundle writes it."""
    return b"#bundle\0" + (1).to_bytes(8, "big") + b"".join(len(d).to_bytes(4, "big") + d for d in dgrams)


def _pack(messages: list, tail: list, limit: int) -> list[list]:
    """Messages in order into groups whose bundles fit ``limit`` bytes; the tail stays together, last."""
    def size(group):
        return BUNDLE_HEADER + sum(4 + len(dgram) for dgram, _ in group)

    if size(tail) > limit or any(BUNDLE_HEADER + 4 + len(dgram) > limit for dgram, _ in messages):
        raise ValueError(f"a VMC message does not fit a {limit}-byte datagram")
    groups, current = [], []
    for message in messages:
        if current and size(current + [message]) > limit:
            groups.append(current)
            current = []
        current.append(message)
    if current and size(current + tail) <= limit:
        groups.append(current + tail)
    else:
        if current:
            groups.append(current)
        groups.append(list(tail))
    return groups


def is_loopback_target(host: str, port: int) -> bool:
    """Whether ``host`` resolves to a loopback address (datagrams then never meet a real MTU)."""
    try:
        address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][4][0]
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except (OSError, ValueError):
        return False


def default_datagram_limit(host: str, port: int) -> int:
    """One datagram per frame on loopback; else what fits a 1,500-byte MTU over IPv4 (1472) or IPv6 (1452)."""
    if is_loopback_target(host, port):
        return LOOPBACK_DATAGRAM
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][0]
    except OSError:
        family = socket.AF_INET6
    return MTU_SAFE_DATAGRAM_IPV6 if family == socket.AF_INET6 else MTU_SAFE_DATAGRAM


class VmcSink:
    """Retargets each frame of one stream onto a Unity humanoid (the user's avatar if given) and sends it as VMC."""

    def __init__(self, host: str = "127.0.0.1", port: int = VMC_PORT, options: VmcOptions = VmcOptions()):
        check_vmc_options(options)
        self.options = options
        self.avatar = None
        if options.avatar is not None:
            from hop.bridges.avatar import load_avatar
            self.avatar = load_avatar(options.avatar)
            self._rig = self.avatar.rig(options.rig)
        else:
            self._rig = load_rig(options.rig)
        check_vmc_rig(self._rig)
        self._sender = UdpSender(host, port)
        self.loopback = is_loopback_target(host, port)
        self.max_datagram_bytes = options.max_datagram_bytes or default_datagram_limit(host, port)
        self._retargeters: dict[str, Retargeter] = {}  # per skeleton, created on first use
        self._encoders: dict[tuple[str, tuple[str, ...]], VmcBundleEncoder] = {}
        self._bones: dict[str, list[VmcBone]] = {}
        self._first_index: int | None = None
        self._start_clock: float | None = None
        self.ignored = 0
        self.frames = 0  # frames whose every datagram was handed to the socket

    def _bones_for(self, skeleton: str) -> list[VmcBone]:
        bones = self._bones.get(skeleton)
        if bones is None:
            driven = {d.bone for d in self._rig.drives_for(skeleton)}
            indices = [i for i in range(len(self._rig.bones)) if self.options.all_bones or i in driven]
            if self.avatar is None:
                bones = rig_bones(self._rig, indices)
            else:
                bones = []
                for i in indices:
                    bone = self.avatar.bone(self._rig.bones[i].name)
                    bones.append(VmcBone(i, bone.name, bone.local_position,
                                         quat_conjugate(bone.parent_rest_rotation), bone.rest_rotation))
            self._bones[skeleton] = bones
        return bones

    def _blend(self, frame: PoseFrame) -> tuple[tuple[str, ...], np.ndarray]:
        """The blend shape names and values this frame sends."""
        values = {name: float(value) for name, value in self.options.blend_shapes}
        if frame.expressions:
            for preset in MOUTH_AND_BLINK:
                values[blend_name(preset, self.options.blend_names)] = 0.0
            for preset, value in frame.expressions.items():
                values[blend_name(preset, self.options.blend_names)] = min(1.0, max(0.0, float(value)))
        names = tuple(values)
        return names, np.array([values[n] for n in names], dtype=np.float64)

    def clock(self, frame: PoseFrame) -> float:
        """/VMC/Ext/T for this frame: the sender's clock since the first frame."""
        if self._first_index is None:
            self._first_index, self._start_clock = frame.index, time.perf_counter()
            return 0.0
        if self.options.send_rate:
            return (frame.index - self._first_index) / self.options.send_rate
        return time.perf_counter() - self._start_clock

    def encoder_for(self, frame: PoseFrame) -> tuple[VmcBundleEncoder, np.ndarray]:
        names, values = self._blend(frame)
        key = (frame.skeleton, names)
        encoder = self._encoders.get(key)
        if encoder is None:
            if len(self._encoders) >= 64:  # frames naming ever new custom expressions: start over
                self._encoders.clear()
            encoder = self._encoders[key] = VmcBundleEncoder(self._bones_for(frame.skeleton), names,
                                                             self.max_datagram_bytes)
        return encoder, values

    def encode(self, frame: PoseFrame) -> list[bytes]:
        """The datagrams for one frame (raises on a malformed frame)."""
        retargeter = self._retargeters.get(frame.skeleton)
        if retargeter is None:
            retargeter = self._retargeters[frame.skeleton] = Retargeter(self._rig, frame.skeleton)
        deltas = retargeter(frame.dir_vec)
        encoder, values = self.encoder_for(frame)
        return encoder.encode(deltas, self.clock(frame), values)

    def send(self, frame: PoseFrame) -> None:
        if frame.stream != self.options.stream:
            self.ignored += 1
            return
        try:
            packets = self.encode(frame)
        except Exception as error:  # a malformed frame must not take the engine down
            self._sender.record_error(error)
            return
        before = self._sender.sent
        for packet in packets:
            self._sender.send(packet)
        if self._sender.sent - before == len(packets):
            self.frames += 1

    def close(self) -> None:
        self._sender.close()

    def stats(self) -> dict[str, float | int | str]:
        # "sent" counts frames all of whose datagrams left; "datagrams" every datagram sent.
        return {**self._sender.stats(), "sent": self.frames, "datagrams": self._sender.sent, "ignored": self.ignored,
                "max_datagram_bytes": self.max_datagram_bytes}
