"""Run the qedge benchmark suite and write one report per machine (issue 8).

    python -m benchmarks [--quick] [--only a,c,...] [--results DIR] [--model FILE.qedge]
    qedge bench ...      (the same, from a source checkout)

Sections (each a script that can also run alone, each in its own process so thread settings and
CPU pinning cannot leak between them):

  a  qconv     quaternion conv: assembled kernel vs 16 real convs vs real Conv2d (infer, train step)
  b  backends  PyTorch eager (quaternion, folded), ONNX Runtime fp32 and int8, batch 1, model sizes
  c  macs      latency vs MACs across pruning ratios: linear fit, GMAC/s vs the dense-conv ceiling
  d  listen    streaming per-hop latency and real-time factor of `qedge listen`
  e  features  front-end (log-mel + deltas) cost and real-time factor
  f  spectral  exact singular values: FFT / QFT routes vs brute-force SVD
  g  compress  pruned-model latency table with --round-to (compress helper's report)
  h  export    deployment files of a trained model (needs --model FILE)
  i  clipping  training with vs without spectral-norm clipping (accuracy, σ_max, Lipschitz bound)
  j  stream    live tagging on held-out soundscapes: sed_eval F1, recall, onset latency, false alarms/h

Studies that train models for tens of minutes to hours run on their own, each with its cached models
and its own results file: ``benchmarks.heads`` (open-set output head), ``benchmarks.mainjob`` (the main
job over seeds), ``benchmarks.papers`` (pruning criteria × ratio on ESC-10 or FSDD leave one
speaker out, prune + fine-tune vs KD), ``benchmarks.archs`` (QCNN vs MCCNN vs CNN at matched MACs /
parameters), ``benchmarks.prunedarchs`` (pruned QCNN vs pruned MCCNN) and ``benchmarks.repeat``
(which conditions make a training figure repeat exactly).

Every figure is a median of repeated runs with warm-up excluded, every comparison a ratio of two
figures measured in the same run on the same machine. After the sections run, EVERY result file in
the results folder is aggregated (:mod:`benchmarks.report`) into ``<results>/<machine>.json`` and
``<results>/<machine>.md`` plus ``<results>/<machine>-{macs,backends,qconv}.png`` (matplotlib, Agg);
sections not re-run are included with their own timestamp and marked so. ``--quick`` runs a reduced
version of everything (to exercise the code, not to judge the figures) into
``benchmarks/results/quick/`` so it never overwrites the real figures. ``$QEDGE_BENCH_RESULTS`` (or
``--results``) redirects the output.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from benchmarks.common import RESULTS, RESULTS_ENV, machine
from benchmarks.report import aggregate

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Section:
    """One benchmark: its letter, result name, title and command line (full / quick)."""

    key: str
    name: str
    title: str
    argv: Callable[[bool, argparse.Namespace, Path], list[str] | None]
    timeout_s: tuple[int, int] = (120, 1200)  # (quick, full)
    needs: str | None = None  # why it may be skipped
    extra: dict[str, Any] = field(default_factory=dict)


def _module(name: str) -> Callable[[bool, argparse.Namespace, Path], list[str]]:
    def argv(quick: bool, args: argparse.Namespace, out: Path) -> list[str]:
        cmd = [sys.executable, "-m", f"benchmarks.{name}"] + (["--quick"] if quick else [])
        if args.threads and name in ("qconv", "backends", "macs", "listen"):
            cmd += ["--threads", str(args.threads)]
        return cmd
    return argv


def _compress(quick: bool, args: argparse.Namespace, out: Path) -> list[str]:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "compress.py"), "--out", str(out / "compress"),
           "--threads", str(args.threads or 1)]
    if quick:
        cmd += ["--arch", "qcnn6", "--width", "0.25", "--frames", "101", "--ratios", "0.5", "--round-to", "16",
                "--repeats", "20"]
    return cmd


def _export(quick: bool, args: argparse.Namespace, out: Path) -> list[str] | None:
    if not args.model:
        return None
    cmd = [sys.executable, "-m", "benchmarks.export", "--model", str(args.model)]
    return cmd + (["--eval-limit", "20", "--calib-size", "8", "--repeats", "5"] if quick else ["--eval-limit", "200"])


def _stream(quick: bool, args: argparse.Namespace, out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "benchmarks.stream"] + (["--quick"] if quick else [])
    return cmd + (["--model", str(args.model)] if args.model else [])


SECTIONS: list[Section] = [
    Section("a", "qconv", "(a) Quaternion convolution: one assembled conv vs 16 real convs vs real Conv2d",
            _module("qconv")),
    Section("b", "backends", "(b) Backends: PyTorch eager vs ONNX Runtime fp32 / int8, batch 1", _module("backends")),
    Section("c", "macs", "(c) Latency vs MACs across pruning ratios", _module("macs")),
    Section("d", "listen", "(d) Streaming: `qedge listen` per-hop cost and real-time factor", _module("listen")),
    Section("e", "features", "(e) Feature extraction (log-mel + Δ1 Δ2 Δ3) real-time factor", _module("features")),
    Section("f", "spectral", "(f) Spectral: exact singular values, fast routes vs brute force", _module("spectral")),
    Section("g", "compress", "(g) Compress: pruned-model latency with --round-to", _compress),
    Section("h", "export", "(h) Export: deployment files of a trained model", _export,
            needs="needs --model FILE (a trained qedge model)"),
    Section("i", "clipping", "(i) Spectral-norm clipping during training: with vs without", _module("clipping")),
    Section("j", "stream", "(j) Live tagging on held-out soundscapes (open set vs closed set)", _stream,
            timeout_s=(600, 3600)),
]
BY_KEY = {s.key: s for s in SECTIONS} | {s.name: s for s in SECTIONS}


def select(only: str | None) -> list[Section]:
    """Sections named by ``--only`` (letters or names, comma-separated), in suite order; all if None."""
    if not only:
        return list(SECTIONS)
    wanted = [w.strip().lower() for w in only.split(",") if w.strip()]
    bad = [w for w in wanted if w not in BY_KEY]
    if bad:
        raise ValueError(f"unknown benchmark section(s) {', '.join(bad)} "
                         f"(choose from {', '.join(f'{s.key}={s.name}' for s in SECTIONS)})")
    keys = {BY_KEY[w].key for w in wanted}
    return [s for s in SECTIONS if s.key in keys]


def results_folder(quick: bool, override: str | Path | None = None) -> Path:
    """``--results``, else ``$QEDGE_BENCH_RESULTS``, else ``benchmarks/results`` (``/quick`` for quick runs)."""
    if override:
        return Path(override).expanduser().resolve()
    if os.environ.get(RESULTS_ENV):
        return Path(os.environ[RESULTS_ENV]).expanduser().resolve()
    return RESULTS / "quick" if quick else RESULTS


# ------------------------------------------------------------------------------------------------
# Running
# ------------------------------------------------------------------------------------------------
def run_section(section: Section, quick: bool, args: argparse.Namespace, out: Path,
                echo: Callable[[str], None]) -> dict[str, Any]:
    """Run one section in a subprocess (results redirected to ``out``); returns its status record."""
    cmd = section.argv(quick, args, out)
    if cmd is None:
        return {"status": "skipped", "reason": section.needs}
    env = dict(os.environ)
    env[RESULTS_ENV] = str(out)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("PYTHONUNBUFFERED", "1")
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{section.name}.log"
    timeout = section.timeout_s[0 if quick else 1]
    start = time.perf_counter()
    with open(log_path, "w") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        watchdog = threading.Timer(timeout, proc.kill)  # a silent, hung section must not hang the suite
        watchdog.start()
        tail: list[str] = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                tail = (tail + [line.rstrip()])[-15:]
                echo(f"  {section.name}: {line.rstrip()}")
            proc.wait()
        finally:
            watchdog.cancel()
        if time.perf_counter() - start >= timeout and proc.returncode != 0:
            return {"status": "failed", "reason": f"timed out after {timeout} s", "seconds": time.perf_counter() - start,
                    "log": str(log_path)}
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        last = next((t for t in reversed(tail) if t.strip()), "")
        return {"status": "failed", "reason": f"exit code {proc.returncode}: {last}", "seconds": seconds,
                "log": str(log_path)}
    return {"status": "ok", "seconds": seconds, "log": str(log_path)}


# ------------------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0],
                                epilog="\n".join(f"{s.key}={s.name}: {s.title}" for s in SECTIONS))
    p.add_argument("--quick", action="store_true", help="reduced version of everything (< ~1 min; exercise, "
                   "not judge) written to benchmarks/results/quick/")
    p.add_argument("--only", default=None, help="comma-separated sections to run (letters or names, e.g. a,c)")
    p.add_argument("--results", default=None, help=f"results folder (default: ${RESULTS_ENV} or benchmarks/results)")
    p.add_argument("--model", default=None, help="trained qedge model file for section h (export)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads for sections a-d, g (default 1)")
    p.add_argument("--aggregate-only", action="store_true", help="run nothing; rebuild the report from the results")
    return p


def main(argv: Sequence[str] | None = None, echo: Callable[[str], None] | None = None) -> int:
    """Run the selected sections, aggregate, print where the report is. Returns the exit code."""
    args = parser().parse_args(argv)
    echo = echo or (lambda line: print(line, flush=True))
    out = results_folder(args.quick, args.results)
    try:
        chosen = [] if args.aggregate_only else select(args.only)
    except ValueError as exc:
        print(f"benchmarks: {exc}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    statuses: dict[str, dict[str, Any]] = {}
    info = machine()
    echo(f"qedge benchmarks on {info['cpu']} ({info['cores']} cores) -> {out}{' [quick]' if args.quick else ''}")
    for i, section in enumerate(chosen, 1):
        echo(f"[{i}/{len(chosen)}] {section.key} {section.name}: {section.title}")
        st = run_section(section, args.quick, args, out, echo)
        statuses[section.name] = st
        echo(f"[{i}/{len(chosen)}] {section.name}: {st['status']}"
             + (f" in {st['seconds']:.0f} s" if "seconds" in st else "") + (f" ({st['reason']})" if st.get("reason") else ""))
    paths = aggregate(out, args.quick, statuses, SECTIONS)
    for key, path in paths.items():
        echo(f"wrote {path}")
    failed = [n for n, st in statuses.items() if st["status"] == "failed"]
    if failed:
        echo(f"FAILED: {', '.join(failed)} (logs in {out / 'logs'})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
