"""Gesture metrics: FGD, beat consistency (BC), diversity and joint MAE.

All functions take plain numpy arrays so that they can be checked on inputs with
known answers (see tests/training/test_training_metrics.py).

* FGD: Frechet distance between Gaussians fitted to features of real and generated
  34-frame clips (features from training/motion_ae.py).
* BC: audio beats are onsets of the speech (spectral-flux onset detection, peak
  picking in the manner of librosa's defaults, written here with numpy); motion
  beats are local minima of the summed, per-pair normalised frame-to-frame change
  of the angles between bone pairs (TED: bones (3,4) (4,5) (6,7) (7,8), the two
  arms) that drop by at least 0.03 from a neighbour. BC = mean over audio beats of
  exp(-d^2 / (2 sigma^2)) with d the distance to the nearest motion beat, sigma 0.1 s.
* Diversity: mean L1 distance between the features of random pairs of generated clips.
* Joint MAE: mean absolute error of joint positions rebuilt from directions with
  the skeleton's bone lengths.
"""

from __future__ import annotations

import numpy as np

from hop.model.frontend import MelOptions, mel_filterbank
from hop.model.skeleton import Skeleton

TED_BEAT_PAIRS = ((3, 4), (4, 5), (6, 7), (7, 8))
BC_SIGMA = 0.1
MOTION_BEAT_THRESHOLD = 0.03


# --- FGD ------------------------------------------------------------------------------

def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need (N >= 2, D) features, got {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).

    Tr (S1 S2)^(1/2) is computed as Tr (S1^(1/2) S2 S1^(1/2))^(1/2), whose matrix is
    symmetric positive semi-definite: exact for singular covariances too (a constant
    set of clips, e.g. the mean-pose baseline) and free of complex round-off.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    diff = mu1 - mu2
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean
    return float(max(value, 0.0))


def fgd(real_features: np.ndarray, generated_features: np.ndarray) -> float:
    return frechet_distance(*gaussian_stats(real_features), *gaussian_stats(generated_features))


# --- Diversity ------------------------------------------------------------------------

def diversity(features: np.ndarray, n_pairs: int | None = None, seed: int = 0) -> float:
    """Mean L1 distance between random pairs of distinct clips (``n_pairs`` defaults to N)."""
    features = np.asarray(features, dtype=np.float64)
    n = features.shape[0]
    if n < 2:
        raise ValueError("diversity needs at least two clips")
    rng = np.random.default_rng(seed)
    n_pairs = n_pairs or n
    i = rng.integers(0, n, n_pairs)
    j = (i + rng.integers(1, n, n_pairs)) % n  # never the same clip
    return float(np.abs(features[i] - features[j]).sum(axis=1).mean())


# --- Joint MAE ------------------------------------------------------------------------

def joint_mae(generated: np.ndarray, real: np.ndarray, skeleton: Skeleton) -> float:
    """Mean |joint - joint| over (..., 3 * bones) direction vectors WITH the mean pose added."""
    gen = skeleton.dir_vec_to_joints(np.asarray(generated))
    ref = skeleton.dir_vec_to_joints(np.asarray(real))
    return float(np.abs(gen - ref).mean())


# --- Motion beats ---------------------------------------------------------------------

def bone_pair_angles(dir_vec: np.ndarray, pairs=TED_BEAT_PAIRS) -> np.ndarray:
    """(T, 3 * bones) directions -> (T, n_pairs) angles (radians) between the bones of each pair."""
    v = np.asarray(dir_vec, dtype=np.float64).reshape(len(dir_vec), -1, 3)
    v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-8)
    a = np.stack([v[:, i] for i, _ in pairs], axis=1)
    b = np.stack([v[:, j] for _, j in pairs], axis=1)
    return np.arccos(np.clip((a * b).sum(-1), -1.0, 1.0))


def motion_activity(dir_vec: np.ndarray, pairs=TED_BEAT_PAIRS) -> np.ndarray:
    """(T-1,) summed normalised angle change; entry k is the change between frames k and k+1.

    Each pair's change is divided by its largest change in the sequence, so every
    pair weighs the same whatever its range of motion.
    """
    angles = bone_pair_angles(dir_vec, pairs)
    change = np.abs(np.diff(angles, axis=0))
    peak = change.max(axis=0, initial=0.0)
    change = change / np.where(peak > 0, peak, 1.0)
    return change.sum(axis=1)


def motion_beats(dir_vec: np.ndarray, fps: float = 15.0, pairs=TED_BEAT_PAIRS,
                 threshold: float = MOTION_BEAT_THRESHOLD) -> np.ndarray:
    """Times (s) of motion beats: local minima of the activity that drop >= threshold from a neighbour.

    Entry k of the activity lies between frames k and k+1, at (k + 0.5) / fps. A flat
    minimum (equal neighbouring entries, e.g. an arm that stops exactly on a frame)
    counts once, at its centre.
    """
    v = motion_activity(dir_vec, pairs)
    beats, k, n = [], 1, len(v)
    while k < n - 1:
        if v[k] < v[k - 1]:
            j = k
            while j + 1 < n and abs(v[j + 1] - v[k]) <= 1e-9:
                j += 1
            if j + 1 < n and v[j + 1] > v[k] and max(v[k - 1] - v[k], v[j + 1] - v[k]) >= threshold:
                beats.append(((k + j) / 2 + 0.5) / fps)
            k = j + 1
        else:
            k += 1
    return np.asarray(beats)


# --- Audio beats (onsets) ---------------------------------------------------------------

ONSET_N_FFT = 512
ONSET_HOP = 160  # 10 ms at 16 kHz
ONSET_N_MELS = 64


def onset_strength(audio: np.ndarray, sample_rate: int = 16000, n_fft: int = ONSET_N_FFT,
                   hop: int = ONSET_HOP) -> tuple[np.ndarray, np.ndarray]:
    """Spectral flux of the log-Mel power spectrum: (envelope, frame times in s).

    Frames are centred on ``k * hop``; the flux at frame k is the mean over bands of
    the positive increase from frame k-1.
    """
    audio = np.asarray(audio, dtype=np.float64).reshape(-1)
    if len(audio) <= n_fft // 2:
        return np.zeros(0), np.zeros(0)
    padded = np.pad(audio, (n_fft // 2, n_fft // 2), mode="reflect")  # no false onset at the edges
    n_frames = 1 + (len(padded) - n_fft) // hop
    if n_frames < 2:
        return np.zeros(max(n_frames, 0)), np.arange(max(n_frames, 0)) * hop / sample_rate
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
    frames = padded[idx] * np.hanning(n_fft + 1)[:-1]
    power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
    opts = MelOptions(sample_rate=sample_rate, n_fft=n_fft, n_mels=ONSET_N_MELS)
    mel = power @ mel_filterbank(opts)
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    db = np.maximum(db, db.max() - 80.0)  # an 80 dB floor, as is usual for onset envelopes
    flux = np.maximum(0.0, np.diff(db, axis=0)).mean(axis=1)
    env = np.concatenate([[0.0], flux])
    return env, np.arange(n_frames) * hop / sample_rate


def audio_onsets(audio: np.ndarray, sample_rate: int = 16000, hop: int = ONSET_HOP, pre_max: float = 0.03,
                 post_max: float = 0.0, pre_avg: float = 0.10, post_avg: float = 0.10, delta: float = 0.07,
                 wait: float = 0.03) -> np.ndarray:
    """Onset times (s): peaks of the normalised onset envelope above a local mean + delta."""
    env, times = onset_strength(audio, sample_rate, hop=hop)
    if len(env) == 0 or env.max() <= env.min():
        return np.zeros(0)
    env = (env - env.min()) / (env.max() - env.min())
    per_s = sample_rate / hop
    pmax, qmax = int(pre_max * per_s), int(post_max * per_s) + 1
    pavg, qavg = int(pre_avg * per_s), int(post_avg * per_s) + 1
    gap = int(wait * per_s)
    onsets, last = [], -np.inf
    for k in range(len(env)):
        window = env[max(0, k - pmax):k + qmax]
        if env[k] < window.max() or env[k] <= 0:
            continue
        if env[k] < env[max(0, k - pavg):k + qavg].mean() + delta:
            continue
        if k - last <= gap:
            continue
        onsets.append(times[k])
        last = k
    return np.asarray(onsets)


# --- Beat consistency ---------------------------------------------------------------------

def beat_consistency(audio_beats: np.ndarray, motion_beat_times: np.ndarray, sigma: float = BC_SIGMA) -> float:
    """Mean over audio beats of exp(-min_m |t_a - t_m|^2 / (2 sigma^2)); NaN without audio beats."""
    audio_beats = np.asarray(audio_beats, dtype=np.float64).reshape(-1)
    motion_beat_times = np.asarray(motion_beat_times, dtype=np.float64).reshape(-1)
    if audio_beats.size == 0:
        return float("nan")
    if motion_beat_times.size == 0:
        return 0.0
    nearest = np.abs(audio_beats[:, None] - motion_beat_times[None, :]).min(axis=1)
    return float(np.exp(-nearest ** 2 / (2 * sigma ** 2)).mean())


def bc_over_windows(audio_windows, motion_windows, fps: float = 15.0, sample_rate: int = 16000,
                    sigma: float = BC_SIGMA, pairs=TED_BEAT_PAIRS) -> float:
    """BC pooled over clips: every audio beat of every clip counts once.

    ``motion_windows``: iterable of (T, 3 * bones) directions with the mean added.
    """
    scores = []
    for audio, motion in zip(audio_windows, motion_windows):
        onsets = audio_onsets(audio, sample_rate)
        # Beats detected in the first frame's span cannot have a motion beat before them.
        onsets = onsets[(onsets >= 1.0 / fps) & (onsets <= (len(motion) - 1) / fps)]
        if onsets.size == 0:
            continue
        beats = motion_beats(motion, fps, pairs)
        scores.append(np.exp(-(np.abs(onsets[:, None] - beats[None, :]).min(axis=1) if beats.size else
                               np.full(onsets.size, np.inf)) ** 2 / (2 * sigma ** 2)))
    if not scores:
        return float("nan")
    return float(np.concatenate(scores).mean())


# --- Motion statistics of the quality report (hop-evaluate --report) ------------------------

def beat_pairs(skeleton: Skeleton) -> tuple[tuple[int, int], ...]:
    """The bone pairs whose angles give motion beats: for each arm, (shoulder bone, upper arm) and
    (upper arm, forearm), found by joint names (TED Gesture: bones (3,4) (4,5) (6,7) (7,8))."""
    names = skeleton.joint_names
    by_child = {names[child]: i for i, (_, child, _) in enumerate(skeleton.bones)}
    try:
        return tuple((by_child[f"{side}_{a}"], by_child[f"{side}_{b}"])
                     for side in ("left", "right") for a, b in (("shoulder", "elbow"), ("elbow", "wrist")))
    except KeyError:
        return TED_BEAT_PAIRS


def _bone(skeleton: Skeleton, child: str) -> int:
    return next(i for i, (_, c, _) in enumerate(skeleton.bones) if skeleton.joint_names[c] == child)


def bone_angular_speed(dir_vec: np.ndarray, bones: list[int], fps: float) -> float:
    """Mean angular speed (degrees per second) of the given bones' directions."""
    v = np.asarray(dir_vec, dtype=np.float64).reshape(len(dir_vec), -1, 3)[:, bones]
    v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-8)
    if len(v) < 2:
        return 0.0
    cos = np.clip((v[1:] * v[:-1]).sum(-1), -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)).mean() * fps)


def rotation_spread_deg(dir_vec: np.ndarray, bones: list[int]) -> float:
    """How far a bone swings: mean angle (degrees) between its direction and its mean direction over
    the sequence, averaged over the given bones."""
    v = np.asarray(dir_vec, dtype=np.float64).reshape(len(dir_vec), -1, 3)[:, bones]
    v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-8)
    mean = v.mean(axis=0)
    mean = mean / np.maximum(np.linalg.norm(mean, axis=-1, keepdims=True), 1e-8)
    return float(np.degrees(np.arccos(np.clip((v * mean).sum(-1), -1.0, 1.0))).mean())


def mean_jerk(dir_vec: np.ndarray, skeleton: Skeleton, fps: float) -> float:
    """Mean magnitude of the third time derivative of the joint positions (bone-length units / s^3)."""
    joints = skeleton.dir_vec_to_joints(np.asarray(dir_vec, dtype=np.float64))
    if len(joints) < 4:
        return 0.0
    return float(np.linalg.norm(np.diff(joints, n=3, axis=0), axis=-1).mean() * fps ** 3)


def motion_statistics(dir_vec: np.ndarray, skeleton: Skeleton, fps: float) -> dict:
    """Directions WITH the mean -> jerk, wrist (forearm) and hand angular speed, upper-arm rotation
    spread and (skeletons with fingers) finger flexion range."""
    upper = [_bone(skeleton, f"{s}_elbow") for s in ("left", "right")]
    fore = [_bone(skeleton, f"{s}_wrist") for s in ("left", "right")]
    stats = {
        "jerk": mean_jerk(dir_vec, skeleton, fps),
        "wrist_angular_speed_deg_s": bone_angular_speed(dir_vec, fore, fps),
        "upper_arm_spread_deg": rotation_spread_deg(dir_vec, upper),
    }
    if "left_middle_1" in skeleton.joint_names:
        from hop.training.data.expressive import finger_flexion_deg

        hands = [_bone(skeleton, f"{s}_middle_1") for s in ("left", "right")]
        stats["hand_angular_speed_deg_s"] = bone_angular_speed(dir_vec, hands, fps)
        flex = finger_flexion_deg(dir_vec)
        stats["finger_flexion_range_deg"] = float((np.percentile(flex, 95, axis=0)
                                                   - np.percentile(flex, 5, axis=0)).mean())
    return stats
