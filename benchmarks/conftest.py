"""Benchmarks: pytest-benchmark cases, run once as plain tests in the suite (timing off) and
timed with ``--benchmark-enable``. hop-bench (tools/bench.py) gives the long-run figures."""

import sys
from pathlib import Path

import pytest
import torch


# The bridges' test helpers (independent OSC decoder, receiver process) are shared with the tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "bridges"))


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
