"""`qedge export`: a model file → verified ONNX (fp32, optional compact and INT8) and TensorRT engine."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from qedge.errors import QedgeError


def export(
    model: Path = typer.Argument(..., help="Model file (.qedge) written by 'qedge train' or 'qedge compress'."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="ONNX file to write (default: MODEL with .onnx)."),
    dynamic_time: bool = typer.Option(True, "--dynamic-time/--fixed-time", help="Frames axis dynamic (default: the listen window and the whole-clip window both run) or fixed to the model's scoring window. Batch is always dynamic."),
    verify_data: Optional[str] = typer.Option(
        None, "--verify-data", help="Clips to verify on: esc10, fsdd or a folder (default: the model's data)."),
    verify_size: int = typer.Option(16, "--verify-size", min=1, help="Held-out clips used for the PyTorch/ORT check."),
    int8: bool = typer.Option(False, "--int8", help="Also write OUT.int8.onnx (QDQ, symmetric int8, per-channel weights) and compare accuracy."),
    calib_data: Optional[str] = typer.Option(
        None, "--calib-data", help="Calibration clips (training split): esc10, fsdd or a folder (default: verify data)."),
    calib_size: int = typer.Option(64, "--calib-size", min=1, help="Calibration clips (class-stratified)."),
    calib_method: str = typer.Option("minmax", "--calib-method", help="Calibration: minmax, percentile or entropy."),
    first_conv_fp32: bool = typer.Option(
        True, "--first-conv-fp32/--first-conv-int8",
        help="INT8 model: keep the first convolution in fp32 (its input carries the small Δ2/Δ3 components)."),
    eval_size: Optional[int] = typer.Option(None, "--eval-size", min=1,
                                            help="Held-out clips for the fp32/INT8 accuracy (default: all)."),
    trt: bool = typer.Option(False, "--trt", help="Also build a TensorRT engine (needs tensorrt and a CUDA device)."),
    fp16: bool = typer.Option(False, "--fp16", help="TensorRT engine in fp16."),
    workspace: int = typer.Option(1024, "--workspace", min=1, help="TensorRT builder workspace (MB)."),
    max_batch: int = typer.Option(1, "--max-batch", min=1, help="TensorRT profile: batch 1..N (opt 1)."),
    compact: bool = typer.Option(False, "--compact", help="Also write OUT.compact.onnx (each quaternion kernel stored once, ~4x smaller)."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset (>= 17)."),
    lipschitz: bool = typer.Option(False, "--lipschitz/--no-lipschitz",
                                   help="Compute the Lipschitz bound for the metadata (minutes for large models)."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
) -> None:
    """Export a model to ONNX with qedge metadata, verify it against PyTorch on real clips, and
    optionally write a compact file, an INT8 QDQ file and a TensorRT engine."""
    import json

    from rich.console import Console

    from qedge.checkpoint import load
    from qedge.export import pipeline

    console = Console(stderr=True, quiet=json_out)
    if calib_method not in ("minmax", "percentile", "entropy"):
        raise QedgeError(f"--calib-method must be minmax, percentile or entropy, got {calib_method!r}")
    if fp16 and not trt:
        raise QedgeError("--fp16 applies to the TensorRT engine: add --trt")
    if not model.is_file():
        raise QedgeError(f"{model}: no such model file")
    out = out if out is not None else model.with_suffix(".onnx")
    with console.status(f"loading {model}"):
        net, meta = load(model)
    report = pipeline.run(
        net, meta, out,
        dynamic_time=dynamic_time, opset=opset, lipschitz=lipschitz,
        verify_data=verify_data, verify_size=verify_size,
        compact=compact, int8=int8, calib_data=calib_data, calib_size=calib_size, calib_method=calib_method,
        first_conv_fp32=first_conv_fp32, eval_size=eval_size, trt=trt, fp16=fp16, workspace_mb=workspace, max_batch=max_batch,
        console=console,
    )
    for message in report["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {message}")
    if json_out:
        print(json.dumps(report, indent=None, sort_keys=True, default=str))
    else:
        pipeline.print_report(report, Console())
    if report.get("trt_error"):
        raise QedgeError(report["trt_error"]["message"], exit_code=report["trt_error"]["exit_code"])
