"""Single-producer / single-consumer audio ring buffer with overrun accounting (design.md §9).

The producer is an audio callback (PortAudio thread) or a reader thread; it only copies its block
into preallocated memory and publishes its counters. It never takes a lock, allocates no buffer and
never waits for the consumer, so a slow consumer can never stall the audio thread: when the
consumer falls more than ``capacity`` frames behind, the oldest audio is overwritten and the
consumer counts what it lost (an *overrun*) when it next reads.

Positions are absolute frame counts (monotonic Python ints). The consumer copies the region
``[read_pos, write_pos)`` and then re-reads the producer's *claim* (the end of the block it is
writing, published before it copies): any part of the copy the producer may have overwritten
meanwhile (``< claim − capacity``) is discarded and counted, a seqlock-style check that keeps the
buffer lock-free under the GIL.

Every block also records its arrival time (``time.monotonic()`` when the producer wrote it), so
the consumer can tell when the last sample of a window arrived (end-to-end latency).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

__all__ = ["RingBuffer", "Block"]


@dataclass
class Block:
    """A piece of audio as read back by the consumer.

    data: (frames, channels) float32.  start: absolute frame index of ``data[0]``.
    arrival: monotonic wall-clock time at which the producer wrote the block's last frame.
    """

    data: np.ndarray
    start: int
    arrival: float

    @property
    def end(self) -> int:
        return self.start + len(self.data)


class RingBuffer:
    """Lock-free-ish SPSC ring of ``capacity`` frames × ``channels`` (float32).

    Producer side: :meth:`write`.  Consumer side: :meth:`read`.  Statistics: ``written``
    (frames ever written), ``overruns`` (how many times the consumer found audio lost) and
    ``overrun_frames`` (how many frames it lost).
    """

    def __init__(self, capacity: int, channels: int = 1, max_blocks: int = 8192) -> None:
        if capacity <= 0 or channels <= 0:
            raise ValueError(f"ring capacity and channels must be positive, got {capacity}, {channels}")
        self.capacity = int(capacity)
        self.channels = int(channels)
        self._data = np.zeros((self.capacity, self.channels), dtype=np.float32)
        self._max_blocks = int(max_blocks)
        self._block_end = np.zeros(self._max_blocks, dtype=np.int64)
        self._block_time = np.zeros(self._max_blocks, dtype=np.float64)
        # Producer-owned counters (published after the data is in place).
        self._write_pos = 0
        self._write_claim = 0
        self._blocks_written = 0
        # Consumer-owned counters.
        self._read_pos = 0
        self._blocks_read = 0
        self.overruns = 0
        self.overrun_frames = 0

    # -- producer ------------------------------------------------------------------------------
    def write(self, block: np.ndarray, arrival: float | None = None) -> None:
        """Copy ``block`` ((frames,) or (frames, channels)) in; never blocks, allocates no buffer.

        A block longer than the whole ring keeps only its last ``capacity`` frames (the rest is
        counted as lost by the consumer, exactly like any overrun).
        """
        n = block.shape[0]
        if n == 0:
            return
        view = block.reshape(n, -1) if block.ndim == 1 else block
        pos = self._write_pos
        if n > self.capacity:  # keep only what fits; the skipped head is an overrun
            view = view[n - self.capacity:]
            pos += n - self.capacity
            n = self.capacity
        end = pos + n
        self._write_claim = end  # announce the region before touching it (seqlock)
        start = pos % self.capacity
        first = min(n, self.capacity - start)
        self._data[start:start + first] = view[:first]
        if first < n:
            self._data[: n - first] = view[first:]
        slot = self._blocks_written % self._max_blocks
        self._block_end[slot] = end
        self._block_time[slot] = time.monotonic() if arrival is None else arrival
        self._blocks_written += 1
        self._write_pos = end  # publish last

    # -- both sides ----------------------------------------------------------------------------
    @property
    def written(self) -> int:
        """Frames written by the producer so far."""
        return self._write_pos

    @property
    def read_pos(self) -> int:
        """Absolute index of the next frame the consumer will read."""
        return self._read_pos

    @property
    def last_arrival(self) -> float | None:
        """Arrival time (monotonic) of the newest block written, None before the first."""
        n = self._blocks_written
        return None if n == 0 else float(self._block_time[(n - 1) % self._max_blocks])

    @property
    def available(self) -> int:
        """Frames waiting for the consumer (may exceed ``capacity`` before an overrun is counted)."""
        return self._write_pos - self._read_pos

    @property
    def free(self) -> int:
        """Frames the producer may write without overwriting unread audio (for paced producers)."""
        return self.capacity - min(self.capacity, self.available)

    # -- consumer ------------------------------------------------------------------------------
    def read(self, max_frames: int | None = None) -> list[Block]:
        """Take everything written since the last read (up to ``max_frames``), split at block ends.

        Each returned :class:`Block` carries the arrival time of the producer block that its last
        frame came from. Audio overwritten before it could be read is skipped and counted in
        ``overruns`` / ``overrun_frames``.
        """
        write_pos = self._write_pos
        blocks_written = self._blocks_written
        start = self._read_pos
        oldest = write_pos - self.capacity
        if start < oldest:
            self._count_overrun(oldest - start)
            start = oldest
        end = write_pos if max_frames is None else min(write_pos, start + max_frames)
        if end <= start:
            return []
        n = end - start
        idx = start % self.capacity
        first = min(n, self.capacity - idx)
        data = np.empty((n, self.channels), dtype=np.float32)
        data[:first] = self._data[idx:idx + first]
        if first < n:
            data[first:] = self._data[: n - first]
        # Seqlock check: anything the producer may have overwritten (or be overwriting: its claim
        # is published before it copies) while we copied is lost.
        oldest_after = self._write_claim - self.capacity
        if oldest_after > start:
            lost = min(n, oldest_after - start)
            self._count_overrun(lost)
            data = data[lost:]
            start += lost
        self._read_pos = end
        if start >= end:
            return []
        return self._split(data, start, end, blocks_written)

    def _count_overrun(self, frames: int) -> None:
        self.overruns += 1
        self.overrun_frames += int(frames)

    def _split(self, data: np.ndarray, start: int, end: int, blocks_written: int) -> list[Block]:
        """Cut ``data`` (frames ``[start, end)``) at the producer's block boundaries."""
        first_block = max(self._blocks_read, blocks_written - self._max_blocks)
        out: list[Block] = []
        cursor = start
        b = first_block
        while b < blocks_written and cursor < end:
            slot = b % self._max_blocks
            bend = int(self._block_end[slot])
            btime = float(self._block_time[slot])
            if bend <= cursor:
                b += 1
                continue
            cut = min(bend, end)
            out.append(Block(data[cursor - start: cut - start], cursor, btime))
            cursor = cut
            if cut == bend:
                b += 1
            else:
                break  # a partial block: its record is used again on the next read
        if cursor < end:  # block records lost (far behind): stamp the rest with "now"
            out.append(Block(data[cursor - start:], cursor, time.monotonic()))
        self._blocks_read = b
        return out
