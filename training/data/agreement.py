"""Two recordings of the same take on the TED Expressive skeleton: how well do they agree?

BEAT2's take 0_1_1 (SMPL-X rotations, 30 fps) and BEAT v1's (BVH, 15 fps) are the
same capture published twice. Converted independently (``expressive``), they should
give the same bone directions; where they do not, a joint map, an axis convention or
a rest pose is wrong.

1. Time alignment: both are resampled to ``fps`` and a motion signal, the summed
   angular speed of the body's bones (arms, torso, head; fingers left out), is
   cross-correlated over lags up to ``max_lag_s``. The peak, refined to a fraction
   of a frame by a parabola through its neighbours, is the lag: an event at time t
   in the first recording is at t + lag in the second.
2. Agreement: at every frame of the second recording's own rate, the first is
   sampled at t - lag (direction interpolation) and the angle between corresponding
   bones is taken. Figures are mean angles in degrees per body part, with medians
   and 90th percentiles, and per bone.

Command line (prints JSON)::

    python -m hop.training.data.agreement [SMPLX.npz BVH] [--map beat1] [--fps 30]

Without files it compares the take beside the project, ``../shared/data/beat2/
2_scott_0_1_1.npz`` with ``../shared/data/beat1/2_scott_0_1_1.bvh``.

What it finds on that take: the BVH is 0.042 s behind (cross-correlation peak 0.95;
the mean bone angle is smallest at the same lag); mean angle 7.9 deg torso/head,
8.0 / 7.6 deg left / right arm, 13.8 / 13.5 deg left / right fingers. On the body
most of it is a constant offset per bone (the generic SMPL-X rest skeleton is not
this speaker's, BEAT's rig carries its neck further forward): one constant rotation
per bone leaves about 4 deg. On the hands:

* wrist -> thumb_1 is 36 deg off but constant (1 deg in the palm's frame once one
  rotation is removed): BEAT's rig puts the thumb's CMC joint 2 cm from the wrist,
  the generic SMPL-X hand 3-4 cm out towards the index. A definition, not motion.
* the little finger's first phalanx is 25 deg off (was 40 deg): the SMPL-X rest hand
  is a guess. With the fingers of the rest hand parallel, BEAT2's rotations made
  the index and little fingers cross their neighbours (in the palm plane their
  first phalanges pointed 28 deg towards each other), which hands do not do; the
  rest fingers now follow their metacarpal rays, which also brought the fingers'
  mean from 15.9 / 15.6 to 13.8 / 13.5 deg. What remains is the little finger
  splayed 20-25 deg further in BEAT's solve than in BEAT2's fit.
* finger bends (knuckles, middle joints) agree in size without any SMPL-X mean hand
  pose added, and move together (flexion correlation about 0.5 per hand).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from hop.model.skeleton import TED_EXPRESSIVE

from .expressive import Expressive, body_parts, finger_flexion_deg, read_expressive, resample_dir_vec

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
DEFAULT_SMPLX = SHARED_DATA / "beat2" / "2_scott_0_1_1.npz"
DEFAULT_BVH = SHARED_DATA / "beat1" / "2_scott_0_1_1.bvh"


def _bones(dir_vec: np.ndarray) -> np.ndarray:
    return np.asarray(dir_vec, dtype=np.float64).reshape(len(dir_vec), -1, 3)


def motion_signal(dir_vec: np.ndarray, fps: float, bones: list[int] | None = None) -> np.ndarray:
    """(frames,) summed angular speed of the given bones (default: all but the fingers), rad/s.

    Frame i is the speed between frames i - 1 and i (frame 0 repeats frame 1's).
    """
    if bones is None:
        parts = body_parts()
        bones = parts["torso_head"] + parts["left_arm"] + parts["right_arm"]
    b = _bones(dir_vec)[:, bones]
    cos = np.clip(np.sum(b[1:] * b[:-1], axis=-1), -1.0, 1.0)
    speed = np.arccos(cos).sum(axis=1) * fps
    return np.concatenate([speed[:1], speed])


def find_lag(first: np.ndarray, second: np.ndarray, fps: float, max_lag_s: float = 5.0) -> tuple[float, float]:
    """Lag (s) of ``second`` behind ``first`` (same rate) by normalised cross-correlation, and the peak's value.

    The correlation at each lag is taken over the overlap only, each side standardised there.
    """
    first = np.asarray(first, dtype=np.float64)
    second = np.asarray(second, dtype=np.float64)
    max_lag = int(round(max_lag_s * fps))
    lags = np.arange(-max_lag, max_lag + 1)
    scores = np.full(lags.size, -np.inf)
    for k, lag in enumerate(lags):  # second[t + lag] ~ first[t]
        t0, t1 = max(0, -lag), min(len(first), len(second) - lag)
        if t1 - t0 < 2 * fps:  # under 2 s of overlap: not evidence
            continue
        a, b = first[t0:t1], second[t0 + lag:t1 + lag]
        a, b = a - a.mean(), b - b.mean()
        denom = np.sqrt((a * a).sum() * (b * b).sum())
        if denom > 0:
            scores[k] = float((a * b).sum() / denom)
    best = int(np.argmax(scores))
    if not np.isfinite(scores[best]):
        raise ValueError("the recordings do not overlap enough to align")
    shift = 0.0
    if 0 < best < len(lags) - 1 and np.isfinite(scores[best - 1]) and np.isfinite(scores[best + 1]):
        y0, y1, y2 = scores[best - 1], scores[best], scores[best + 1]
        curve = y0 - 2 * y1 + y2
        if curve < 0:
            shift = 0.5 * (y0 - y2) / curve
    return float((lags[best] + shift) / fps), float(scores[best])


def sample_dir_vec(dir_vec: np.ndarray, fps: float, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Directions at arbitrary times (s) by direction interpolation, and which times lie inside the clip."""
    frames = _bones(dir_vec)
    pos = np.asarray(times, dtype=np.float64) * fps
    inside = (pos >= 0) & (pos <= len(frames) - 1)
    pos = np.clip(pos, 0, len(frames) - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(frames) - 1)
    w = (pos - lo)[:, None, None]
    out = frames[lo] * (1 - w) + frames[hi] * w
    out /= np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
    return out.reshape(len(out), -1), inside


def bone_angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(frames, bones) angle between corresponding unit bones, degrees."""
    cos = np.clip(np.sum(_bones(a) * _bones(b), axis=-1), -1.0, 1.0)
    return np.degrees(np.arccos(cos))


def compare(first: Expressive, second: Expressive, fps: float = 30.0, max_lag_s: float = 5.0) -> dict:
    """Lag and per-part agreement of two TED Expressive recordings of the same performance."""
    sig_a = motion_signal(resample_dir_vec(first.dir_vec, first.fps, fps), fps)
    sig_b = motion_signal(resample_dir_vec(second.dir_vec, second.fps, fps), fps)
    lag_s, peak = find_lag(sig_a, sig_b, fps, max_lag_s)
    times = np.arange(second.n_frames) / second.fps
    sampled, inside = sample_dir_vec(first.dir_vec, first.fps, times - lag_s)
    angles = bone_angles_deg(sampled[inside], second.dir_vec[inside])
    unaligned, inside0 = sample_dir_vec(first.dir_vec, first.fps, times)
    angles0 = bone_angles_deg(unaligned[inside0], second.dir_vec[inside0])
    flex_a = finger_flexion_deg(sampled[inside])
    flex_b = finger_flexion_deg(second.dir_vec[inside])
    half = flex_a.shape[1] // 2
    names = TED_EXPRESSIVE.joint_names

    def corr(x, y):
        x, y = x - x.mean(axis=0), y - y.mean(axis=0)
        denom = np.sqrt((x * x).sum(axis=0) * (y * y).sum(axis=0))
        return np.where(denom > 0, (x * y).sum(axis=0) / np.maximum(denom, 1e-12), 0.0)

    flex_corr = corr(flex_a, flex_b)
    parts = {}
    for part, idx in body_parts().items():
        values = angles[:, idx]
        parts[part] = {"mean_deg": round(float(values.mean()), 2),
                       "median_deg": round(float(np.median(values)), 2),
                       "p90_deg": round(float(np.percentile(values, 90)), 2),
                       "mean_deg_unaligned": round(float(angles0[:, idx].mean()), 2)}
    return {
        "first": {"source": first.source, "frames": first.n_frames, "fps": first.fps, "notes": first.notes},
        "second": {"source": second.source, "frames": second.n_frames, "fps": second.fps, "notes": second.notes},
        "lag_s": round(lag_s, 4),
        "lag_frames_at_analysis_fps": round(lag_s * fps, 2),
        "analysis_fps": fps,
        "xcorr_peak": round(peak, 4),
        "compared_frames": int(inside.sum()),
        "compared_fps": second.fps,
        "parts": parts,
        "bones_mean_deg": {f"{names[p]}->{names[c]}": round(float(angles[:, i].mean()), 2)
                           for i, (p, c, _) in enumerate(TED_EXPRESSIVE.bones)},
        "finger_flexion": {
            side: {"std_deg_first": round(float(fa.std(axis=0).mean()), 2),
                   "std_deg_second": round(float(fb.std(axis=0).mean()), 2),
                   "mean_corr": round(float(c.mean()), 3)}
            for side, fa, fb, c in (("left", flex_a[:, :half], flex_b[:, :half], flex_corr[:half]),
                                    ("right", flex_a[:, half:], flex_b[:, half:], flex_corr[half:]))},
    }


def agreement(smplx_npz: str | Path = DEFAULT_SMPLX, bvh_path: str | Path = DEFAULT_BVH, bvh_map: str = "beat1",
              fps: float = 30.0, max_lag_s: float = 5.0) -> dict:
    """BEAT2 SMPL-X vs BEAT v1 BVH of one take: lag of the BVH behind the SMPL-X, agreement per part."""
    first = read_expressive(smplx_npz, "smplx", fps=None)
    second = read_expressive(bvh_path, bvh_map, fps=None)
    return compare(first, second, fps=fps, max_lag_s=max_lag_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hop.training.data.agreement",
                                     description="Agreement of a take's SMPL-X (BEAT2) and BVH (BEAT v1) motion "
                                                 "on the TED Expressive skeleton, as JSON")
    parser.add_argument("smplx", type=Path, nargs="?", default=DEFAULT_SMPLX)
    parser.add_argument("bvh", type=Path, nargs="?", default=DEFAULT_BVH)
    parser.add_argument("--map", default="beat1", help="the BVH's joint map (default beat1)")
    parser.add_argument("--fps", type=float, default=30.0, help="rate of the lag search (default 30)")
    parser.add_argument("--max-lag", type=float, default=5.0, help="largest lag searched, seconds (default 5)")
    args = parser.parse_args(argv)
    for path in (args.smplx, args.bvh):
        if not path.is_file():
            parser.error(f"{path} not found")
    print(json.dumps(agreement(args.smplx, args.bvh, args.map, args.fps, args.max_lag), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
