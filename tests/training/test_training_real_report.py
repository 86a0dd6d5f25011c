"""A short training run on the real-speech corpus (its loss falls) and hop-evaluate --report on it."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from hop.training import evaluate, train
from hop.training.motion_ae import train_motion_ae

SMALL_MODEL = {
    "causal": True, "use_lm": False, "use_reprogramming": False, "audio_dim": 16, "semantic_dim": 8,
    "fusion_dim": 48, "gru_hidden": 48, "gru_layers": 1, "graph_channels": 8, "graph_dilations": [1, 2],
    "style_dim": 4, "dropout": 0.0,
}


@pytest.fixture(scope="module")
def real_run(real_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("real_run")
    cfg = train.config_from_dict({
        "data": {"train": str(real_corpus / "train"), "window": 34, "stride": 8},
        "model": SMALL_MODEL,
        "train": {"epochs": 100, "max_steps": 40, "batch_size": 16, "lr": 3e-3, "gan_weight": 1.0,
                  "gan_warmup_epochs": 0.5, "gan_ramp_epochs": 0.5, "r1_weight": 1.0, "velocity_weight": 100.0,
                  "sampling_max": 0.0, "threads": 1, "device": "cpu"},
        "eval": {"every_epochs": 0, "max_windows": 16},
        "log": {"out_dir": str(out), "progress": False, "tensorboard": False, "plots": False, "every_steps": 1},
    })
    train.Trainer(cfg).fit()
    return out


def test_short_training_on_real_data_loss_falls(real_run):
    rows = list(csv.DictReader(open(real_run / "train_log.csv")))
    huber = np.array([float(r["loss_huber"]) for r in rows])
    assert len(huber) >= 30
    assert huber[-8:].mean() < 0.8 * huber[:8].mean(), huber
    # the R1 penalty and the ramped adversarial weight ran
    assert max(float(r["d_r1"]) for r in rows) > 0
    gan_w = [float(r["gan_w"]) for r in rows]
    assert gan_w[0] == 0 and 0 < max(gan_w) <= 1.0


def test_report_on_a_tiny_run(real_run, real_corpus, tmp_path):
    ae = tmp_path / "fgd_ae.pt"
    train_motion_ae(real_corpus / "train", ae, epochs=2, stride=8, progress=False, split="train", kind="paired")
    report_dir = tmp_path / "report"
    assert evaluate.main(["--checkpoint", str(real_run / "inference.pt"), "--data", str(real_corpus),
                          "--report", str(report_dir), "--fgd-ae", str(ae), "--gif-seconds", "1",
                          "--threads", "1"]) == 0
    report = json.loads((report_dir / "report.json").read_text())
    assert set(report["clips"]) == {"2_scott_0_1_1_heldout", "1_fufu_0_7_7_heldout"}
    rows = report["rows"]
    assert set(rows) == {"ground_truth", "model", "shuffled_audio", "mean_pose"}
    for key in ("fgd", "bc", "diversity", "jerk", "wrist_angular_speed_deg_s", "finger_flexion_range_deg",
                "upper_arm_spread_deg"):
        assert all(np.isfinite(rows[r][key]) for r in rows), key
    assert rows["ground_truth"]["fgd"] == pytest.approx(0.0, abs=1e-6)
    assert rows["mean_pose"]["jerk"] == 0.0 and rows["mean_pose"]["diversity"] == 0.0
    assert rows["ground_truth"]["upper_arm_spread_deg"] > 3.0
    assert "all_met" in report["targets"]
    assert (report_dir / "report.gif").stat().st_size > 1000
    # scored as a deployment with int8 LM weights runs it (this small model has no LM: refused cleanly or a no-op)
    assert evaluate.main(["--checkpoint", str(real_run / "inference.pt"), "--data", str(real_corpus),
                          "--report", str(tmp_path / "int8"), "--fgd-ae", str(ae), "--gif-seconds", "0",
                          "--threads", "1", "--lm-weights", "int8"]) == 0
    assert json.loads((tmp_path / "int8" / "report.json").read_text())["lm_weights"] == "int8"
