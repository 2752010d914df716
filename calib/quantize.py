"""INT8 quantization in the QDQ form TensorRT ≥ 10 consumes as explicit quantization (design.md §8).

``quantize_int8`` runs ONNX Runtime's ``quant_pre_process`` (symbolic + ONNX shape inference and
graph optimisation, as ORT recommends before static quantization) and then ``quantize_static`` with

- ``QuantFormat.QDQ``: QuantizeLinear/DequantizeLinear pairs around float ops (standard ops);
- activations int8, **symmetric** (``ActivationSymmetric``): x ≈ s·q with zero-point 0;
- weights int8, symmetric, **per output channel** (``per_channel``, ``WeightSymmetric``);
- scales from the calibration reader (MinMax by default: s = max|x| / 127 over the set).

The output activation (Softmax / Sigmoid producing ``scores``) stays fp32: quantizing
probabilities in [0, 1] with a symmetric int8 grid would waste half the codes on values that
cannot occur and round small scores to 0. Torch-free (numpy, onnx, onnxruntime).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qedge.errors import QedgeError
from qedge.runtime.model_info import OUTPUT_NAME

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["CALIBRATION_METHODS", "quantize_int8", "qdq_summary", "int8_path"]

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


def int8_path(fp32_path: str | Path) -> Path:
    """``model.onnx`` → ``model.int8.onnx`` (beside it)."""
    path = Path(fp32_path)
    return path.with_name(path.stem + ".int8" + path.suffix)


def _fp32_nodes(proto: "onnx.ModelProto") -> list[str]:
    """Nodes kept in fp32: the Softmax/Sigmoid producing the output, and BatchNormalization.

    The only BN left after folding is ``bn0``, a per-mel-bin affine map of the input (design.md
    §5) applied on a transposed tensor: ORT would quantize its rank-1 parameters per channel on
    the wrong axis; as an fp32 affine map it costs nothing next to the convolutions.
    """
    producers = {out: node for node in proto.graph.node for out in node.output}
    names = []
    for out in proto.graph.output:
        node = producers.get(out.name)
        if node is not None and node.op_type in ("Softmax", "Sigmoid"):
            names.append(node.name)
    names += [node.name for node in proto.graph.node if node.op_type == "BatchNormalization"]
    return names


def qdq_summary(proto: "onnx.ModelProto") -> dict[str, Any]:
    """Count QDQ nodes and check their zero points (design.md §8: symmetric, all zero).

    Returns ``{"quantize", "dequantize", "zero_points", "nonzero_zero_points", "zero_point_types",
    "per_channel_weights", "per_tensor_weights", "biases"}``. A weight is a DequantizeLinear whose
    input is an int8 initializer (per-channel when its scale has more than one element); a bias one
    whose input is an int32 initializer.
    """
    from onnx import TensorProto, numpy_helper

    inits = {t.name: t for t in proto.graph.initializer}
    consts = dict(inits)
    for node in proto.graph.node:  # zero points may also arrive as Constant nodes
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    consts[node.output[0]] = attr.t
    summary: dict[str, Any] = {"quantize": 0, "dequantize": 0, "zero_points": 0, "nonzero_zero_points": 0,
                               "zero_point_types": set(), "per_channel_weights": 0, "per_tensor_weights": 0, "biases": 0}
    for node in proto.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        summary["quantize" if node.op_type == "QuantizeLinear" else "dequantize"] += 1
        if len(node.input) < 3 or not node.input[2]:
            summary["zero_points"] += 1  # absent zero point = 0 (uint8 by the spec): counted as 0
            summary["zero_point_types"].add("absent")
        else:
            zp_tensor = consts.get(node.input[2])
            if zp_tensor is None:
                summary["nonzero_zero_points"] += 1  # computed zero point: cannot vouch for it
                continue
            zp = numpy_helper.to_array(zp_tensor)
            summary["zero_points"] += 1
            summary["zero_point_types"].add(str(zp.dtype))
            if np.any(zp != 0):
                summary["nonzero_zero_points"] += 1
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            if inits[node.input[0]].data_type != TensorProto.INT8:
                summary["biases"] += 1  # int32 bias (scale = s_x · s_w per channel)
                continue
            scale = consts.get(node.input[1])
            size = int(np.prod(scale.dims)) if scale is not None else 1
            summary["per_channel_weights" if size > 1 else "per_tensor_weights"] += 1
    summary["zero_point_types"] = sorted(summary["zero_point_types"])
    return summary


def quantize_int8(
    fp32_onnx: str | Path,
    out: str | Path,
    reader: Any,
    *,
    method: str = "minmax",
    first_conv_fp32: bool = True,
) -> Path:
    """Write the INT8 QDQ model of ``fp32_onnx`` to ``out``, calibrated on ``reader``.

    ``reader`` is a ``CalibrationDataReader`` (e.g. :class:`qedge.calib.reader.FeatureReader`).
    ``first_conv_fp32`` (default) keeps the first convolution in fp32. Its input is the quaternion
    (log-mel, Δ1, Δ2, Δ3) after ``bn0``, whose per-mel statistics are dominated by the log-mel:
    the derivatives are 10–30× smaller, so ONE per-tensor int8 scale (set by the log-mel's range)
    leaves Δ2/Δ3 about one quantization step — the quaternion's extra components are erased.
    Measured (benchmarks/export.py): keeping that conv in fp32 recovers most of the INT8 loss at
    < 1 % of the MACs (4 input channels).
    ``metadata_props`` are copied (plus ``qedge.quantization = int8-qdq-symmetric``). Raises
    :class:`QedgeError` when the result has a non-zero or non-int8 zero point.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from qedge.checkpoint import atomic_write_bytes

    src = Path(fp32_onnx)
    if not src.is_file():
        raise QedgeError(f"{src}: no such ONNX file")
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if method not in methods:
        raise QedgeError(f"unknown calibration method {method!r} (choose from {', '.join(CALIBRATION_METHODS)})")
    original = onnx.load(str(src))
    exclude = _fp32_nodes(original)
    with tempfile.TemporaryDirectory(prefix="qedge-int8-") as tmp:
        prep = Path(tmp) / "prep.onnx"
        quant = Path(tmp) / "int8.onnx"
        try:
            quant_pre_process(str(src), str(prep), skip_symbolic_shape=False)
        except Exception:  # noqa: BLE001 - symbolic inference is best effort; plain shape inference next
            quant_pre_process(str(src), str(prep), skip_symbolic_shape=True)
        prepared = onnx.load(str(prep))
        exclude = _fp32_nodes(prepared) or exclude
        if first_conv_fp32:
            exclude += [n.name for n in prepared.graph.node if n.op_type == "Conv"][:1]
        extra = {"ActivationSymmetric": True, "WeightSymmetric": True}
        if method == "percentile":
            extra["CalibPercentile"] = 99.999
        try:
            quantize_static(
                str(prep), str(quant), reader,
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                reduce_range=False,
                nodes_to_exclude=exclude,
                calibrate_method=methods[method],
                extra_options=extra,
            )
        except QedgeError:
            raise
        except Exception as exc:  # noqa: BLE001 - ORT's quantizer raises many types
            raise QedgeError(f"{src}: INT8 quantization failed ({type(exc).__name__}: {exc})") from exc
        proto = onnx.load(str(quant))
    del proto.metadata_props[:]
    for prop in original.metadata_props:
        proto.metadata_props.add(key=prop.key, value=prop.value)
    proto.metadata_props.add(key="qedge.quantization", value=f"int8-qdq-symmetric-per-channel/{method}" + ("/first-conv-fp32" if first_conv_fp32 else ""))
    summary = qdq_summary(proto)
    # int8 activations/weights; int32 for biases (QDQ bias = int32 with scale s_x·s_w, zero point 0)
    if summary["nonzero_zero_points"] or any(t not in ("int8", "int32") for t in summary["zero_point_types"]):
        raise QedgeError(f"{src}: INT8 model has asymmetric or non-int8 zero points ({summary})")
    if summary["dequantize"] == 0:
        raise QedgeError(f"{src}: quantization inserted no QDQ nodes")
    if OUTPUT_NAME not in {o.name for o in proto.graph.output}:
        raise QedgeError(f"{src}: quantized graph lost its '{OUTPUT_NAME}' output")
    onnx.checker.check_model(proto)
    path = atomic_write_bytes(out, proto.SerializeToString())
    path.chmod(0o644)  # a deployment file, not a secret (the atomic writer creates 0600)
    return path
