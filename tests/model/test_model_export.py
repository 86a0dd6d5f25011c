"""The explicit-state step: same numbers as eager streaming, and exportable without graph breaks."""

import numpy as np
import pytest
import torch

from hop.model import Hop, HopConfig, HopStream, StreamingLogMel, log_mel
from hop.model.export import example_inputs, flatten_state, state_spec, step_variants, unflatten_state


@pytest.fixture(scope="module")
def model(default_lm):
    torch.manual_seed(0)
    return Hop(HopConfig(n_prototypes=64), lm=default_lm).eval()


def _speechlike(seconds: float, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    gate = (np.sin(2 * np.pi * 2.3 * t) > 0).astype(np.float32)
    return (0.2 * gate * np.sin(2 * np.pi * 180 * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def test_state_flattening_round_trips(model):
    state = model.initial_state(3)
    again = unflatten_state(flatten_state(state), state_spec(state))
    assert state_spec(again) == state_spec(state)
    assert all(a is b for a, b in zip(flatten_state(state), flatten_state(again)))
    assert len(again["graph"]["layers"]) == len(model.cfg.graph_dilations)
    # one structure for every batch size: an exported step serves any batch it was traced for
    assert state_spec(model.initial_state(1)) == state_spec(state)


def test_explicit_step_variants_match_eager_streaming(model):
    audio = _speechlike(1.0)
    eager = HopStream(model).push_audio(audio)[0]
    variants = step_variants(model, frames=1)
    assert len(variants) == model.cfg.lm_stride

    def explicit(mel, tokens, style, state, first_frame):
        poses = []
        for i in range(mel.shape[1]):
            variant = variants[(first_frame + i) % len(variants)]
            out = variant(mel[:, i:i + 1], tokens[:, i:i + 1], style, *flatten_state(state))
            poses.append(out[0])
            state = unflatten_state(out[1:], variant.spec)
        return torch.cat(poses, dim=1), state

    frame_by_frame = HopStream(model, step=explicit).push_audio(audio)[0]
    assert eager.shape == frame_by_frame.shape == (30, model.cfg.pose_dim)
    assert np.abs(eager - frame_by_frame).max() < 1e-5


def test_each_variant_exports_as_one_graph(model):
    for variant in step_variants(model, frames=1):
        with torch.no_grad():
            program = torch.export.export(variant, example_inputs(model))
        n_outputs = len(program.graph_signature.user_outputs)
        assert n_outputs == 1 + len(flatten_state(model.initial_state(1)))


def test_skipping_audio_keeps_the_front_end_aligned():
    audio = _speechlike(2.0)
    reference = log_mel(audio)
    frontend = StreamingLogMel()
    head = frontend.push(audio[:8000])
    skipped = frontend.skip(audio[8000:20000])
    tail = frontend.push(audio[20000:])
    assert len(head) + skipped + len(tail) == len(reference)
    assert np.array_equal(tail, reference[len(head) + skipped:])


def test_stream_skip_drops_text_for_skipped_frames(model):
    stream = HopStream(model)
    stream.push_audio(_speechlike(0.5))
    first = stream.frames_done
    stream.add_tokens(0, {first + 2: 1000, first + 40: 1001})
    assert stream.skip_audio(_speechlike(1.0)) == 30
    assert stream.frames_done == first + 30
    assert stream._pending_tokens[0] == {first + 40: 1001}
