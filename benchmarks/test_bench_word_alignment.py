"""What aligning a batch of newly heard words costs, early and late in a live session.

The live pipeline gives each batch of ASR words to ``frame_tokens``; its cost must follow
the words, not their place in time (it once rescanned from frame 0: 0.2 ms per word at
minute 1, 7.8 ms at minute 60). Timed with ``--benchmark-enable``; as a plain test it
checks that the work done is the same at both minutes.
"""

import pytest

from hop.model import DEFAULT_LM, load_tokenizer
from hop.model.text import WordPieces, frame_tokens

FPS = 30.0
SENTENCE = "so the second plan was probably the better one after all".split()


@pytest.fixture(scope="module")
def pieces():
    return WordPieces(load_tokenizer(DEFAULT_LM))


def batch_at(minute: float) -> list[tuple[str, float, float]]:
    start = minute * 60.0
    return [(word, start + 0.3 * i, start + 0.3 * i + 0.25) for i, word in enumerate(SENTENCE)]


@pytest.mark.parametrize("minute", [1, 60])
def test_bench_word_alignment_per_batch(benchmark, pieces, minute):
    words = batch_at(minute)
    tokens = benchmark(frame_tokens, words, pieces, FPS)
    # the same frames relative to the batch's start, whatever the minute
    first = int(minute * 60 * FPS)
    assert min(tokens) >= first
    assert sorted(f - first for f in tokens) == sorted(f - int(FPS) * 60 for f in frame_tokens(batch_at(1), pieces, FPS))
