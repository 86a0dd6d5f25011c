"""The real-time loop: ring buffer -> model -> motion shaping -> sinks.

One thread owns the model. It waits for the audio of the next pose frame, reads
it from the ring, cleans it (sanitiser), decides voice activity, hands it to the
ASR process, advances the model by the frames that are complete, shapes the
poses (idle, crossfade, intensity, smoothing) and gives them to every sink, all
stamped with the capture time of their newest audio sample.

Latency never grows: in real time, when more than ``skip_backlog_frames`` frames
are waiting (the CPU was taken away, a burst arrived), the loop lets the older
audio pass through the front end without running the model and goes on with the
newest frame; the skipped frames are counted. When no audio arrives at all (a
vanished microphone), the loop keeps emitting idle motion on the wall clock.
Offline (a file converted faster than real time) nothing is skipped and every
frame reaches the sinks.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from hop.bridges.frame import PoseFrame, PoseSink
from hop.engine.motion import MotionOptions, MotionShaper, SendClock
from hop.engine.ring import RingOverrun, SampleRing
from hop.engine.sanitize import AudioSanitizer
from hop.engine.status import EngineStatus, SourceState
from hop.engine.vad import VadOptions, VoiceActivityDetector
from hop.model.stream import HopStream
from hop.model.text import WordPieces, align_tokens


@dataclass(frozen=True)
class RuntimeOptions:
    send_rate: float = 60.0  # sends per second; model frames are spread over it (SendClock)
    max_frames_per_step: int = 2  # a backlog up to this is computed in one model call
    skip_backlog_frames: int = 2  # real time: a larger backlog is skipped, never queued
    audio_delay_s: float = 0.0  # hold poses back to line up with audio the audience hears later
    idle_after_s: float = 0.3  # no audio this long (device lost, not started): idle motion on the wall clock
    realtime: bool = True  # False: offline conversion, every frame is computed and sent
    stream: int = 0  # the PoseFrame.stream index of this engine's output
    motion: MotionOptions = field(default_factory=MotionOptions)

    def validate(self, pose_fps: float) -> None:
        if self.max_frames_per_step < 1 or self.skip_backlog_frames < self.max_frames_per_step:
            raise ValueError("need 1 <= max_frames_per_step <= skip_backlog_frames, got "
                             f"{self.max_frames_per_step} and {self.skip_backlog_frames}")
        if not 0.0 <= self.audio_delay_s <= 5.0:
            raise ValueError(f"audio delay must be within 0..5 s, got {self.audio_delay_s}")
        if self.send_rate < pose_fps:
            raise ValueError(f"send rate {self.send_rate} Hz is below the model's {pose_fps} pose fps")
        self.motion.validate()


class Source:
    """What the loop needs from an audio source (MicCapture and FileSource fit)."""

    state: SourceState
    message: str
    name: str

    def start(self) -> None: ...
    def stop(self) -> None: ...


class Engine:
    """Owns the loop thread. ``run()`` blocks until ``stop()`` or the end of a file source."""

    def __init__(self, stream: HopStream, ring: SampleRing, source: Source, sinks: list[PoseSink],
                 options: RuntimeOptions = RuntimeOptions(), status: EngineStatus | None = None,
                 asr=None, tokenizer=None, skeleton: str = "ted_gesture"):
        self.stream = stream
        self.ring = ring
        self.source = source
        self.sinks = list(sinks)
        self.options = options
        self.status = status or EngineStatus()
        self.asr = asr
        self.skeleton = skeleton
        mel = stream.model.cfg.mel
        self.pose_fps = mel.fps
        options.validate(self.pose_fps)
        self._mel = mel
        self.sanitizer = AudioSanitizer()
        self.vad = VoiceActivityDetector(VadOptions(sample_rate=mel.sample_rate, frame_rate=mel.fps))
        motion = MotionOptions(**{**options.motion.__dict__, "pose_fps": float(self.pose_fps)})
        self.shaper = MotionShaper(stream.model.mean_pose.detach().cpu().numpy(), motion)
        self.send_clock = SendClock(self.pose_fps, options.send_rate)
        self._pieces = WordPieces(tokenizer) if tokenizer is not None else None
        self._read_pos = 0  # next ring sample the model has not consumed
        # Sends waiting for their time, in due order: (due, pose, capture time, speaking, fresh, idle);
        # fresh = the first send of a model frame with new audio, the one whose latency is measured;
        # idle = motion made on the wall clock while no audio arrives.
        self._sends: collections.deque[tuple[float, np.ndarray, float, bool, bool, bool]] = collections.deque()
        self._send_index = 0
        self._stop = threading.Event()
        self._controls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._last_audio_at = time.perf_counter()
        self._next_idle_at = 0.0
        self.late_tokens = 0
        self.model_seconds = 0.0  # time spent inside the model, for the benchmarks
        self.model_frames = 0
        # Send accounting (see _account): every send a model frame owes is written, pending,
        # superseded by a newer frame, or belongs to a skipped frame.
        self.sends_superseded = 0
        self.idle_sends_written = 0
        self._first_audio: tuple[float, int] | None = None  # (perf_counter, ring.written): drift reference
        self._drift_settled = False
        self.latency_trace: list[tuple[float, float]] | None = None  # set to a list to log (sent_at, latency_s)
        self._sink_errors: dict[int, int] = {}  # errors each sink had counted at the last publish

    # -- control from other threads (WebSocket clients, signal handlers) ---------------
    def stop(self) -> None:
        self._stop.set()

    def set_intensity(self, value: float) -> None:
        self.shaper.set_intensity(value)  # validates now, in the caller's thread
        self._controls.put(lambda: self.shaper.set_intensity(value))

    def set_muted(self, muted: bool) -> None:
        self._controls.put(lambda: setattr(self.shaper, "muted", bool(muted)))

    def set_style(self, apply: Callable[[HopStream], None]) -> None:
        """``apply(stream)`` runs on the loop thread between model steps (e.g. stream.set_style(...))."""
        self._controls.put(lambda: apply(self.stream))

    # -- the loop -----------------------------------------------------------------------
    def run(self) -> None:
        self.source.start()
        try:
            next_publish = 0.0
            while not self._stop.is_set():
                self._apply_controls()
                self._flush_due_sends()
                if not self._advance():
                    break
                if time.perf_counter() >= next_publish:
                    self._publish()
                    self._account()
                    next_publish = time.perf_counter() + 0.25
            self._flush_due_sends(everything=True)
        finally:
            self.source.stop()
            self._publish()
            self._account()

    def _advance(self) -> bool:
        """Wait a little for audio, compute what is ready; False when a file source has ended."""
        needed = self._mel.samples_for(self.stream.frames_done + 1)
        timeout = 0.02 if not self._sends else max(0.0, min(0.02, self._sends[0][0] - time.perf_counter()))
        if self.ring.wait_for(needed, timeout):
            now = time.perf_counter()
            # The drift reference: the first audio, moved once to 5 s later, when whatever a
            # device buffered before the stream opened (a burst at the start) has passed.
            if self._first_audio is None or (not self._drift_settled and now - self._first_audio[0] >= 5.0):
                self._drift_settled = self._first_audio is not None
                self._first_audio = (now, self.ring.written)
            self._compute_ready()
            self._last_audio_at = time.perf_counter()
            return True
        if self.source.state in (SourceState.FINISHED, SourceState.FAILED, SourceState.STOPPED) \
                and self.ring.written < needed:
            return False
        now = time.perf_counter()
        if self.options.realtime and now - self._last_audio_at > self.options.idle_after_s:
            self._emit_idle(now)
        return True

    def _compute_ready(self) -> None:
        mel, opts = self._mel, self.options
        written = self.ring.written
        ready = mel.frames_in(written) - self.stream.frames_done
        if opts.realtime and ready > opts.skip_backlog_frames:
            self._skip(ready - 1)
            ready = 1
        n = min(ready, opts.max_frames_per_step)
        end = mel.samples_for(self.stream.frames_done + n)
        samples = self._read(end)
        if samples is None:
            return
        speaking = self._listen(samples, self._read_pos)
        self._read_pos = end
        self.ring.release(end)
        self._take_words()
        started = time.perf_counter()
        poses = self.stream.push_audio(samples)[0]
        self.model_seconds += time.perf_counter() - started
        self.model_frames += len(poses)
        first = self.stream.frames_done - len(poses)
        for i, pose in enumerate(poses):
            frame_no = first + i
            newest_sample = mel.samples_for(frame_no + 1) - 1
            capture_time = self.ring.capture_time(newest_sample)
            shaped = self.shaper(pose, bool(speaking[i]) if i < len(speaking) else self.vad.speaking,
                                 frame_no / self.pose_fps)
            stale = opts.realtime and i < len(poses) - 1  # catching up: only the newest goes out
            if stale:
                self.status.frames_skipped += 1
                self.send_clock.expand(shaped)
                continue
            self._schedule(shaped, capture_time, bool(self.shaper.speech_weight > 0.5))

    def _read(self, end: int) -> np.ndarray | None:
        try:
            return self.ring.read(self._read_pos, end)
        except RingOverrun as overrun:
            # The ring wrapped past us (the loop was stopped for seconds): jump to
            # what is still there; the lost audio counts as skipped frames.
            self.status.ring_overruns += 1
            self.status.record_error(str(overrun))
            lost = np.zeros(overrun.oldest_available - self._read_pos, dtype=np.float32)
            self.status.frames_skipped += self.stream.skip_audio(lost)
            self._read_pos = overrun.oldest_available
            return None

    def _skip(self, frames: int) -> None:
        end = self._mel.samples_for(self.stream.frames_done + frames)
        samples = self._read(end)
        if samples is None:
            return
        self._listen(samples, self._read_pos)
        self._read_pos = end
        self.status.frames_skipped += self.stream.skip_audio(samples)

    def _listen(self, samples: np.ndarray, first_index: int) -> np.ndarray:
        """Clean the audio (in place); voice activity per completed frame."""
        clean = self.sanitizer.process(samples)
        if self.asr is not None:
            self.asr.feed(clean, first_index=first_index)
        speaking = self.vad.process(clean)
        self.status.speaking = self.vad.speaking
        return speaking

    def _take_words(self) -> None:
        if self.asr is None or self._pieces is None:
            return
        words = self.asr.poll()
        if not words:
            return
        last_end = max(w.end_s for w in words)
        n_frames = int(np.ceil(last_end * self.pose_fps)) + 1
        tokens = align_tokens([(w.word, w.start_s, w.end_s) for w in words], n_frames, self._pieces,
                              fps=self.pose_fps)
        wanted = {int(f): int(t) for f, t in enumerate(tokens) if t != self._pieces.pad_id}
        self.late_tokens += self.stream.add_tokens(0, wanted)

    def _emit_idle(self, now: float) -> None:
        """No audio: keep the avatar alive at the pose rate."""
        if now < self._next_idle_at:
            return
        self._next_idle_at = max(self._next_idle_at + 1.0 / self.pose_fps, now)
        shaped = self.shaper(None, False, now - self.status.started_at)
        self._schedule(shaped, capture_time=None, speaking=False, idle=True)

    def _schedule(self, pose: np.ndarray, capture_time: float | None, speaking: bool, idle: bool = False) -> None:
        due = time.perf_counter() + self.options.audio_delay_s
        # Extrapolations of the previous frame not yet sent are superseded by this frame
        # (counted: a frame whose audio came early gives fewer than sends_per_frame sends).
        while self._sends and self._sends[-1][0] >= due and not self._sends[-1][4]:
            if not self._sends.pop()[5]:
                self.sends_superseded += 1
        for k, send in enumerate(self.send_clock.expand(pose)):
            when = due + k * self.send_clock.interval_s if self.options.realtime else due
            fresh = k == 0 and capture_time is not None
            self._sends.append((when, send, capture_time if capture_time is not None else when, speaking, fresh,
                                idle))

    def _flush_due_sends(self, everything: bool = False) -> None:
        """Send what is due; ``everything``: the rest too (in real time, each at its due time)."""
        now = time.perf_counter()
        while self._sends and (everything or self._sends[0][0] <= now):
            if everything and self.options.realtime:
                time.sleep(max(0.0, self._sends[0][0] - time.perf_counter()))
            _, pose, capture_time, speaking, fresh, idle = self._sends.popleft()
            frame = PoseFrame(index=self._send_index, capture_time=capture_time, dir_vec=pose, speaking=speaking,
                              stream=self.options.stream, skeleton=self.skeleton)
            self._send_index += 1
            for sink in self.sinks:
                try:
                    sink.send(frame)
                except Exception as error:  # a sink must not raise; if one does, it must not stop the show
                    self.status.record_error(f"{type(sink).__name__}.send failed: {error!r}")
            sent_at = time.perf_counter()
            if fresh:
                self.status.record_frame(sent_at - frame.capture_time, emitted_at=sent_at)
                if self.latency_trace is not None:
                    self.latency_trace.append((sent_at, sent_at - frame.capture_time))
            else:
                self.status.frames_emitted += 1
            if idle:
                self.idle_sends_written += 1

    def _apply_controls(self) -> None:
        while True:
            try:
                action = self._controls.get_nowait()
            except queue.Empty:
                return
            try:
                action()
            except Exception as error:
                self.status.record_error(f"control ignored: {error}")

    def _publish(self) -> None:
        source = self.source
        if hasattr(source, "publish"):
            source.publish(self.status)
        else:
            self.status.source_name = source.name
            self.status.source_state = source.state
            self.status.source_message = source.message
        if self.asr is not None:
            self.asr.publish(self.status)
        self.status.sanitizer = self.sanitizer.counts.as_dict()
        dropped = 0
        for i, sink in enumerate(self.sinks):
            try:
                stats = sink.stats()
                dropped += int(stats.get("dropped", 0))
                errors = int(stats.get("errors", 0))
            except Exception:
                continue
            # Sinks count their failures instead of raising (an unreachable OSC target, a full
            # disk): new ones go into the status too, so --stats and monitors see them.
            if errors > self._sink_errors.get(i, 0):
                self.status.record_error(f"{type(sink).__name__}: {errors - self._sink_errors.get(i, 0)} new "
                                         f"send errors, last: {stats.get('last_error', '')}")
                self._sink_errors[i] = errors
        self.status.frames_dropped = dropped

    def _account(self) -> None:
        """Publish where every send went, taken at one point of the loop so the figures agree.

        Audio moves through the chain as: captured (ring.written) -> consumed by the model's
        front end (frames_done) -> each frame computed or skipped -> each computed frame owes
        sends_per_frame sends -> each written, pending, or superseded by a newer frame.
        ``unaccounted`` closes that sum and is 0 unless a send was lost without a reason.
        The capture clock's drift compares audio captured with wall time since the capture
        settled (5 s after the first audio): a device clock a few tenths of a percent off the
        system's shows here (as do gaps while a device was lost), not as missing sends.
        """
        now = time.perf_counter()
        per_frame = self.send_clock.per_frame
        rate = self._mel.sample_rate
        frames_done = self.stream.frames_done
        audio_sends_written = self.status.frames_emitted - self.idle_sends_written
        pending = sum(1 for send in self._sends if not send[5])
        unaccounted = (frames_done - self.status.frames_skipped) * per_frame - audio_sends_written \
            - pending - self.sends_superseded
        drift_ppm = None
        if self._first_audio is not None and now - self._first_audio[0] >= 1.0:
            audio_s = (self.ring.written - self._first_audio[1]) / rate
            drift_ppm = round((audio_s / (now - self._first_audio[0]) - 1.0) * 1e6, 1)
        self.status.accounting = {
            "at": now,
            "sample_rate": rate,
            "pose_fps": self.pose_fps,
            "audio_samples_captured": self.ring.written,
            "audio_samples_consumed": self._mel.samples_for(frames_done),
            "pose_frames": frames_done,
            "pose_frames_computed": self.model_frames,
            "pose_frames_skipped": self.status.frames_skipped,
            "sends_per_frame": per_frame,
            "sends_written": self.status.frames_emitted,
            "sends_idle_written": self.idle_sends_written,
            "sends_pending": pending,
            "sends_superseded": self.sends_superseded,
            "sends_unaccounted": unaccounted,
            "capture_clock_drift_ppm": drift_ppm,
        }
