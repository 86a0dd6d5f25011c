"""Convert the published TED Gesture / TED Expressive lmdb files into hop-clips.

The published files come in two layouts, both lmdb with keys '{:010}'.format(i) and
values written by the LEGACY ``pyarrow.serialize`` (removed in pyarrow 12):

* raw (``lmdb_train`` / ``lmdb_val`` / ``lmdb_test``): one record per video,
  ``{'vid', 'clips': [{'skeletons_3d' (frames, joints, 3), 'audio_raw' (16 kHz),
  'audio_feat', 'words' [[word, start_s, end_s]...], 'start_frame_no',
  'end_frame_no', 'start_time', 'end_time'}]}``; times are seconds in the video;
* cache (``lmdb_train_cache`` ...): one record per 42-frame window,
  ``[words, poses, dir_vec_minus_mean, audio, spectrogram, aux]`` with
  ``aux = {'vid', 'start_frame_no', 'end_frame_no', 'start_time', 'end_time'}``.

Modern pyarrow cannot read those bytes. The converter creates, once, an isolated
virtual environment with pyarrow 11 and numpy 1.x from PyPI (cached under the user's
cache directory), runs ``legacy_bridge.py`` there as a subprocess, and sends it the
raw values; it answers with pickle-free npz records. lmdb itself is read here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

import lmdb
import numpy as np

from hop.model.skeleton import get_skeleton
from hop.training.data import legacy_bridge
from hop.training.data.clips import POSE_FPS, ClipWriter, Manifest, make_clip
from hop.training.data.windows import renormalise, resample_frames

LEGACY_REQUIREMENTS = ("pyarrow==11.0.0", "numpy==1.26.4")
_BRIDGE_SCRIPT = Path(legacy_bridge.__file__)


def default_cache_dir() -> Path:
    base = os.environ.get("HOP_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hop-live"


def legacy_python(cache_dir: Path | None = None) -> Path:
    """The interpreter of the pyarrow-11 environment, creating it on first use.

    Built in a temporary folder and renamed into place, so an interrupted build never
    leaves a half-made environment that looks ready.
    """
    env_dir = (cache_dir or default_cache_dir()) / "pyarrow11-env"
    python = env_dir / "bin" / "python"
    if python.exists():
        return python
    if sys.version_info[:2] != (3, 11):
        raise RuntimeError("pyarrow 11 has wheels up to Python 3.11; run hop-convert-ted with Python 3.11")
    building = env_dir.with_name(f"pyarrow11-env.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(building)
    result = subprocess.run([str(building / "bin" / "python"), "-m", "pip", "install", "-q",
                             "--disable-pip-version-check", "--only-binary=:all:", *LEGACY_REQUIREMENTS],
                            capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(building, ignore_errors=True)
        raise RuntimeError(f"could not install {' '.join(LEGACY_REQUIREMENTS)} into {building} "
                           f"(needs PyPI access once):\n{result.stderr[-2000:]}")
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        building.rename(env_dir)
    except OSError:  # another process finished first: use theirs
        shutil.rmtree(building, ignore_errors=True)
    # venv's python is a symlink to the base interpreter; the path stays valid after the rename
    return python


class LegacyDeserializer:
    """A pyarrow-11 subprocess that turns legacy ``pyarrow.serialize`` bytes into records."""

    def __init__(self, python: Path):
        self.process = subprocess.Popen([str(python), str(_BRIDGE_SCRIPT)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def __call__(self, value: bytes):
        legacy_bridge.write_frame(self.process.stdin, value)
        reply = legacy_bridge.read_frame(self.process.stdout)
        if reply is None:
            raise RuntimeError(f"the legacy reader exited with code {self.process.wait()}")
        if reply[:2] != b"ok":
            raise ValueError(f"pyarrow 11 could not deserialise the record: {reply[2:].decode()}")
        return legacy_bridge.decode(reply[2:])

    def close(self) -> None:
        if self.process.poll() is None:
            legacy_bridge.write_frame(self.process.stdin, b"")
            self.process.stdin.close()
            self.process.wait(timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()


def check_lmdb_dir(path: Path) -> None:
    if not (Path(path) / "data.mdb").is_file():
        raise FileNotFoundError(f"{path} is not an lmdb directory (no data.mdb); pass e.g. .../lmdb_train")


def iter_lmdb(path: Path):
    """(key, value bytes) of every record, in key order."""
    check_lmdb_dir(path)
    env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, subdir=True)
    try:
        with env.begin() as txn:
            for key, value in txn.cursor():
                yield key.decode("ascii", errors="replace"), bytes(value)
    finally:
        env.close()


@dataclass(frozen=True)
class ConvertedClip:
    clip_id: str
    speaker: str
    clip: object
    source: dict


def _words_relative(words, t0: float, duration: float):
    """[(word, start, end)] in seconds from t0, keeping words that overlap [0, duration)."""
    out = []
    for word, start, end in words:
        start, end = float(start) - t0, float(end) - t0
        if end > 0 and start < duration:
            out.append((str(word), start, end))
    return out


def _joints_to_dir_vec(joints: np.ndarray, skeleton) -> np.ndarray:
    joints = np.asarray(joints, dtype=np.float64)
    joints = joints.reshape(joints.shape[0], -1, 3)
    if joints.shape[1] != skeleton.n_joints:
        raise ValueError(f"poses have {joints.shape[1]} joints; skeleton {skeleton.name} has "
                         f"{skeleton.n_joints}: pass --skeleton ted_expressive for TED Expressive")
    return skeleton.joints_to_dir_vec(joints).astype(np.float32)


def convert_raw_record(record: dict, skeleton_name: str = "ted_gesture") -> list[ConvertedClip]:
    """One video record of the raw lmdb -> its clips at 15 fps, times relative to each clip."""
    skeleton = get_skeleton(skeleton_name)
    vid = str(record["vid"])
    converted = []
    for index, clip in enumerate(record["clips"]):
        t0, t1 = float(clip["start_time"]), float(clip["end_time"])
        joints = np.asarray(clip["skeletons_3d"], dtype=np.float64)
        duration = t1 - t0
        if duration <= 0 or len(joints) < 2:
            continue
        joints = resample_frames(joints, src_fps=len(joints) / duration, dst_fps=POSE_FPS)
        dir_vec = renormalise(_joints_to_dir_vec(joints, skeleton))
        words = _words_relative(clip["words"], t0, duration)
        source = {"vid": vid, "clip": index, "start_time": t0, "end_time": t1,
                  "start_frame_no": int(clip["start_frame_no"]), "end_frame_no": int(clip["end_frame_no"])}
        converted.append(ConvertedClip(f"{vid}_{index:03d}", vid, make_clip(dir_vec, clip["audio_raw"], words),
                                       source))
    return converted


def convert_cache_record(key: str, record: list, skeleton_name: str = "ted_gesture") -> ConvertedClip:
    """One window of the preprocessed cache lmdb -> a clip of that window."""
    if not (isinstance(record, list) and len(record) == 6):
        raise ValueError(f"cache record {key} is not [words, poses, dir_vec, audio, spectrogram, aux]")
    words, poses, _dir_vec_minus_mean, audio, _spectrogram, aux = record
    skeleton = get_skeleton(skeleton_name)
    dir_vec = _joints_to_dir_vec(poses, skeleton)
    t0 = float(aux["start_time"])
    duration = dir_vec.shape[0] / POSE_FPS
    source = {"key": key, **{k: (v if isinstance(v, (int, float, str)) else str(v)) for k, v in aux.items()}}
    clip = make_clip(dir_vec, audio, _words_relative(words, t0, duration))
    return ConvertedClip(f"{aux['vid']}_{key}", str(aux["vid"]), clip, source)


def convert_lmdb(source: str | Path, target: str | Path, skeleton: str = "ted_gesture",
                 python: Path | None = None, limit: int | None = None) -> Manifest:
    """Convert a raw or cache lmdb directory into a hop-clips corpus at ``target``."""
    check_lmdb_dir(Path(source))
    python = python or legacy_python()
    writer = ClipWriter(target, skeleton=skeleton, description=f"converted from {Path(source).name}")
    with LegacyDeserializer(python) as deserialize:
        for n, (key, value) in enumerate(iter_lmdb(Path(source))):
            if limit is not None and n >= limit:
                break
            record = deserialize(value)
            if isinstance(record, dict) and "clips" in record:
                clips = convert_raw_record(record, skeleton)
            else:
                clips = [convert_cache_record(key, record, skeleton)]
            for c in clips:
                writer.add(c.clip_id, c.clip, c.speaker, c.source)
    return writer.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="hop-convert-ted",
        description="Convert a published TED Gesture/Expressive lmdb (raw or *_cache) into a hop-clips corpus.")
    parser.add_argument("source", type=Path, help="lmdb directory, e.g. data/ted_dataset/lmdb_train")
    parser.add_argument("target", type=Path, help="output corpus directory")
    parser.add_argument("--skeleton", default="ted_gesture", choices=["ted_gesture", "ted_expressive"])
    parser.add_argument("--legacy-python", type=Path, default=None,
                        help="a Python with pyarrow<12 to use instead of the cached isolated environment")
    parser.add_argument("--limit", type=int, default=None, help="convert only the first N records")
    args = parser.parse_args(argv)
    manifest = convert_lmdb(args.source, args.target, args.skeleton, args.legacy_python, args.limit)
    frames = sum(c.n_frames for c in manifest.clips)
    print(f"{args.target}: {len(manifest.clips)} clips, {frames / POSE_FPS / 3600:.2f} h, "
          f"{len(manifest.speakers)} speakers")


if __name__ == "__main__":
    main()
