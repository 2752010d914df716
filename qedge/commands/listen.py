"""`qedge listen`: live tagging from a microphone, a file or raw PCM on stdin (design.md §9).

Torch-free: everything it imports comes from qedge.runtime (numpy, onnxruntime, sounddevice).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from qedge.errors import QedgeError


def listen(
    model: Optional[Path] = typer.Argument(None, help="Exported model: .onnx (ONNX Runtime) or .engine (TensorRT, with its .json sidecar)."),
    device: Optional[str] = typer.Option(None, "--device", "-d", help="Microphone: PortAudio device index or name (substring). Default: the system's default input."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="Read this audio file instead of a microphone (paced in real time)."),
    fast: bool = typer.Option(False, "--fast", help="With --file: process as fast as possible instead of in real time."),
    stdin: bool = typer.Option(False, "--stdin", help="Read raw interleaved PCM from standard input."),
    format: str = typer.Option("s16le", "--format", help="With --stdin: sample format, s16le or f32le."),
    rate: int = typer.Option(32000, "--rate", help="With --stdin: sample rate in Hz (resampled to the model's)."),
    channels: int = typer.Option(1, "--channels", help="With --stdin: interleaved channels (mixed down to mono)."),
    list_devices: bool = typer.Option(False, "--list-devices", help="List capture devices and exit."),
    backend: str = typer.Option("auto", "--backend", help="ort (ONNX Runtime: CPU, or CUDA where installed) or trt (TensorRT: a .engine, or ONNX Runtime's TensorRT provider for a .onnx); auto: by file type."),
    hop: Optional[float] = typer.Option(None, "--hop", help="Seconds between windows (default: the model's, recorded at training; else a quarter of the window)."),
    window: Optional[float] = typer.Option(None, "--window", help="Window length in seconds (default: the model's listen window, chosen on data when it was trained or tuned; at most its training crop)."),
    smooth: Optional[int] = typer.Option(None, "--smooth", help="Average scores over this many windows (default: the model's, chosen on data)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Minimum score of a tag for every label; with --events, the score that switches an event on (default: the model's per-label thresholds, chosen on data)."),
    off_threshold: Optional[float] = typer.Option(None, "--off-threshold", help="With --events: score below which an event ends (default: the model's ratio of each threshold, 0.5)."),
    min_duration: Optional[float] = typer.Option(None, "--min-duration", help="With --events: drop events shorter than this (seconds; default: the model's)."),
    top_k: int = typer.Option(3, "--top-k", help="Show at most this many tags per window."),
    events: bool = typer.Option(False, "--events", help="Report sound events (onset, offset, peak score) with hysteresis."),
    seconds: Optional[float] = typer.Option(None, "--seconds", help="Stop after this many seconds (of wall clock for live input, of audio otherwise)."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object per window (and per event) on stdout, then {\"summary\": ...}."),
    threads: Optional[int] = typer.Option(None, "--threads", help="ONNX Runtime intra-op threads (default: ONNX Runtime's choice)."),
) -> None:
    """Tag audio live: microphone → ring buffer → streaming features → model every hop → tags.

    Live view or JSON lines (--json); on exit (Ctrl-C, end of input, --seconds) a summary:
    latency p50/p95/p99, real-time factor, GMAC/s, skipped windows, dropped audio.
    """
    import contextlib
    import sys

    from qedge.runtime import sources
    from qedge.runtime.backends import load_backend
    from qedge.runtime.devices import list_input_devices, quiet_native_stderr
    from qedge.runtime.listen import Listener
    from qedge.runtime.report import JsonReporter, LiveView, print_summary

    if list_devices:
        with quiet_native_stderr():
            devices = list_input_devices()
        if json_out:
            import json

            print(json.dumps(devices))
        elif not devices:
            print("no capture devices found")
        for d in [] if json_out else devices:
            print(f"{d['index']:>3}  {d['name']}  ({d['channels']} ch, {d['default_samplerate']:.0f} Hz, {d['hostapi']})")
        return
    if model is None:
        raise QedgeError("missing MODEL: pass an exported .onnx or .engine (see 'qedge listen --help')")
    chosen = [name for name, on in (("--device", device is not None), ("--file", file is not None), ("--stdin", stdin)) if on]
    if len(chosen) > 1:
        raise QedgeError(f"choose one input: {' and '.join(chosen)} were both given")
    if fast and file is None:
        raise QedgeError("--fast only applies to --file")
    if seconds is not None and seconds <= 0:
        raise QedgeError(f"--seconds must be > 0, got {seconds}")

    engine = load_backend(model, backend=backend, threads=threads)
    listener = Listener(engine, hop_s=hop, window_s=window, smooth=smooth, threshold=threshold,
                        top_k=top_k, events=events, off_threshold=off_threshold, min_duration=min_duration)
    sr = listener.config.sample_rate
    quiet = contextlib.nullcontext()
    if file is not None:
        source = sources.FileSource(file, sr, realtime=not fast)
    elif stdin:
        source = sources.StdinSource(format=format, rate=rate, channels=channels)
    else:
        quiet = quiet_native_stderr()  # PortAudio/ALSA print C-level noise on faults
        with quiet:
            source = sources.MicrophoneSource(device, sr)

    model_name = engine.info.arch.get("name", model.name) if isinstance(engine.info.arch, dict) else model.name
    with quiet:
        if json_out:
            reporter = JsonReporter()
            summary = listener.run(source, seconds=seconds, on_result=reporter.result, on_event=reporter.event)
            reporter.summary(summary)
        else:
            with LiveView(model_name, source.name, top_k, listener.macs) as view:
                summary = listener.run(source, seconds=seconds, on_result=view.result, on_event=view.event)
            print_summary(summary)
    sys.stdout.flush()
    if summary["error"]:
        raise QedgeError(summary["error"], exit_code=4)
