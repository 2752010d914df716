"""The ``qedge export`` pipeline: fp32 ONNX → verify → (compact) → (INT8 QDQ + accuracy) → (TensorRT).

Each step reports its figures into one dict (printed as a table or as JSON by the command):
sizes in bytes, max|Δ| against PyTorch, top-1 agreement, batch-1 CPU latency (median, ms),
held-out accuracy of fp32 and INT8 (ONNX Runtime sessions on the runtime's own features).
Verification uses held-out clips of the model's data (``--verify-data``, else the data the model
file names, :attr:`qedge.meta.ModelRecord.data_source`: its ``data`` or its history's); with
neither, generated signals (tones, chirps, noise) are used and a warning says so.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from qedge.errors import QedgeError
from qedge.runtime.model_info import INPUT_NAME, OUTPUT_NAME, ModelInfo

if TYPE_CHECKING:  # pragma: no cover
    from qedge.meta import ModelRecord
    from rich.console import Console
    from torch import nn

__all__ = ["run", "model_data", "held_out_features", "generated_features", "label_indices", "evaluate_onnx", "print_report"]


def generated_features(info: ModelInfo, n: int = 8, seed: int = 0) -> np.ndarray:
    """Features of ``n`` generated clips (tone stacks, chirps, noise bursts) at the model window."""
    from qedge.calib.reader import window_samples
    from qedge.runtime.features import FeatureConfig, LogMelDeltas

    config = FeatureConfig.from_dict(dict(info.features))
    length = window_samples(config, info.window_frames)
    t = np.arange(length) / config.sample_rate
    rng = np.random.default_rng(seed)
    extractor = LogMelDeltas(config)
    out = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            f0 = rng.uniform(100, 2000)
            wave = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 5))
        elif kind == 1:
            f0, f1 = rng.uniform(100, 500), rng.uniform(2000, min(8000, config.sample_rate / 2 - 1))
            wave = np.sin(2 * np.pi * (f0 * t + (f1 - f0) / (2 * t[-1] + 1e-9) * t ** 2))
        else:
            wave = rng.standard_normal(length) * (np.sin(2 * np.pi * rng.uniform(1, 8) * t) > 0)
        wave = 0.3 * wave / (np.abs(wave).max() + 1e-9)
        out.append(extractor.compute(wave.astype(np.float32)))
    return np.stack(out).astype(np.float32)


def label_indices(clip_labels: Sequence[str], model_labels: Sequence[str]) -> np.ndarray | None:
    """Index of each clip's label in the model's labels, or ``None`` when one is not there. Labels
    match by exact name, the one rule of :mod:`qedge.data` (``ClipDataset``) and ``qedge evaluate``:
    the dataset index already turns folder names (``"001 - Dog bark"``) into class names."""
    lookup = {name: k for k, name in enumerate(model_labels)}
    idx = [lookup.get(label) for label in clip_labels]
    return None if any(i is None for i in idx) else np.asarray(idx)


def _record(meta: "Mapping[str, Any] | ModelRecord") -> "ModelRecord":
    from qedge.meta import ModelRecord

    return meta if isinstance(meta, ModelRecord) else ModelRecord.from_meta(meta)


def model_data(meta: "Mapping[str, Any] | ModelRecord") -> str | None:
    """The data a model was trained on (:attr:`~qedge.meta.ModelRecord.data_source`): the file's
    ``data``, else the latest history record's ``data``. ``meta``: the file's meta or its record."""
    return _record(meta).data_source


def _scores(onnx_path: str | Path, x: np.ndarray, batch_size: int = 8) -> np.ndarray:
    from qedge.export.onnx import ort_session

    session = ort_session(onnx_path)
    dynamic = not isinstance(session.get_inputs()[0].shape[0], int)
    step = batch_size if dynamic else 1
    return np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: x[i:i + step]})[0]
                           for i in range(0, len(x), step)])


def evaluate_onnx(onnx_path: str | Path, x: np.ndarray, targets: np.ndarray | None) -> dict[str, Any]:
    """Top-1 predictions (and accuracy when ``targets`` is given) of an ONNX file on features."""
    scores = _scores(onnx_path, x)
    pred = scores.argmax(1)
    return {"scores": scores, "pred": pred,
            "accuracy": float((pred == targets).mean()) if targets is not None else None}


def split_record(meta: "Mapping[str, Any] | ModelRecord", data: str) -> "ModelRecord | None":
    """The model's record when ``data`` is the data it was trained on (so its held-out fold or
    speaker applies, :meth:`~qedge.meta.ModelRecord.test_split`); ``None`` for other data, which
    is split by its own default rule. ``meta``: the file's meta or its record."""
    record = _record(meta)
    trained_on = record.training.get("data") or record.data_source
    return record if trained_on is not None and str(data) == str(trained_on) else None


def held_out_features(data: str, info: ModelInfo, limit: int | None, warnings: list[str],
                      record: "ModelRecord | None" = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Features and (model-label) targets of the held-out split of ``data`` (all or a stratified
    ``limit``): the split ``record``'s model was trained with, else the dataset's default rule."""
    from qedge.calib.reader import features_array
    from qedge.calib.select import held_out

    clips, _ = held_out(data, limit, record=record)
    x = features_array(clips, info.features, info.window_frames)
    targets = label_indices([c.labels[0] if c.labels else "" for c in clips], info.labels)
    if targets is None:
        warnings.append(f"the labels of '{data}' do not match the model's; accuracy not reported")
    return x, targets


def run(
    model: "nn.Module",
    meta: Mapping[str, Any],
    out: str | Path,
    *,
    dynamic_time: bool = True,
    opset: int = 17,
    lipschitz: bool = False,
    verify_data: str | None = None,
    verify_size: int = 16,
    compact: bool = False,
    int8: bool = False,
    calib_data: str | None = None,
    calib_size: int = 64,
    calib_method: str = "minmax",
    first_conv_fp32: bool = True,
    eval_size: int | None = None,
    trt: bool = False,
    fp16: bool = False,
    workspace_mb: int = 1024,
    max_batch: int = 1,
    console: "Console | None" = None,
) -> dict[str, Any]:
    """Run the export steps asked for; return the report (raise :class:`QedgeError` on failure).

    A missing TensorRT / CUDA device does not raise: it is returned as ``report["trt_error"]``
    (message, exit code 3) after every ONNX file has been written and verified.
    """
    from contextlib import nullcontext

    from qedge.export.onnx import export_onnx, model_info, ort_latency_ms, verify_onnx
    from qedge.meta import ModelRecord

    def status(text: str):
        return console.status(text) if console is not None else nullcontext()

    out = Path(out)
    record = ModelRecord.from_meta(meta)
    warnings: list[str] = []
    report: dict[str, Any] = {"model": record.arch, "warnings": warnings}
    with status("measuring the model (MACs, parameters, Lipschitz bound)"):
        info = model_info(model, meta, lipschitz=lipschitz)
    report["info"] = {"macs": info.macs, "params": info.params, "window_frames": info.window_frames,
                      "labels": len(info.labels), "task": info.task, "lipschitz": info.lipschitz}
    with status(f"exporting {out}"):
        export_onnx(model, info, out, dynamic_time=dynamic_time, opset=opset)
    report["onnx"] = {"path": str(out), "bytes": out.stat().st_size}

    data = verify_data or record.data_source
    with status("computing verification features"):
        if data:
            x_verify, _ = held_out_features(str(data), info, verify_size, warnings, split_record(record, data))
            report["verify_source"] = f"{len(x_verify)} held-out clips of {data}"
        else:
            x_verify = generated_features(info, verify_size)
            warnings.append("the model file names no data and --verify-data was not given: "
                            "verified on generated signals only")
            report["verify_source"] = f"{len(x_verify)} generated signals"
    with status("verifying ONNX Runtime against PyTorch"):
        report["onnx"]["verify"] = verify_onnx(out, model, x_verify)
        report["onnx"]["latency_ms"] = ort_latency_ms(out)

    if compact:
        from qedge.export.compact import compact_onnx

        compact_path = out.with_name(out.stem + ".compact" + out.suffix)
        with status(f"writing {compact_path}"):
            _, creport = compact_onnx(out, compact_path)
            verify = verify_onnx(compact_path, model, x_verify)
            folded, packed = _scores(out, x_verify), _scores(compact_path, x_verify)
            rel = float(np.abs(folded - packed).max() / max(np.abs(folded).max(), 1e-30))
            if rel > 1e-5:  # verify_onnx above already held it to PyTorch within 1e-4
                warnings.append(f"compact and folded exports differ by {rel:.2g} (relative), above 1e-5; the folded "
                                f"export itself is {report['onnx']['verify']['rel_diff']:.2g} from PyTorch")
        report["compact"] = {
            "path": str(compact_path), "bytes": compact_path.stat().st_size,
            "ratio": report["onnx"]["bytes"] / compact_path.stat().st_size,
            "layers": len(creport.compacted), "left_real": len(creport.skipped),
            "rel_diff_vs_folded": rel, "verify": verify, "latency_ms": ort_latency_ms(compact_path),
        }

    engine_source = out
    if int8:
        from qedge.calib.quantize import int8_path, qdq_summary, quantize_int8
        from qedge.calib.reader import FeatureReader
        from qedge.calib.select import select_calibration

        calib = calib_data or data
        if not calib:
            raise QedgeError("--int8 needs calibration clips: pass --calib-data esc10|fsdd|FOLDER")
        q_path = int8_path(out)
        with status(f"calibrating on {calib_size} clips of {calib} and writing {q_path}"):
            clips = select_calibration(str(calib), calib_size, record=split_record(record, calib))
            reader = FeatureReader(clips, info.features, info.window_frames)
            quantize_int8(out, q_path, reader, method=calib_method, first_conv_fp32=first_conv_fp32)
        import onnx

        summary = qdq_summary(onnx.load(str(q_path)))
        entry: dict[str, Any] = {"path": str(q_path), "bytes": q_path.stat().st_size, "calibration_clips": len(clips),
                                 "method": calib_method, "first_conv_fp32": first_conv_fp32, "qdq": summary}
        eval_data = data or calib
        with status(f"evaluating fp32 and INT8 on the held-out split of {eval_data}"):
            x_test, targets = held_out_features(str(eval_data), info, eval_size, warnings,
                                                split_record(record, eval_data))
            ref, q = evaluate_onnx(out, x_test, targets), evaluate_onnx(q_path, x_test, targets)
        entry.update({
            "eval_clips": int(len(x_test)),
            "fp32_accuracy": ref["accuracy"], "int8_accuracy": q["accuracy"],
            "top1_agreement": float((ref["pred"] == q["pred"]).mean()),
            "max_abs_diff": float(np.abs(ref["scores"] - q["scores"]).max()),
            "fp32_latency_ms": report["onnx"]["latency_ms"], "latency_ms": ort_latency_ms(q_path),
        })
        if ref["accuracy"] is not None and ref["accuracy"] - q["accuracy"] > 0.01:
            warnings.append(f"INT8 loses {100 * (ref['accuracy'] - q['accuracy']):.1f} accuracy points "
                            f"({100 * ref['accuracy']:.1f} % → {100 * q['accuracy']:.1f} %); "
                            "try --calib-method percentile or a larger --calib-size")
        report["int8"] = entry
        engine_source = q_path

    if trt:
        from qedge.export.tensorrt import EXIT_UNAVAILABLE, build_engine

        try:
            with status(f"building the TensorRT engine from {engine_source}"):
                engine, plan = build_engine(engine_source, None, info, fp16=fp16,
                                            workspace_mb=workspace_mb, max_batch=max_batch)
            report["trt"] = {"path": str(engine), "bytes": engine.stat().st_size, "precision": plan.precision,
                             "tensorrt": ".".join(map(str, plan.version)), "max_batch": max_batch}
        except QedgeError as exc:
            if exc.exit_code != EXIT_UNAVAILABLE:
                raise
            report["trt_error"] = {"message": str(exc), "exit_code": exc.exit_code}
    return report


def print_report(report: Mapping[str, Any], console: "Console") -> None:
    """A short human-readable table of the report."""
    from rich.table import Table

    info = report["info"]
    console.print(f"model {report['model']}: {info['params']:,} parameters, {info['macs'] / 1e6:,.1f} MMACs "
                  f"per window of {info['window_frames']} frames"
                  + (f", Lipschitz bound {info['lipschitz']:.4g}" if info.get("lipschitz") else ""))
    console.print(f"verified on {report['verify_source']}")
    table = Table("file", "size", "max|Δ| vs PyTorch", "top-1 agree", "latency (b=1)", "accuracy")
    onnx_entry = report["onnx"]
    table.add_row(onnx_entry["path"], f"{onnx_entry['bytes'] / 1e6:.2f} MB",
                  f"{onnx_entry['verify']['max_abs_diff']:.2e}", f"{100 * onnx_entry['verify']['top1_agreement']:.1f} %",
                  f"{onnx_entry['latency_ms']:.2f} ms",
                  _pct(report.get("int8", {}).get("fp32_accuracy")))
    if "compact" in report:
        c = report["compact"]
        table.add_row(c["path"], f"{c['bytes'] / 1e6:.2f} MB (÷{c['ratio']:.2f})", f"{c['verify']['max_abs_diff']:.2e}",
                      f"{100 * c['verify']['top1_agreement']:.1f} %", f"{c['latency_ms']:.2f} ms", "")
    if "int8" in report:
        q = report["int8"]
        table.add_row(q["path"], f"{q['bytes'] / 1e6:.2f} MB", f"{q['max_abs_diff']:.2e} (vs fp32)",
                      f"{100 * q['top1_agreement']:.1f} % (vs fp32)", f"{q['latency_ms']:.2f} ms", _pct(q["int8_accuracy"]))
    if "trt" in report:
        t = report["trt"]
        table.add_row(t["path"], f"{t['bytes'] / 1e6:.2f} MB", t["precision"], f"TensorRT {t['tensorrt']}", "", "")
    console.print(table)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f} %"
