"""Fixtures shared by tests/ and benchmarks/."""

import pytest

from hop.model import FrozenLM


@pytest.fixture(scope="session")
def default_lm() -> FrozenLM:
    """The real default LM (all-MiniLM-L6-v2 from its PyPI package), loaded once."""
    return FrozenLM()
