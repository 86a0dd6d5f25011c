"""The on-disk clip format every converter writes and the dataset reads ("hop-clips", version 1).

A corpus is one directory::

    manifest.json        format, version, skeleton, fps, sample_rate, mean_dir_vec, speakers, clips
    clips/<id>.npz       one clip, numpy arrays only (loaded with allow_pickle=False)

Each clip npz holds

    dir_vec     float32 (T, 3 * n_bones)  unit bone directions (NOT minus the mean), frame i at i / fps s
    audio       float32 (S,)              mono speech at sample_rate, sample 0 at the clip's frame 0
    word_text   str (W,)                  words in order
    word_start  float64 (W,)              seconds from the clip's frame 0
    word_end    float64 (W,)

Times are always relative to the clip's first frame, so audio, words and motion line
up by construction. Speakers are integers indexing the manifest's ``speakers`` list.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hop.model.skeleton import get_skeleton

FORMAT_NAME = "hop-clips"
FORMAT_VERSION = 1
POSE_FPS = 15
SAMPLE_RATE = 16000

_SAFE_ID = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class Clip:
    dir_vec: np.ndarray
    audio: np.ndarray
    word_text: list[str]
    word_start: np.ndarray
    word_end: np.ndarray

    @property
    def n_frames(self) -> int:
        return int(self.dir_vec.shape[0])

    def words(self) -> list[tuple[str, float, float]]:
        return list(zip(self.word_text, self.word_start.tolist(), self.word_end.tolist()))


def make_clip(dir_vec, audio, words) -> Clip:
    """Build a clip from arrays and ``[(word, start_s, end_s), ...]``, checking shapes."""
    dir_vec = np.asarray(dir_vec, dtype=np.float32)
    if dir_vec.ndim != 2 or dir_vec.shape[1] % 3:
        raise ValueError(f"dir_vec must be (frames, 3 * bones), got {dir_vec.shape}")
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    words = [(str(w), float(s), float(e)) for w, s, e in words]
    return Clip(
        dir_vec=dir_vec,
        audio=audio,
        word_text=[w for w, _, _ in words],
        word_start=np.array([s for _, s, _ in words], dtype=np.float64),
        word_end=np.array([e for _, _, e in words], dtype=np.float64),
    )


@dataclass
class ClipEntry:
    id: str
    file: str
    speaker: int
    n_frames: int
    n_samples: int
    n_words: int
    source: dict = field(default_factory=dict)  # where the clip came from (video id, times in the source)


@dataclass
class Manifest:
    skeleton: str
    mean_dir_vec: list[float]
    speakers: list[str]
    clips: list[ClipEntry]
    fps: int = POSE_FPS
    sample_rate: int = SAMPLE_RATE
    format: str = FORMAT_NAME
    version: int = FORMAT_VERSION
    description: str = ""


class ClipWriter:
    """Writes clips into a corpus directory; ``close()`` writes the manifest.

    The mean pose is the skeleton's published one when it has one, else the mean
    over all frames written (TED Expressive publishes none).
    """

    def __init__(self, root: str | Path, skeleton: str = "ted_gesture", description: str = ""):
        self.root = Path(root)
        self.skeleton = get_skeleton(skeleton)
        self.description = description
        (self.root / "clips").mkdir(parents=True, exist_ok=True)
        self.entries: list[ClipEntry] = []
        self.speakers: list[str] = []
        self._ids: set[str] = set()
        self._pose_sum = np.zeros(self.skeleton.pose_dim)
        self._pose_count = 0

    def speaker_index(self, name: str) -> int:
        if name not in self.speakers:
            self.speakers.append(name)
        return self.speakers.index(name)

    def add(self, clip_id: str, clip: Clip, speaker: str, source: dict | None = None) -> ClipEntry:
        if clip.dir_vec.shape[1] != self.skeleton.pose_dim:
            raise ValueError(f"clip {clip_id!r} has {clip.dir_vec.shape[1]} pose numbers; "
                             f"skeleton {self.skeleton.name} needs {self.skeleton.pose_dim}")
        safe_id = _SAFE_ID.sub("_", clip_id)
        if safe_id in self._ids:
            raise ValueError(f"duplicate clip id {safe_id!r}")
        self._ids.add(safe_id)
        file = f"clips/{safe_id}.npz"
        np.savez(self.root / file, dir_vec=clip.dir_vec, audio=clip.audio,
                 word_text=np.array(clip.word_text, dtype=str),
                 word_start=clip.word_start, word_end=clip.word_end)
        entry = ClipEntry(id=safe_id, file=file, speaker=self.speaker_index(speaker),
                          n_frames=clip.n_frames, n_samples=int(clip.audio.size),
                          n_words=len(clip.word_text), source=source or {})
        self.entries.append(entry)
        self._pose_sum += clip.dir_vec.sum(axis=0)
        self._pose_count += clip.n_frames
        return entry

    def close(self) -> Manifest:
        if self.skeleton.mean_dir_vec is not None:
            mean = self.skeleton.mean_pose()
        elif self._pose_count:
            mean = self._pose_sum / self._pose_count
        else:
            mean = np.zeros(self.skeleton.pose_dim)
        manifest = Manifest(skeleton=self.skeleton.name, mean_dir_vec=[float(v) for v in mean],
                            speakers=self.speakers, clips=self.entries, description=self.description)
        text = json.dumps(asdict(manifest), indent=1)
        (self.root / "manifest.json").write_text(text)
        return manifest

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()


def read_manifest(root: str | Path) -> Manifest:
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {root} is not a hop-clips corpus; create one with "
                                "hop-convert-ted, hop-make-synth or the BEAT2/BVH converters")
    raw = json.loads(path.read_text())
    if raw.get("format") != FORMAT_NAME or raw.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: expected format {FORMAT_NAME!r} version {FORMAT_VERSION}, "
                         f"got {raw.get('format')!r} version {raw.get('version')}; re-run the converter")
    raw["clips"] = [ClipEntry(**c) for c in raw["clips"]]
    return Manifest(**raw)


def read_clip(root: str | Path, entry: ClipEntry) -> Clip:
    with np.load(Path(root) / entry.file, allow_pickle=False) as data:
        return Clip(dir_vec=data["dir_vec"], audio=data["audio"], word_text=data["word_text"].tolist(),
                    word_start=data["word_start"], word_end=data["word_end"])


def rewrite_manifest(root: str | Path, fps: int, mean=None, speakers=None) -> None:
    """Set a written corpus's fps, and optionally its mean pose and speaker list (renumbering the
    clips' speakers to it, e.g. a held-out split sharing its training corpus's indices)."""
    root = Path(root)
    path = root / "manifest.json"
    raw = json.loads(path.read_text())
    raw["fps"] = fps
    if mean is not None:
        raw["mean_dir_vec"] = [float(v) for v in mean]
    if speakers is not None:  # same speaker indices as the training corpus
        index = {name: i for i, name in enumerate(speakers)}
        for c in raw["clips"]:
            c["speaker"] = index[raw["speakers"][c["speaker"]]]
        raw["speakers"] = list(speakers)
    path.write_text(json.dumps(raw, indent=1))
    read_manifest(root)  # still a valid corpus
