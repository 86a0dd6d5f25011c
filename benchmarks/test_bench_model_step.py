"""Step costs as pytest-benchmark cases (run once as plain tests; `--benchmark-enable` to time).

The figures with p99 over 1000+ steps come from `hop-bench step` (tools/bench.py).
"""

import numpy as np
import pytest
import torch

from hop.model import Hop, HopConfig, HopStream, log_mel


@pytest.fixture(scope="module", params=[15, 30], ids=["15fps", "30fps"])
def stream(request, default_lm):
    torch.manual_seed(0)
    return HopStream(Hop(HopConfig(fps=request.param), lm=default_lm).eval())


def test_streaming_step_one_frame(benchmark, stream):
    fps = stream.model.cfg.fps
    rng = np.random.default_rng(0)
    chunk = (0.1 * rng.standard_normal(16000 // fps + 1)).astype(np.float32)

    def one_frame():
        # exact frame boundaries: push until one new frame comes out
        out = stream.push_audio(chunk[: stream.model.cfg.mel.samples_for(stream.frames_done + 1)
                                      - stream.frontends[0].samples_seen])
        return out

    out = benchmark(one_frame)
    assert out.shape == (1, 1, stream.model.cfg.pose_dim)


def test_paper_mode_window(benchmark, default_lm):
    torch.manual_seed(0)
    model = Hop(HopConfig(causal=False, fps=15), lm=default_lm).eval()
    audio = (0.1 * np.random.default_rng(0).standard_normal(36267)).astype(np.float32)
    mel = torch.from_numpy(log_mel(audio, model.cfg.mel))[None]
    tokens = torch.full((1, mel.shape[1]), model.lm.info.pad_token_id)
    style = torch.zeros(1, model.cfg.style_dim)
    prev = torch.zeros(1, mel.shape[1], model.cfg.pose_dim)
    known = torch.zeros(1, mel.shape[1])
    known[:, :4] = 1

    def window():
        with torch.inference_mode():
            return model.forward_offline(mel, tokens, style, prev, known)

    poses = benchmark(window)
    assert poses.shape == (1, 34, model.cfg.pose_dim)
