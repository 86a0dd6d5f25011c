"""Training windows over hop-clips corpora (training/data/clips.py), as a torch Dataset.

A ``Corpus`` holds the clips of one corpus directory in memory: poses minus the
corpus mean, audio, and (computed once per clip, on demand) the model's log-Mel
features over the WHOLE clip and the per-frame LM token ids. Windows are slices
of those, so a window's first frames see the real audio before it, exactly as a
stream would, and the frame before a window is available as a seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from hop.model.frontend import MelOptions, log_mel
from hop.model.skeleton import get_skeleton
from hop.training.data.clips import read_clip, read_manifest
from hop.model.text import WordPieces, align_tokens
from hop.training.data.windows import rejection_reason, words_in_range


@dataclass
class ClipData:
    id: str
    speaker: int
    poses: np.ndarray  # (T, D) float32, minus the corpus mean
    audio: np.ndarray  # (S,) float32
    words: list


class Corpus:
    """All clips of a corpus directory, optionally a subset by clip id and/or by the ``split`` its
    manifest records for each clip (``source["split"]``, e.g. the synthetic corpus's train/val/test)."""

    def __init__(self, root: str | Path, clip_ids: list[str] | None = None, mel: MelOptions | None = None,
                 pieces: WordPieces | None = None, pad_token: int = 0, load_audio: bool = True,
                 split: str = ""):
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        self.skeleton = get_skeleton(self.manifest.skeleton)
        self.fps = self.manifest.fps
        self.sample_rate = self.manifest.sample_rate
        self.mean = np.asarray(self.manifest.mean_dir_vec, dtype=np.float32)
        self.mel_opts = mel
        self.pieces = pieces
        self.pad_token = pieces.pad_id if pieces is not None else pad_token
        wanted = set(clip_ids) if clip_ids is not None else None
        self.clips: list[ClipData] = []
        for entry in self.manifest.clips:
            if wanted is not None and entry.id not in wanted:
                continue
            if split and entry.source.get("split") != split:
                continue
            clip = read_clip(self.root, entry)
            self.clips.append(ClipData(
                id=entry.id, speaker=entry.speaker, poses=(clip.dir_vec - self.mean).astype(np.float32),
                audio=clip.audio if load_audio else np.zeros(0, np.float32), words=clip.words()))
        self._mel: dict[int, np.ndarray] = {}
        self._tokens: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def n_speakers(self) -> int:
        return len(self.manifest.speakers)

    def has_splits(self) -> bool:
        return any("split" in e.source for e in self.manifest.clips)

    def mel(self, i: int) -> np.ndarray:
        if i not in self._mel:
            if self.mel_opts is None:
                raise RuntimeError("this corpus was opened without Mel options")
            feats = log_mel(self.clips[i].audio, self.mel_opts)
            n = len(self.clips[i].poses)
            if len(feats) < n:  # audio a few samples short of the last frame: repeat the last features
                feats = np.concatenate([feats, np.repeat(feats[-1:], n - len(feats), 0)]) if len(feats) else \
                    np.zeros((n, self.mel_opts.feature_dim), np.float32)
            self._mel[i] = feats[:n]
        return self._mel[i]

    def tokens(self, i: int) -> np.ndarray:
        if i not in self._tokens:
            n = len(self.clips[i].poses)
            if self.pieces is None:
                self._tokens[i] = np.full(n, self.pad_token, np.int64)
            else:
                self._tokens[i] = align_tokens(self.clips[i].words, n, self.pieces, self.fps)
        return self._tokens[i]

    def audio_span(self, i: int, start: int, length: int) -> np.ndarray:
        """Audio samples of frames [start, start + length)."""
        a = start * self.sample_rate // self.fps
        b = (start + length) * self.sample_rate // self.fps
        audio = self.clips[i].audio[a:b]
        return np.pad(audio, (0, (b - a) - len(audio)))

    def split(self, val_fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
        """Clip ids for (train, val), split by clip with a fixed seed."""
        ids = [c.id for c in self.clips]
        order = np.random.default_rng(seed).permutation(len(ids))
        n_val = max(1, int(round(val_fraction * len(ids)))) if len(ids) > 1 else 0
        return [ids[k] for k in order[n_val:]], [ids[k] for k in order[:n_val]]


class WindowDataset(Dataset):
    """Fixed-length windows every ``stride`` frames; items are dicts of tensors.

    Keys: ``poses`` (T, D), ``before`` (D) the pose of the frame before the window
    (zeros at a clip's start), ``has_before`` (), ``mel`` (T, F), ``tokens`` (T,),
    ``speaker`` (), ``clip`` () index into the corpus, ``start`` ().
    """

    def __init__(self, corpus: Corpus, length: int = 34, stride: int = 10, filter_windows: bool = False,
                 with_audio_features: bool = True):
        self.corpus, self.length, self.stride = corpus, length, stride
        self.with_audio_features = with_audio_features
        self.index: list[tuple[int, int]] = []
        self.rejected: dict[str, int] = {}
        for i, clip in enumerate(corpus.clips):
            n = len(clip.poses)
            for start in range(0, n - length + 1, stride):
                if filter_windows:
                    why = self._reject(clip, start)
                    if why:
                        self.rejected[why] = self.rejected.get(why, 0) + 1
                        continue
                self.index.append((i, start))

    def _reject(self, clip: ClipData, start: int) -> str | None:
        fps = self.corpus.fps
        words = clip.words
        n_words = len(words_in_range(np.array([w[1] for w in words]), np.array([w[2] for w in words]),
                                     start / fps, (start + self.length) / fps)) if words else 0
        window = clip.poses[start:start + self.length] + self.corpus.mean
        return rejection_reason(window, n_words, self.corpus.skeleton, self.corpus.mean)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int) -> dict:
        i, start = self.index[k]
        clip = self.corpus.clips[i]
        end = start + self.length
        item = {
            "poses": torch.from_numpy(clip.poses[start:end]),
            "before": torch.from_numpy(clip.poses[start - 1] if start > 0 else np.zeros_like(clip.poses[0])),
            "has_before": torch.tensor(float(start > 0)),
            "speaker": torch.tensor(clip.speaker, dtype=torch.long),
            "clip": torch.tensor(i), "start": torch.tensor(start),
        }
        if self.with_audio_features:
            item["mel"] = torch.from_numpy(self.corpus.mel(i)[start:end])
            item["tokens"] = torch.from_numpy(self.corpus.tokens(i)[start:end])
        return item

    def audio(self, k: int) -> np.ndarray:
        i, start = self.index[k]
        return self.corpus.audio_span(i, start, self.length)
