"""The synthetic corpus: format, determinism, speech/word alignment and the gesture rule."""

from __future__ import annotations

import numpy as np
import pytest

from hop.training.data import synth
from hop.training.data.clips import POSE_FPS, SAMPLE_RATE, read_clip, read_manifest


def _espeak_or_skip():
    try:
        synth.speak("hello")
    except synth.EspeakUnavailable as exc:
        pytest.skip(f"libespeak-ng not available: {exc}")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    _espeak_or_skip()
    root = tmp_path_factory.mktemp("synth")
    assert synth.main([str(root), "--clips", "8", "--seed", "3", "--seconds", "5"]) == 0
    manifest = read_manifest(root)
    return root, manifest, [read_clip(root, e) for e in manifest.clips]


def test_speak_reports_words_in_order():
    _espeak_or_skip()
    audio, words = synth.speak("one small river crosses the quiet valley")
    assert [w for w, _ in words] == "one small river crosses the quiet valley".split()
    starts = [s for _, s in words]
    assert starts == sorted(starts) and starts[-1] < len(audio) / SAMPLE_RATE
    assert np.sqrt(np.mean(audio ** 2)) > 0.01


def test_corpus_format_and_speakers(corpus):
    root, manifest, clips = corpus
    assert manifest.skeleton == "ted_gesture" and manifest.fps == POSE_FPS
    assert manifest.speakers == [s.name for s in synth.STYLES]
    assert [e.speaker for e in manifest.clips] == [i % 4 for i in range(8)]
    assert [e.source["split"] for e in manifest.clips[:3]] == ["test", "val", "train"]
    for entry, clip in zip(manifest.clips, clips):
        assert clip.dir_vec.shape == (entry.n_frames, 27)
        assert np.allclose(np.linalg.norm(clip.dir_vec.reshape(-1, 9, 3), axis=-1), 1.0, atol=1e-5)
        assert entry.n_frames == len(clip.audio) * POSE_FPS // SAMPLE_RATE
        assert 4.5 < entry.n_frames / POSE_FPS < 12
        assert len(clip.word_text) >= 5


def test_deterministic_from_seed(corpus, tmp_path):
    root, manifest, clips = corpus
    again = synth.make_synthetic_corpus(tmp_path / "a", n_clips=2, seed=3, clip_seconds=5)
    other = synth.make_synthetic_corpus(tmp_path / "b", n_clips=1, seed=4, clip_seconds=5)
    for entry, clip in zip(again.clips, clips):
        second = read_clip(tmp_path / "a", entry)
        assert np.array_equal(second.audio, clip.audio) and np.array_equal(second.dir_vec, clip.dir_vec)
        assert second.word_text == clip.word_text
    assert read_clip(tmp_path / "b", other.clips[0]).word_text != clips[0].word_text


def test_words_cover_speech_and_pauses_are_silent(corpus):
    _, _, clips = corpus
    for clip in clips:
        levels = synth._frame_levels(clip.audio)
        floor = levels.max() - 35
        assert np.all(np.diff(clip.word_start) > 0) and np.all(clip.word_end > clip.word_start)
        assert np.all(clip.word_end[:-1] <= clip.word_start[1:] + 1e-9)
        for s, e in zip(clip.word_start, clip.word_end):
            assert levels[int(s / 0.01):int(np.ceil(e / 0.01))].max() > floor
        spoken = np.zeros(len(levels), bool)
        for s, e in zip(clip.word_start, clip.word_end):
            spoken[int(s / 0.01):int(np.ceil(e / 0.01)) + 1] = True
        # outside words the audio is (nearly) silent: no speech is left without a word
        assert np.mean(levels[~spoken] > floor) < 0.03


def test_stroke_apexes_follow_audio_onsets(corpus):
    root, manifest, clips = corpus
    for entry, clip in zip(manifest.clips, clips):
        onsets = synth.audio_onsets(clip.audio, min_gap=entry.source["style"]["min_gap"])
        assert np.allclose(onsets, entry.source["stroke_time"], atol=1e-3)  # the rule reads the stored audio
        assert len(onsets) >= 4


def _motion_beats(dir_vec: np.ndarray) -> np.ndarray:
    """Times of local minima of the summed bone-direction speed (the BC motion beat idea)."""
    speed = np.linalg.norm(np.diff(dir_vec.reshape(len(dir_vec), 9, 3), axis=0), axis=-1).sum(-1)
    minima = np.flatnonzero((speed[1:-1] < speed[:-2]) & (speed[1:-1] <= speed[2:])) + 1
    return (minima + 0.5) / POSE_FPS  # speed[i] lies between frames i and i+1


def _beat_consistency(onsets: np.ndarray, beats: np.ndarray, sigma: float = 0.1) -> float:
    d = np.abs(onsets[:, None] - beats[None, :]).min(axis=1)
    return float(np.mean(np.exp(-d ** 2 / (2 * sigma ** 2))))


def test_motion_beats_match_own_audio_better_than_other_audio(corpus):
    _, _, clips = corpus
    own, shuffled = [], []
    for i, clip in enumerate(clips):
        beats = _motion_beats(clip.dir_vec)
        other = clips[(i + 1) % len(clips)]
        own.append(_beat_consistency(synth.audio_onsets(clip.audio), beats))
        shifted = np.roll(other.audio, len(other.audio) // 3)
        shuffled.append(_beat_consistency(synth.audio_onsets(shifted), beats))
    assert np.mean(own) > np.mean(shuffled) + 0.15, (np.mean(own), np.mean(shuffled))


def test_styles_differ_in_which_arm_moves(corpus):
    _, manifest, clips = corpus

    def forearm_var(clip, bone):
        return clip.dir_vec.reshape(-1, 9, 3)[:, bone].var(axis=0).sum()

    right, left, both = clips[0], clips[1], clips[2]
    assert forearm_var(right, 8) > 10 * forearm_var(right, 5)
    assert forearm_var(left, 5) > 10 * forearm_var(left, 8)
    assert min(forearm_var(both, 5), forearm_var(both, 8)) > 3 * forearm_var(right, 5)


def test_stroke_activation_known_values():
    times = np.arange(0, 4.0, 0.01)
    act = synth.stroke_activation(np.array([1.0, 1.4, 3.0]), np.array([0.8, 0.5, 1.0]), times)
    at = lambda t: act[int(round(t / 0.01))]  # noqa: E731
    assert at(1.0) == pytest.approx(0.8) and at(1.4) == pytest.approx(0.5) and at(3.0) == pytest.approx(1.0)
    assert at(1.2) == pytest.approx(synth.RETRACT * 0.5)  # short gap: half retraction at the midpoint
    assert at(0.5) == 0 and at(2.2) == 0 and at(3.5) == 0  # rest before, in the pause, after
    # zero velocity at an apex: it is a local extremum
    assert at(0.99) < at(1.0) > at(1.01)


def test_rest_pose_is_a_person_upright():
    joints = synth.TED_GESTURE.dir_vec_to_joints(synth.rest_pose(synth.STYLES[2]).reshape(27))
    assert joints[3, 1] < joints[1, 1] < joints[0, 1]  # head above neck above spine (up is -y)
    assert joints[4, 0] < 0 < joints[7, 0]  # left shoulder on -x
    assert joints[6, 1] > joints[4, 1] and joints[9, 1] > joints[7, 1]  # wrists below shoulders at rest


def test_published_window_filters_keep_the_synthetic_windows(corpus):
    """The TED filters (words, spine, static wrists, mean pose) must not throw the corpus away."""
    from hop.training.data.windows import EXTENDED_WINDOW, rejection_reason, window_starts, words_in_range

    _, manifest, clips = corpus
    reasons = []
    for clip in clips:
        for s in window_starts(clip.n_frames):
            n_words = len(words_in_range(clip.word_start, clip.word_end, s / POSE_FPS,
                                         (s + EXTENDED_WINDOW) / POSE_FPS))
            reasons.append(rejection_reason(clip.dir_vec[s:s + EXTENDED_WINDOW], n_words, synth.TED_GESTURE,
                                            np.asarray(manifest.mean_dir_vec)))
    assert len(reasons) >= 8 and reasons.count(None) >= 0.9 * len(reasons), reasons


def test_rest_postures_differ_between_styles():
    rests = [synth.rest_pose(s) for s in synth.STYLES]
    for i in range(len(rests)):
        for j in range(i + 1, len(rests)):
            assert np.abs(rests[i] - rests[j]).max() > 0.1
