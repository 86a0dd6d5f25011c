"""The FGD feature extractor: a pose-sequence autoencoder trained on the same data.

Encoder: 1-D convolutions over time on (window, pose_dim) normalised poses (dir_vec
minus the corpus mean), then an MLP down to ``feature_dim`` numbers, the features
FGD and Diversity are computed on. Decoder: an MLP back to the whole window. It is
trained to reconstruct (smooth L1), so features keep what distinguishes motions.

    hop-train-fgd-ae --data CORPUS [--val CORPUS] --out fgd_ae.pt [--epochs 30]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FORMAT = "hop-live-fgd-ae"
VERSION = 1


class MotionAutoencoder(nn.Module):
    def __init__(self, pose_dim: int, window: int = 34, feature_dim: int = 32, channels: int = 64):
        super().__init__()
        self.pose_dim, self.window, self.feature_dim = pose_dim, window, feature_dim
        self.conv = nn.Sequential(
            nn.Conv1d(pose_dim, channels, 3, padding=1), nn.BatchNorm1d(channels), nn.LeakyReLU(0.2),
            nn.Conv1d(channels, channels, 4, stride=2, padding=1), nn.BatchNorm1d(channels), nn.LeakyReLU(0.2),
            nn.Conv1d(channels, channels, 4, stride=2, padding=1), nn.BatchNorm1d(channels), nn.LeakyReLU(0.2),
        )
        with torch.no_grad():
            flat = self.conv(torch.zeros(2, pose_dim, window)).flatten(1).shape[1]
        self.to_feature = nn.Sequential(nn.Linear(flat, 256), nn.LeakyReLU(0.2), nn.Linear(256, feature_dim))
        self.decoder = nn.Sequential(nn.Linear(feature_dim, 256), nn.LeakyReLU(0.2), nn.Linear(256, 512),
                                     nn.LeakyReLU(0.2), nn.Linear(512, window * pose_dim))

    def encode(self, poses: torch.Tensor) -> torch.Tensor:
        """(B, window, pose_dim) -> (B, feature_dim)."""
        if poses.shape[1:] != (self.window, self.pose_dim):
            raise ValueError(f"the FGD autoencoder reads ({self.window}, {self.pose_dim}) windows, "
                             f"got {tuple(poses.shape[1:])}")
        return self.to_feature(self.conv(poses.transpose(1, 2)).flatten(1))

    def forward(self, poses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.encode(poses)
        return self.decoder(feat).view(-1, self.window, self.pose_dim), feat


class FeatureExtractor:
    """A trained autoencoder in eval mode plus what it was trained on."""

    def __init__(self, model: MotionAutoencoder, skeleton: str, mean_dir_vec):
        self.model = model.eval()
        self.skeleton = skeleton
        self.mean = np.asarray(mean_dir_vec, dtype=np.float32)

    @torch.no_grad()
    def features(self, poses_minus_mean: np.ndarray, batch: int = 256) -> np.ndarray:
        """(N, window, pose_dim) normalised poses -> (N, feature_dim) float64."""
        x = torch.as_tensor(np.asarray(poses_minus_mean, dtype=np.float32))
        out = [self.model.encode(x[k:k + batch]) for k in range(0, len(x), batch)]
        return torch.cat(out).double().numpy()


def save_motion_ae(path, model: MotionAutoencoder, skeleton: str, mean_dir_vec, **extra) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, "skeleton": skeleton, "pose_dim": model.pose_dim,
               "window": model.window, "feature_dim": model.feature_dim,
               "mean_dir_vec": [float(v) for v in mean_dir_vec], "model": model.state_dict(), **extra}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_motion_ae(path, skeleton: str | None = None) -> FeatureExtractor:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FGD autoencoder {str(path)!r} not found; train one with hop-train-fgd-ae")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not an FGD autoencoder written by hop-train-fgd-ae")
    if skeleton is not None and payload["skeleton"] != skeleton:
        raise ValueError(f"FGD autoencoder {str(path)!r} was trained on skeleton {payload['skeleton']!r}, "
                         f"the motion to score is {skeleton!r}")
    model = MotionAutoencoder(payload["pose_dim"], payload["window"], payload["feature_dim"])
    model.load_state_dict(payload["model"])
    return FeatureExtractor(model, payload["skeleton"], payload["mean_dir_vec"])


def _windows(corpus_dir, window: int, stride: int, clip_ids=None, split: str = "", kind: str = ""):
    from hop.training.data.clips import read_manifest
    from hop.training.dataset import Corpus

    if kind:  # only clips whose manifest source records this kind (e.g. "paired": real motion only)
        clip_ids = [e.id for e in read_manifest(corpus_dir).clips if e.source.get("kind") == kind
                    and (clip_ids is None or e.id in clip_ids)]
    corpus = Corpus(corpus_dir, clip_ids=clip_ids, load_audio=False, split=split)
    poses = [c.poses[s:s + window] for c in corpus.clips for s in range(0, len(c.poses) - window + 1, stride)]
    if not poses:
        raise ValueError(f"{corpus_dir}: no clip has {window} frames")
    return np.stack(poses), corpus


def train_motion_ae(data, out, val=None, epochs: int = 30, batch_size: int = 128, lr: float = 1e-3,
                    window: int = 34, stride: int = 10, feature_dim: int = 32, seed: int = 0,
                    device: str = "cpu", progress: bool = True, split: str = "", kind: str = "") -> dict:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train_x, corpus = _windows(data, window, stride, split=split, kind=kind)
    val_x = _windows(val, window, stride)[0] if val else None
    model = MotionAutoencoder(train_x.shape[2], window, feature_dim).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x_all = torch.from_numpy(train_x).to(device)
    history = []
    t0 = time.time()
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(len(x_all))
        total = 0.0
        for k in range(0, len(order), batch_size):
            idx = order[k:k + batch_size]
            if len(idx) < 2:
                continue
            x = x_all[idx]
            recon, _ = model(x)
            loss = F.smooth_l1_loss(recon, x, beta=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        row = {"epoch": epoch + 1, "train_loss": total / len(order)}
        if val_x is not None:
            model.eval()
            with torch.no_grad():
                xv = torch.from_numpy(val_x).to(device)
                row["val_loss"] = F.smooth_l1_loss(model(xv)[0], xv, beta=0.1).item()
        history.append(row)
        if progress:
            print(f"fgd-ae epoch {epoch + 1}/{epochs} " + " ".join(f"{k}={v:.5f}" for k, v in row.items()
                                                                   if k != "epoch"), flush=True)
    model = model.cpu().eval()
    save_motion_ae(out, model, corpus.manifest.skeleton, corpus.mean,
                   train_args={"data": str(data), "val": str(val) if val else None, "epochs": epochs,
                               "batch_size": batch_size, "lr": lr, "stride": stride, "seed": seed,
                               "split": split, "kind": kind, "windows": int(len(train_x))},
                   history=history, seconds=time.time() - t0)
    return history[-1] if history else {}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="hop-train-fgd-ae", description="Train the FGD motion autoencoder on a corpus.")
    p.add_argument("--data", required=True, type=Path, help="hop-clips corpus to train on (the training split)")
    p.add_argument("--val", type=Path, help="optional held-out corpus for a reconstruction loss")
    p.add_argument("--out", required=True, type=Path, help="where to write the autoencoder (.pt)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--window", type=int, default=34)
    p.add_argument("--stride", type=int, default=10)
    p.add_argument("--feature-dim", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="", help="only clips whose manifest records this split (e.g. train)")
    p.add_argument("--kind", default="", help="only clips of this kind (hop-make-corpus: paired = real speech "
                                              "and real motion, augmented, constructed)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args(argv)
    last = train_motion_ae(a.data, a.out, a.val, a.epochs, a.batch_size, a.lr, a.window, a.stride,
                           a.feature_dim, a.seed, a.device, split=a.split, kind=a.kind)
    print(f"wrote {a.out} ({last})")


if __name__ == "__main__":
    main()
