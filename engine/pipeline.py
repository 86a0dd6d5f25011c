"""Audio in, pose frames out, as plain code: no clock, no thread, no ring buffer.

``FramePipeline`` is everything between 16 kHz samples and the sends of a pose
frame: the sanitiser, voice activity, the words heard so far, the streaming model,
motion shaping (idle, crossfade, intensity, smoothing), the send clock, and the
face (mouth shapes and blinks from the same audio, hop.engine.mouth). Given
the same audio it gives the same frames, whoever calls it. The live driver
(hop.engine.runtime) adds only capture, pacing and deadlines around it;
``convert`` runs it over a whole recording for offline conversion.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from hop.bridges.frame import PoseFrame
from hop.engine.motion import MotionShaper, SendClock
from hop.engine.mouth import MouthEstimator, MouthOptions
from hop.engine.sanitize import AudioSanitizer
from hop.engine.vad import VadOptions, VoiceActivityDetector
from hop.model.stream import HopStream
from hop.model.text import WordPieces, frame_tokens
from hop.profiles import MotionOptions


@dataclass(frozen=True)
class PipelineFrame:
    number: int  # model frame index since the start of the stream
    sends: list[np.ndarray]  # the frame's sends at the wire rate: the frame itself, then extrapolations
    speaking: bool  # the avatar shows speech motion (the crossfade is past half way)
    # Face weights of the frame (the same for all its sends), VRM 1.0 preset names -> 0..1:
    # "aa", "ih", "ou", "ee", "oh" (the mouth, closed in silence) and "blink".
    expressions: dict[str, float] = field(default_factory=dict)


class FramePipeline:
    """One stream's processing; ``asr`` (optional) receives the cleaned audio and returns words."""

    def __init__(self, stream: HopStream, motion: MotionOptions, send_rate: float, asr=None, tokenizer=None):
        mel = stream.model.cfg.mel
        self.stream = stream
        self.mel = mel
        self.pose_fps = mel.fps
        self.sanitizer = AudioSanitizer()
        self.vad = VoiceActivityDetector(VadOptions(sample_rate=mel.sample_rate, frame_rate=mel.fps))
        self.shaper = MotionShaper(stream.model.mean_pose.detach().cpu().numpy(),
                                   replace(motion, pose_fps=float(mel.fps)))
        self.send_clock = SendClock(mel.fps, send_rate)
        self.mouth = MouthEstimator(MouthOptions(sample_rate=mel.sample_rate, fps=mel.fps))
        self.asr = asr
        self._pieces = WordPieces(tokenizer) if tokenizer is not None else None
        self.late_tokens = 0  # word pieces that arrived after their frame was computed
        self.model_seconds = 0.0  # time inside the model (a figure for benchmarks, not a clock the output uses)
        self.model_frames = 0

    @property
    def frames_done(self) -> int:
        return self.stream.frames_done

    def add_words(self, words) -> None:
        """Words as ``[(word, start_s, end_s), ...]``: their pieces go to the frames they cover."""
        if self._pieces is not None and words:
            self.late_tokens += self.stream.add_tokens(0, frame_tokens(words, self._pieces, self.pose_fps))

    def process(self, samples: np.ndarray, first_index: int) -> list[PipelineFrame]:
        """Audio samples ``[first_index, first_index + len)`` -> the frames they complete."""
        speaking = self._listen(samples, first_index)
        faces = self.mouth.process(samples, speaking)  # the samples are clean now (in place)
        first_face = self.mouth.frames_done - len(faces)
        if self.asr is not None:
            self.add_words([(w.word, w.start_s, w.end_s) for w in self.asr.poll()])
        started = time.perf_counter()
        poses = self.stream.push_audio(samples)[0]
        self.model_seconds += time.perf_counter() - started
        self.model_frames += len(poses)
        first = self.stream.frames_done - len(poses)
        frames = []
        for i, pose in enumerate(poses):
            number = first + i
            voiced = bool(speaking[i]) if i < len(speaking) else self.vad.speaking
            shaped = self.shaper(pose, voiced, number / self.pose_fps)
            face = faces[min(max(number - first_face, 0), len(faces) - 1)] if faces else {}
            frames.append(PipelineFrame(number, self.send_clock.expand(shaped), self.shaper.speech_weight > 0.5,
                                        face))
        return frames

    def skip(self, samples: np.ndarray, first_index: int) -> int:
        """Let audio pass without running the model (catching up); returns the frames skipped."""
        self._listen(samples, first_index)
        self.mouth.skip(samples)
        return self.stream.skip_audio(samples)

    def idle(self, t: float) -> PipelineFrame:
        """A frame of idle motion at time ``t`` s, for when no audio arrives at all."""
        shaped = self.shaper(None, False, t)
        return PipelineFrame(-1, self.send_clock.expand(shaped), False, self.mouth.idle())

    def _listen(self, samples: np.ndarray, first_index: int) -> np.ndarray:
        """Clean the audio (in place); voice activity per completed frame."""
        clean = self.sanitizer.process(samples)
        if self.asr is not None:
            self.asr.feed(clean, first_index=first_index)
        return self.vad.process(clean)


def convert(pipeline: FramePipeline, audio: np.ndarray, frames_per_step: int = 8) -> Iterator[PipelineFrame]:
    """Every frame of a whole recording (16 kHz mono), in order: offline conversion.

    Nothing is skipped or dropped; the result depends only on the audio and the
    pipeline's settings. The recording's last partial frame is completed with
    silence, so frames x frame time covers the audio's duration within one frame.
    """
    mel = pipeline.mel
    total = -(-len(audio) * mel.fps // mel.sample_rate)  # ceil: the partial last frame counts
    padded = np.zeros(max(len(audio), mel.samples_for(total)), dtype=np.float32)
    padded[: len(audio)] = audio
    position = mel.samples_for(pipeline.frames_done)
    while pipeline.frames_done < total:
        end = mel.samples_for(min(total, pipeline.frames_done + frames_per_step))
        yield from pipeline.process(padded[position:end].copy(), position)
        position = end


def offline_pose_frames(pipeline: FramePipeline, audio: np.ndarray, skeleton: str) -> Iterator[PoseFrame]:
    """``convert`` as the sends on the wire: every send of every frame, numbered in order and
    stamped with its place in the recording (seconds), the same for every run. The sends
    stop at the first one at or past the recording's end, so sends x send period covers the
    audio within one send period."""
    wire_rate = pipeline.pose_fps * pipeline.send_clock.per_frame
    last = -(-len(audio) * wire_rate // pipeline.mel.sample_rate)
    index = 0
    for frame in convert(pipeline, audio):
        for send in frame.sends:
            if index >= last:
                return
            yield PoseFrame(index=index, capture_time=index / wire_rate, dir_vec=send, speaking=frame.speaking,
                            skeleton=skeleton, expressions=frame.expressions)
            index += 1
