"""The real-speech corpus on the TED Expressive skeleton (issue 15, item 2).

    hop-make-corpus OUT [--shared ../shared/data] [--fps 15] [--holdout 0.2] [--seed 0]
    python -m hop.training.data.real_corpus OUT ...

reads the real recordings beside the project (``../shared/data``, never copied into
the repository) and writes two hop-clips corpora and a summary:

    OUT/train/      clips the model may learn from (manifest split "train" or "val")
    OUT/heldout/    the LAST ``holdout`` (20 %) of every paired take, for evaluation only
    OUT/corpus.json what every clip is made of, seconds by kind, the frame boundaries

What is real and what is constructed (every clip's manifest ``source`` says it again:
``kind``, ``audio_real``, ``motion_real``, ``motion_warped``, ``audio_transform``):

* ``paired`` (real speech + real motion of the same person at the same time): BEAT2
  take 2_scott_0_1_1 (SMPL-X, or BEAT v1's BVH of the same take with ``--beat-motion
  beat1``) with its wav and TextGrid words, and take 1_fufu_0_7_7 (Mixamo BVH + wav,
  no word timings). Frames [0, 0.8 n) of each take go to ``train``; frames
  [0.8 n, n) to ``heldout`` only. Nothing else is ever taken from the held-out part.
* ``augmented`` (real motion, real speech re-processed): the training part of each
  paired take through sox: tempo 0.9 / 1.1 (the motion is time-stretched by the same
  factor), pitch -300 / +300 cents, room reverb, white noise at 15-20 dB SNR.
* ``constructed`` (real speech, real motion of ANOTHER recording, time-warped): speech
  without motion (LJSpeech, BEAT2 2_scott_0_2_2 with its TextGrid, 2_scott_0_111_111)
  cut into phrases of at most ``max_phrase_s``; for each, a motion phrase is cut at
  random from a paired take's TRAINING part and warped in time, piecewise linearly
  (local tempo 0.7x-1.4x), so that its strokes (each stroke's apex: the wrist-speed
  minimum that ends a wrist-speed peak) land
  on the speech's stressed syllables (primary-stress vowels of the TextGrid's phones
  tier, at their energy maximum) or, without a TextGrid, on its prosodic peaks
  (peaks of the smoothed energy envelope). The constructed pairs of 2_scott_0_111_111
  are the ``val`` split (speech the model never trains on; checkpoint selection only).

The mean pose of both corpora is the training split's mean.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.io import wavfile
from scipy.signal import find_peaks

from hop.model.skeleton import TED_EXPRESSIVE

from hop.engine.audio_file import load_audio_16k_mono
from .clips import POSE_FPS, SAMPLE_RATE, ClipWriter, make_clip, rewrite_manifest
from .expressive import read_expressive
from .textgrid import read_textgrid
from .windows import renormalise

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SKELETON = TED_EXPRESSIVE
LICENCE = ("BEAT / BEAT2 (PantoMatrix): CC BY-NC 4.0, research and non-commercial use only; "
           "Mixamo take 1_fufu_0_7_7: published under the BEAT notice (CC BY-NC 4.0), research use only; "
           "LJSpeech: public domain")


@dataclass
class Take:
    name: str
    speaker: str
    dir_vec: np.ndarray  # (frames, 126) at fps
    audio: np.ndarray  # 16 kHz
    words: list  # (word, start, end) seconds from frame 0
    motion_file: str
    audio_file: str
    n_train: int  # frames [0, n_train) are the training part

    @property
    def n_frames(self) -> int:
        return int(len(self.dir_vec))


# --- reading the paired takes ---------------------------------------------------------------

def _words(textgrid: Path) -> list:
    if not textgrid.is_file():
        return []
    tiers = read_textgrid(textgrid)
    return [(i.text, i.start, i.end) for i in tiers["words"].intervals if i.text.strip()] if "words" in tiers else []


def paired_takes(shared: Path, fps: float, holdout: float, beat_motion: str = "smplx") -> list[Take]:
    beat2, mixamo = shared / "beat2", shared / "mixamo"
    if beat_motion == "beat1":
        motion_file, exp = shared / "beat1" / "2_scott_0_1_1.bvh", None
        exp = read_expressive(motion_file, "beat1", fps=fps, source_fps=15.0)
    else:
        motion_file = beat2 / "2_scott_0_1_1.npz"
        exp = read_expressive(motion_file, "smplx", fps=fps)
    sources = [("2_scott_0_1_1", "scott", exp.dir_vec, motion_file, beat2 / "2_scott_0_1_1.wav",
                _words(beat2 / "2_scott_0_1_1.TextGrid"))]
    fufu = read_expressive(mixamo / "1_fufu_0_7_7_full.bvh", "mixamo", fps=fps)
    sources.append(("1_fufu_0_7_7", "fufu", fufu.dir_vec, mixamo / "1_fufu_0_7_7_full.bvh",
                    mixamo / "1_fufu_0_7_7.wav", []))
    takes = []
    for name, speaker, dir_vec, mfile, afile, words in sources:
        audio = load_audio_16k_mono(afile)
        n = min(len(dir_vec), int(len(audio) * fps // SAMPLE_RATE))  # motion and speech both cover these frames
        takes.append(Take(name, speaker, dir_vec[:n], audio[:int(round(n * SAMPLE_RATE / fps))], words,
                          str(mfile), str(afile), int(np.floor((1.0 - holdout) * n))))
    return takes


def _cut(take: Take, a: int, b: int, fps: float):
    """Frames [a, b) of a take with its audio and words, times relative to frame a."""
    s0, s1 = int(round(a * SAMPLE_RATE / fps)), int(round(b * SAMPLE_RATE / fps))
    t0, t1 = a / fps, b / fps
    words = [(w, s - t0, e - t0) for w, s, e in take.words if s >= t0 and e <= t1]
    return take.dir_vec[a:b], take.audio[s0:s1], words


# --- strokes, prosodic peaks and time warping ---------------------------------------------

def wrist_speed(dir_vec: np.ndarray, fps: float) -> np.ndarray:
    """(frames,) summed speed of the two wrists (skeleton units per second), frame 0 repeats frame 1."""
    joints = SKELETON.dir_vec_to_joints(np.asarray(dir_vec, dtype=np.float64))
    wrists = [SKELETON.joint_names.index("left_wrist"), SKELETON.joint_names.index("right_wrist")]
    v = np.linalg.norm(np.diff(joints[:, wrists], axis=0), axis=-1).sum(axis=1) * fps
    return np.concatenate([v[:1], v]) if len(v) else np.zeros(len(dir_vec))


def motion_strokes(dir_vec: np.ndarray, fps: float, min_gap_s: float = 0.3, at: str = "apex") -> np.ndarray:
    """Stroke times (s) from the (lightly smoothed) summed wrist speed: its peaks (``at="peak"``,
    the stroke's fastest moment) or, by default, each stroke's apex, the speed minimum that ends
    it (within 0.6 s after the peak): where the hand arrives, the moment that lands on the
    stressed syllable in co-speech gesture and the motion beat of the BC metric."""
    speed = wrist_speed(dir_vec, fps)
    if len(speed) < 3:
        return np.zeros(0)
    speed = np.convolve(speed, np.ones(3) / 3, mode="same")
    peaks, _ = find_peaks(speed, distance=max(1, int(round(min_gap_s * fps))),
                          prominence=0.25 * float(np.std(speed)) + 1e-9)
    if at == "peak":
        return peaks / fps
    apexes = []
    for p in peaks:
        seg = speed[p:min(len(speed), p + int(0.6 * fps) + 1)]
        k = next((i for i in range(1, len(seg) - 1) if seg[i] <= seg[i - 1] and seg[i] <= seg[i + 1]), None)
        if k is not None and (not apexes or p + k > apexes[-1]):
            apexes.append(p + k)
    return np.asarray(apexes, dtype=np.float64) / fps


def energy_envelope(audio: np.ndarray, hop_s: float = 0.01, win_s: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed frame energy in dB and the frames' centre times."""
    hop, win = int(hop_s * SAMPLE_RATE), int(win_s * SAMPLE_RATE)
    audio = np.asarray(audio, dtype=np.float64)
    n = max(0, 1 + (len(audio) - win) // hop)
    if n == 0:
        return np.zeros(0), np.zeros(0)
    idx = np.arange(win)[None, :] + hop * np.arange(n)[:, None]
    db = 10 * np.log10(np.mean(audio[idx] ** 2, axis=1) + 1e-10)
    db = np.convolve(db, np.ones(5) / 5, mode="same")
    return db, (np.arange(n) * hop + win / 2) / SAMPLE_RATE


def prosodic_peaks(audio: np.ndarray, min_gap_s: float = 0.3) -> np.ndarray:
    """Times (s) of energy peaks in speech (within 30 dB of the loudest frame, 3 dB prominent)."""
    db, times = energy_envelope(audio)
    if len(db) < 3:
        return np.zeros(0)
    peaks, _ = find_peaks(db, distance=int(min_gap_s / 0.01), prominence=3.0, height=db.max() - 30.0)
    return times[peaks]


def stressed_syllables(audio: np.ndarray, phones: list, t0: float = 0.0, t1: float = np.inf) -> np.ndarray:
    """Times (s, relative to t0) of primary-stress vowels (ARPAbet phones ending in 1) in [t0, t1),
    each at its energy maximum."""
    db, times = energy_envelope(audio)
    out = []
    for label, start, end in phones:
        if not label.endswith("1") or start < t0 or end > t1:
            continue
        a, b = start - t0, end - t0
        sel = (times >= a) & (times < b)
        out.append(float(times[sel][np.argmax(db[sel])]) if sel.any() else (a + b) / 2)
    return np.asarray(out)


def align_strokes(targets: np.ndarray, strokes: np.ndarray, duration: float, lo: float = 0.7, hi: float = 1.4,
                  min_gap: float = 0.15) -> list[tuple[float, float]]:
    """Monotone anchors (output time, source time) from (0, 0) to (duration, ...): each target is
    paired with the next unused stroke whose local tempo (source / output time since the last
    anchor) lies in [lo, hi], closest to 1; targets without one are skipped."""
    anchors = [(0.0, 0.0)]
    j = 0
    for p in np.sort(np.asarray(targets, dtype=np.float64)):
        last_o, last_s = anchors[-1]
        d_out = p - last_o
        if d_out < min_gap or p > duration - min_gap:
            continue
        best, best_cost = None, np.inf
        for k in range(j, len(strokes)):
            r = (strokes[k] - last_s) / d_out
            if r <= 0:
                continue
            if r > hi:
                break
            if r >= lo and abs(np.log(r)) < best_cost:
                best, best_cost = k, abs(np.log(r))
        if best is not None:
            anchors.append((float(p), float(strokes[best])))
            j = best + 1
    last_o, last_s = anchors[-1]
    anchors.append((duration, last_s + (duration - last_o)))
    return anchors


def warp_motion(dir_vec: np.ndarray, fps: float, anchors: list[tuple[float, float]], n_out: int) -> np.ndarray:
    """Output frame i shows the source at time interp(i / fps, anchors); direction interpolation."""
    ao, as_ = np.array([a for a, _ in anchors]), np.array([s for _, s in anchors])
    pos = np.interp(np.arange(n_out) / fps, ao, as_) * fps
    pos = np.clip(pos, 0, len(dir_vec) - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(dir_vec) - 1)
    w = (pos - lo)[:, None]
    return renormalise(dir_vec[lo] * (1 - w) + dir_vec[hi] * w).astype(np.float32)


# --- audio augmentation -------------------------------------------------------------------

def sox_effect(audio: np.ndarray, effects: list[str]) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.wav", Path(tmp) / "out.wav"
        wavfile.write(src, SAMPLE_RATE, np.asarray(audio, dtype=np.float32))
        subprocess.run(["sox", "-q", str(src), "-b", "32", "-e", "floating-point", str(dst), *effects],
                       check=True, capture_output=True)
        rate, out = wavfile.read(dst)
    out = np.asarray(out, dtype=np.float32)
    return out.mean(axis=1) if out.ndim == 2 else out


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    power = float(np.mean(np.asarray(audio, dtype=np.float64) ** 2)) + 1e-12
    noise = rng.standard_normal(len(audio)) * np.sqrt(power / 10 ** (snr_db / 10))
    return (audio + noise).astype(np.float32)


AUGMENTATIONS = (  # (name, sox effects, tempo factor, noise SNR dB or None)
    ("tempo0.9_noise20", ["tempo", "-s", "0.9"], 0.9, 20.0),
    ("tempo1.1_reverb", ["tempo", "-s", "1.1", "reverb", "40", "50", "60"], 1.1, None),
    ("pitch+300_reverb", ["pitch", "300", "reverb", "60", "50", "90"], 1.0, None),
    ("pitch-300_noise15", ["pitch", "-300"], 1.0, 15.0),
)


# --- speech without motion ----------------------------------------------------------------

@dataclass
class Speech:
    name: str
    audio: np.ndarray
    words: list
    phones: list
    file: str
    split: str


def speech_without_motion(shared: Path, max_lj: int = 0) -> list[Speech]:
    out = []
    lj = sorted((shared / "speech" / "ljspeech").glob("*.wav"))
    for f in lj[:max_lj] if max_lj else lj:
        out.append(Speech(f"ljspeech_{f.stem}", load_audio_16k_mono(f), [], [], str(f), "train"))
    for take, split in (("2_scott_0_2_2", "train"), ("2_scott_0_111_111", "val")):
        f = shared / "beat2" / f"{take}.wav"
        if not f.is_file():
            continue
        words, phones = [], []
        tg = f.with_suffix(".TextGrid")
        if tg.is_file():
            tiers = read_textgrid(tg)
            words = [(i.text, i.start, i.end) for i in tiers["words"].intervals if i.text.strip()]
            phones = [(i.text, i.start, i.end) for i in tiers.get("phones", tiers["words"]).intervals
                      if i.text.strip()] if "phones" in tiers else []
        out.append(Speech(take, load_audio_16k_mono(f), words, phones, str(f), split))
    return out


def phrases(audio: np.ndarray, max_s: float) -> list[tuple[int, int]]:
    """Sample ranges of at most max_s seconds, cut at the quietest 10 ms within 1.5 s before each limit."""
    n, limit = len(audio), int(max_s * SAMPLE_RATE)
    db, times = energy_envelope(audio)
    cuts, a = [], 0
    while n - a > limit:
        lo_t, hi_t = (a + limit) / SAMPLE_RATE - 1.5, (a + limit) / SAMPLE_RATE
        sel = np.where((times >= lo_t) & (times < hi_t))[0]
        b = int(times[sel[np.argmin(db[sel])]] * SAMPLE_RATE) if len(sel) else a + limit
        cuts.append((a, b))
        a = b
    cuts.append((a, n))
    return [(a, b) for a, b in cuts if b - a >= int(2.0 * SAMPLE_RATE)]


# --- the builder ----------------------------------------------------------------------------

def build(out: Path, shared: Path = SHARED_DATA, fps: float = POSE_FPS, holdout: float = 0.2, seed: int = 0,
          max_phrase_s: float = 10.0, max_lj: int = 0, augment: bool = True,
          beat_motion: str = "smplx", progress: bool = True) -> dict:
    out = Path(out)
    if not (shared / "beat2").is_dir():
        raise FileNotFoundError(f"real data not found at {shared} (see its README): nothing to build from")
    if fps != int(fps):
        raise ValueError("hop-clips corpora hold an integer fps")
    fps = int(fps)
    rng = np.random.default_rng(seed)
    log = print if progress else (lambda *_: None)
    takes = paired_takes(shared, fps, holdout, beat_motion)
    summary = {"format": "hop-real-corpus", "version": 1, "fps": fps, "holdout_fraction": holdout, "seed": seed,
               "licence": LICENCE, "shared_data": str(shared), "takes": {}, "seconds": {}, "clips": []}
    writer = ClipWriter(out / "train", SKELETON.name, description="real-speech corpus, training split "
                                                                   "(see ../corpus.json)")

    def add(w: ClipWriter, clip_id: str, dir_vec, audio, words, speaker: str, source: dict):
        w.add(clip_id, make_clip(dir_vec, audio, words), speaker, source)
        secs = len(dir_vec) / fps
        key = f"{source['split']}/{source['kind']}"
        summary["seconds"][key] = round(summary["seconds"].get(key, 0.0) + secs, 2)
        summary["clips"].append({"id": clip_id, "seconds": round(secs, 2),
                                 **{k: source[k] for k in ("split", "kind", "audio_real", "motion_real",
                                                           "motion_warped")}})

    for t in takes:
        summary["takes"][t.name] = {"speaker": t.speaker, "frames": t.n_frames, "train_frames": [0, t.n_train],
                                    "heldout_frames": [t.n_train, t.n_frames], "motion": t.motion_file,
                                    "audio": t.audio_file}
        dv, au, words = _cut(t, 0, t.n_train, fps)
        base = {"split": "train", "take": t.name, "motion_file": t.motion_file, "audio_file": t.audio_file,
                "motion_frames": [0, t.n_train], "audio_real": True, "motion_real": True}
        add(writer, f"{t.name}_train", dv, au, words, t.speaker,
            {**base, "kind": "paired", "motion_warped": False, "audio_transform": "none"})
        log(f"paired {t.name}: {t.n_train} training frames, {t.n_frames - t.n_train} held out")
        if augment:
            for name, effects, tempo, snr in AUGMENTATIONS:
                audio = sox_effect(au, effects)
                if snr is not None:
                    audio = add_noise(audio, snr, rng)
                n_out = int(round(len(dv) / tempo))
                audio = np.pad(audio, (0, max(0, int(round(n_out * SAMPLE_RATE / fps)) - len(audio))))
                audio = audio[:int(round(n_out * SAMPLE_RATE / fps))]
                motion = warp_motion(dv, fps, [(0.0, 0.0), (n_out / fps, n_out / fps * tempo)], n_out)
                aug_words = [(w, s / tempo, e / tempo) for w, s, e in words]
                add(writer, f"{t.name}_train_{name}", motion, audio, aug_words, t.speaker,
                    {**base, "kind": "augmented", "motion_warped": tempo != 1.0,
                     "audio_transform": f"sox {' '.join(effects)}" + (f" + white noise {snr:g} dB SNR" if snr else ""),
                     "tempo": tempo})

    # constructed pairs: real speech, motion phrases from the paired takes' TRAINING parts, warped
    pool = [(t, t.dir_vec[:t.n_train]) for t in takes]  # training parts only
    weights = np.array([t.n_train for t in takes], dtype=np.float64)
    aligned_total, target_total = 0, 0
    for sp in speech_without_motion(shared, max_lj):
        for k, (a, b) in enumerate(phrases(sp.audio, max_phrase_s)):
            audio = sp.audio[a:b]
            t0, t1 = a / SAMPLE_RATE, b / SAMPLE_RATE
            n_out = int(len(audio) * fps // SAMPLE_RATE)
            audio = audio[:int(round(n_out * SAMPLE_RATE / fps))]
            duration = n_out / fps
            if sp.phones:
                how = "stressed syllables (TextGrid)"
                targets = stressed_syllables(audio, [(p, s - t0, e - t0) for p, s, e in sp.phones
                                                     if s >= t0 and e <= t1])
            else:
                targets, how = prosodic_peaks(audio), "energy peaks"
            take, train_motion = pool[rng.choice(len(pool), p=weights / weights.sum())]
            need = int(np.ceil(1.5 * n_out)) + 2
            if len(train_motion) < need:
                continue
            start = int(rng.integers(0, len(train_motion) - need + 1))
            phrase = train_motion[start:start + need]
            strokes = motion_strokes(phrase, fps)
            anchors = align_strokes(targets, strokes, duration)
            motion = warp_motion(phrase, fps, anchors, n_out)
            used_src = anchors[-1][1]
            aligned_total += len(anchors) - 2
            target_total += len(targets)
            words = [(w, s - t0, e - t0) for w, s, e in sp.words if s >= t0 and e <= t1]
            clip_id = f"constructed_{sp.name}_{k:02d}"
            add(writer, clip_id, motion, audio, words, take.speaker,
                {"split": sp.split, "kind": "constructed", "audio_real": True, "motion_real": True,
                 "motion_warped": True, "audio_transform": "none", "audio_file": sp.file,
                 "audio_range_s": [round(t0, 3), round(t1, 3)], "take": take.name, "motion_file": take.motion_file,
                 "motion_frames": [start, start + int(np.ceil(used_src * fps)) + 1],
                 "stroke_targets": how, "targets": int(len(targets)), "strokes_aligned": len(anchors) - 2})
    summary["constructed_strokes_aligned"] = [aligned_total, target_total]
    log(f"constructed pairs: {aligned_total} of {target_total} speech peaks got a stroke")
    train_manifest = writer.close()
    mean = np.asarray(train_manifest.mean_dir_vec, dtype=np.float32)
    rewrite_manifest(out / "train", fps=fps)

    held = ClipWriter(out / "heldout", SKELETON.name, description="real-speech corpus, HELD-OUT split: the last "
                      f"{holdout:.0%} of every paired take; evaluation only (see ../corpus.json)")
    for t in takes:
        dv, au, words = _cut(t, t.n_train, t.n_frames, fps)
        held.add(f"{t.name}_heldout", make_clip(dv, au, words), t.speaker,
                 {"split": "heldout", "kind": "paired", "take": t.name, "motion_file": t.motion_file,
                  "audio_file": t.audio_file, "motion_frames": [t.n_train, t.n_frames], "audio_real": True,
                  "motion_real": True, "motion_warped": False, "audio_transform": "none"})
        summary["seconds"]["heldout/paired"] = round(summary["seconds"].get("heldout/paired", 0.0)
                                                     + (t.n_frames - t.n_train) / fps, 2)
    held.close()
    rewrite_manifest(out / "heldout", fps=fps, mean=mean, speakers=train_manifest.speakers)
    (out / "corpus.json").write_text(json.dumps(summary, indent=1))
    log(f"wrote {out}/train ({len(train_manifest.clips)} clips), {out}/heldout ({len(takes)} clips): "
        + ", ".join(f"{k} {v:.0f} s" for k, v in sorted(summary["seconds"].items())))
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hop-make-corpus", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="output folder (gets train/, heldout/, corpus.json)")
    p.add_argument("--shared", type=Path, default=SHARED_DATA, help=f"the real data folder (default {SHARED_DATA})")
    p.add_argument("--fps", type=int, default=POSE_FPS, help="the model's pose rate (default 15)")
    p.add_argument("--holdout", type=float, default=0.2, help="fraction at the END of each paired take held out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-phrase-s", type=float, default=10.0)
    p.add_argument("--max-lj", type=int, default=0, help="use only the first N LJSpeech files (0: all)")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--beat-motion", choices=["smplx", "beat1"], default="smplx",
                   help="take 0_1_1's motion: BEAT2 SMPL-X (default) or BEAT v1 BVH")
    a = p.parse_args(argv)
    if not 0.0 < a.holdout < 1.0:
        p.error("--holdout must be between 0 and 1")
    try:
        build(a.out, a.shared, a.fps, a.holdout, a.seed, a.max_phrase_s, a.max_lj, not a.no_augment, a.beat_motion)
    except FileNotFoundError as err:
        print(f"hop-make-corpus: {err}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
