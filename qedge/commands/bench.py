"""`qedge bench`: run the benchmark suite of a source checkout (``python -m benchmarks``).

The suite (``benchmarks/`` beside the ``qedge`` package: quaternion conv, backends, latency vs
MACs, streaming, features, spectral, compress, export, stream) is not part of an installed wheel;
from a wheel this command says so. It runs as a child process in the checkout
(``python -m benchmarks`` with the checkout as working directory), so ``qedge`` never imports the
top-level ``benchmarks`` package or edits ``sys.path``; its lines are echoed as they come.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Optional

import typer

from qedge.errors import QedgeError


def _benchmarks_root() -> Path:
    """The source checkout holding ``benchmarks/__main__.py`` next to the ``qedge`` package."""
    import qedge

    root = Path(qedge.__file__).resolve().parent.parent
    if not (root / "benchmarks" / "__main__.py").is_file():
        raise QedgeError("the benchmarks ship with the qedge source tree, not the installed package: clone the "
                         "repository, `pip install -e .[train]` and run `qedge bench` (or `python -m benchmarks`) there")
    return root


def bench(
    quick: bool = typer.Option(False, "--quick", help="Reduced version of every section (about a minute): "
                               "exercises the code, figures not to be judged; written to benchmarks/results/quick/."),
    only: Optional[str] = typer.Option(None, "--only", help="Comma-separated sections (letters or names): a=qconv "
                                       "b=backends c=macs d=listen e=features f=spectral g=compress h=export i=clipping "
                                       "j=stream."),
    results: Optional[Path] = typer.Option(None, "--results", help="Results folder (default: $QEDGE_BENCH_RESULTS "
                                           "or benchmarks/results)."),
    model: Optional[Path] = typer.Option(None, "--model", help="A trained .qedge model for section h (export); "
                                         "without it that section is skipped."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Intra-op threads for the PyTorch / ONNX "
                                          "Runtime sections (default 1: stable figures on a shared machine)."),
) -> None:
    """Run the benchmark suite and write benchmarks/results/<machine>.json, .md and PNG plots: every
    figure a median of repeated runs (warm-up excluded), every comparison a ratio measured in the
    same run, the machine named."""
    root = _benchmarks_root()
    if model is not None and not model.is_file():
        raise QedgeError(f"{model}: no such model file")
    argv = (["--quick"] if quick else []) + (["--only", only] if only else [])
    argv += (["--results", str(results.expanduser().resolve())] if results else [])
    argv += (["--model", str(model.expanduser().resolve())] if model else [])
    argv += ["--threads", str(threads)] if threads else []
    code, errors = _run_suite(root, argv)
    if code == 2 and errors:  # the runner's usage errors (an unknown section) are one line on stderr
        raise QedgeError(errors[-1].removeprefix("benchmarks: "), exit_code=2)
    if code != 0:
        raise QedgeError("some benchmark sections failed (see the FAILED line above and the logs)", exit_code=code)


def _run_suite(root: Path, argv: list[str]) -> tuple[int, list[str]]:
    """``python -m benchmarks ARGV`` in ``root``: stdout echoed line by line (a spinner shows the
    running section), stderr kept. Returns (exit code, stderr lines)."""
    from rich.console import Console

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    console = Console(highlight=False)
    with console.status("running benchmarks", spinner="dots") as status:
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks", *argv], cwd=root, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=1)
        assert proc.stdout is not None and proc.stderr is not None
        errors: list[str] = []
        drain = threading.Thread(target=lambda: errors.extend(ln.rstrip("\n") for ln in proc.stderr if ln.strip()),
                                 daemon=True)  # a full stderr pipe must not stall the child
        drain.start()
        try:
            for line in proc.stdout:
                line = line.rstrip("\n")
                console.print(line, markup=False)
                if line.startswith("["):
                    status.update(line)
            code = proc.wait()
            drain.join()
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait()
            raise
    return code, errors
