"""Post-processing chosen on data: per-label thresholds and smoothing that meet a false-alarm budget.

The listen loop runs once over a tuning soundscape (:func:`qedge.stream.sets.stream_soundscape`
``use="tune"``: validation clips — training clips for a model without a validation split — on
beds, quiet stretches of silence, noise and speech from speakers the model never heard) and
keeps every window's raw scores. Then, for each smoothing length n (moving average over n
windows, as :class:`~qedge.runtime.listen.MovingAverage`) and each label c, every threshold θ of
a grid is tried:

- **false alarms**: the hysteresis events (:class:`~qedge.runtime.events.EventDetector`, on at θ,
  off below ``off_ratio``·θ) of label c active in a quiet stretch, per kind, counted by
  :func:`qedge.stream.score.false_alarms` (as the stream evaluation counts them);
- **window F1**: windows that hold at least half of an event of c (or half the window) are
  positives, windows touching no event of c negatives, the rest are not scored; a window is
  tagged c when its smoothed score reaches θ.

θ_c is the lowest threshold whose false alarms stay within the budget (per hour of each quiet
kind: ``FA_BUDGET``, shared by the labels and rounded down, so on less than an hour of tuning audio
the budget is zero) and whose F1 is within 0.02 of the best such threshold's: the lowest, which
favours recall (and, for a model tuned on its training clips, allows for them scoring higher
than unseen ones). n is the smoothing with the
best mean F1. A label that cannot meet the budget gets the top of the grid and is reported.

The listen window is chosen the same way, on the same audio: the soundscape is heard once per
candidate window (``WINDOW_FRACTIONS`` of the training crop, hop a quarter of it, ≤ 0.25 s),
thresholds and smoothing are tuned for each, the kept scores are replayed through the listen
loop's own decisions (:class:`~qedge.runtime.listen.Decisions`) and scored as the stream
evaluation scores (:func:`qedge.stream.score.score_stream`); the window with the best segment F1
wins, the shortest among those within ``WINDOW_F1_TIE`` of it (a shorter window tags sooner). A
window-level model tags an event once it fills a good part of the window, so a window shorter
than the crop tags sooner and follows short events better, at the cost of less context per
decision; which wins is a property of the model and its classes, hence measured.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from qedge.errors import QedgeError
from qedge.runtime.events import EventDetector, centre_delay
from qedge.runtime.listen import TOP_K, Decisions
from qedge.runtime.model_info import ListenSettings
from qedge.runtime.report import decision_context
from qedge.stream.score import StreamRun, false_alarms, score_stream, scored_quiet_seconds

__all__ = ["FA_BUDGET", "THRESHOLDS", "SMOOTHING", "WINDOW_FRACTIONS", "choose_listen_settings", "tune_on_runs",
           "tune_listen", "replay", "window_candidates"]

#: False alarms per hour of event-free audio the defaults aim for (issue #13's targets).
FA_BUDGET = {"silence": 1.0, "noise": 1.0, "speech": 6.0, "recorded": 6.0}
#: Threshold grid.
THRESHOLDS = tuple(np.round(np.arange(0.30, 0.96, 0.05), 2).tolist()) + (0.98,)
#: Smoothing lengths tried (windows).
SMOOTHING = (1, 2, 3)
#: Listen windows tried, as fractions of the training crop.
WINDOW_FRACTIONS = (0.5, 0.75, 1.0)
#: Segment F1 within this of the best counts as a tie (the shorter window wins).
WINDOW_F1_TIE = 0.01


def _smooth(scores: np.ndarray, n: int) -> np.ndarray:
    """Causal moving average over the last n rows (fewer at the start), as MovingAverage."""
    if n <= 1:
        return scores
    c = np.cumsum(np.vstack([np.zeros((1, scores.shape[1])), scores]), axis=0)
    idx = np.arange(1, scores.shape[0] + 1)
    lo = np.maximum(0, idx - n)
    return (c[idx] - c[lo]) / (idx - lo)[:, None]


def _window_truth(times: np.ndarray, window_s: float, events: Sequence[tuple[float, float, str]],
                  label: str) -> np.ndarray:
    """+1 positive, 0 negative, −1 not scored, per window (see the module docstring)."""
    truth = np.zeros(times.shape[0], dtype=np.int8)
    start = times - window_s
    for onset, offset, lab in events:
        if lab != label:
            continue
        overlap = np.minimum(times, offset) - np.maximum(start, onset)
        need = 0.5 * min(window_s, offset - onset)
        truth[(overlap > 0) & (truth != 1)] = -1
        truth[overlap >= need] = 1
    return truth


def _false_alarms(track: np.ndarray, times: np.ndarray, hop_s: float, context_s: float, on: float,
                  off_ratio: float, quiet: Sequence[tuple[float, float, str]]) -> dict[str, int]:
    det = EventDetector(["x"], on, on * off_ratio)
    events = []
    for t, s in zip(times, track):
        events += det.update(float(t), hop_s, np.array([s]))
    events += det.flush()
    return false_alarms([(e.onset, e.offset) for e in events], quiet, context_s, hop_s)


def tune_on_runs(runs: Sequence[StreamRun], labels: Sequence[str], background: str | None,
                 off_ratio: float = 0.5, budget: dict[str, float] | None = None) -> tuple[ListenSettings, dict[str, Any]]:
    """Choose thresholds and smoothing from listen runs made with ``keep_scores=True``."""
    budget = {**FA_BUDGET, **(budget or {})}
    labels = list(labels)
    scored = [i for i, lab in enumerate(labels) if lab != background]
    window_s, hop_s = float(runs[0].summary["window_s"]), float(runs[0].summary["hop_s"])
    quiet_hours: dict[str, float] = {}
    for run in runs:
        for kind, seconds in scored_quiet_seconds(run.soundscape.quiet, window_s).items():
            quiet_hours[kind] = quiet_hours.get(kind, 0.0) + seconds / 3600.0
    allowed = {k: int(np.floor(budget.get(k, 1.0) * h / max(1, len(scored)))) for k, h in quiet_hours.items()}
    best: dict[str, Any] | None = None
    for n in SMOOTHING:
        chosen, f1s, notes = {}, [], []
        for c in scored:
            rows = []
            for thr in THRESHOLDS:
                fa: dict[str, int] = {}
                tp = fp = fn = 0
                for run in runs:
                    times = np.array([w["t"] for w in run.windows])
                    track = _smooth(np.array([w["scores"] for w in run.windows], dtype=np.float64), n)[:, c]
                    truth = _window_truth(times, window_s, run.soundscape.events, labels[c])
                    on = track >= thr
                    tp += int(np.sum(on & (truth == 1)))
                    fp += int(np.sum(on & (truth == 0)))
                    fn += int(np.sum(~on & (truth == 1)))
                    for k, v in _false_alarms(track, times, hop_s, decision_context(window_s, hop_s, n), thr,
                                              off_ratio, run.soundscape.quiet).items():
                        fa[k] = fa.get(k, 0) + v
                f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
                rows.append((thr, f1, all(fa.get(k, 0) <= allowed.get(k, 0) for k in fa), fa))
            ok = [r for r in rows if r[2]]
            if not ok:
                thr, f1 = THRESHOLDS[-1], rows[-1][1]
                notes.append(f"{labels[c]}: no threshold meets the false-alarm budget on the tuning audio "
                             f"(at {thr}: {rows[-1][3]})")
            else:
                top = max(r[1] for r in ok)
                thr, f1 = next((r[0], r[1]) for r in ok if r[1] >= top - 0.02)
            chosen[labels[c]] = float(thr)
            f1s.append(f1)
        candidate = {"smooth": n, "thresholds": chosen, "mean_window_f1": float(np.mean(f1s)), "notes": notes}
        if best is None or candidate["mean_window_f1"] > best["mean_window_f1"] + 1e-9:
            best = candidate
    assert best is not None
    hours = ", ".join(f"{k} {60 * h:.1f} min" for k, h in sorted(quiet_hours.items()))
    settings = ListenSettings(
        window_frames=None, hop_frames=None, thresholds=best["thresholds"], off_ratio=off_ratio,
        smooth=int(best["smooth"]), min_duration=0.0, background=background,
        chosen_on=(f"tuning soundscape: {sum(len(r.soundscape.events) for r in runs)} tuning events "
                   f"at 10 dB SNR, quiet {hours}; budget {budget} false alarms per hour"))
    return settings, {**best, "quiet_hours": quiet_hours, "allowed_false_alarms": allowed}


def replay(run: StreamRun, settings: ListenSettings, labels: Sequence[str]) -> StreamRun:
    """``run`` (made with ``keep_scores=True``) as the listen loop would have reported it with
    ``settings``: every window's raw scores through :class:`~qedge.runtime.listen.Decisions`."""
    labels = list(labels)
    window_s, hop_s = float(run.summary["window_s"]), float(run.summary["hop_s"])
    thresholds = np.asarray(settings.threshold_vector(labels))
    decide = Decisions(labels, thresholds, thresholds * settings.off_ratio, settings.smooth, TOP_K, True,
                       settings.min_duration, centre_delay(window_s, hop_s))
    windows, events = [], []
    for w in run.windows:
        _, tags, closed = decide.step(float(w["t"]), hop_s, np.asarray(w["scores"], dtype=np.float64))
        windows.append({"t": w["t"], "tags": tags})
        events += [e.to_dict() for e in closed]
    events += [e.to_dict() for e in decide.flush()]
    summary = {**run.summary, "smooth": settings.smooth,
               "context_s": round(decision_context(window_s, hop_s, settings.smooth), 3)}
    return StreamRun(run.soundscape, windows, events, summary)


def window_candidates(record: Any, fractions: Sequence[float] = WINDOW_FRACTIONS) -> list[tuple[int, int]]:
    """``(window_frames, hop_frames)`` per fraction of the training crop (distinct, shortest first)."""
    crop = record.crop_frames()
    out: list[tuple[int, int]] = []
    for fraction in sorted(fractions):
        if not 0.0 < fraction <= 1.0:
            raise QedgeError(f"a listen window must be a fraction in (0, 1] of the training crop, got {fraction}")
        frames = max(4, int(round(fraction * crop)))
        if all(frames != w for w, _ in out):
            out.append((frames, record.listen_hop_frames(frames)))
    return out


def tune_listen(backend: Any, record: Any, soundscape: Any, fractions: Sequence[float] = WINDOW_FRACTIONS,
                log: Any = None) -> tuple[ListenSettings, dict[str, Any]]:
    """Window, hop, smoothing and per-label thresholds of ``record``'s model (run by ``backend``)
    chosen on the tuning ``soundscape`` (module docstring). Returns the settings and a report:
    the chosen window's tuning figures and every candidate's."""
    from qedge.runtime.features import FeatureConfig
    from qedge.stream.score import listen_to

    config = FeatureConfig.from_dict(dict(record.features))
    frame_s = config.hop_length / config.sample_rate
    labels = list(record.labels)
    scored_labels = [lab for lab in labels if lab != record.background_label]
    candidates = []
    for window, hop in window_candidates(record, fractions):
        run = listen_to(soundscape, backend, keep_scores=True, threshold=1.0, smooth=1,
                        window_s=window * frame_s, hop_s=hop * frame_s)
        settings, report = tune_on_runs([run], labels, record.background_label)
        settings.window_frames, settings.hop_frames = window, hop
        figures = score_stream([replay(run, settings, labels)], scored_labels)
        row = {"window_s": round(window * frame_s, 3), "hop_s": round(hop * frame_s, 3),
               "segment_f1": round(figures["segment_f1"], 4), "event_recall": figures["event_recall"],
               "onset_latency_s": figures["onset_latency_s"]["median"],
               "false_alarms": {k: v["count"] for k, v in figures["false_alarms"].items()},
               "smooth": report["smooth"]}
        if log:
            log(f"  window {row['window_s']:.2f} s, hop {row['hop_s']:.2f} s: tuning segment F1 "
                f"{row['segment_f1']:.3f}, recall {row['event_recall']:.0%}, smoothing {row['smooth']}")
        candidates.append((row, settings, report))
    top = max(row["segment_f1"] for row, _, _ in candidates)
    row, settings, report = next(c for c in candidates if c[0]["segment_f1"] >= top - WINDOW_F1_TIE)
    tried = ", ".join(f"{c[0]['window_s']:g}" for c in candidates)
    settings.chosen_on += (f"; window {row['window_s']:g} s of {tried} s, the best tuning segment F1 "
                           f"{row['segment_f1']:.3f} (ties within {WINDOW_F1_TIE}: the shortest)")
    return settings, {**report, "window": row, "windows_tried": [c[0] for c in candidates]}


def choose_listen_settings(model: Any, meta: dict[str, Any], data: str, seed: int = 1,
                           quiet_seconds: float = 240.0, per_label: int = 8,
                           fractions: Sequence[float] = WINDOW_FRACTIONS,
                           log: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Tune ``model`` (torch, with its ``meta``) on its tuning soundscape of ``data``
    (:func:`tune_listen`); return ``(meta["listen"] dict, record)``, the record being what the
    model's history keeps of the tuning (window, smoothing, mean window F1, notes, allowed false
    alarms, every window tried)."""
    from qedge.data import find_dataset
    from qedge.inference import TorchBackend
    from qedge.meta import ModelRecord
    from qedge.stream.sets import stream_soundscape

    record = ModelRecord.from_meta(meta)
    index = find_dataset(data)
    soundscape = stream_soundscape(record, index, use="tune", seed=seed, quiet_seconds=quiet_seconds,
                                   per_label=per_label)
    if log:
        quiet = ", ".join(f"{kind} {sec / 60:.0f} min" for kind, sec in soundscape.quiet_seconds().items())
        log(f"choosing the listen window and thresholds on a {soundscape.duration / 60:.1f}-minute tuning "
            f"soundscape ({len(soundscape.events)} {'validation' if record.val_fraction else 'training-split'} "
            f"events; quiet: {quiet})")
    settings, report = tune_listen(TorchBackend(model, meta), record, soundscape, fractions, log=log)
    keep = ("smooth", "mean_window_f1", "notes", "allowed_false_alarms", "quiet_hours", "window", "windows_tried")
    return settings.to_dict(), {k: report[k] for k in keep}
