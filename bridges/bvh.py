"""Output: the BVH recorder, pose frames -> a standard Biovision Hierarchy file, safe to kill.

The hierarchy comes from a rig in BVH space, by default the skeleton's own
(profiles/rigs/bvh_ted.toml for TED Gesture, bvh_ted_expressive.toml for TED
Expressive: Y up, facing +Z, centimetres). Its joints are named for the bone
they turn, as DCC tools name a person's (Hips, Spine, Neck, Head, LeftShoulder,
LeftArm, LeftForeArm, LeftHand, and for TED Expressive LeftHandThumb1 ...
LeftHandPinky3), so Blender shows "Head" as the head and "LeftArm" as the upper
arm. Each frame is retargeted onto it (hop.bridges.retarget) and written as one
motion line: the root's position then Z X Y Euler angles in degrees for every
joint, in hierarchy order.

The file is valid at every moment, not only after close():
- the whole header is written first, with a fixed-width ``Frames:`` field;
- each motion line goes to the file in one write, and only then is the frame
  count rewritten in place, so the count never exceeds the complete lines. A
  process killed by SIGTERM/SIGKILL or a crash leaves a file whose count is
  exact, or at worst one line short of the lines present (readers take the
  first ``Frames`` lines);
- a failed write (disk full, file too large, I/O error) is counted, the partial
  line is cut off again, and the engine keeps going; later frames are tried again.
  While writes fail, ``stats()["fault"]`` says why in words ("disk full") and
  ``fault_since`` since when (Unix time); the next write that succeeds ends it.

Writing happens on the recorder's own thread; ``send()`` only queues the frame,
so a slow disk never stalls the engine (a full queue drops frames, counted).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import queue
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from hop.bridges.frame import PoseFrame
from hop.bridges.retarget import Retargeter, Rig, load_rig

COUNT_WIDTH = 10  # digits reserved for the frame count: up to 9,999,999,999 frames
_FAULTS = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EFBIG: "file too large",
           errno.EIO: "I/O error", errno.EROFS: "file system read-only"}
ROOT_CHANNELS = "Xposition Yposition Zposition Zrotation Xrotation Yrotation"
JOINT_CHANNELS = "Zrotation Xrotation Yrotation"
EULER_ORDER = "ZXY"  # intrinsic: R = Rz Rx Ry, the order the channels are listed in


# The rig each skeleton is recorded onto unless BvhOptions.rig names another.
BVH_RIGS = {"ted_gesture": "bvh_ted", "ted_expressive": "bvh_ted_expressive"}


def bvh_rig_for(skeleton: str) -> str:
    if skeleton not in BVH_RIGS:
        raise ValueError(f"no built-in BVH rig for skeleton {skeleton!r} (there are {BVH_RIGS}); "
                         "pass BvhOptions(rig=...) with a rig in BVH space")
    return BVH_RIGS[skeleton]


@dataclass(frozen=True)
class BvhOptions:
    fps: float = 15.0  # the pose frame rate; written as the header's Frame Time
    rig: str | None = None  # a rig with space = "bvh" and an End Site on every leaf; None: BVH_RIGS[skeleton]
    skeleton: str = "ted_gesture"
    stream: int = 0  # one file records one speaker; frames of other streams are ignored
    decimals: int = 4  # digits after the point for angles and positions
    queue_frames: int = 256  # frames waiting for the writer thread; more are dropped...
    wait_when_behind: bool = False  # ...unless this is set (offline conversion: every frame, no clock to keep)


def check_bvh_rig(rig: Rig) -> None:
    if rig.space != "bvh":
        raise ValueError(f"BVH files are written in BVH space; rig {rig.name!r} is in {rig.space!r} space "
                         "(use rig 'bvh_ted' or another rig with space = \"bvh\")")
    children = {bone.parent for bone in rig.bones}
    for i, bone in enumerate(rig.bones):
        if i not in children and bone.end is None:
            raise ValueError(f"rig {rig.name!r}: leaf bone {bone.name!r} needs an 'end' (the BVH End Site)")
        if any(ch.isspace() for ch in bone.name) or not bone.name:
            raise ValueError(f"rig {rig.name!r}: BVH joint names cannot contain spaces ({bone.name!r})")


def hierarchy_text(rig: Rig, fps: float) -> tuple[str, int]:
    """The header up to and including 'Frame Time', and the byte offset of the count field."""
    lines = ["HIERARCHY"]

    def write(index: int, depth: int) -> None:
        bone = rig.bones[index]
        pad = "  " * depth
        root = bone.parent < 0
        lines.append(f"{pad}{'ROOT' if root else 'JOINT'} {bone.name}")
        lines.append(f"{pad}{{")
        # The root's rest offset travels in its position channels; its OFFSET is zero.
        offset = np.zeros(3) if root else bone.offset
        lines.append(f"{pad}  OFFSET {_numbers(offset, 6)}")
        lines.append(f"{pad}  CHANNELS {6 if root else 3} {ROOT_CHANNELS if root else JOINT_CHANNELS}")
        kids = [i for i, b in enumerate(rig.bones) if b.parent == index]
        for kid in kids:
            write(kid, depth + 1)
        if not kids:
            lines.append(f"{pad}  End Site")
            lines.append(f"{pad}  {{")
            lines.append(f"{pad}    OFFSET {_numbers(bone.end, 6)}")
            lines.append(f"{pad}  }}")
        lines.append(f"{pad}}}")

    write(0, 0)
    lines += ["MOTION", "Frames: "]
    head = "\n".join(lines)
    count_offset = len(head.encode("ascii"))
    head += " " * COUNT_WIDTH + f"\nFrame Time: {1.0 / fps:.7f}\n"
    return head, count_offset


def _numbers(values: np.ndarray, decimals: int) -> str:
    return " ".join(f"{v:.{decimals}f}" for v in np.asarray(values, dtype=np.float64))


def bone_order(rig: Rig) -> list[int]:
    """Rig bones in the depth-first order the hierarchy (and so each motion line) lists them."""
    order: list[int] = []

    def visit(index: int) -> None:
        order.append(index)
        for i, bone in enumerate(rig.bones):
            if bone.parent == index:
                visit(i)

    visit(0)
    return order


class BvhRecorder:
    """PoseSink recording one stream to a BVH file; complete and valid even if the process dies."""

    def __init__(self, path: str | Path, options: BvhOptions | None = None, **fields):
        """``fields`` override single options: BvhRecorder(path, skeleton="ted_expressive")."""
        options = dataclasses.replace(options or BvhOptions(), **fields)
        if not 0 < options.fps <= 1000:
            raise ValueError(f"fps must lie in (0, 1000], got {options.fps}")
        if not 1 <= options.decimals <= 9:
            raise ValueError("decimals must lie in 1..9")
        self.options = options
        self.path = Path(path)
        self._rig = load_rig(options.rig or bvh_rig_for(options.skeleton))
        check_bvh_rig(self._rig)
        self._retarget = Retargeter(self._rig, options.skeleton)
        self._order = bone_order(self._rig)
        self._root_position = self._rig.bones[0].offset
        header, self._count_offset = hierarchy_text(self._rig, options.fps)
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as error:
            raise OSError(error.errno, f"cannot record BVH to {self.path}: {error.strerror}; "
                          "check the folder exists and is writable") from None
        try:
            self._write_at(header.encode("ascii"), 0)
            self._write_count(0)
        except OSError as error:
            os.close(self._fd)
            raise OSError(error.errno, f"cannot write the BVH header to {self.path}: {error.strerror}") from None
        self._size = len(header)  # bytes of complete content; the next line goes here
        self._frames = 0
        self._previous_angles: np.ndarray | None = None
        self._counts = {"sent": 0, "dropped": 0, "errors": 0, "ignored": 0}
        self._last_error = ""
        self._fault = ""  # why writes fail now, in words; "" while they succeed
        self._fault_since: float | None = None
        self._closed = False
        self._queue: queue.Queue[PoseFrame | None] = queue.Queue(maxsize=options.queue_frames)
        self._thread = threading.Thread(target=self._run, name="hop-bvh", daemon=True)
        self._thread.start()

    # -- PoseSink ------------------------------------------------------------

    def send(self, frame: PoseFrame) -> None:
        if self._closed:
            return
        if frame.stream != self.options.stream:
            self._counts["ignored"] += 1
            return
        if self.options.wait_when_behind:
            self._queue.put(frame)
            return
        try:
            self._queue.put_nowait(frame)
        except queue.Full:
            self._counts["dropped"] += 1
            self._last_error = "writer thread behind (slow disk?): frame dropped"

    def close(self) -> None:
        """Write what is queued, fix the frame count, sync and close. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        try:
            self._write_count(self._frames)
            os.fsync(self._fd)
        except OSError as error:
            self._record_error(error)
        finally:
            os.close(self._fd)

    def stats(self) -> dict[str, float | int | str]:
        return {**self._counts, "frames": self._frames, "bytes": self._size, "last_error": self._last_error,
                "path": str(self.path), "fault": self._fault, "fault_since": self._fault_since}

    # -- writer thread -------------------------------------------------------

    def _run(self) -> None:
        while True:
            frame = self._queue.get()
            if frame is None:
                return
            try:
                line = self._motion_line(frame)
            except Exception as error:  # a malformed frame is counted, never raised
                self._counts["errors"] += 1
                self._last_error = f"frame {frame.index}: {error}"
                continue
            try:
                self._append(line)
            except OSError as error:
                self._counts["dropped"] += 1
                self._record_error(error)
                continue
            self._counts["sent"] += 1
            if self._fault:
                self._fault, self._fault_since = "", None

    def _motion_line(self, frame: PoseFrame) -> bytes:
        if frame.skeleton != self.options.skeleton:
            raise ValueError(f"frame skeleton {frame.skeleton!r} but the recorder's is {self.options.skeleton!r}")
        quats = self._retarget(frame.dir_vec)[self._order]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # gimbal lock: the angles are still a valid decomposition
            angles = Rotation.from_quat(quats).as_euler(EULER_ORDER, degrees=True)
        if self._previous_angles is not None:
            # Unwrap: the same angle +- 360 degrees, nearest the last frame, so tools
            # that interpolate between frames never spin a joint the long way round.
            angles += 360.0 * np.round((self._previous_angles - angles) / 360.0)
        self._previous_angles = angles
        values = np.concatenate([self._root_position, angles.reshape(-1)])
        return (_numbers(values, self.options.decimals) + "\n").encode("ascii")

    def _append(self, line: bytes) -> None:
        try:
            self._write_at(line, self._size)
        except OSError:
            try:  # cut a partial line off again so the file stays well formed
                os.ftruncate(self._fd, self._size)
            except OSError:
                pass
            raise
        self._size += len(line)
        self._frames += 1
        self._write_count(self._frames)

    def _write_count(self, frames: int) -> None:
        self._write_at(f"{frames:<{COUNT_WIDTH}d}".encode("ascii"), self._count_offset)

    def _write_at(self, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, offset)
            if written == 0:
                raise OSError(errno.EIO, "write returned 0 bytes")
            view = view[written:]
            offset += written

    def _record_error(self, error: OSError) -> None:
        self._counts["errors"] += 1
        self._last_error = f"writing {self.path}: {error.strerror or error}"
        fault = _FAULTS.get(error.errno, f"write failed ({error.strerror or error})")
        if fault != self._fault:
            self._fault, self._fault_since = fault, time.time()
