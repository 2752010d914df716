"""Sound events from per-hop scores: hysteresis per label (``qedge listen --events``).

Each hop's (smoothed) score describes an interval of the stream of one hop's length: ``(t - hop, t]``
for the hop ending at ``t``, or, with ``delay`` d, ``(t - hop - d, t - d]``. ``qedge listen`` passes
d = (window − hop) / 2, so a window's decision describes the hop at its centre: a window-level
model sees an event from when it fills a good part of the window, and its centre is the unbiased
place to put that decision (on the held-out ESC-10 soundscape it raised event-based F1 with a 0.5 s
onset collar from 0.06 to 0.32 at a 1.29 s window, README "Live tagging"). Events are still
reported when they are detected (d seconds after the times they carry).

A label turns *on* when its score reaches ``on_threshold`` and stays on until it falls below
``off_threshold`` (< on_threshold: hysteresis, so a score hovering near one threshold does not
chatter). An event spans from the start of its first "on" interval to the end of its last one;
events shorter than ``min_duration`` seconds are discarded; each event reports its peak score.
Thresholds are one number for every label or one per label (an infinite threshold never switches
on: an open-set model's background output).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["Event", "EventDetector", "centre_delay"]


def centre_delay(window_s: float, hop_s: float) -> float:
    """How far ``qedge listen`` dates a window's decision back: (window − hop) / 2, to the hop at
    the window's centre (see the module docstring)."""
    return max(0.0, (float(window_s) - float(hop_s)) / 2.0)


@dataclass
class Event:
    """One detected sound: label, onset and offset (seconds of stream time), peak score."""

    label: str
    onset: float
    offset: float
    score: float

    def to_dict(self) -> dict:
        return {"event": self.label, "onset": round(self.onset, 3), "offset": round(self.offset, 3),
                "score": round(float(self.score), 4)}


class EventDetector:
    """Per-label hysteresis state machine over a stream of score vectors."""

    def __init__(self, labels: Sequence[str], on_threshold: float | Sequence[float],
                 off_threshold: float | Sequence[float] | None = None, min_duration: float = 0.0,
                 delay: float = 0.0) -> None:
        self.labels = list(labels)
        n = len(self.labels)
        self.on = np.broadcast_to(np.asarray(on_threshold, dtype=np.float64), (n,)).copy()
        off = self.on if off_threshold is None else np.asarray(off_threshold, dtype=np.float64)
        self.off = np.broadcast_to(off, (n,)).copy()
        if np.any(self.off > self.on):
            raise ValueError(f"off threshold {off_threshold} must not exceed the on threshold {on_threshold}")
        self.min_duration = float(min_duration)
        if delay < 0:
            raise ValueError(f"event delay must be ≥ 0, got {delay}")
        self.delay = float(delay)
        self._active = np.zeros(n, dtype=bool)
        self._onset = np.zeros(n)
        self._last = np.zeros(n)
        self._peak = np.zeros(n)

    def update(self, t: float, hop: float, scores: np.ndarray) -> list[Event]:
        """Feed the scores of the hop ending at ``t`` (hop length ``hop`` s); return closed events."""
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        t = t - self.delay
        closed: list[Event] = []
        for c in range(len(self.labels)):
            s = scores[c]
            if self._active[c]:
                if s < self.off[c]:
                    closed.extend(self._close(c))
                else:
                    self._last[c] = t
                    self._peak[c] = max(self._peak[c], s)
            elif s >= self.on[c]:
                self._active[c] = True
                self._onset[c] = max(0.0, t - hop)
                self._last[c] = t
                self._peak[c] = s
        return closed

    def flush(self) -> list[Event]:
        """Close every open event (end of stream)."""
        closed: list[Event] = []
        for c in np.flatnonzero(self._active):
            closed.extend(self._close(int(c)))
        return closed

    def _close(self, c: int) -> list[Event]:
        self._active[c] = False
        onset, offset = float(self._onset[c]), float(self._last[c])
        if offset - onset + 1e-9 < self.min_duration:
            return []
        return [Event(self.labels[c], onset, offset, float(self._peak[c]))]
