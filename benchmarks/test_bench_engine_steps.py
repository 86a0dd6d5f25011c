"""hop-bench's timed building blocks as pytest-benchmark cases: one streaming step, a batch of 16
streams, one window of the paper's offline mode (one plain run under --benchmark-disable)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hop.tools import bench
from hop.model import HopStream

SR = 16000


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_one_streaming_step(benchmark, streaming_model, speech_source):
    stepper = bench.StreamingStepper(streaming_model, 0.8 * speech_source(3.0))
    for _ in range(4):  # past the first-call costs (prototype cache)
        stepper()
    before = stepper.stream.frames_done
    poses = benchmark(stepper)
    assert poses.shape == (1, 1, streaming_model.cfg.pose_dim)
    assert np.isfinite(poses).all()
    assert stepper.stream.frames_done > before
    if not benchmark.enabled:
        assert stepper.stream.frames_done == before + 1, "one call must advance exactly one pose frame"


def test_batched_16_stream_step(benchmark, streaming_model, speech_source):
    speech = 0.8 * speech_source(3.0)
    audio = np.stack([np.roll(speech, 2000 * i) for i in range(16)])
    stepper = bench.StreamingStepper(streaming_model, audio, batch=16)
    single = bench.StreamingStepper(streaming_model, audio[5])
    for _ in range(4):
        stepper()
        single()
    poses = benchmark(stepper)
    assert poses.shape == (16, 1, streaming_model.cfg.pose_dim) and np.isfinite(poses).all()
    if not benchmark.enabled:
        # the streams are independent: row 5 of the batch is what a batch-1 stream makes of the same audio
        assert np.allclose(poses[5], single(), atol=1e-4)
        assert np.abs(poses[0] - poses[5]).max() > 1e-6, "different audio gave identical poses"


def test_one_windowed_34_frame_window(benchmark, paper_model, speech_source):
    runner = bench.WindowedRunner(paper_model, 0.8 * speech_source(8.0))
    assert runner.stride == 30 and runner.starts[:3] == [0, 30, 60]
    runner()  # first-call costs
    poses = benchmark(runner)
    assert poses.shape == (1, 34, paper_model.cfg.pose_dim) and torch.isfinite(poses).all()
    # the next window continues from this one: its 4 seed frames are this window's frames 30..33
    assert torch.equal(runner.seed_pose, poses[:, 30:34])
