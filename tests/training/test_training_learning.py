"""Does training learn? A short CPU run on the synthetic corpus, scored on its held-out clips.

The synthetic corpus (training/data/synth.py) makes gesture strokes follow the speech's
onsets by a known rule, so a model that learned from the audio has motion beats on
the audio's onsets: its beat consistency (BC) must beat the same model fed the same
audio with its blocks shuffled in time. Its motion must also be closer to real
motion in the FGD feature space than the mean pose held still.

How large can the BC margin be? BC saturates when beats are dense; on this corpus
the ground-truth motion itself scores ~0.03 (34-frame windows) to ~0.08 (whole
clips) higher with its own audio than with another clip's audio. The thresholds
below ask for most of that.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hop.training import metrics as M
from hop.training import train
from hop.training.evaluate import evaluate_standard, evaluate_streaming, shuffle_time
from hop.training.dataset import Corpus, WindowDataset
from hop.training.motion_ae import load_motion_ae, train_motion_ae

synth = pytest.importorskip("hop.training.data.synth")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    try:
        synth.make_synthetic_corpus(root, n_clips=30, seed=11, clip_seconds=8.0)
    except synth.EspeakUnavailable as exc:
        pytest.fail(f"the learning test needs espeak-ng (installed by setup.sh): {exc}")
    return root


def test_short_training_learns_timing_from_audio(corpus, tmp_path):
    torch.manual_seed(0)
    cfg = train.load_config(train.Path(train.__file__).parent / "configs" / "synthetic_cpu.toml", [
        f'data.train="{corpus}"', f'log.out_dir="{tmp_path / "run"}"', "log.progress=false", "log.plots=false",
        "train.epochs=8", "eval.every_epochs=0",
        # smaller than the shipped config so that the test stays short on two shared cores
        "model.use_reprogramming=false", "model.gru_hidden=96", "model.fusion_dim=96", "train.threads=1",
    ])
    trainer = train.Trainer(cfg)
    trainer.fit()
    assert trainer.global_step >= 90

    train_motion_ae(corpus, tmp_path / "ae.pt", epochs=15, stride=5, progress=False)
    extractor = load_motion_ae(tmp_path / "ae.pt", "ted_gesture")
    held_out = Corpus(corpus, mel=trainer.hcfg.mel, split="test")
    assert len(held_out) == 6
    windows = WindowDataset(held_out, 34, 10)
    model = trainer.model

    std = evaluate_standard(model, windows, extractor)
    std_shuffled = evaluate_standard(model, windows, extractor, audio_transform=shuffle_time)
    stream = evaluate_streaming(model, held_out, extractor)
    stream_shuffled = evaluate_streaming(model, held_out, extractor, audio_transform=shuffle_time)
    real = np.stack([windows[k]["poses"].numpy() for k in range(len(windows))])
    mean_pose_fgd = M.fgd(extractor.features(real), extractor.features(np.zeros_like(real)))
    report = (f"BC standard {std['bc']:.3f} vs shuffled audio {std_shuffled['bc']:.3f}; "
              f"streaming {stream['bc']:.3f} vs {stream_shuffled['bc']:.3f}; ground truth {std['bc_real']:.3f}; "
              f"FGD standard {std['fgd']:.3f}, streaming {stream['fgd']:.3f}, mean pose {mean_pose_fgd:.3f}")
    print(report)
    assert std["bc"] > std_shuffled["bc"] + 0.03, report
    assert stream["bc"] > stream_shuffled["bc"] + 0.03, report
    assert std["fgd"] < 0.25 * mean_pose_fgd, report
    assert stream["fgd"] < 0.25 * mean_pose_fgd, report
