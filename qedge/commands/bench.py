"""`qedge bench`: run the benchmark suite of a source checkout (``python -m benchmarks``).

The suite (``benchmarks/`` beside the ``qedge`` package: quaternion conv, backends, latency vs
MACs, streaming, features, spectral, compress, export) is not part of an installed wheel; from a
wheel this command says so. Nothing heavy is imported at module import time.
"""

from __future__ import annotations

import sys
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
                                       "b=backends c=macs d=listen e=features f=spectral g=compress h=export."),
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
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    loaded = sys.modules.get("benchmarks")
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve().parent != root / "benchmarks":
        raise QedgeError(f"another 'benchmarks' package is already imported ({loaded.__file__}); "
                         f"run `python -m benchmarks` in {root}")
    from rich.console import Console

    from benchmarks import __main__ as runner

    try:
        runner.select(only)
    except ValueError as exc:
        raise QedgeError(str(exc)) from exc
    argv = (["--quick"] if quick else []) + (["--only", only] if only else [])
    argv += (["--results", str(results)] if results else []) + (["--model", str(model)] if model else [])
    argv += ["--threads", str(threads)] if threads else []
    console = Console(highlight=False)
    with console.status("running benchmarks", spinner="dots") as status:
        def echo(line: str) -> None:
            console.print(line, markup=False)
            if line.startswith("["):
                status.update(line)
        code = runner.main(argv, echo=echo)
    if code != 0:
        raise QedgeError("some benchmark sections failed (see the FAILED line above and the logs)", exit_code=code)
