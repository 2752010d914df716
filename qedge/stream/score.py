"""Stream evaluation: a soundscape through the real listen loop, scored as DCASE systems are.

:func:`listen_to` writes the soundscape to a file and runs :class:`~qedge.runtime.listen.Listener`
on it through :class:`~qedge.runtime.sources.FileSource` (the code path of the microphone, with
the file fed as fast as the listener takes it). :func:`score_stream` compares what it reported
with the truth:

- **segment-based F1** (1 s segments) and **event-based F1** (onset collar, offsets not scored),
  computed by ``sed_eval`` (Mesaros et al. 2016, the DCASE metrics) on the detected events;
- **false alarms per hour** of event-free audio, per kind (silence, noise, speech): detected
  events active inside a quiet stretch from one decision context after its start on (the window
  plus a hop per extra window smoothed over, :func:`~qedge.runtime.report.decision_context`;
  before that a decision still hears the previous scene), each counted once per stretch — a tag
  stuck on through a whole stretch is one false alarm; with the one-sided 95 % Poisson upper bound, because a count of 0
  in a few minutes does not show "≤ 1 per hour";
- **event recall**: a reference event counts as found when a window ending between its onset and
  ``window_s`` after its offset tags its label;
- **onset latency**: for found events, the end time of the first such window minus the true onset
  (what a person waits for the tag).
"""

from __future__ import annotations

import json
import math
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from qedge.stream.soundscape import Soundscape

__all__ = ["false_alarms", "scored_quiet_seconds", "StreamRun", "listen_to", "score_stream", "poisson_upper", "sed_metrics", "load_stream_model", "evaluate_stream", "plot_stream"]


@dataclass
class StreamRun:
    """What the listener reported on one soundscape."""

    soundscape: Soundscape
    windows: list[dict[str, Any]]
    events: list[dict[str, Any]]
    summary: dict[str, Any]


def listen_to(soundscape: Soundscape, backend: Any, keep_scores: bool = False, **listener: Any) -> StreamRun:
    """Run the listen loop on ``soundscape`` (as a file, fast) with ``Listener(backend, **listener)``
    and events on; return every window result and event."""
    from qedge.errors import QedgeError
    from qedge.runtime.listen import Listener
    from qedge.runtime.sources import FileSource

    tagger = Listener(backend, events=True, keep_scores=keep_scores, **listener)
    if soundscape.sample_rate != tagger.config.sample_rate:
        raise QedgeError(f"soundscape at {soundscape.sample_rate} Hz, model at {tagger.config.sample_rate} Hz")
    windows: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="qedge-stream-") as tmp:
        path = soundscape.write(Path(tmp) / "soundscape.wav")
        summary = tagger.run(FileSource(path, soundscape.sample_rate, realtime=False),
                             on_result=windows.append, on_event=events.append)
    if summary.get("error"):
        raise QedgeError(f"the listen loop failed on the soundscape: {summary['error']}")
    return StreamRun(soundscape, windows, events, summary)


def false_alarms(detected: Sequence[tuple[float, float]], quiet: Sequence[tuple[float, float, str]],
                 context_s: float, hop_s: float, delay_s: float = 0.0) -> dict[str, int]:
    """Per quiet kind, the detected ``(onset, offset)`` events whose windows end in a stretch's
    scored part ``[start + context_s, end]`` (``context_s``: the decision context): an event's
    first window ends at ``onset + hop_s + delay_s``, its last at ``offset + delay_s`` (``delay_s``: how far the detector dated events
    back, :class:`~qedge.runtime.events.EventDetector`)."""
    out: dict[str, int] = {}
    for start, end, kind in quiet:
        out[kind] = out.get(kind, 0) + sum(
            1 for a, b in detected
            if a + hop_s + delay_s <= end and max(b, a + hop_s) + delay_s >= start + context_s)
    return out


def scored_quiet_seconds(quiet: Sequence[tuple[float, float, str]], context_s: float) -> dict[str, float]:
    """Seconds of each quiet kind in which false alarms are counted: every stretch but its first
    decision context ``context_s`` (which still hears the scene before it), as :func:`false_alarms`
    scores them."""
    out: dict[str, float] = {}
    for start, end, kind in quiet:
        out[kind] = out.get(kind, 0.0) + max(0.0, end - start - context_s)
    return out


def poisson_upper(count: int, hours: float, confidence: float = 0.95) -> float:
    """One-sided upper confidence bound of a Poisson rate (per hour) after ``count`` events in
    ``hours``: χ²_{conf}(2(k+1)) / (2·hours) (Garwood); 3.0/hours for k = 0 at 95 %."""
    from scipy.stats import chi2

    return float(chi2.ppf(confidence, 2 * (count + 1)) / 2.0 / hours) if hours > 0 else math.inf


def _sed_eval():
    with warnings.catch_warnings():  # dcase_util imports pkg_resources, deprecated in setuptools
        warnings.simplefilter("ignore")
        import dcase_util
        import sed_eval
    return sed_eval, dcase_util


def sed_metrics(reference: Sequence[tuple[float, float, str]], estimated: Sequence[tuple[float, float, str]],
                labels: Sequence[str], segment_s: float = 1.0, collar_s: float = 0.5) -> dict[str, float]:
    """Segment-based (``segment_s``) and event-based (onset collar ``collar_s``, offsets not
    scored) F1 / precision / recall of ``estimated`` against ``reference`` events, by sed_eval."""
    sed_eval, dcase_util = _sed_eval()

    def container(events: Sequence[tuple[float, float, str]]):
        return dcase_util.containers.MetaDataContainer(
            [{"event_label": lab, "onset": float(a), "offset": float(b), "filename": "soundscape"}
             for a, b, lab in events])

    ref, est = container(reference), container(estimated)
    seg = sed_eval.sound_event.SegmentBasedMetrics(event_label_list=list(labels), time_resolution=segment_s)
    seg.evaluate(reference_event_list=ref, estimated_event_list=est)
    ev = sed_eval.sound_event.EventBasedMetrics(event_label_list=list(labels), t_collar=collar_s,
                                                percentage_of_length=0.2, evaluate_offset=False)
    ev.evaluate(reference_event_list=ref, estimated_event_list=est)
    s, e = seg.results_overall_metrics()["f_measure"], ev.results_overall_metrics()["f_measure"]
    return {"segment_f1": float(s["f_measure"]), "segment_precision": float(s["precision"]),
            "segment_recall": float(s["recall"]), "event_f1": float(e["f_measure"]),
            "event_f1_precision": float(e["precision"]), "event_f1_recall": float(e["recall"])}


def score_stream(runs: Sequence[StreamRun], labels: Sequence[str], segment_s: float = 1.0,
                 collar_s: float = 0.5) -> dict[str, Any]:
    """The figures of the module docstring over one or more runs (soundscapes are laid end to end
    for sed_eval, so one run's events never match another's)."""
    reference: list[tuple[float, float, str]] = []
    estimated: list[tuple[float, float, str]] = []
    alarms: dict[str, int] = {}
    quiet_seconds: dict[str, float] = {}
    found, latencies, per_label = 0, [], {}
    offset = 0.0
    n_events = 0
    window_s = hop_s = None
    for run in runs:
        sc = run.soundscape
        window_s, hop_s = float(run.summary["window_s"]), float(run.summary["hop_s"])
        context_s = float(run.summary.get("context_s", window_s))
        reference += [(a + offset, b + offset, lab) for a, b, lab in sc.events]
        detected = [(float(e["onset"]), float(e["offset"]), str(e["event"])) for e in run.events]
        detected = [d for d in detected if d[2] in labels]
        estimated += [(a + offset, max(b, a + hop_s) + offset, lab) for a, b, lab in detected]
        for kind, seconds in scored_quiet_seconds(sc.quiet, context_s).items():
            quiet_seconds[kind] = quiet_seconds.get(kind, 0.0) + seconds
        delay_s = float(run.summary.get("event_delay_s", 0.0))
        for kind, count in false_alarms([(a, b) for a, b, _ in detected], sc.quiet, context_s, hop_s,
                                        delay_s).items():
            alarms[kind] = alarms.get(kind, 0) + count
        times = np.array([w["t"] for w in run.windows])
        tagged = [{t["label"] for t in w["tags"]} for w in run.windows]
        for onset, off, label in sc.events:
            n_events += 1
            hits = np.flatnonzero((times >= onset) & (times <= off + window_s))
            first = next((int(i) for i in hits if label in tagged[i]), None)
            stats = per_label.setdefault(label, [0, 0])
            stats[1] += 1
            if first is not None:
                found += 1
                stats[0] += 1
                latencies.append(float(times[first] - onset))
        offset += sc.duration + 10.0
    quiet_hours = {k: v / 3600.0 for k, v in quiet_seconds.items()}
    out: dict[str, Any] = {
        "events": n_events, "event_recall": found / n_events if n_events else None,
        "onset_latency_s": {"median": float(np.median(latencies)) if latencies else None,
                            "p90": float(np.percentile(latencies, 90)) if latencies else None},
        "false_alarms": {k: {"count": alarms.get(k, 0), "hours": round(quiet_hours[k], 4),
                             "per_hour": alarms.get(k, 0) / quiet_hours[k] if quiet_hours[k] > 0 else None,
                             "per_hour_95_upper": poisson_upper(alarms.get(k, 0), quiet_hours[k])}
                         for k in quiet_hours},
        "recall_per_label": {lab: found_n / total for lab, (found_n, total) in sorted(per_label.items())},
        "window_s": window_s, "hop_s": hop_s, "segment_s": segment_s, "collar_s": collar_s,
        "detected_events": len(estimated),
    }
    out.update(sed_metrics(reference, estimated, labels, segment_s, collar_s))
    return out


def write_report(path: str | Path, report: dict[str, Any]) -> Path:
    path = Path(path)
    path.write_text(json.dumps(report, indent=2))
    return path


def load_stream_model(path: str | Path, test_fold: str | None = None, test_speaker: str | None = None,
                      threads: int | None = None) -> tuple[Any, Any, dict[str, Any] | None]:
    """``(backend, record, meta)`` for a stream evaluation of the model file ``path``.

    A ``.qedge`` runs in PyTorch (:class:`~qedge.inference.TorchBackend`) and knows its held-out
    split (``meta`` is its metadata); an exported ``.onnx`` runs in ONNX Runtime, as deployed
    (:class:`~qedge.runtime.backends.OrtBackend`, ``meta`` None): its labels, features and listen
    defaults come from the ONNX metadata, and its held-out fold / speaker from ``test_fold`` /
    ``test_speaker`` (default: the dataset format's held-out split). ``threads``: ONNX Runtime's
    intra-op threads (default: its own choice)."""
    from qedge.errors import QedgeError
    from qedge.meta import ModelRecord

    path = Path(path)
    if not path.exists():
        raise QedgeError(f"model file not found: {path}")
    if path.suffix == ".onnx":
        from qedge.runtime.backends import OrtBackend

        backend = OrtBackend(path, threads=threads)
        info = backend.info
        record = ModelRecord(arch=str(info.arch.get("name", "?")), arch_kwargs=dict(info.arch.get("kwargs", {})),
                             labels=list(info.labels), task=info.task, features=dict(info.features),
                             clip_seconds=1.0, test_fold=test_fold, test_speaker=test_speaker,
                             background_label=info.listen.background)
        return backend, record, None
    from qedge.checkpoint import load
    from qedge.inference import TorchBackend

    net, meta = load(path)
    return TorchBackend(net, meta), ModelRecord.from_meta(meta, source=str(path)), meta


def evaluate_stream(backend: Any, record: Any, index: Any, *, seed: int = 0, quiet_seconds: float = 120.0,
                    snr_db: float = 10.0, log: Any = None, **listener: Any) -> dict[str, Any]:
    """``qedge evaluate --stream``: the model's held-out soundscape (:func:`qedge.stream.sets.stream_soundscape`,
    ``use="test"``, seeded) through the listen loop with the model's defaults (``listener``
    overrides them), scored by :func:`score_stream`; the report also holds the truth and the
    windows' top tags (for plots)."""
    from qedge.stream.sets import stream_soundscape
    from qedge.stream.soundscape import SoundscapeSpec

    soundscape = stream_soundscape(record, index, use="test", seed=seed, quiet_seconds=quiet_seconds,
                                   spec=SoundscapeSpec(snr_db=snr_db))
    if log:
        log(f"held-out soundscape: {soundscape.duration / 60:.1f} min, {len(soundscape.events)} events at "
            f"{snr_db:g} dB SNR, quiet {', '.join(f'{k} {v:.0f} s' for k, v in soundscape.quiet_seconds().items())}")
    run = listen_to(soundscape, backend, **listener)
    labels = [lab for lab in record.labels if lab != record.background_label]
    report = score_stream([run], labels)
    report.update({
        "seed": seed, "snr_db": snr_db, "soundscape_seconds": round(soundscape.duration, 2),
        "held_out": record.held_out,
        "latency_ms": run.summary.get("latency_ms"), "real_time_factor": run.summary.get("real_time_factor"),
        "truth": soundscape.truth(),
        "detected": run.events,
        "timeline": [[w["t"], w["tags"][0]["label"] if w["tags"] else None] for w in run.windows],
    })
    return report


def plot_stream(report: dict[str, Any], labels: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Timeline PNG: truth events (grey bars), quiet stretches (shaded by kind), detected events."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(labels)
    truth = report["truth"]
    colors = {"silence": "#dde8f5", "noise": "#f5e6d3", "speech": "#e3f2dd", "recorded": "#eeeeee"}
    fig, ax = plt.subplots(figsize=(14, 4.5))
    seen = set()
    for start, end, kind in truth["quiet"]:
        ax.axvspan(start, end, color=colors.get(kind, "#eeeeee"), label=None if kind in seen else f"quiet: {kind}")
        seen.add(kind)
    for onset, offset, lab in truth["events"]:
        if lab in labels:
            ax.plot([onset, offset], [labels.index(lab)] * 2, color="black", lw=7, alpha=0.3, solid_capstyle="butt")
    for ev in report["detected"]:
        if ev["event"] in labels:
            ax.plot([ev["onset"], ev["offset"]], [labels.index(ev["event"])] * 2, color="tab:red", lw=2.5)
    ax.plot([], [], color="black", lw=7, alpha=0.3, label="truth")
    ax.plot([], [], color="tab:red", lw=2.5, label="detected")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("seconds")
    ax.set_title(title or "qedge listen on a held-out soundscape")
    ax.legend(loc="upper right", fontsize=8, ncol=5)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
