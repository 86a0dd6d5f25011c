"""What lip sync and blinks cost per pose frame (pytest-benchmark; run with --benchmark-enable).

hop.engine.mouth runs once per pose frame on the pipeline's thread, beside the model: one
windowed 512-point FFT, a 257x5 product, a handful of scalars. Budget: well under 0.2 ms a
frame. Each timed call feeds one pose frame of real speech (1/30 s, voiced) and gets that
frame's expressions back.
"""

import numpy as np

from hop.engine.audio_file import load_audio_16k_mono
from hop.engine.mouth import EXPRESSIONS, MouthEstimator, MouthOptions
from hop.engine.session import DEMO_SPEECH

SR, FPS = 16_000, 30


class FrameFeeder:
    """Feeds consecutive pose frames of a recording, looping; each call completes one frame."""

    def __init__(self, audio: np.ndarray):
        self.mouth = MouthEstimator(MouthOptions(sample_rate=SR, fps=FPS))
        self.audio = audio
        self.frame = 0
        self.voiced = np.ones(1, dtype=bool)

    def __call__(self) -> list[dict[str, float]]:
        frames_in_audio = len(self.audio) * FPS // SR
        k = self.frame % frames_in_audio
        start, end = -(-k * SR // FPS), -(-(k + 1) * SR // FPS)
        if k == 0 and self.frame:
            self.mouth = MouthEstimator(self.mouth.options)  # a new pass over the recording
        self.frame += 1
        return self.mouth.process(self.audio[start:end], self.voiced)


def test_mouth_one_pose_frame(benchmark):
    feeder = FrameFeeder(load_audio_16k_mono(DEMO_SPEECH)[: 4 * SR])
    warm = [feeder()[0] for _ in range(60)]  # 2 s of speech: the mouth has opened
    assert max(sum(f[v] for v in EXPRESSIONS[:5]) for f in warm) > 0.3
    frames = benchmark(feeder)
    assert len(frames) == 1 and set(frames[0]) == set(EXPRESSIONS)
    assert all(0.0 <= value <= 1.0 for value in frames[0].values())
    if benchmark.enabled:
        assert benchmark.stats.stats.median < 0.2e-3, "the face must cost well under 0.2 ms a frame"
