"""Microphone capture: a PortAudio input stream that only copies into the sample ring.

The callback mixes and resamples the block to 16 kHz mono into preallocated
buffers (one numba call), stamps it with its capture time on the perf_counter
clock and writes it to the ring; nothing else happens on the audio thread.

A supervisor thread owns the stream. When the device vanishes (the stream
finishes or errors, or callbacks stop arriving), it reports the loss, closes the
stream and retries with backoff, rescanning PortAudio's device list, until the
device is back. Meanwhile `is_live` is False and the runtime shows idle motion.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import sounddevice as sd

from hop.engine.resample import StreamingResampler
from hop.engine.ring import SampleRing
from hop.engine.status import EngineStatus, SourceState

_LIST_HINT = "run hop-live --list-devices to see the inputs"


class CaptureError(RuntimeError):
    """The microphone cannot be used; the message names the fix."""


@dataclass(frozen=True)
class InputDevice:
    index: int
    name: str
    host_api: str
    max_input_channels: int
    default_samplerate: float

    def describe(self) -> str:
        return (f"{self.index:3d}  {self.name}  ({self.host_api}, {self.max_input_channels} in, "
                f"{self.default_samplerate:.0f} Hz)")


def list_devices() -> list[InputDevice]:
    """The input devices PortAudio sees now."""
    host_apis = sd.query_hostapis()
    devices = []
    for index, device in enumerate(sd.query_devices()):
        if device["max_input_channels"] > 0:
            devices.append(InputDevice(index, device["name"], host_apis[device["hostapi"]]["name"],
                                       device["max_input_channels"], device["default_samplerate"]))
    return devices


def format_device_list() -> str:
    """What --list-devices prints."""
    devices = list_devices()
    if not devices:
        return "no input devices found (is a microphone plugged in, and PulseAudio/PipeWire running?)"
    return "\n".join(device.describe() for device in devices)


def resolve_device(spec: str | int | None) -> InputDevice:
    """Find an input device by index, exact name, or case-insensitive name substring."""
    devices = list_devices()
    available = "; ".join(f"{d.index}: {d.name}" for d in devices) or "none"
    if spec is None or spec == "default":
        default_index = sd.default.device[0]
        if default_index is None or default_index < 0:
            by_name = [d for d in devices if d.name == "default"]
            if by_name:
                return by_name[0]
            raise CaptureError(f"no default input device; available: {available}; {_LIST_HINT}")
        spec = int(default_index)
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        index = int(spec)
        for device in devices:
            if device.index == index:
                return device
        raise CaptureError(f"no input device with index {index}; available: {available}; {_LIST_HINT}")
    exact = [d for d in devices if d.name == spec]
    if exact:
        return exact[0]
    matches = [d for d in devices if spec.lower() in d.name.lower()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CaptureError(f"no input device named {spec!r}; available: {available}; {_LIST_HINT}")
    names = "; ".join(f"{d.index}: {d.name}" for d in matches)
    raise CaptureError(f"input device name {spec!r} is ambiguous ({names}); give the index instead")


def rescan_devices() -> None:
    """Re-initialise PortAudio so devices plugged in since start-up become visible.

    Only safe while this process has no other open PortAudio stream (the engine
    uses PortAudio for capture only).
    """
    sd._terminate()
    sd._initialize()


@dataclass(frozen=True)
class CaptureOptions:
    device: str | int | None = None  # None: the system's default input
    samplerate: float | None = None  # None: the device's default rate
    channels: int | None = None  # None: up to 2 of the device's channels, mixed to mono
    block_s: float = 0.01
    latency: str | float = "low"
    # No callback for this long while the stream should run means the device is gone.
    stall_timeout_s: float = 1.0
    retry_initial_s: float = 0.25
    retry_max_s: float = 2.0
    rescan_on_retry: bool = True
    supervise_interval_s: float = 0.05


class MicCapture:
    """Owns the input stream; call start(), then read from `ring`; stop() at the end."""

    def __init__(self, options: CaptureOptions, ring: SampleRing):
        self.options = options
        self.ring = ring
        self.state = SourceState.STARTING
        self.message = ""
        self.overflows = 0
        self.losses = 0
        self.callbacks = 0
        self.device: InputDevice | None = None
        self._stream: sd.InputStream | None = None
        self._resampler: StreamingResampler | None = None
        self._rate = 0.0
        self._last_callback = 0.0
        self._stream_ended = threading.Event()
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None

    @property
    def is_live(self) -> bool:
        return self.state == SourceState.LIVE

    @property
    def name(self) -> str:
        return self.device.name if self.device else str(self.options.device)

    def start(self) -> None:
        """Open the device now (raising CaptureError with the fix if that fails), then supervise it."""
        self.device = resolve_device(self.options.device)
        try:
            self._open()
        except (sd.PortAudioError, ValueError) as error:
            self.state = SourceState.FAILED
            raise CaptureError(
                f"cannot open input device {self.device.name!r}: {error}; "
                f"try another --mic or --samplerate; {_LIST_HINT}"
            ) from error
        self._supervisor = threading.Thread(target=self._supervise, name="hop-capture-supervisor",
                                            daemon=True)
        self._supervisor.start()

    def stop(self) -> None:
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
        self._close()
        self.state = SourceState.STOPPED

    def publish(self, status: EngineStatus) -> None:
        """Copy this source's figures into the engine status."""
        status.source_name = self.name
        status.source_state = self.state
        status.source_message = self.message
        status.input_overflows = self.overflows
        status.device_losses = self.losses

    # -- the audio thread ----------------------------------------------------
    def _callback(self, indata, frames, time_info, status) -> None:
        now = time.perf_counter()
        self._last_callback = now
        self.callbacks += 1
        if status.input_overflow:
            self.overflows += 1
        # PortAudio's clock is not perf_counter; map the ADC time through the
        # offset between the two clocks seen right now.
        adc_age = time_info.currentTime - time_info.inputBufferAdcTime
        if time_info.inputBufferAdcTime > 0 and 0.0 <= adc_age < 1.0:
            # pulse often reports the ADC time as "now"; a block cannot end in the future
            block_end = min(now, now - adc_age + frames / self._rate)
        else:
            block_end = now
        samples = self._resampler.process(indata)
        self.ring.write(samples, block_end - self._resampler.lag_seconds)

    def _on_finished(self) -> None:
        self._stream_ended.set()

    # -- the supervisor ------------------------------------------------------
    def _open(self) -> None:
        device = self.device
        rate = float(self.options.samplerate or device.default_samplerate)
        channels = self.options.channels or min(device.max_input_channels, 2)
        block_frames = max(1, round(self.options.block_s * rate))
        self._rate = rate
        self._resampler = StreamingResampler(int(rate), channels, block_frames)
        self._stream_ended.clear()
        stream = sd.InputStream(
            device=device.index, samplerate=rate, channels=channels, dtype="float32",
            blocksize=block_frames, latency=self.options.latency,
            callback=self._callback, finished_callback=self._on_finished,
        )
        self._last_callback = time.perf_counter()
        try:
            stream.start()
        except sd.PortAudioError:
            stream.close()
            raise
        self._stream = stream
        self.state = SourceState.LIVE
        self.message = f"{device.name}: {rate:.0f} Hz, {channels} ch"

    def _close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        # abort() rather than stop(): stop() waits for pending buffers, which a
        # vanished device never delivers. Run it aside so a hung driver cannot hang us.
        closer = threading.Thread(target=_abort_and_close, args=(stream,), daemon=True)
        closer.start()
        closer.join(timeout=2.0)
        if closer.is_alive():
            self.message = "the audio driver did not release the old stream; it was abandoned"

    def _lost_reason(self) -> str | None:
        if self._stream_ended.is_set():
            return "the input stream ended"
        if time.perf_counter() - self._last_callback > self.options.stall_timeout_s:
            return f"no audio for {self.options.stall_timeout_s:.1f} s"
        return None

    def _supervise(self) -> None:
        options = self.options
        while not self._stop.wait(options.supervise_interval_s):
            reason = self._lost_reason()
            if reason is None:
                continue
            self.losses += 1
            self.state = SourceState.LOST
            self.message = f"input device {self.device.name!r} lost ({reason}); retrying"
            self._close()
            self._reopen_with_backoff()

    def _reopen_with_backoff(self) -> None:
        delay = self.options.retry_initial_s
        device_name = self.device.name
        while not self._stop.wait(delay):
            try:
                if self.options.rescan_on_retry:
                    rescan_devices()
                # By name: indices shift when devices come and go.
                self.device = resolve_device(device_name)
                self._open()
                return
            except (CaptureError, sd.PortAudioError, ValueError) as error:
                self.message = f"input device {device_name!r} lost; retrying in {delay:.2f} s ({error})"
            delay = min(self.options.retry_max_s, delay * 2)


def _abort_and_close(stream: sd.InputStream) -> None:
    try:
        stream.abort()
    finally:
        stream.close()
