"""`qedge inspect`: parameters, MACs, labels, history and (optionally) the spectral Lipschitz bound
of an architecture (``--arch``), a model file (``.qedge``) or an exported ONNX file (``.onnx``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from qedge.errors import QedgeError

if TYPE_CHECKING:  # pragma: no cover
    from qedge.meta import ModelRecord

_MAX_LABELS_SHOWN = 20


def inspect(
    model: Optional[Path] = typer.Argument(
        None, help="A model file: .qedge (from 'qedge train'/'qedge compress') or .onnx (from 'qedge export'). "
        "Omit it and give --arch to inspect a fresh architecture."),
    arch: Optional[str] = typer.Option(
        None, "--arch", help="Architecture to build: cnn6 cnn10 cnn14 resnet38 qcnn6 qcnn10 qcnn14 qresnet38 mccnn14."),
    classes: int = typer.Option(527, "--classes", min=1, help="Output classes of --arch (527 = AudioSet)."),
    width: float = typer.Option(1.0, "--width", help="Channel width multiplier of --arch (widths stay multiples of 4)."),
    frames: Optional[int] = typer.Option(
        None, "--frames", min=1, help="Time frames of the input window (default: 1001 = 10 s for --arch, the "
        "model's own window for a model file)."),
    mels: Optional[int] = typer.Option(
        None, "--mels", min=1, help="Mel bins of the input (default: 64 for --arch, the model's own for a file)."),
    layers: bool = typer.Option(False, "--layers", help="Also list every conv / linear layer (MACs, params, output)."),
    json_out: bool = typer.Option(False, "--json", help="Print ONE JSON object instead of text."),
    spectral: bool = typer.Option(
        False, "--spectral", help="Per-layer operator norms and the network's Lipschitz upper bound (design.md §7)."),
) -> None:
    """Show a model's size and cost: parameters, MACs per window (one counter: qedge.profile), labels,
    training history; with --spectral its per-layer spectral norms and Lipschitz bound."""
    from rich.console import Console

    out = Console(quiet=json_out, highlight=False)
    err = Console(stderr=True, quiet=json_out)
    if model is None and arch is None:
        raise QedgeError("give a MODEL file (.qedge or .onnx) or --arch NAME")
    if model is not None and arch is not None:
        raise QedgeError("give either a MODEL file or --arch, not both")
    if not width > 0:
        raise QedgeError(f"--width must be positive, got {width}")

    if model is None:
        report, net = _inspect_arch(str(arch), classes, width, frames or 1001, mels or 64, need_weights=spectral)
    else:
        if not model.is_file():
            raise QedgeError(f"{model}: no such model file")
        suffix = model.suffix.lower()
        if suffix == ".onnx":
            if spectral:
                raise QedgeError("--spectral needs a .qedge model file or --arch (an ONNX file holds folded weights)")
            report, net = _inspect_onnx(model), None
        elif suffix == ".qedge":
            report, net = _inspect_checkpoint(model, frames, mels)
        else:
            raise QedgeError(f"{model}: unsupported model file type '{model.suffix}' (expected .qedge or .onnx)")

    if spectral:
        report["spectral"] = _spectral(net, tuple(report["input_shape"]), err)
    if not layers:
        report.pop("layers", None)

    if json_out:
        print(json.dumps(report, default=_json_default))
        return
    _print_report(out, report)


# ----------------------------------------------------------------------------------------------
def _profile_fields(net: Any, input_shape: tuple[int, ...]) -> dict[str, Any]:
    from qedge.profile import profile

    try:
        prof = profile(net, input_shape)
    except (RuntimeError, ValueError) as exc:
        raise QedgeError(f"the model does not run on input shape {input_shape}: {str(exc).splitlines()[0]}") from exc
    return {
        "params": prof.params,
        "macs": prof.macs,
        "backbone_macs": prof.backbone_macs,
        "input_shape": list(input_shape),
        "layers": [
            {"name": r.name, "type": r.type, "macs": r.macs, "params": r.params, "out_shape": list(r.out_shape)}
            for r in prof.layers
        ],
    }


def _inspect_arch(arch: str, classes: int, width: float, frames: int, mels: int,
                  need_weights: bool) -> tuple[dict[str, Any], Any]:
    import torch

    from qedge.models import build

    # Counting needs shapes only: build on the meta device unless weights are needed (--spectral).
    if need_weights:
        net = build(arch, classes, width=width, n_mels=mels)
    else:
        with torch.device("meta"):
            net = build(arch, classes, width=width, n_mels=mels)
    report: dict[str, Any] = {
        "source": "arch",
        "arch": net.arch,
        "arch_kwargs": dict(net.arch_kwargs),
        "width": width,
        "classes": classes,
        "frames": frames,
        "mels": mels,
    }
    report.update(_profile_fields(net, (1, 4, frames, mels)))
    return report, net


def _window_frames(record: "ModelRecord") -> tuple[int, int]:
    """(frames, mels) of the model's window (:meth:`qedge.meta.ModelRecord.window_frames`)."""
    try:
        return record.window_frames(), int(record.features["n_mels"])
    except (KeyError, TypeError, ValueError) as exc:
        raise QedgeError(f"model metadata has no usable clip length / feature configuration ({exc})") from exc


def _inspect_checkpoint(path: Path, frames: Optional[int], mels: Optional[int]) -> tuple[dict[str, Any], Any]:
    from qedge.checkpoint import load
    from qedge.meta import ModelRecord

    net, meta = load(path)
    record = ModelRecord.from_meta(meta, source=str(path))
    own_frames, own_mels = _window_frames(record)
    frames, mels = frames or own_frames, mels or own_mels
    labels = list(record.labels)
    report: dict[str, Any] = {
        "source": str(path),
        "arch": record.arch,
        "arch_kwargs": record.arch_kwargs,
        "width": record.arch_kwargs.get("width"),
        "classes": len(labels),
        "frames": frames,
        "mels": mels,
        "clip_seconds": record.clip_seconds,
        "task": record.task,
        "labels": labels,
        "features": record.features,
        "history": list(record.history),
    }
    # Free-form extra keys a file may carry (no qedge writer sets them; nothing reads them as
    # model facts, so they are not ModelRecord fields): shown as stored.
    for key in ("pruning", "distillation"):
        if key in meta:
            report[key] = meta[key]
    report.update(_profile_fields(net, (1, 4, frames, mels)))
    return report, net


def _inspect_onnx(path: Path) -> dict[str, Any]:
    from qedge.errors import require
    from qedge.runtime.model_info import ModelInfo

    onnx = require("onnx", "train", "reading ONNX metadata")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad user file
        raise QedgeError(f"{path}: not a readable ONNX file ({str(exc).splitlines()[0] if str(exc) else exc})") from exc
    props = {p.key: p.value for p in proto.metadata_props}
    info = ModelInfo.from_props(props, source=str(path))
    features = info.features or {}
    opsets = {op.domain or "ai.onnx": int(op.version) for op in proto.opset_import}
    ops = sorted({node.op_type for node in proto.graph.node})
    return {
        "source": str(path),
        "arch": info.arch.get("name"),
        "arch_kwargs": info.arch.get("kwargs"),
        "width": (info.arch.get("kwargs") or {}).get("width"),
        "classes": len(info.labels),
        "frames": info.window_frames,
        "mels": features.get("n_mels"),
        "input_shape": [1, 4, info.window_frames, features.get("n_mels")],
        "params": info.params,
        "macs": info.macs,
        "task": info.task,
        "labels": info.labels,
        "features": features,
        "lipschitz": info.lipschitz,
        "opset": opsets.get("ai.onnx"),
        "operators": ops,
        "extra": info.extra,
    }


def _spectral(net: Any, input_shape: tuple[int, ...], err: Any) -> dict[str, Any]:
    from qedge.spectral import lipschitz_report

    with err.status(f"spectral norms of every layer at input {tuple(input_shape)}"):
        rep = lipschitz_report(net, input_shape)
    return {"bound": float(rep.bound), "rows": [dict(row) for row in rep.rows]}


# ----------------------------------------------------------------------------------------------
def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)


def _si(value: float | int | None) -> str:
    if value is None:
        return "-"
    value = float(value)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:g}"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "×".join(str(v) for v in value)
    return str(value)


def _history_line(entry: Any) -> str:
    """One readable line per history step: its scalar settings and results (per-epoch records and
    nested configs stay in ``--json``)."""
    if not isinstance(entry, dict):
        return json.dumps(entry, default=_json_default)
    step = entry.get("step", "?")
    fields = [f"{k}={_fmt(v)}" for k, v in entry.items()
              if k != "step" and v is not None and isinstance(v, (str, int, float, bool))]
    epochs = entry.get("epochs")
    if isinstance(epochs, list):
        fields.append(f"{len(epochs)} epoch records")
    return f"[bold]{step}[/bold]: " + ", ".join(fields)


def _print_report(out: Any, report: dict[str, Any]) -> None:
    from rich.table import Table

    out.print(f"[bold]{report.get('arch')}[/bold]  ({report['source']})")
    if report.get("arch_kwargs"):
        out.print(f"  arch kwargs   {json.dumps(report['arch_kwargs'], sort_keys=True)}")
    out.print(f"  input         {_fmt(report.get('input_shape'))} (batch, components, frames, mels)")
    out.print(f"  params        {report['params']:,} ({_si(report['params'])})")
    macs_line = f"  MACs/window   {report['macs']:,} ({_si(report['macs'])}"
    if "backbone_macs" in report:
        macs_line += f"; convolutions {_si(report['backbone_macs'])}"
    out.print(macs_line + ")")
    for key in ("task", "clip_seconds", "opset", "lipschitz"):
        if report.get(key) is not None:
            out.print(f"  {key:<13} {_fmt(report[key])}")
    if report.get("features"):
        out.print(f"  features      {json.dumps(report['features'], sort_keys=True)}")
    if report.get("operators"):
        out.print(f"  operators     {', '.join(report['operators'])}")
    labels = report.get("labels")
    if labels:
        shown = ", ".join(labels[:_MAX_LABELS_SHOWN])
        more = f", … ({len(labels)} in all)" if len(labels) > _MAX_LABELS_SHOWN else ""
        out.print(f"  labels        {shown}{more}")
    for key in ("pruning", "distillation"):
        if report.get(key):
            out.print(f"  {key:<13} {json.dumps(report[key], default=_json_default)}")
    history = report.get("history")
    if history:
        out.print(f"  history       {len(history)} entries")
        for entry in history[-10:]:
            out.print("    " + _history_line(entry))

    if report.get("layers"):
        table = Table(title="layers", show_lines=False)
        for col in ("layer", "type", "MACs", "params", "output"):
            table.add_column(col, justify="left" if col in ("layer", "type") else "right")
        for row in report["layers"]:
            table.add_row(row["name"], row["type"], f"{row['macs']:,}", f"{row['params']:,}", _fmt(row["out_shape"]))
        out.print(table)

    spec = report.get("spectral")
    if spec:
        table = Table(title="spectral (operator norms, design.md §7)")
        for col in ("layer", "input", "sigma_max", "bn", "factor", "cumulative"):
            table.add_column(col, justify="left" if col == "layer" else "right")
        for row in spec["rows"]:
            table.add_row(str(row.get("layer")), _fmt(row.get("input_size")), _fmt(row.get("sigma_max")),
                          _fmt(row.get("bn_factor")), _fmt(row.get("factor")), _fmt(row.get("cumulative")))
        out.print(table)
        out.print(f"  Lipschitz upper bound  {spec['bound']:.6g}")
