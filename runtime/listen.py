"""The listen loop: source → ring → incremental features → every hop, the last window → backend →
smoothed scores → tags / events (design.md §9).

Threads: the source's producer (PortAudio callback, or a file/stdin reader) only writes into the
ring buffer. One worker thread reads the ring, mixes down, resamples to the model rate, pushes the
audio through the streaming extractor and runs the backend on the newest window every hop. The
caller's thread only waits (so Ctrl-C is handled promptly) and receives results via callbacks.

Live sources never queue windows: when the backend is slower than real time, every completed
window except the newest is dropped and counted as *skipped*, so latency stays bounded. Paced
sources (``--fast`` files, stdin) wait for the listener instead, and every window is processed.

Timing of a window whose last frame is e − 1 (frames are ``hop_length`` apart): ``t = e · hop /
sample_rate`` seconds of stream time. End-to-end latency runs from the arrival (wall clock) of
the audio block that completed the window to the moment its tags are ready.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from qedge.errors import QedgeError
from qedge.runtime.audio import to_mono
from qedge.runtime.backends import Backend
from qedge.runtime.events import Event, EventDetector, centre_delay
from qedge.runtime.features import FeatureConfig, LogMelDeltas
from qedge.runtime.model_info import ListenSettings
from qedge.runtime.report import LatencyStats, build_summary
from qedge.runtime.resample import StreamResampler
from qedge.runtime.sources import Source

__all__ = ["Listener", "ListenStats", "select_tags", "MovingAverage", "Decisions"]

#: How long the worker sleeps when the ring is empty (seconds).
POLL_SECONDS = 0.002
#: Tags reported per window by default (``--top-k``).
TOP_K = 3


def select_tags(scores: np.ndarray, labels: list[str], threshold: float | np.ndarray, top_k: int) -> list[dict[str, Any]]:
    """The ``top_k`` highest-scoring labels whose score is ≥ their threshold (one number, or one
    per label), best first."""
    limits = np.broadcast_to(np.asarray(threshold, dtype=np.float64), np.shape(scores))
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [{"label": labels[i], "score": round(float(scores[i]), 4)} for i in order if scores[i] >= limits[i]]


class MovingAverage:
    """Mean of the last ``n`` score vectors (``--smooth N``; n = 1 is no smoothing)."""

    def __init__(self, n: int) -> None:
        if n < 1:
            raise QedgeError(f"--smooth must be ≥ 1, got {n}")
        self._window: collections.deque[np.ndarray] = collections.deque(maxlen=int(n))

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        self._window.append(np.asarray(scores, dtype=np.float64))
        return np.mean(self._window, axis=0)


class Decisions:
    """What the listen loop makes of each window's raw scores: the moving average over ``smooth``
    windows, the tags (:func:`select_tags`) and, with ``events``, the hysteresis events
    (:class:`~qedge.runtime.events.EventDetector`). One place for it, so that the thresholds tuner
    (:mod:`qedge.stream.tune`) can replay kept scores exactly as ``qedge listen`` would decide."""

    def __init__(self, labels: list[str], thresholds: np.ndarray, off_thresholds: np.ndarray, smooth: int,
                 top_k: int, events: bool, min_duration: float = 0.0, delay: float = 0.0) -> None:
        self.labels, self.thresholds, self.top_k = list(labels), np.asarray(thresholds, np.float64), int(top_k)
        self.smoother = MovingAverage(smooth)
        self.detector = (EventDetector(self.labels, self.thresholds, off_thresholds, min_duration, delay=delay)
                         if events else None)

    def step(self, t: float, hop_s: float, probs: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]], list[Event]]:
        """``(smoothed scores, tags, events closed now)`` for the window ending at ``t``."""
        scores = self.smoother(probs)
        tags = select_tags(scores, self.labels, self.thresholds, self.top_k)
        closed = self.detector.update(t, hop_s, scores) if self.detector is not None else []
        return scores, tags, closed

    def flush(self) -> list[Event]:
        """Close every open event (end of stream)."""
        return self.detector.flush() if self.detector is not None else []


@dataclass
class ListenStats:
    """What the worker measured; :func:`qedge.runtime.report.build_summary` turns it into the summary."""

    features: LatencyStats = field(default_factory=LatencyStats)
    inference: LatencyStats = field(default_factory=LatencyStats)
    end_to_end: LatencyStats = field(default_factory=LatencyStats)
    windows: int = 0
    skipped: int = 0
    events: int = 0
    audio_samples: int = 0
    feature_seconds: float = 0.0
    inference_seconds: float = 0.0
    wall_seconds: float = 0.0
    error: str | None = None
    interrupted: bool = False


class Listener:
    """Streaming tagger around a backend (``.info`` and ``.run``).

    Every setting left as None comes from the model's :class:`~qedge.runtime.model_info.ListenSettings`
    (``info.listen``, chosen on data when the model was trained): window_s / hop_s (else the
    model's ``window_frames`` and a quarter of it), smooth (moving average over that many
    windows), threshold (one number for every label, else the model's per-label thresholds),
    off_threshold / min_duration (hysteresis events: on at the threshold, off below
    ``off_threshold`` — default ``off_ratio`` × the threshold —, at least ``min_duration`` s).
    An open-set model's background output is never a tag. keep_scores: every result carries the
    raw scores of all outputs (``"scores"``), for tuning and evaluation.
    """

    def __init__(self, backend: Backend, hop_s: float | None = None, window_s: float | None = None,
                 smooth: int | None = None, threshold: float | None = None, top_k: int = TOP_K, events: bool = False,
                 off_threshold: float | None = None, min_duration: float | None = None,
                 keep_scores: bool = False) -> None:
        self.backend = backend
        self.info = backend.info
        self.settings = self.info.listen
        self.config = FeatureConfig.from_dict(self.info.features)
        frame_s = self.config.hop_length / self.config.sample_rate
        if window_s is not None and window_s <= 0:
            raise QedgeError(f"--window must be > 0 seconds, got {window_s}")
        if hop_s is not None and hop_s <= 0:
            raise QedgeError(f"--hop must be > 0 seconds, got {hop_s}")
        fixed = getattr(backend, "fixed_frames", None)
        if window_s is not None:
            self.window_frames = max(1, round(window_s / frame_s))
        elif fixed:
            self.window_frames = int(fixed)  # the only window this export takes
        else:
            self.window_frames = int(self.settings.window_frames or self.info.window_frames)
        if fixed and fixed != self.window_frames:
            raise QedgeError(f"the model takes exactly {fixed} frames ({fixed * frame_s:.2f} s); "
                             f"--window {self.window_frames * frame_s:.2f} s does not fit it")
        if hop_s is not None:
            self.hop_frames = max(1, round(hop_s / frame_s))
        elif self.settings.hop_frames and window_s is None:
            self.hop_frames = int(self.settings.hop_frames)
        else:
            self.hop_frames = max(1, self.window_frames // 4)
        self.frame_s = frame_s
        self.hop_s = self.hop_frames * frame_s
        self.window_s = self.window_frames * frame_s
        #: events carry the times of their windows' centre hops (runtime.events): (window − hop) / 2
        self.event_delay_s = centre_delay(self.window_s, self.hop_s)
        labels = list(self.info.labels)
        if threshold is not None:
            if not 0.0 <= threshold <= 1.0:
                raise QedgeError(f"--threshold must be in [0, 1], got {threshold}")
            on = ListenSettings(default_threshold=float(threshold), background=self.settings.background)
            self.thresholds = np.asarray(on.threshold_vector(labels))
        else:
            self.thresholds = np.asarray(self.settings.threshold_vector(labels))
        if top_k < 1:
            raise QedgeError(f"--top-k must be ≥ 1, got {top_k}")
        self.smooth = int(self.settings.smooth if smooth is None else smooth)
        MovingAverage(self.smooth)  # validates
        self.top_k = int(top_k)
        self.events = bool(events)
        if off_threshold is None:
            self.off_thresholds = self.thresholds * float(self.settings.off_ratio)
        else:
            self.off_thresholds = np.where(np.isinf(self.thresholds), np.inf, float(off_threshold))
            if events and np.any(self.off_thresholds > self.thresholds):
                raise QedgeError(f"--off-threshold ({off_threshold}) must not exceed any label's threshold "
                                 f"(lowest {float(np.min(self.thresholds)):g})")
        self.min_duration = float(self.settings.min_duration if min_duration is None else min_duration)
        self.keep_scores = bool(keep_scores)
        # MACs scale with the number of frames (convolutions); the metadata's count is for window_frames.
        self.macs = int(round(self.info.macs * self.window_frames / max(1, self.info.window_frames)))

    # -- public --------------------------------------------------------------------------------
    def decisions(self) -> Decisions:
        """A fresh :class:`Decisions` with this listener's settings (one per run)."""
        return Decisions(self.info.labels, self.thresholds, self.off_thresholds, self.smooth, self.top_k,
                         self.events, self.min_duration, self.event_delay_s)

    def run(self, source: Source, seconds: float | None = None,
            on_result: Callable[[dict[str, Any]], None] | None = None,
            on_event: Callable[[dict[str, Any]], None] | None = None,
            stop: threading.Event | None = None) -> dict[str, Any]:
        """Listen until the source ends, ``seconds`` pass (wall clock for live sources, audio
        time otherwise), ``stop`` is set or Ctrl-C; return the summary dict (report.build_summary).

        A source fault (device gone) ends the run with ``summary['error']`` set; the caller
        prints the summary and exits non-zero.
        """
        stop = stop or threading.Event()
        stats = ListenStats()
        failure: list[BaseException] = []

        def work() -> None:
            try:
                self._loop(source, seconds, stats, on_result, on_event, stop)
            except BaseException as exc:  # surfaced in the caller's thread
                failure.append(exc)
                stop.set()

        start = time.monotonic()
        source.start()
        worker = threading.Thread(target=work, name="qedge-listen", daemon=True)
        worker.start()
        try:
            while worker.is_alive():
                worker.join(0.1)
        except KeyboardInterrupt:
            stats.interrupted = True
            stop.set()
            worker.join(5.0)
        finally:
            source.stop()
        stats.wall_seconds = time.monotonic() - start
        if failure:
            exc = failure[0]
            if isinstance(exc, QedgeError):
                stats.error = str(exc)
            else:
                raise exc
        return build_summary(self, source, stats)

    # -- worker --------------------------------------------------------------------------------
    def _loop(self, source: Source, seconds: float | None, stats: ListenStats,
              on_result: Callable | None, on_event: Callable | None, stop: threading.Event) -> None:
        cfg = self.config
        extractor = LogMelDeltas(cfg).stream()
        resampler = StreamResampler(source.sample_rate, cfg.sample_rate)
        decide = self.decisions()
        W, H = self.window_frames, self.hop_frames
        frames = np.zeros((4, 0, cfg.n_mels), dtype=np.float32)
        frames_start = 0  # absolute index of frames[:, 0]
        total = 0  # frames emitted by the extractor
        next_end = W  # frame count at which the next window is complete
        feat_pending = 0.0  # feature seconds since the last processed window
        started = time.monotonic()
        last_arrival = started

        def emit(end: int, arrival: float) -> None:
            nonlocal feat_pending
            window = frames[:, end - W - frames_start: end - frames_start]
            t0 = time.perf_counter()
            probs = np.asarray(self.backend.run(window[None]), dtype=np.float64).reshape(-1)
            t_inf = time.perf_counter() - t0
            if probs.size != len(self.info.labels):
                raise QedgeError(f"the model returned {probs.size} scores but its metadata lists "
                                 f"{len(self.info.labels)} labels: re-export it with 'qedge export'")
            t = end * self.frame_s
            _, tags, closed = decide.step(t, self.hop_s, probs)
            e2e = (time.monotonic() - arrival) * 1000.0
            result = {
                "t": round(t, 3),
                "tags": tags,
                "latency_ms": {"features": round(feat_pending * 1000.0, 3),
                               "inference": round(t_inf * 1000.0, 3),
                               "end_to_end": round(e2e, 3)},
                "macs": self.macs,
            }
            if self.keep_scores:
                result["scores"] = probs.astype(np.float32).tolist()
            stats.windows += 1
            stats.inference_seconds += t_inf
            stats.features.add(feat_pending * 1000.0)
            stats.inference.add(t_inf * 1000.0)
            stats.end_to_end.add(e2e)
            feat_pending = 0.0
            if on_result is not None:
                on_result(result)
            for ev in closed:
                stats.events += 1
                if on_event is not None:
                    on_event(ev.to_dict())

        def add_frames(new: np.ndarray, arrival: float, live: bool) -> None:
            """Append frames; process (paced) or remember (live) the windows they complete."""
            nonlocal frames, frames_start, total, next_end
            if new.shape[1] == 0:
                return
            frames = np.concatenate([frames, new], axis=1) if frames.shape[1] else new
            total += new.shape[1]
            newest = None
            while total >= next_end:
                if live:
                    if newest is not None or pending[0] is not None:
                        stats.skipped += 1
                    newest = (next_end, arrival)
                else:
                    emit(next_end, arrival)
                next_end += H
            if newest is not None:
                pending[0] = newest
            keep = W + H + new.shape[1] if live else W + H
            if frames.shape[1] > keep:
                drop = frames.shape[1] - keep
                frames = frames[:, drop:]
                frames_start += drop

        pending: list[tuple[int, float] | None] = [None]
        ended = False
        while not stop.is_set():
            if seconds is not None:
                elapsed = (time.monotonic() - started) if source.live else stats.audio_samples / cfg.sample_rate
                if elapsed >= seconds:
                    break
            blocks = source.ring.read()
            source.note_blocks(blocks)
            if not blocks:
                error = source.health()
                if error:
                    raise QedgeError(error)
                if source.finished and source.ring.available == 0:
                    ended = True
                    break
                time.sleep(POLL_SECONDS)
                continue
            for block in blocks:
                t0 = time.perf_counter()
                audio = resampler.process(to_mono(block.data))
                new = extractor.push(audio) if audio.size else frames[:, :0]
                feat_pending += time.perf_counter() - t0
                stats.feature_seconds += time.perf_counter() - t0
                stats.audio_samples += audio.size
                last_arrival = block.arrival
                add_frames(new, block.arrival, source.live)
                if seconds is not None and not source.live and stats.audio_samples >= seconds * cfg.sample_rate:
                    break
            if pending[0] is not None:  # live: only the newest completed window
                end, arrival = pending[0]
                pending[0] = None
                emit(end, arrival)
        if ended and stats.audio_samples > 0:
            # End of stream: the extractor's last frames (reflect-padded tail), then close events.
            # A stream shorter than one window is zero-padded to one (as clips are in training).
            t0 = time.perf_counter()
            short = (W - 1) * cfg.hop_length - extractor.samples_received
            if stats.windows + stats.skipped == 0 and short > 0:
                add_frames(extractor.push(np.zeros(short, dtype=np.float32)), last_arrival, live=False)
            new = extractor.flush()
            stats.feature_seconds += time.perf_counter() - t0
            feat_pending += time.perf_counter() - t0
            add_frames(new, last_arrival, live=False)
        for ev in decide.flush():
            stats.events += 1
            if on_event is not None:
                on_event(ev.to_dict())
        stats.error = source.health()
