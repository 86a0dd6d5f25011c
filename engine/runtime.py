"""The live driver: ring buffer -> FramePipeline -> sinks, paced by captured audio.

One thread owns the pipeline (hop.engine.pipeline: sanitiser, voice activity,
words, model, motion shaping, send clock). It waits for the audio of the next
pose frame, reads it from the ring, runs the pipeline on the frames that are
complete and sends each frame's sends at the wire rate, stamped with the capture
time of their newest audio sample. What this module adds to the pipeline is only
capture, pacing and deadlines; offline conversion uses the pipeline without it.

Latency never grows: in real time, when more than ``skip_backlog_frames`` frames
are waiting (the CPU was taken away, a burst arrived), the loop lets the older
audio pass through the front end without running the model and goes on with the
newest frame; the skipped frames are counted. When no audio arrives at all (a
vanished microphone), the loop keeps emitting idle motion on the wall clock.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from typing import Callable

import numpy as np

from hop.bridges.frame import PoseFrame, PoseSink
from hop.engine.outputs import Outputs
from hop.engine.pipeline import FramePipeline, PipelineFrame
from hop.engine.ring import RingOverrun, SampleRing
from hop.engine.status import EngineStatus, SourceState
from hop.model.stream import HopStream
from hop.profiles import EngineSettings


class Source:
    """What the loop needs from an audio source (MicCapture and FileSource fit)."""

    state: SourceState
    message: str
    name: str

    def start(self) -> None: ...
    def stop(self) -> None: ...


class Engine:
    """Owns the loop thread. ``run()`` blocks until ``stop()`` or the end of a file source."""

    def __init__(self, pipeline: FramePipeline, ring: SampleRing, source: Source, outputs: Outputs | list[PoseSink],
                 settings: EngineSettings = EngineSettings(), status: EngineStatus | None = None, stream: int = 0):
        self.pipeline = pipeline
        self.ring = ring
        self.source = source
        self.settings = settings
        self.stream_index = stream  # the PoseFrame.stream of this engine's output
        self.status = status or EngineStatus()
        self.outputs = outputs if isinstance(outputs, Outputs) else Outputs(list(outputs), self.status)
        self.skeleton = pipeline.stream.model.cfg.skeleton
        self.pose_fps = pipeline.pose_fps
        self._mel = pipeline.mel
        self._read_pos = 0  # next ring sample the model has not consumed
        # Sends waiting for their time, in due order: (due, pose, capture time, speaking, fresh, idle,
        # expressions); fresh = the first send of a model frame with new audio, the one whose latency is
        # measured; idle = motion made on the wall clock while no audio arrives; expressions = the
        # frame's face weights (hop.engine.mouth), the same for all its sends.
        self._sends: collections.deque[tuple[float, np.ndarray, float, bool, bool, bool, dict[str, float]]] = \
            collections.deque()
        self._send_index = 0
        self._stop = threading.Event()
        self._controls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._last_audio_at = time.perf_counter()
        self._next_idle_at = 0.0
        # Send accounting (see _account): every send a model frame owes is written, pending,
        # superseded by a newer frame, or belongs to a skipped frame.
        self.sends_superseded = 0
        self.idle_sends_written = 0
        self._first_audio: tuple[float, int] | None = None  # (perf_counter, ring.written): drift reference
        self._drift_settled = False
        self.latency_trace: list[tuple[float, float]] | None = None  # set to a list to log (sent_at, latency_s)
        self._abort = threading.Event()  # stop without draining (a second Ctrl-C)

    # -- control from other threads (WebSocket clients, signal handlers) ---------------
    def stop(self) -> None:
        """Stop cleanly: audio already captured is still turned into frames and sent (``_drain``)."""
        self._stop.set()

    def abort(self) -> None:
        """Stop now: what is left of the drain is skipped."""
        self._abort.set()
        self._stop.set()

    def set_intensity(self, value: float) -> None:
        shaper = self.pipeline.shaper
        shaper.set_intensity(value)  # validates now, in the caller's thread
        self._controls.put(lambda: shaper.set_intensity(value))

    def set_muted(self, muted: bool) -> None:
        self._controls.put(lambda: setattr(self.pipeline.shaper, "muted", bool(muted)))

    def set_style(self, apply: Callable[[HopStream], None]) -> None:
        """``apply(stream)`` runs on the loop thread between model steps (e.g. stream.set_style(...))."""
        self._controls.put(lambda: apply(self.pipeline.stream))

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
            if self._stop.is_set():
                self.source.stop()  # nothing more is captured; what was is drained
                self._drain()
            else:
                self._flush_due_sends(everything=True)
        finally:
            self.source.stop()
            self._publish()
            self._account()

    def _advance(self) -> bool:
        """Wait a little for audio, compute what is ready; False when a file source has ended."""
        needed = self._mel.samples_for(self.pipeline.frames_done + 1)
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
            if self.source.state == SourceState.FINISHED \
                    and self.ring.written > self._mel.samples_for(self.pipeline.frames_done):
                # A file's last partial frame: completed with silence, as offline conversion does,
                # so the recording's end is not dropped.
                self.ring.write(np.zeros(needed - self.ring.written, np.float32), time.perf_counter())
                return True
            return False
        now = time.perf_counter()
        if now - self._last_audio_at > self.settings.idle_after_s:
            self._emit_idle(now)
        return True

    def _compute_ready(self) -> None:
        mel, opts, pipeline = self._mel, self.settings, self.pipeline
        ready = mel.frames_in(self.ring.written) - pipeline.frames_done
        if ready > opts.skip_backlog_frames:
            self._skip(ready - 1)
            ready = 1
        end = mel.samples_for(pipeline.frames_done + min(ready, opts.max_frames_per_step))
        samples = self._read(end)
        if samples is None:
            return
        first_index, self._read_pos = self._read_pos, end
        self.ring.release(end)
        frames = pipeline.process(samples, first_index)
        self.status.speaking = pipeline.vad.speaking
        for i, frame in enumerate(frames):
            if i < len(frames) - 1:  # catching up: only the newest goes out
                self.status.frames_skipped += 1
                continue
            newest_sample = mel.samples_for(frame.number + 1) - 1
            self._schedule(frame, self.ring.capture_time(newest_sample))

    def _drain(self) -> None:
        """Stopped: every complete frame of audio still in the ring is computed and all pending
        sends are written now, in order, none superseded or skipped (a stop loses no captured
        audio). ``abort()`` cuts it short between chunks."""
        mel, pipeline = self._mel, self.pipeline
        while not self._abort.is_set():
            ready = mel.frames_in(self.ring.written) - pipeline.frames_done
            if ready <= 0:
                break
            end = mel.samples_for(pipeline.frames_done + min(ready, 8))
            samples = self._read(end)
            if samples is None:
                continue
            first_index, self._read_pos = self._read_pos, end
            self.ring.release(end)
            for frame in pipeline.process(samples, first_index):
                # Everything queued is due now, so this frame supersedes none of it.
                self._sends = collections.deque((0.0, *send[1:]) for send in self._sends)
                self._schedule(frame, self.ring.capture_time(mel.samples_for(frame.number + 1) - 1))
        if not self._abort.is_set():
            self._sends = collections.deque((0.0, *send[1:]) for send in self._sends)
            self._flush_due_sends()

    def _read(self, end: int) -> np.ndarray | None:
        try:
            return self.ring.read(self._read_pos, end)
        except RingOverrun as overrun:
            # The ring wrapped past us (the loop was stopped for seconds): jump to
            # what is still there; the lost audio counts as skipped frames.
            self.status.ring_overruns += 1
            self.status.record_error(str(overrun))
            lost = np.zeros(overrun.oldest_available - self._read_pos, dtype=np.float32)
            self.status.frames_skipped += self.pipeline.stream.skip_audio(lost)
            self._read_pos = overrun.oldest_available
            return None

    def _skip(self, frames: int) -> None:
        end = self._mel.samples_for(self.pipeline.frames_done + frames)
        samples = self._read(end)
        if samples is None:
            return
        first_index, self._read_pos = self._read_pos, end
        self.status.frames_skipped += self.pipeline.skip(samples, first_index)

    def _emit_idle(self, now: float) -> None:
        """No audio: keep the avatar alive at the pose rate."""
        if now < self._next_idle_at:
            return
        self._next_idle_at = max(self._next_idle_at + 1.0 / self.pose_fps, now)
        self._schedule(self.pipeline.idle(now - self.status.started_at), capture_time=None)

    def _schedule(self, frame: PipelineFrame, capture_time: float | None) -> None:
        """Queue a frame's sends, the first now (plus the audio delay), the rest a send period apart;
        ``capture_time`` None: idle motion, made without audio."""
        idle = capture_time is None
        due = time.perf_counter() + self.settings.audio_delay_s
        # Extrapolations of the previous frame not yet sent are superseded by this frame
        # (counted: a frame whose audio came early gives fewer than sends_per_frame sends).
        while self._sends and self._sends[-1][0] >= due and not self._sends[-1][4]:
            if not self._sends.pop()[5]:
                self.sends_superseded += 1
        interval = self.pipeline.send_clock.interval_s
        for k, send in enumerate(frame.sends):
            when = due + k * interval
            self._sends.append((when, send, when if idle else capture_time, frame.speaking, k == 0 and not idle, idle,
                                frame.expressions))

    def _flush_due_sends(self, everything: bool = False) -> None:
        """Send what is due; ``everything``: the rest too, each at its due time."""
        now = time.perf_counter()
        while self._sends and (everything or self._sends[0][0] <= now):
            if everything:
                time.sleep(max(0.0, self._sends[0][0] - time.perf_counter()))
            _, pose, capture_time, speaking, fresh, idle, expressions = self._sends.popleft()
            frame = PoseFrame(index=self._send_index, capture_time=capture_time, dir_vec=pose, speaking=speaking,
                              stream=self.stream_index, skeleton=self.skeleton, expressions=expressions)
            self._send_index += 1
            self.outputs.send(frame)
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
        if self.pipeline.asr is not None:
            self.pipeline.asr.publish(self.status)
        self.status.sanitizer = self.pipeline.sanitizer.counts.as_dict()
        self.outputs.publish()

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
        per_frame = self.pipeline.send_clock.per_frame
        rate = self._mel.sample_rate
        frames_done = self.pipeline.frames_done
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
            "pose_frames_computed": self.pipeline.model_frames,
            "pose_frames_skipped": self.status.frames_skipped,
            "sends_per_frame": per_frame,
            "sends_written": self.status.frames_emitted,
            "sends_idle_written": self.idle_sends_written,
            "sends_pending": pending,
            "sends_superseded": self.sends_superseded,
            "sends_unaccounted": unaccounted,
            "capture_clock_drift_ppm": drift_ppm,
        }
