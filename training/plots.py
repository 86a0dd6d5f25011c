"""Figures from a training run: loss curves, metric curves, skeleton animations.

    python -m hop.training.plots RUN_DIR      # writes RUN_DIR/losses.png and RUN_DIR/metrics.png
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import numpy as np

from hop.model.skeleton import TED_GESTURE, Skeleton


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        parsed = {}
        for k, v in row.items():
            try:
                parsed[k] = float(v)
            except (TypeError, ValueError):
                parsed[k] = math.nan
        out.append(parsed)
    return out


def _plot_columns(rows: list[dict], x: str, columns: list[str], path, title: str, log_y: bool = False):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [c for c in columns if any(not math.isnan(r.get(c, math.nan)) for r in rows)]
    if not rows or not columns:
        return None
    n = len(columns)
    cols = min(3, n)
    fig, axes = plt.subplots(-(-n // cols), cols, figsize=(4.2 * cols, 2.8 * -(-n // cols)), squeeze=False)
    xs = np.array([r.get(x, math.nan) for r in rows])
    for ax, c in zip(axes.flat, columns):
        ys = np.array([r.get(c, math.nan) for r in rows])
        ok = ~np.isnan(ys)
        ax.plot(xs[ok], ys[ok], "-", lw=1.2, marker="o" if ok.sum() < 30 else None, ms=3)
        ax.set_title(c, fontsize=9)
        ax.set_xlabel(x, fontsize=8)
        ax.grid(alpha=0.3)
        if log_y and (ys[ok] > 0).all():
            ax.set_yscale("log")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def plot_run(run_dir) -> list[Path]:
    """losses.png from train_log.csv and metrics.png from val_log.csv (whichever exist)."""
    run_dir = Path(run_dir)
    written = []
    if (run_dir / "train_log.csv").exists():
        rows = read_csv(run_dir / "train_log.csv")
        cols = [c for c in (rows[0] if rows else {}) if c.startswith("loss") or c.startswith("d_")] + ["samples_per_s"]
        p = _plot_columns(rows, "step", cols, run_dir / "losses.png", f"training losses ({run_dir.name})")
        written += [p] if p else []
    if (run_dir / "val_log.csv").exists():
        rows = read_csv(run_dir / "val_log.csv")
        cols = [c for c in (rows[0] if rows else {}) if c not in ("step", "epoch")]
        p = _plot_columns(rows, "epoch", cols, run_dir / "metrics.png", f"validation ({run_dir.name})")
        written += [p] if p else []
    return written


def _project(joints: np.ndarray) -> np.ndarray:
    """Front view: the viewer faces the subject; image x = -joint x, image y = joint y (up is -y)."""
    return np.stack([-joints[..., 0], joints[..., 1]], axis=-1)


def skeleton_gif(path, sequences: list[np.ndarray], titles: list[str], skeleton: Skeleton = TED_GESTURE,
                 fps: int = 15, size: int = 220) -> Path:
    """Side-by-side animation of (T, 3 * bones) direction sequences (mean included), one panel each."""
    from PIL import Image, ImageDraw

    joints = [skeleton.dir_vec_to_joints(np.asarray(s, dtype=np.float64)) for s in sequences]
    n = min(len(j) for j in joints)
    scale = size * 0.75
    frames = []
    for t in range(n):
        img = Image.new("RGB", (size * len(joints), size + 18), "white")
        draw = ImageDraw.Draw(img)
        for k, (seq, title) in enumerate(zip(joints, titles)):
            pts = _project(seq[t]) * scale
            ox, oy = k * size + size / 2, size * 0.72 + 18  # the spine's base; the head is ~0.6 above it
            for parent, child, _ in skeleton.bones:
                colour = (200, 40, 40) if "left" in skeleton.joint_names[child] else (40, 80, 200)
                a = (ox + pts[parent, 0], oy + pts[parent, 1])
                b = (ox + pts[child, 0], oy + pts[child, 1])
                draw.line([a, b], fill=colour, width=3)
                draw.ellipse([b[0] - 2, b[1] - 2, b[0] + 2, b[1] + 2], fill=(30, 30, 30))
            draw.text((k * size + 6, 3), f"{title}  {t / fps:5.2f}s", fill=(0, 0, 0))
            if k:
                draw.line([(k * size, 0), (k * size, size + 18)], fill=(180, 180, 180))
        frames.append(img)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return path


if __name__ == "__main__":
    for p in plot_run(sys.argv[1]):
        print(f"wrote {p}")
