"""Word timings -> one LM token id per pose frame.

A word covers the frames whose time (frame / fps) lies in [start, end). Its word-piece
tokens (from the chosen LM's own tokenizer) are spread over those frames in order,
each piece on an equal, contiguous share; frames outside every word hold PAD. A word
too short to cover a frame still gets its first piece on the frame nearest its start
when that frame is free. A word with more pieces than frames keeps an evenly spaced
subset, always including its first piece.

Any tokenizer with the Hugging Face call API works:
``tokenizer(text, add_special_tokens=False)["input_ids"]`` and ``.pad_token_id``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np


class WordPieces:
    """Memoised word -> token ids for one tokenizer (corpora repeat words a lot)."""

    def __init__(self, tokenizer):
        if getattr(tokenizer, "pad_token_id", None) is None:
            raise ValueError("the tokenizer has no pad_token_id; set tokenizer.pad_token first")
        self.tokenizer = tokenizer
        self.pad_id = int(tokenizer.pad_token_id)
        self.pieces = lru_cache(maxsize=65536)(self._pieces)

    def _pieces(self, word: str) -> tuple[int, ...]:
        return tuple(int(t) for t in self.tokenizer(word, add_special_tokens=False)["input_ids"])


def frame_tokens(words, pieces: WordPieces, fps: float, n_frames: int | None = None) -> dict[int, int]:
    """``{frame: token id}`` for ``[(word, start_s, end_s), ...]``; later words win a shared frame.

    The cost follows the words' own frames, not their place in time, so a live session
    aligns each new batch of words as cheaply at minute 60 as at minute 1.
    """
    tokens: dict[int, int] = {}
    for word, start, end in words:
        ids = pieces.pieces(str(word))
        if not ids:
            continue
        first = max(0, math.ceil(start * fps - 1e-9))
        stop = math.ceil(end * fps - 1e-9)  # frames with time < end
        if n_frames is not None:
            stop = min(n_frames, stop)
        if stop <= first:
            nearest = int(round(start * fps))
            if 0 <= nearest and (n_frames is None or nearest < n_frames) and nearest not in tokens:
                tokens[nearest] = ids[0]
            continue
        n = stop - first
        # frame k of the word shows piece floor(k * len(ids) / n): equal contiguous shares
        for k in range(n):
            tokens[first + k] = ids[(k * len(ids)) // n]
    return tokens


def align_tokens(words, n_frames: int, pieces: WordPieces, fps: float = 15.0) -> np.ndarray:
    """(n_frames,) int64 token ids for ``[(word, start_s, end_s), ...]``, PAD where no word."""
    tokens = np.full(n_frames, pieces.pad_id, dtype=np.int64)
    for frame, token in frame_tokens(words, pieces, fps, n_frames).items():
        tokens[frame] = token
    return tokens
