"""Reporting for ``qedge listen``: latency statistics, the summary, JSON lines and the live view.

Summary (design.md §9): latency p50/p95/p99 per stage (features, inference, end-to-end, ms),
real-time factor RTF = (feature + inference compute seconds) / seconds of audio processed (< 1:
faster than real time), MACs per window, achieved GMAC/s = MACs·windows / inference seconds,
windows processed and skipped, and dropped audio seconds = (frames the wall clock expected but the
device never delivered + frames lost to ring overruns) / capture rate. ``input_overflows`` counts
the PortAudio callbacks that carried a status flag (ALSA reports overflows; PulseAudio often
drops silently, hence the wall-clock count).
"""

from __future__ import annotations

import json
import sys
from typing import IO, Any

import numpy as np

__all__ = ["LatencyStats", "build_summary", "decision_context", "JsonReporter", "LiveView", "print_summary"]


class LatencyStats:
    """Collects one stage's latencies (ms) and reports mean / p50 / p95 / p99 / max."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def add(self, ms: float) -> None:
        self.values.append(float(ms))

    def __len__(self) -> int:
        return len(self.values)

    def summary(self) -> dict[str, float | None]:
        if not self.values:
            return {"mean": None, "p50": None, "p95": None, "p99": None, "max": None}
        v = np.asarray(self.values)
        p50, p95, p99 = np.percentile(v, [50, 95, 99])
        return {"mean": round(float(v.mean()), 3), "p50": round(float(p50), 3), "p95": round(float(p95), 3),
                "p99": round(float(p99), 3), "max": round(float(v.max()), 3)}


def decision_context(window_s: float, hop_s: float, smooth: int) -> float:
    """Seconds of audio behind one (smoothed) decision: the window, plus a hop per extra window
    averaged. A quiet stretch is scored from this long after its start on (before, a decision
    still hears the scene before it)."""
    return float(window_s) + (max(1, int(smooth)) - 1) * float(hop_s)


def build_summary(listener: Any, source: Any, stats: Any) -> dict[str, Any]:
    """The end-of-run summary (a plain JSON-serialisable dict) from a Listener, its source and the
    worker's :class:`~qedge.runtime.listen.ListenStats`."""
    sr = listener.config.sample_rate
    audio_s = stats.audio_samples / sr
    compute_s = stats.feature_seconds + stats.inference_seconds
    ring = source.ring
    wallclock_lost = source.dropped_frames()
    dropped_s = (wallclock_lost + ring.overrun_frames) / source.sample_rate
    return {
        "source": source.name,
        "backend": getattr(listener.backend, "name", type(listener.backend).__name__),
        "model": listener.info.arch.get("name", "?") if isinstance(listener.info.arch, dict) else str(listener.info.arch),
        "audio_s": round(audio_s, 3),
        "wall_s": round(stats.wall_seconds, 3),
        "window_s": round(listener.window_s, 3),
        "hop_s": round(listener.hop_s, 3),
        "event_delay_s": round(listener.event_delay_s, 4),
        "smooth": listener.smooth,
        "context_s": round(decision_context(listener.window_s, listener.hop_s, listener.smooth), 3),
        "windows": stats.windows,
        "windows_skipped": stats.skipped,
        "latency_ms": {
            "features": stats.features.summary(),
            "inference": stats.inference.summary(),
            "end_to_end": stats.end_to_end.summary(),
        },
        "real_time_factor": round(compute_s / audio_s, 4) if audio_s > 0 else None,
        "macs_per_window": listener.macs,
        "gmacs_per_s": (round(listener.macs * stats.windows / stats.inference_seconds / 1e9, 3)
                        if stats.inference_seconds > 0 else None),
        "dropped_audio_s": round(dropped_s, 3),
        "ring_overruns": ring.overruns,
        "input_overflows": int(getattr(source, "status_flags", 0)),
        "events": stats.events,
        "interrupted": stats.interrupted,
        "error": stats.error,
    }


class JsonReporter:
    """``--json``: one JSON object per hop (and per event) on ``stream``, then ``{"summary": …}``."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout

    def _write(self, obj: dict[str, Any]) -> None:
        self.stream.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self.stream.flush()

    def result(self, result: dict[str, Any]) -> None:
        self._write(result)

    def event(self, event: dict[str, Any]) -> None:
        self._write(event)

    def summary(self, summary: dict[str, Any]) -> None:
        self._write({"summary": summary})


def _fmt(v: float | None, unit: str = "") -> str:
    return "–" if v is None else f"{v:.1f}{unit}"


class LiveView:
    """Live terminal view (rich): top tags with score bars, latency, GMAC/s, recent events."""

    def __init__(self, model: str, source: str, top_k: int, macs: int) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console()
        self.model, self.source, self.top_k, self.macs = model, source, top_k, macs
        self.last: dict[str, Any] | None = None
        self.events: list[dict[str, Any]] = []
        self.count = 0
        self._live = Live(self._render(), console=self.console, refresh_per_second=8, transient=False)

    def __enter__(self) -> "LiveView":
        self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._live.__exit__(*exc)
        self.console.line()

    def result(self, result: dict[str, Any]) -> None:
        self.last = result
        self.count += 1
        self._live.update(self._render())

    def event(self, event: dict[str, Any]) -> None:
        self.events = (self.events + [event])[-5:]
        self._live.update(self._render())

    def _render(self):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(title=f"qedge listen · {self.model} · {self.source}", expand=False, show_edge=False)
        table.add_column("tag", style="bold")
        table.add_column("score", justify="right")
        table.add_column("", min_width=30)
        if self.last is None:
            table.add_row("(waiting for the first window)", "", "")
            return table
        for tag in self.last["tags"]:
            bar = "█" * int(round(tag["score"] * 30))
            table.add_row(tag["label"], f"{tag['score']:.2f}", f"[green]{bar}[/green]")
        if not self.last["tags"]:
            table.add_row("[dim](below threshold)[/dim]", "", "")
        for ev in self.events:
            table.add_row(f"[cyan]event {ev['event']}[/cyan]", f"{ev['score']:.2f}",
                          f"{ev['onset']:.2f}–{ev['offset']:.2f} s")
        lat = self.last["latency_ms"]
        inf_s = lat["inference"] / 1000.0
        gmacs = self.macs / inf_s / 1e9 if inf_s > 0 else 0.0
        status = Text(f"t={self.last['t']:.2f} s · {self.count} windows · features {_fmt(lat['features'])} · "
                      f"inference {_fmt(lat['inference'])} · end-to-end {_fmt(lat['end_to_end'])} ms · "
                      f"{gmacs:.1f} GMAC/s", style="dim")
        return Group(table, status)


def print_summary(summary: dict[str, Any], stream: IO[str] | None = None) -> None:
    """Human-readable summary (rich table) on ``stream`` (stdout by default)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=stream) if stream is not None else Console()
    table = Table(title="qedge listen: summary", show_header=True)
    table.add_column("stage")
    for col in ("p50 ms", "p95 ms", "p99 ms", "max ms"):
        table.add_column(col, justify="right")
    for stage, s in summary["latency_ms"].items():
        table.add_row(stage.replace("_", "-"), _fmt(s["p50"]), _fmt(s["p95"]), _fmt(s["p99"]), _fmt(s["max"]))
    console.print(table)
    rtf = summary["real_time_factor"]
    gmacs = summary["gmacs_per_s"]
    console.print(
        f"{summary['windows']} windows ({summary['window_s']:.2f} s every {summary['hop_s']:.2f} s), "
        f"{summary['windows_skipped']} skipped; audio {summary['audio_s']:.2f} s in {summary['wall_s']:.2f} s; "
        f"real-time factor {'–' if rtf is None else f'{rtf:.3f}'}; "
        f"{summary['macs_per_window'] / 1e6:.1f} MMAC/window, {'–' if gmacs is None else f'{gmacs:.2f}'} GMAC/s; "
        f"dropped audio {summary['dropped_audio_s']:.2f} s ({summary['ring_overruns']} ring overruns)"
        + (f"; {summary['events']} events" if summary["events"] else ""),
        highlight=False,
    )
