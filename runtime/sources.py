"""Audio sources for ``qedge listen``: microphone, file (real-time or fast) and raw PCM on stdin.

Every source delivers float32 blocks of shape (frames, channels) at its own ``sample_rate`` into a
:class:`~qedge.runtime.ring.RingBuffer`; the listener's worker thread reads the ring, mixes down
(``runtime.audio.to_mono``) and resamples to the model rate
(:class:`~qedge.runtime.resample.StreamResampler`). The microphone callback does nothing but copy its
block into the ring (design.md §9). Finding a capture device is :mod:`qedge.runtime.devices`.

Dropped audio (microphone): PulseAudio drops audio without raising an overflow flag, so the count
comes from the wall clock: frames expected since the first block arrived minus frames received
(:meth:`MicrophoneSource.note_blocks`, :meth:`MicrophoneSource.dropped_frames`), plus the ring's
own overruns (counted by the ring).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO

import numpy as np

from qedge.errors import QedgeError
from qedge.runtime.devices import _sounddevice, resolve_input_device
from qedge.runtime.ring import Block, RingBuffer

__all__ = [
    "Source",
    "MicrophoneSource",
    "FileSource",
    "StdinSource",
]

#: Seconds without a single block from a live device before it is declared gone.
STALL_SECONDS = 2.0


class Source:
    """Common interface: audio arrives in ``self.ring`` at ``self.sample_rate`` Hz.

    ``live`` sources (microphone, a file paced in real time) run on the wall clock: a listener
    that falls behind skips windows. Non-live sources (``--fast`` files, stdin) wait for the
    listener (back-pressure), so every window is processed.
    """

    name: str = "source"
    sample_rate: int
    channels: int = 1
    live: bool = True
    ring: RingBuffer

    def __init__(self) -> None:
        self.error: str | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)

    @property
    def finished(self) -> bool:
        """True once no more audio will come (end of file / stdin, or a device fault)."""
        return self._done.is_set()

    def health(self) -> str | None:
        """A fault message once the source has failed (the listener stops and reports it)."""
        return self.error

    def note_blocks(self, blocks: list[Block]) -> None:
        """Called by the listener with every batch of blocks it reads (for wall-clock accounting)."""

    def dropped_frames(self) -> int:
        """Frames lost before reaching the ring (wall-clock accounting; 0 for paced sources)."""
        return 0

    def _put(self, block: np.ndarray) -> bool:
        """Paced producers: wait for room in the ring (back-pressure), then write. False if stopped."""
        while not self.live and self.ring.free < len(block):
            if self._stop.wait(0.001):
                return False
        self.ring.write(block)
        return True


class FileSource(Source):
    """An audio file decoded to mono at ``sample_rate`` (``load_audio``), fed in blocks.

    realtime=True paces blocks on the wall clock (block i is written when its last sample would
    have been recorded), like a microphone; realtime=False (``--fast``) feeds as fast as the
    listener consumes.
    """

    def __init__(self, path: str | Path, sample_rate: int, realtime: bool = True,
                 blocksize: int = 1024) -> None:
        super().__init__()
        from qedge.runtime.audio import load_audio

        self.path = Path(path)
        self.name = str(path)
        self.sample_rate = int(sample_rate)
        self.live = bool(realtime)
        self.blocksize = int(blocksize)
        self.audio = np.asarray(load_audio(self.path, self.sample_rate), dtype=np.float32).reshape(-1)
        # Live: 10 s of slack for a slow listener. Fast: a few blocks, so back-pressure keeps the
        # producer just ahead of the listener (and end-to-end latency meaningful).
        self.ring = RingBuffer(self.sample_rate * 10 if self.live else 4 * self.blocksize, 1)

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate

    def start(self) -> None:
        self._thread = threading.Thread(target=self._feed, name="qedge-file-source", daemon=True)
        self._thread.start()

    def _feed(self) -> None:
        t0 = time.monotonic()
        try:
            for i in range(0, len(self.audio), self.blocksize):
                block = self.audio[i:i + self.blocksize]
                if self.live:
                    due = t0 + (i + len(block)) / self.sample_rate
                    if self._stop.wait(max(0.0, due - time.monotonic())):
                        return
                elif self._stop.is_set():
                    return
                if not self._put(block):
                    return
        finally:
            self._done.set()


class StdinSource(Source):
    """Raw interleaved PCM from a binary stream (stdin): ``s16le`` or ``f32le``, ``rate`` Hz,
    ``channels`` channels. Paced by its producer (back-pressure through the pipe)."""

    FORMATS = {"s16le": (np.dtype("<i2"), 1.0 / 32768.0), "f32le": (np.dtype("<f4"), 1.0)}

    def __init__(self, format: str = "s16le", rate: int = 32000, channels: int = 1,
                 stream: BinaryIO | None = None, blocksize: int = 1024) -> None:
        super().__init__()
        if format not in self.FORMATS:
            raise QedgeError(f"--format {format!r} is not supported: use one of {', '.join(self.FORMATS)}")
        if rate <= 0 or channels <= 0:
            raise QedgeError(f"--rate and --channels must be positive (got {rate}, {channels})")
        self.format = format
        self.name = f"stdin ({format}, {rate} Hz, {channels} ch)"
        self.sample_rate = int(rate)
        self.channels = int(channels)
        self.live = False
        self.blocksize = int(blocksize)
        self.stream = stream if stream is not None else sys.stdin.buffer
        # Half a second: enough slack for a live pipe (arecord …), small enough that a fast
        # producer (cat file.raw) waits instead of queueing seconds ahead of the listener.
        self.ring = RingBuffer(max(self.sample_rate // 2, 4 * self.blocksize), self.channels)
        self.frames_read = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._feed, name="qedge-stdin-source", daemon=True)
        self._thread.start()

    def _feed(self) -> None:
        dtype, scale = self.FORMATS[self.format]
        frame_bytes = dtype.itemsize * self.channels
        pending = b""
        try:
            while not self._stop.is_set():
                chunk = self.stream.read(self.blocksize * frame_bytes)
                if not chunk:
                    break
                pending += chunk
                usable = len(pending) - len(pending) % frame_bytes
                if usable == 0:
                    continue
                data = np.frombuffer(pending[:usable], dtype=dtype).astype(np.float32) * np.float32(scale)
                pending = pending[usable:]
                block = data.reshape(-1, self.channels)
                self.frames_read += len(block)
                if not self._put(block):
                    return
        except (OSError, ValueError) as exc:
            self.error = f"reading stdin failed: {exc}"
        finally:
            self._done.set()


# -- microphone --------------------------------------------------------------------------------
class MicrophoneSource(Source):
    """Live capture through PortAudio (sounddevice ``InputStream``).

    Opens the device at ``sample_rate`` (the model's) when it supports it, else at the device's
    default rate (the listener resamples). Mono when the device allows, else its first two
    channels (mixed down by the listener). The callback only copies ``indata`` into the ring.
    """

    def __init__(self, device: str | int | None, sample_rate: int, blocksize: int | None = None,
                 ring_seconds: float = 10.0) -> None:
        super().__init__()
        sd = self._sd = _sounddevice()
        self.device = resolve_input_device(device)
        self.name = f"{self.device['name']} (#{self.device['index']})"
        index = self.device["index"]
        self.channels = 1
        try:
            sd.check_input_settings(device=index, channels=1, dtype="float32")
        except Exception:
            self.channels = min(2, self.device["channels"])
        try:
            sd.check_input_settings(device=index, channels=self.channels, dtype="float32",
                                    samplerate=sample_rate)
            self.sample_rate = int(sample_rate)
        except Exception:
            self.sample_rate = int(round(self.device["default_samplerate"]))
        self.blocksize = int(blocksize) if blocksize else max(64, self.sample_rate // 100)  # 10 ms
        self.ring = RingBuffer(int(self.sample_rate * ring_seconds), self.channels)
        self.live = True
        self.status_flags = 0  # callbacks with PortAudio status flags set (input overflow, …)
        self._stream = None
        self._base_time: float | None = None
        self._base_frames = 0
        self._received = 0
        self._stopped_at: float | None = None
        self._stopping = False

    def _callback(self, indata, frames, time_info, status) -> None:  # PortAudio thread
        if status:
            self.status_flags += 1
        self.ring.write(indata)

    def _finished(self) -> None:  # PortAudio thread, once the stream ends
        if not self._stopping and self.error is None:
            self.error = f"input device {self.name} stopped delivering audio (disconnected?)"
        self._done.set()

    def start(self) -> None:
        sd = self._sd
        try:
            self._stream = sd.InputStream(
                device=self.device["index"], samplerate=self.sample_rate, channels=self.channels,
                dtype="float32", blocksize=self.blocksize, callback=self._callback,
                finished_callback=self._finished)
            self._stream.start()
        except Exception as exc:  # sd.PortAudioError and friends
            raise QedgeError(f"cannot open input device {self.name} at {self.sample_rate} Hz: {exc}") from exc
        self._opened = time.monotonic()

    def health(self) -> str | None:
        if self.error is None and self._stream is not None and not self._stopping:
            last = self.ring.last_arrival
            if time.monotonic() - (last if last is not None else self._opened) > STALL_SECONDS:
                self.error = (f"input device {self.name} delivered no audio for {STALL_SECONDS:.0f} s "
                              "(disconnected or stalled)")
            elif not self._stream.active and not self._done.is_set():
                self.error = f"input device {self.name} stopped (stream no longer active)"
        return self.error

    def note_blocks(self, blocks: list[Block]) -> None:
        """Wall-clock accounting, fed by the consumer with every block it reads.

        deficit(t) = (t − t_base)·rate − (frames received since t_base). A burst (backlog delivered
        late, e.g. a device's pre-roll) drives it below zero: the base is moved so it is 0 again,
        so a surplus never hides a later loss; a gap in delivery leaves a positive deficit.
        """
        for block in blocks:
            if self._base_time is None:  # the first block: its frames were captured before it arrived
                self._base_time, self._base_frames = block.arrival - len(block.data) / self.sample_rate, block.start
            deficit = self._deficit(block.arrival, block.end)
            if deficit < 0:
                self._base_time += deficit / self.sample_rate  # now deficit == 0
            self._received = block.end

    def _deficit(self, now: float, received: int) -> float:
        return (now - self._base_time) * self.sample_rate - (received - self._base_frames)

    def dropped_frames(self) -> int:
        """Frames the wall clock expected but the device never delivered (see :meth:`note_blocks`).

        A deficit up to two blocks or 0.1 s (whichever is larger) is delivery jitter (audio still
        in flight) and counts as 0; beyond that the whole deficit is reported.
        """
        if self._base_time is None:
            return 0
        now = self._stopped_at if self._stopped_at is not None else time.monotonic()
        tolerance = max(2 * self.blocksize, 0.1 * self.sample_rate)
        deficit = self._deficit(now, max(self._received, self.ring.written))
        return int(deficit) if deficit > tolerance else 0

    def stop(self) -> None:
        """Abort and close the stream. A vanished device can leave PortAudio stuck inside the
        call: it gets 2 s in a helper thread, after which we leave it (and keep sounddevice's
        exit handler from waiting on it again) so the summary and the error still come out."""
        self._stopping = True
        self._stopped_at = time.monotonic()
        stream, self._stream = self._stream, None
        if stream is not None:
            def close() -> None:
                try:
                    stream.abort()
                    stream.close()
                except Exception:  # the device may already be gone
                    pass

            closer = threading.Thread(target=close, name="qedge-mic-close", daemon=True)
            closer.start()
            closer.join(2.0)
            if closer.is_alive():
                import atexit

                atexit.unregister(getattr(self._sd, "_exit_handler", close))
        super().stop()
