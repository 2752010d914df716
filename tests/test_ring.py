"""The runtime's SPSC ring buffer: order across wrap-around, block boundaries and arrival times,
exact overrun accounting, and a real producer thread racing a slow consumer (design.md §9)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from qedge.runtime.ring import RingBuffer


def ramp(start: int, n: int, channels: int = 1) -> np.ndarray:
    """Frames whose every sample is its absolute frame index (so any corruption is visible)."""
    return np.repeat(np.arange(start, start + n, dtype=np.float32)[:, None], channels, axis=1)


def test_wraparound_order_and_block_split():
    ring = RingBuffer(10, channels=2)
    got = []
    pos = 0
    for size in (3, 4, 5, 2, 6, 1, 7):  # crosses the end of the ring several times
        ring.write(ramp(pos, size, 2), arrival=float(pos + size))
        pos += size
        blocks = ring.read()
        assert [len(b.data) for b in blocks] == [size]
        assert blocks[0].start == pos - size and blocks[0].end == pos and blocks[0].arrival == float(pos)
        got.append(blocks[0].data)
    data = np.concatenate(got)
    np.testing.assert_array_equal(data, ramp(0, pos, 2))
    assert ring.overruns == 0 and ring.overrun_frames == 0 and ring.available == 0


def test_read_splits_at_producer_blocks_and_max_frames():
    ring = RingBuffer(100)
    ring.write(ramp(0, 10), arrival=1.0)
    ring.write(ramp(10, 5), arrival=2.0)
    ring.write(ramp(15, 8), arrival=3.0)
    first = ring.read(max_frames=12)  # stops inside the second block
    assert [(b.start, b.end, b.arrival) for b in first] == [(0, 10, 1.0), (10, 12, 2.0)]
    rest = ring.read()
    assert [(b.start, b.end, b.arrival) for b in rest] == [(12, 15, 2.0), (15, 23, 3.0)]
    np.testing.assert_array_equal(np.concatenate([b.data for b in first + rest]), ramp(0, 23))
    assert ring.read() == []


def test_overrun_is_counted_exactly():
    ring = RingBuffer(16)
    for i in range(5):  # 40 frames into a 16-frame ring, nothing read
        ring.write(ramp(8 * i, 8))
    assert ring.available == 40 and ring.free == 0
    blocks = ring.read()
    data = np.concatenate([b.data for b in blocks])
    np.testing.assert_array_equal(data, ramp(24, 16))  # only the newest 16 frames survive
    assert blocks[0].start == 24
    assert ring.overruns == 1 and ring.overrun_frames == 24
    ring.write(ramp(40, 40))  # one block longer than the ring
    data = np.concatenate([b.data for b in ring.read()])
    np.testing.assert_array_equal(data, ramp(64, 16))
    assert ring.overruns == 2 and ring.overrun_frames == 24 + 24
    assert ring.written == 80 and ring.read_pos == 80


def test_concurrent_producer_and_slow_consumer():
    """A producer thread never waits; whatever the consumer receives is uncorrupted, in order, and
    received + counted-as-lost == written."""
    ring = RingBuffer(2048)
    total, block = 256 * 800, 256
    done = threading.Event()

    def produce():
        for pos in range(0, total, block):
            ring.write(ramp(pos, block))
            if pos % (block * 64) == 0:
                time.sleep(0.001)
        done.set()

    received = 0
    last_end = 0
    thread = threading.Thread(target=produce)
    thread.start()
    rng = np.random.default_rng(0)
    while not (done.is_set() and ring.available == 0):
        for b in ring.read(max_frames=int(rng.integers(100, 3000))):
            assert b.start >= last_end  # monotonic; a jump is an overrun
            np.testing.assert_array_equal(b.data[:, 0], np.arange(b.start, b.end, dtype=np.float32))
            received += len(b.data)
            last_end = b.end
        if rng.random() < 0.2:
            time.sleep(0.002)  # a slow consumer: the producer laps it
    thread.join()
    assert ring.written == total
    assert received + ring.overrun_frames == total
    assert ring.overruns > 0  # the slow consumer did fall behind (otherwise this test proves little)


def test_invalid_ring():
    with pytest.raises(ValueError):
        RingBuffer(0)
