"""Backend selection and the frozen LM's weight formats (engine/backends.py).

What runs here: eager on the CPU with fp32, bf16 and int8 LM weights, and every refusal.
torch.compile is exercised by `hop-bench backends` (it takes minutes on this CPU) and
TensorRT needs an NVIDIA GPU: neither runs in this suite.
"""

import numpy as np
import pytest
import torch

from hop.engine.backends import BackendError, BackendOptions, prepare, set_lm_weights
from hop.model import Hop, HopConfig, HopStream


@pytest.fixture(scope="module")
def model(small_untrained_model):
    return small_untrained_model


def _poses(model, speech) -> np.ndarray:
    stream = HopStream(model)
    with torch.inference_mode():
        out = [stream.push_audio(speech[i:i + 1600]) for i in range(0, len(speech), 1600)]
    return np.concatenate([o[0] for o in out if o.shape[1]])


def test_int8_and_bf16_lm_weights_stay_close_to_fp32(model, speech_source):
    speech = 0.8 * speech_source(4.0)
    reference = _poses(model, speech)
    spread = reference.std(axis=0).mean()
    for weights in ("int8", "fp32", "bf16"):
        assert prepare(model, BackendOptions(lm_weights=weights)) is None  # eager
        poses = _poses(model, speech)
        if weights == "fp32":  # int8 kept the fp32 weights: back to them exactly
            np.testing.assert_array_equal(poses, reference)
            continue
        assert poses.shape == reference.shape and np.isfinite(poses).all()
        error = np.abs(poses - reference).mean()
        assert error < 0.5 * spread, f"{weights}: mean pose error {error:.4f} vs spread {spread:.4f}"
        assert error > 0, f"{weights} changed nothing: the LM did not run in it"
    set_lm_weights(model, "fp32")


def test_refusals_name_the_fix(model):
    with pytest.raises(BackendError, match="eager on the CPU only"):
        prepare(model, BackendOptions(name="compile", lm_weights="int8"))
    with pytest.raises(BackendError, match="choose fp32, bf16 or int8"):
        prepare(model, BackendOptions(lm_weights="int4"))
    with pytest.raises(BackendError, match="unknown backend"):
        prepare(model, BackendOptions(name="onnx"))
    with pytest.raises(BackendError, match="add --device cuda"):
        prepare(model, BackendOptions(name="tensorrt"))
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="sees no CUDA GPU"):
            prepare(model, BackendOptions(device="cuda"))
    set_lm_weights(model, "fp32")
