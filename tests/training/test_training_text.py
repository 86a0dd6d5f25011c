"""Word timings -> per-frame token ids, with the real MiniLM WordPiece tokenizer."""

import numpy as np
import pytest

from hop.model.text import WordPieces, align_tokens


@pytest.fixture(scope="module")
def pieces(minilm_tokenizer):
    return WordPieces(minilm_tokenizer)


def test_multi_piece_word_is_spread_over_its_frames_in_order(pieces, minilm_tokenizer):
    ids = list(pieces.pieces("gesticulating"))
    assert minilm_tokenizer.convert_ids_to_tokens(ids) == ["ge", "##stic", "##ulating"]
    # the word from 0.4 s to 1.0 s covers frames 6..14 (times 0.4 .. 0.933)
    tokens = align_tokens([("gesticulating", 0.4, 1.0)], 20, pieces)
    pad = minilm_tokenizer.pad_token_id
    assert np.all(tokens[:6] == pad) and np.all(tokens[15:] == pad)
    assert tokens[6:15].tolist() == [ids[0]] * 3 + [ids[1]] * 3 + [ids[2]] * 3


def test_single_piece_words_fill_their_frames(pieces, minilm_tokenizer):
    hello = minilm_tokenizer("hello", add_special_tokens=False)["input_ids"]
    world = minilm_tokenizer("world", add_special_tokens=False)["input_ids"]
    tokens = align_tokens([("hello", 0.0, 0.2), ("world", 0.2, 0.4)], 8, pieces)
    np.testing.assert_array_equal(tokens, hello * 3 + world * 3 + [minilm_tokenizer.pad_token_id] * 2)


def test_word_shorter_than_a_frame_lands_on_nearest_free_frame(pieces, minilm_tokenizer):
    a = minilm_tokenizer("a", add_special_tokens=False)["input_ids"][0]
    tokens = align_tokens([("a", 0.14, 0.15)], 5, pieces)  # between frames 2 (0.133) and 3 (0.2)
    assert tokens.tolist() == [0, 0, a, 0, 0]


def test_words_outside_the_clip_are_clipped(pieces, minilm_tokenizer):
    ok = minilm_tokenizer("ok", add_special_tokens=False)["input_ids"][0]
    tokens = align_tokens([("ok", -1.0, 0.1), ("ok", 0.3, 5.0)], 6, pieces)
    assert tokens.tolist() == [ok, ok, 0, 0, 0, ok]


def test_tokenizer_without_pad_is_rejected():
    class NoPad:
        pad_token_id = None

    with pytest.raises(ValueError, match="pad_token"):
        WordPieces(NoPad())
