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
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from qedge.runtime.events import EventDetector
from qedge.runtime.model_info import ListenSettings
from qedge.stream.score import StreamRun, false_alarms, scored_quiet_seconds

__all__ = ["FA_BUDGET", "THRESHOLDS", "SMOOTHING", "choose_listen_settings", "tune_on_runs"]

#: False alarms per hour of event-free audio the defaults aim for (issue #13's targets).
FA_BUDGET = {"silence": 1.0, "noise": 1.0, "speech": 6.0, "recorded": 6.0}
#: Threshold grid.
THRESHOLDS = tuple(np.round(np.arange(0.30, 0.96, 0.05), 2).tolist()) + (0.98,)
#: Smoothing lengths tried (windows).
SMOOTHING = (1, 2, 3)


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


def _false_alarms(track: np.ndarray, times: np.ndarray, hop_s: float, window_s: float, on: float,
                  off_ratio: float, quiet: Sequence[tuple[float, float, str]]) -> dict[str, int]:
    det = EventDetector(["x"], on, on * off_ratio)
    events = []
    for t, s in zip(times, track):
        events += det.update(float(t), hop_s, np.array([s]))
    events += det.flush()
    return false_alarms([(e.onset, e.offset) for e in events], quiet, window_s, hop_s)


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
                    for k, v in _false_alarms(track, times, hop_s, window_s, thr, off_ratio,
                                              run.soundscape.quiet).items():
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


def choose_listen_settings(model: Any, meta: dict[str, Any], data: str, seed: int = 1,
                           quiet_seconds: float = 240.0, per_label: int = 8,
                           log: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Tune ``model`` (torch, with its ``meta``) on its tuning soundscape of ``data``; return
    ``(meta["listen"] dict, record)``, the record being what the model's history keeps of the
    tuning (smoothing, mean window F1, notes, allowed false alarms). Window and hop are the model's defaults
    (:meth:`qedge.meta.ModelRecord.listen_settings`): a training-crop window, hop ≤ 0.25 s."""
    from qedge.data import find_dataset
    from qedge.inference import TorchBackend
    from qedge.meta import ModelRecord
    from qedge.stream.score import listen_to
    from qedge.stream.sets import stream_soundscape

    record = ModelRecord.from_meta(meta)
    index = find_dataset(data)
    soundscape = stream_soundscape(record, index, use="tune", seed=seed, quiet_seconds=quiet_seconds,
                                   per_label=per_label)
    if log:
        log(f"choosing thresholds on a {soundscape.duration / 60:.1f}-minute tuning soundscape "
            f"({len(soundscape.events)} {'validation' if record.val_fraction else 'training-split'} events, "
            f"quiet {soundscape.quiet_seconds()})")
    backend = TorchBackend(model, meta)
    run = listen_to(soundscape, backend, keep_scores=True, threshold=1.0, smooth=1)
    settings, report = tune_on_runs([run], record.labels, record.background_label)
    defaults = record.listen_settings()
    settings.window_frames, settings.hop_frames = defaults.window_frames, defaults.hop_frames
    return settings.to_dict(), {k: report[k] for k in ("smooth", "mean_window_f1", "notes", "allowed_false_alarms")}
