"""Output: the VMC protocol (OSC over UDP), for EVMC4U, VSeeFace, VMC4UE, VMC Live Link, VMC4B.

Per frame one bundle, in this order (DESIGN.md section 5):

    /VMC/Ext/Root/Pos  s f*7    "root", position xyz, rotation xyzw (origin, identity)
    /VMC/Ext/Bone/Pos  s f*7    per humanoid bone: HumanBodyBones name, LOCAL position
                                (the rig's rest offset, never zeros) and LOCAL rotation
    /VMC/Ext/Blend/Val s f      per configured blend shape
    /VMC/Ext/Blend/Apply        (some receivers publish nothing without it)
    /VMC/Ext/OK        i        1 = avatar loaded
    /VMC/Ext/T         f        seconds since the stream's first frame

All in Unity space: left-handed, Y up, Z forward, metres, quaternion x, y, z, w.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hop.bridges.frame import PoseFrame
from hop.bridges.osc import UdpSender
from hop.bridges.osc_wire import osc_bundle, osc_message
from hop.bridges.retarget import Retargeter, Rig, load_rig

VMC_PORT = 39539

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


@dataclass(frozen=True)
class VmcOptions:
    rig: str = "unity_humanoid"  # a rig in Unity space with HumanBodyBones names
    stream: int = 0  # one VMC target drives one avatar: frames of other streams are ignored
    # Send every rig bone, holding undriven ones (legs, fingers) at rest so the avatar
    # is in a known pose; False sends only bones the model moves, leaving the rest to
    # another source (e.g. leg tracking mixed in by the receiver).
    all_bones: bool = True
    # Constant blend shape values sent with every frame, e.g. (("Blink", 0.0),).
    # The pose model has no face output, so none by default; Apply is always sent.
    blend_shapes: tuple[tuple[str, float], ...] = ()


def check_vmc_rig(rig: Rig) -> None:
    if rig.space != "unity":
        raise ValueError(f"VMC sends Unity-space transforms; rig {rig.name!r} is in {rig.space!r} space "
                         "(use rig 'unity_humanoid' or another rig with space = \"unity\")")
    unknown = sorted(set(rig.bone_names) - HUMAN_BODY_BONES)
    if unknown:
        raise ValueError(f"VMC receivers look bones up by Unity HumanBodyBones names; rig {rig.name!r} has "
                         f"{unknown[:5]}{'...' if len(unknown) > 5 else ''}; rename them in the rig file")


class VmcBundleEncoder:
    """Builds the bundle once with python-osc, then patches only the rotations and time per frame.

    Names, type tags and rest offsets never change, and python-osc re-parses
    everything it builds (about 1 ms for 55 bones); writing 16 bytes per bone into
    a template costs a few microseconds.
    """

    def __init__(self, rig: Rig, bones: list[int], blend_shapes: tuple[tuple[str, float], ...] = ()):
        self.bones = bones
        messages = [osc_message("/VMC/Ext/Root/Pos", "sfffffff", ["root", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])]
        for i in bones:
            offset = rig.bones[i].offset
            messages.append(osc_message("/VMC/Ext/Bone/Pos", "sfffffff", [
                rig.bones[i].name, float(offset[0]), float(offset[1]), float(offset[2]), 0.0, 0.0, 0.0, 1.0]))
        messages += [osc_message("/VMC/Ext/Blend/Val", "sf", [name, float(value)]) for name, value in blend_shapes]
        messages += [osc_message("/VMC/Ext/Blend/Apply", "", []),
                     osc_message("/VMC/Ext/OK", "i", [1]),
                     osc_message("/VMC/Ext/T", "f", [0.0])]
        self._template = np.frombuffer(osc_bundle(messages), dtype=np.uint8).copy()
        # A bundle is "#bundle\0", an 8-byte timetag, then (int32 size, message) pairs;
        # each bone's rotation is the last 16 bytes of its message, T the last 4 of the bundle.
        ends = 16 + np.cumsum([4 + len(m.dgram) for m in messages])
        self._quat_bytes = (ends[1:1 + len(bones), None] - 16 + np.arange(16)).astype(np.intp)
        self._time_offset = len(self._template) - 4

    def encode(self, local_quats: np.ndarray, seconds: float) -> bytes:
        packet = self._template.copy()
        packet[self._quat_bytes] = local_quats[self.bones].astype(">f4").view(np.uint8).reshape(len(self.bones), 16)
        packet[self._time_offset:] = np.array([seconds], dtype=">f4").view(np.uint8)
        return packet.tobytes()


class VmcSink:
    """Retargets each frame of one stream onto a Unity humanoid and sends it as VMC."""

    def __init__(self, host: str = "127.0.0.1", port: int = VMC_PORT, options: VmcOptions = VmcOptions()):
        self.options = options
        self._rig = load_rig(options.rig)
        check_vmc_rig(self._rig)
        self._sender = UdpSender(host, port)
        self._retargeters: dict[str, Retargeter] = {}  # per skeleton, created on first use
        self._encoders: dict[str, VmcBundleEncoder] = {}
        self._start_time: float | None = None
        self.ignored = 0

    def send(self, frame: PoseFrame) -> None:
        if frame.stream != self.options.stream:
            self.ignored += 1
            return
        try:
            retargeter = self._retargeters.get(frame.skeleton)
            if retargeter is None:
                retargeter = self._retargeters[frame.skeleton] = Retargeter(self._rig, frame.skeleton)
                driven = {d.bone for d in self._rig.drives_for(frame.skeleton)}
                bones = [i for i in range(len(self._rig.bones)) if self.options.all_bones or i in driven]
                self._encoders[frame.skeleton] = VmcBundleEncoder(self._rig, bones, self.options.blend_shapes)
            quats = retargeter(frame.dir_vec)
            if self._start_time is None:
                self._start_time = frame.capture_time
            packet = self._encoders[frame.skeleton].encode(quats, frame.capture_time - self._start_time)
        except Exception as error:  # a malformed frame must not take the engine down
            self._sender.record_error(error)
            return
        self._sender.send(packet)

    def close(self) -> None:
        self._sender.close()

    def stats(self) -> dict[str, float | int | str]:
        return {**self._sender.stats(), "ignored": self.ignored}
