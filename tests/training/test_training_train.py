"""hop-train on a tiny hand-made corpus: config handling, logs, checkpoints, resume, Ctrl-C, mismatches."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hop.model import FrozenLM, load_checkpoint
from hop.model.checkpoint import read_checkpoint
from hop.model.skeleton import TED_EXPRESSIVE, TED_GESTURE
from hop.training import evaluate, train
from hop.training.data.clips import ClipWriter, make_clip

SR, FPS = 16000, 15

TINY_MODEL = {
    "causal": True, "use_lm": False, "use_reprogramming": True, "n_prototypes": 16, "reprog_heads": 2,
    "reprog_head_dim": 8, "audio_dim": 16, "semantic_dim": 8, "fusion_dim": 32, "gru_hidden": 32,
    "gru_layers": 1, "graph_channels": 8, "graph_dilations": [1, 2], "style_dim": 4, "dropout": 0.0,
}


def write_corpus(root: Path, skeleton=TED_GESTURE, n_clips: int = 4, frames: int = 60, seed: int = 0) -> Path:
    """Noise-burst 'speech' with two words a second; arms swing; clips alternate train/val."""
    rng = np.random.default_rng(seed)
    mean = skeleton.mean_pose() if skeleton.mean_dir_vec is not None else None
    with ClipWriter(root, skeleton=skeleton.name) as writer:
        for i in range(n_clips):
            n_samples = frames * SR // FPS
            audio = 0.01 * rng.standard_normal(n_samples)
            words = []
            for k, t in enumerate(np.arange(0.2, frames / FPS - 0.4, 0.5)):
                a = int(t * SR)
                audio[a:a + 3000] += 0.3 * rng.standard_normal(3000) * np.exp(-np.arange(3000) / 800)
                words.append(("hello" if k % 2 else "world", t, t + 0.3))
            base = mean if mean is not None else rng.normal(size=skeleton.pose_dim)
            t = np.arange(frames)[:, None] / FPS
            dir_vec = base + 0.2 * np.sin(2 * np.pi * (1 + 0.3 * i) * t + np.arange(skeleton.pose_dim) * 0.1)
            v = dir_vec.reshape(frames, -1, 3)
            dir_vec = (v / np.linalg.norm(v, axis=-1, keepdims=True)).reshape(frames, -1)
            writer.add(f"clip{i}", make_clip(dir_vec, audio.astype(np.float32), words), speaker=f"spk{i % 2}",
                       source={"split": "val" if i % 4 == 3 else "train"})
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def lm() -> FrozenLM:
    return FrozenLM()


def tiny_config(corpus: Path, out: Path, **sections) -> train.RunConfig:
    raw = {
        "data": {"train": str(corpus), "window": 34, "stride": 5},
        "model": dict(TINY_MODEL),
        "train": {"epochs": 2, "batch_size": 4, "lr": 1e-3, "gan_warmup_epochs": 1, "teacher_noise": 0.02,
                  "sampling_max": 0.5, "sampling_ramp_epochs": 1, "device": "cpu", "seed": 3, "threads": 1},
        "eval": {"every_epochs": 1, "max_windows": 8},
        "log": {"out_dir": str(out), "progress": False, "plots": True, "every_steps": 1},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return train.config_from_dict(raw)


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="learning_rate"):
        train.config_from_dict({"train": {"learning_rate": 1e-4}})
    with pytest.raises(ValueError, match="gru_size"):
        train.config_from_dict({"model": {"gru_size": 3}})
    path = tmp_path / "c.toml"
    path.write_text('[train]\nepochs = 3\n[model]\ncausal = true\n')
    cfg = train.load_config(path, ["train.lr=0.5", "model.causal=false", "log.out_dir=runs/x"])
    assert (cfg.train.epochs, cfg.train.lr, cfg.model["causal"], cfg.log.out_dir) == (3, 0.5, False, "runs/x")
    assert train.main(["--config", str(tmp_path / "missing.toml")]) == 2


def test_shipped_configs_parse():
    root = Path(train.__file__).parent / "configs"
    paper = train.load_config(root / "paper.toml")
    assert paper.train.lr == 1e-4 and paper.train.betas == (0.5, 0.999) and paper.train.epochs == 75
    assert paper.model["causal"] is False and paper.data.seed_frames == 4 and paper.data.window == 34
    cpu = train.load_config(root / "synthetic_cpu.toml")
    assert cpu.model["causal"] is True and cpu.train.device == "cpu"


def test_streaming_run_writes_logs_plots_and_self_describing_checkpoints(corpus, lm, tmp_path):
    out = tmp_path / "run"
    trainer = train.Trainer(tiny_config(corpus, out), lm=lm)
    metrics = trainer.fit()
    assert trainer.global_step == 2 * trainer.steps_per_epoch
    for name in ("train_log.csv", "val_log.csv", "last.pt", "best.pt", "inference.pt", "config.toml", "losses.png",
                 "metrics.png"):
        assert (out / name).is_file(), name
    small = read_checkpoint(out / "inference.pt")
    assert small["inference_only"] and "trainer" not in small and small["exported_from"] == "best.pt"
    assert (out / "inference.pt").stat().st_size < (out / "last.pt").stat().st_size / 2
    rows = list(csv.DictReader(open(out / "train_log.csv")))
    assert rows and all(float(r["samples_per_s"]) > 0 for r in rows)
    assert float(rows[-1]["loss_gan"]) > 0  # the adversarial term is on after the warm-up epoch
    val = list(csv.DictReader(open(out / "val_log.csv")))
    assert len(val) == 2 and float(val[-1]["val_huber"]) == pytest.approx(metrics["val_huber"])

    payload = read_checkpoint(out / "last.pt")
    assert payload["skeleton"] == "ted_gesture" and payload["fps"] == FPS and payload["mode"] == "streaming"
    assert np.allclose(payload["mean_dir_vec"], TED_GESTURE.mean_pose())
    assert payload["lm"]["fingerprint"] == lm.info.fingerprint
    assert payload["train_args"]["train"]["lr"] == 1e-3 and payload["metrics"]["val_huber"] > 0
    model, _ = load_checkpoint(out / "last.pt", lm=lm, skeleton="ted_gesture")
    assert model.cfg.fps == FPS and model.cfg.causal
    for a, b in zip(model.state_dict().values(), trainer.model.state_dict().values()):
        assert torch.equal(a.cpu(), b.cpu())


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_continues_exactly_and_ctrl_c_saves(corpus, lm, tmp_path, monkeypatch):
    full = train.Trainer(tiny_config(corpus, tmp_path / "full", train={"epochs": 2}), lm=lm)
    full.fit()

    # Ctrl-C in the middle of epoch 2: last.pt holds every step done so far.
    cut = full.steps_per_epoch + 1
    interrupted = train.Trainer(tiny_config(corpus, tmp_path / "cut", train={"epochs": 2}), lm=lm)
    real_step = train.Trainer.train_step

    def step_then_interrupt(self, batch):
        if self.global_step == cut:
            raise KeyboardInterrupt
        return real_step(self, batch)

    monkeypatch.setattr(train.Trainer, "train_step", step_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    monkeypatch.setattr(train.Trainer, "train_step", real_step)
    saved = read_checkpoint(tmp_path / "cut" / "last.pt")["trainer"]
    assert (saved["global_step"], saved["epoch"], saved["batches_done"]) == (cut, 1, 1)

    resumed = train.Trainer(tiny_config(corpus, tmp_path / "cut", train={"epochs": 2}),
                            resume=str(tmp_path / "cut" / "last.pt"), lm=lm)
    resumed.fit()
    assert resumed.global_step == full.global_step
    a, b = _weights(full.model), _weights(resumed.model)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), "resumed run diverged from the uninterrupted one"
    rows = list(csv.DictReader(open(tmp_path / "cut" / "train_log.csv")))
    assert int(rows[-1]["step"]) > cut  # the log continued in the same file


def test_resume_refuses_a_mismatched_checkpoint(corpus, lm, tmp_path):
    out = tmp_path / "run"
    train.Trainer(tiny_config(corpus, out, train={"epochs": 1}), lm=lm).fit()
    ckpt = str(out / "last.pt")

    other = write_corpus(tmp_path / "expressive", skeleton=TED_EXPRESSIVE, n_clips=2)
    with pytest.raises(SystemExit, match="skeleton 'ted_gesture', not 'ted_expressive'"):
        train.Trainer(tiny_config(other, tmp_path / "x"), resume=ckpt, lm=lm)

    with pytest.raises(SystemExit, match="gru_hidden: config 64 vs checkpoint 32"):
        train.Trainer(tiny_config(corpus, tmp_path / "y", model={"gru_hidden": 64}), resume=ckpt, lm=lm)

    # The same run resumed through the command line with another language model.
    tiny_lm = _tiny_bert(tmp_path / "tiny_bert")
    cfg = tmp_path / "other_lm.toml"
    cfg.write_text(train.dump_toml({**tiny_config(corpus, tmp_path / "z").to_dict(),
                                    "model": {**TINY_MODEL, "lm": str(tiny_lm)}}))
    with pytest.raises(SystemExit, match="language model"):
        train.Trainer(train.load_config(cfg), resume=ckpt)
    assert train.main(["--config", str(cfg), "--resume", ckpt]) == 2


def _tiny_bert(folder: Path) -> Path:
    """A small randomly initialised BERT saved like any local Hugging Face model (nothing downloaded)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from hop.model.lm import resolve_lm_path

    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(resolve_lm_path()), local_files_only=True).save_pretrained(folder)
    return folder


def test_offline_paper_mode_trains_and_evaluates(corpus, lm, tmp_path):
    out = tmp_path / "paper"
    cfg = tiny_config(corpus, out, model={"causal": False}, train={"epochs": 1}, log={"plots": False})
    trainer = train.Trainer(cfg, lm=lm)
    before = _weights(trainer.model)
    metrics = trainer.fit()
    assert not trainer.streaming and np.isfinite(metrics["val_huber"]) and np.isfinite(metrics["mae"])
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert read_checkpoint(out / "last.pt")["mode"] == "offline"


def test_streaming_mode_feeds_back_its_own_poses(corpus, lm, tmp_path):
    trainer = train.Trainer(tiny_config(corpus, tmp_path / "ss", train={"sampling_max": 1.0, "teacher_noise": 0.0,
                                                                          "sampling_ramp_epochs": 1e-9}), lm=lm)
    trainer.global_step = 10  # past the ramp: every frame after the first comes from the model itself
    batch = trainer._batch(trainer._epoch_batches(0)[0])
    torch.manual_seed(0)
    prev, known = trainer.pose_history(batch)
    teacher, _ = evaluate.teacher_history(batch["poses"], batch["before"], batch["has_before"])
    assert torch.equal(prev[:, 0], teacher[:, 0])
    assert not torch.allclose(prev[:, 1:], teacher[:, 1:])
    trainer.model.eval()
    with torch.no_grad():
        state = trainer.model.with_prev_pose(trainer.model.initial_state(len(prev)), batch["before"],
                                             batch["has_before"])
        torch.manual_seed(0)
        z, _, _ = trainer.model.style(batch["speaker"])
        free, _ = trainer.model.step(batch["mel"], batch["tokens"], z, state)
    assert torch.allclose(prev[:, 1:], free[:, :-1], atol=1e-5)  # exactly the free-running outputs


def test_hop_evaluate_cli(corpus, lm, tmp_path):
    out = tmp_path / "run"
    train.Trainer(tiny_config(corpus, out, train={"epochs": 1}, log={"plots": False}), lm=lm).fit()
    from hop.training.motion_ae import main as train_ae

    train_ae(["--data", str(corpus), "--out", str(tmp_path / "ae.pt"), "--epochs", "2", "--stride", "5"])
    report = tmp_path / "metrics.json"
    gif = tmp_path / "side_by_side.gif"
    rc = evaluate.main(["--checkpoint", str(out / "last.pt"), "--data", str(corpus), "--fgd-ae",
                        str(tmp_path / "ae.pt"), "--json", str(report), "--gif", str(gif), "--shuffled-audio"])
    assert rc == 0
    result = json.loads(report.read_text())
    for proto in ("standard", "streaming", "standard_shuffled_audio", "streaming_shuffled_audio"):
        assert {"fgd", "bc", "diversity", "mae"} <= set(result[proto]), proto
        assert result[proto]["fgd"] >= 0 and 0 <= result[proto]["bc"] <= 1
    from PIL import Image

    with Image.open(gif) as im:
        assert im.n_frames > 30 and im.size[0] > im.size[1]  # two panels side by side
    assert evaluate.main(["--checkpoint", str(tmp_path / "nope.pt"), "--data", str(corpus)]) == 2


def test_mixed_precision_needs_cuda_and_script_entry_point_runs(corpus, lm, tmp_path):
    import subprocess
    import sys

    with pytest.raises(SystemExit, match="needs CUDA"):
        train.Trainer(tiny_config(corpus, tmp_path / "amp", train={"amp": "bf16"}), lm=lm)
    script = Path(train.__file__)
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--resume" in done.stdout


def test_torchrun_two_processes_data_parallel(corpus, tmp_path):
    """DistributedDataParallel on CPU (gloo): two ranks split each epoch and train in lockstep."""
    import shutil
    import subprocess
    import sys

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.fail("torchrun is missing from the environment's bin folder")
    cfg = tmp_path / "ddp.toml"
    raw = tiny_config(corpus, tmp_path / "ddp").to_dict()
    raw["model"]["use_reprogramming"] = False  # no LM to load twice
    raw["train"]["epochs"] = 1
    raw["eval"]["every_epochs"] = 0
    cfg.write_text(train.dump_toml(raw))
    done = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", str(Path(train.__file__)),
                           "--config", str(cfg)], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "batch 4 x 2" in done.stdout
    state = read_checkpoint(tmp_path / "ddp" / "last.pt")["trainer"]
    assert state["epoch"] == 1 and state["global_step"] == 2  # 18 windows / (4 x 2) per step
