"""Moved to hop.model.text (the engine aligns live ASR words with the same code); import from there."""

from hop.model.text import WordPieces, align_tokens  # noqa: F401
