"""ONNX export of a qedge model: fold, append the output activation, write metadata, verify.

The deployed graph (design.md §8) is the *folded* network (:func:`qedge.export.fold.fold`: every
quaternion layer replaced by the real layer with the assembled Hamilton kernel of design.md §3,
BatchNorm fused) followed by the output activation, so the output ``scores`` is probabilities:

    scores = softmax(f(x))   (task "single-label")      scores = σ(f(x))   (task "multi-label")

Input ``features`` is ``(batch, 4, frames, mels)`` (the quaternion log-mel + Δ1 Δ2 Δ3 of design.md
§4), batch always dynamic, frames dynamic on request. Only standard ONNX operators (default
domain) are allowed; ``metadata_props`` carry :meth:`ModelInfo.to_props` (``qedge.*`` keys).

Exporter choice (torch 2.13): the TorchScript ("legacy", ``dynamo=False``) exporter is used when
it is available: for these feed-forward CNNs it writes the same clean graph as the dynamo exporter
(Conv/Relu/AveragePool/Reduce*/Gemm/Softmax) in ~0.2 s instead of ~6 s, and its ``dynamic_axes``
need no symbolic-shape constraints. If it is missing (a later torch) the dynamo exporter is used
with ``torch.export.Dim`` dynamic shapes. Both outputs go through the same checks.
"""

from __future__ import annotations

import io
import math
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from qedge.errors import QedgeError
from qedge.runtime.model_info import INPUT_NAME, OUTPUT_NAME, ModelInfo

if TYPE_CHECKING:  # pragma: no cover
    import onnx
    import torch
    from torch import nn

__all__ = [
    "DEFAULT_OPSET",
    "window_frames_for",
    "model_info",
    "scores_module",
    "export_onnx",
    "check_standard_ops",
    "save_onnx",
    "read_info",
    "verify_onnx",
    "ort_session",
    "ort_latency_ms",
]

DEFAULT_OPSET = 17
#: ONNX domains that count as "standard operators" (design.md §8).
STANDARD_DOMAINS = ("", "ai.onnx")


# ----------------------------------------------------------------------------------------------
# Metadata
# ----------------------------------------------------------------------------------------------
def window_frames_for(meta: Mapping[str, Any]) -> int:
    """Frames in one model window: ``FeatureConfig.num_frames(round(clip_seconds · sample_rate))``."""
    from qedge.meta import ModelRecord

    try:
        return ModelRecord.from_meta(meta).window_frames()
    except (KeyError, TypeError, ValueError) as exc:
        raise QedgeError(f"model metadata lacks a usable features/clip_seconds entry ({exc})") from exc


def model_info(
    model: "nn.Module",
    meta: Mapping[str, Any],
    window_frames: int | None = None,
    *,
    lipschitz: bool = False,
) -> ModelInfo:
    """Build the :class:`ModelInfo` written into the ONNX file / engine sidecar.

    ``macs`` come from THE MAC counter :func:`qedge.profile.profile` at ``(1, 4, window_frames,
    n_mels)`` (a quaternion conv costs the real conv of the same width, so model and fold agree);
    ``params`` counts the quaternion model's parameters (¼ of the folded real ones per layer,
    design.md §3). The Lipschitz bound (design.md §7: the product of per-layer operator norms) is
    the one the model file records (:attr:`qedge.meta.ModelRecord.lipschitz`), else computed with
    ``qedge.spectral.lipschitz_report`` when ``lipschitz`` is true (opt-in: exact per-layer
    singular values at the window size take minutes for a full-width QCNN14).
    """
    from qedge.meta import ModelRecord
    from qedge.profile import profile

    # A meta built in code (tests, scripts) may name no arch / arch_kwargs: the model's own stand
    # in, as checkpoint.save fills them in, before the record (which requires an arch) is read.
    filled = {"arch": getattr(model, "arch", "unknown"),
              "arch_kwargs": dict(getattr(model, "arch_kwargs", {}) or {}), **meta}
    missing = [k for k in ("features", "labels") if k not in filled]
    if missing:  # model_info's own message, as before the record (whose wording differs)
        raise QedgeError(f"model metadata lacks labels/features ({missing[0]!r})")
    record = ModelRecord.from_meta(filled)
    try:
        n_mels = int(record.features["n_mels"])
    except (KeyError, TypeError, ValueError) as exc:
        raise QedgeError(f"model metadata lacks labels/features ({exc})") from exc
    if window_frames is not None:
        frames = int(window_frames)
    else:
        try:
            frames = record.window_frames()
        except (KeyError, TypeError, ValueError) as exc:
            raise QedgeError(f"model metadata lacks a usable features/clip_seconds entry ({exc})") from exc
    if frames <= 0:
        raise QedgeError(f"window of {frames} frames is empty")
    shape = (1, 4, frames, n_mels)
    prof = profile(model, input_shape=shape)
    params = int(sum(p.numel() for p in model.parameters()))
    bound: float | None = record.lipschitz
    if bound is None and lipschitz:
        from qedge.spectral import lipschitz_report

        try:
            bound = float(lipschitz_report(model, input_shape=shape).bound)
        except (NotImplementedError, ValueError, TypeError) as exc:
            warnings.warn(f"Lipschitz bound not computed: {exc}")
        if bound is not None and not math.isfinite(bound):
            bound = None
    return ModelInfo(
        listen=record.listen_settings(),
        labels=record.labels,
        features=record.features,
        arch={"name": record.arch, "kwargs": record.arch_kwargs},
        macs=int(prof.macs),
        params=params,
        window_frames=frames,
        task=record.task,
        lipschitz=bound,
    )


# ----------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------
def scores_module(model: "nn.Module", task: str) -> "nn.Module":
    """Wrap ``model`` (features → logits) so it returns probabilities: softmax or sigmoid by ``task``."""
    import torch
    from torch import nn

    if task not in ("single-label", "multi-label"):
        raise QedgeError(f"unknown task {task!r} (expected 'single-label' or 'multi-label')")

    class Scores(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            logits = self.inner(features)
            return torch.softmax(logits, dim=-1) if task == "single-label" else torch.sigmoid(logits)

    return Scores(model).eval()


def _export_bytes(module: "nn.Module", example: "torch.Tensor", dynamic_time: bool, opset: int) -> bytes:
    """Run torch's ONNX exporter (legacy TorchScript if available, else dynamo) and return the bytes."""
    import torch

    axes = {0: "batch", 2: "frames"} if dynamic_time else {0: "batch"}
    legacy_error: Exception | None = None
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, (example,), buffer, dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True,
            )
        return buffer.getvalue()
    except (TypeError, RuntimeError, NotImplementedError, ImportError) as exc:  # legacy removed/failed
        legacy_error = exc
    dims = {0: torch.export.Dim("batch", min=1, max=4096)}
    if dynamic_time:
        dims[2] = torch.export.Dim("frames", min=16, max=1 << 16)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module, (example,), str(path), dynamo=True, opset_version=opset,
                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                    dynamic_shapes={"features": dims}, external_data=False, verbose=False,
                )
        except Exception as exc:  # noqa: BLE001 - report both exporters' failure in one line
            raise QedgeError(f"ONNX export failed (legacy: {legacy_error}; dynamo: {exc})") from exc
        return path.read_bytes()


def check_standard_ops(proto: "onnx.ModelProto", source: str = "ONNX graph") -> None:
    """Raise :class:`QedgeError` if any node (or local function) is outside the standard ONNX domain."""
    bad = sorted({f"{n.domain}::{n.op_type}" for n in proto.graph.node if n.domain not in STANDARD_DOMAINS})
    if proto.functions:
        bad += [f"function {f.domain}::{f.name}" for f in proto.functions]
    if bad:
        raise QedgeError(f"{source} uses non-standard operators: {', '.join(bad)}")


def save_onnx(proto: "onnx.ModelProto", out: str | Path, info: ModelInfo | None = None) -> Path:
    """Set ``metadata_props`` from ``info`` (if given), run ``onnx.checker`` and write atomically."""
    import onnx

    from qedge.checkpoint import atomic_write_bytes

    if info is not None:
        keep = [p for p in proto.metadata_props if not p.key.startswith("qedge.")]
        del proto.metadata_props[:]
        proto.metadata_props.extend(keep)
        for key, value in info.to_props().items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QedgeError(f"{out}: exported graph fails onnx.checker: {first}") from exc
    return _readable(atomic_write_bytes(out, proto.SerializeToString()))


def _readable(path: Path) -> Path:
    """Deployment files are shared: rw-r--r-- (the atomic writer's temp file is created 0600)."""
    path.chmod(0o644)
    return path


def export_onnx(
    model: "nn.Module",
    info: ModelInfo,
    out: str | Path,
    *,
    dynamic_time: bool = True,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export ``model`` (quaternion or real) as fp32 ONNX: fold + output activation + metadata.

    The graph computes ``scores = act(fold(model)(features))`` with act = softmax / sigmoid
    (``info.task``). Batch is dynamic (``batch``); with ``dynamic_time`` (the default, as
    ``qedge export``) the frames axis is too (``frames``), so the listen window and the whole-clip
    window both run; ``False`` fixes it to ``info.window_frames``. Mels stay fixed. Raises :class:`QedgeError` on opset < 17, non-standard
    operators or a graph that fails ``onnx.checker``. The file is written atomically.
    """
    import onnx
    import torch

    from qedge.export.fold import fold

    if opset < 17:
        raise QedgeError(f"opset {opset} is too old: qedge exports opset >= 17 (design.md §8)")
    n_mels = int(info.features["n_mels"])
    folded = fold(model).eval()
    wrapped = scores_module(folded, info.task)
    example = torch.zeros(1, 4, int(info.window_frames), n_mels)
    data = _export_bytes(wrapped, example, dynamic_time, opset)
    proto = onnx.load_from_string(data)
    check_standard_ops(proto, str(out))
    return save_onnx(proto, out, info)


def read_info(onnx_path: str | Path) -> ModelInfo:
    """Read the qedge metadata of an ONNX file (torch-free)."""
    import onnx

    path = Path(onnx_path)
    if not path.is_file():
        raise QedgeError(f"{path}: no such ONNX file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types
        raise QedgeError(f"{path}: not an ONNX model ({type(exc).__name__})") from exc
    return ModelInfo.from_props({p.key: p.value for p in proto.metadata_props}, source=str(path))


# ----------------------------------------------------------------------------------------------
# Verification and latency
# ----------------------------------------------------------------------------------------------
def ort_session(onnx_path: str | Path, threads: int | None = None):
    """A CPU ONNX Runtime session (``threads`` intra-op threads; None = ORT's default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        raise QedgeError(f"{onnx_path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0]})") from exc


def verify_onnx(
    onnx_path: str | Path,
    model: "nn.Module",
    inputs: "np.ndarray | Sequence[np.ndarray]",
    *,
    rtol: float = 1e-4,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Compare ONNX Runtime with PyTorch (the unfolded model + the same output activation).

    ``inputs``: real features ``(N, 4, frames, mels)`` (or a list of ``(4, frames, mels)``).
    Passes when max|Δ| ≤ ``rtol`` · max|y| (y the PyTorch scores) and the top-1 classes agree on
    every input; a top-1 disagreement is tolerated only where PyTorch's own top-2 margin is within
    that tolerance (a genuine tie). Returns ``{"max_abs_diff", "max_abs_ref", "rel_diff",
    "top1_agreement", "n", "tolerance"}``; raises :class:`QedgeError` with those figures otherwise.
    """
    import torch

    x = np.asarray(np.stack(inputs) if not isinstance(inputs, np.ndarray) else inputs, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] != 4 or len(x) == 0:
        raise QedgeError(f"verification inputs must be (N, 4, frames, mels), got {x.shape}")
    info = read_info(onnx_path)
    session = ort_session(onnx_path)
    reference = scores_module(model, info.task).eval()
    got, ref = [], []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            chunk = x[start:start + batch_size]
            got.append(session.run([OUTPUT_NAME], {INPUT_NAME: chunk})[0])
            ref.append(reference(torch.from_numpy(chunk)).numpy())
    y_onnx = np.concatenate(got).astype(np.float64)
    y_ref = np.concatenate(ref).astype(np.float64)
    max_diff = float(np.abs(y_onnx - y_ref).max())
    max_ref = float(np.abs(y_ref).max())
    tolerance = rtol * max_ref
    top_ref, top_onnx = y_ref.argmax(1), y_onnx.argmax(1)
    ordered = np.sort(y_ref, axis=1)
    margin = ordered[:, -1] - ordered[:, -2] if y_ref.shape[1] > 1 else np.full(len(y_ref), np.inf)
    disagree = top_ref != top_onnx
    hard = disagree & (margin > tolerance)
    report = {
        "n": int(len(x)),
        "max_abs_diff": max_diff,
        "max_abs_ref": max_ref,
        "rel_diff": max_diff / max_ref if max_ref > 0 else max_diff,
        "tolerance": tolerance,
        "top1_agreement": float(1.0 - disagree.mean()),
    }
    if max_diff > tolerance or hard.any():
        raise QedgeError(
            f"{onnx_path}: ONNX Runtime disagrees with PyTorch on {len(x)} inputs: max|Δ| {max_diff:.3g} "
            f"(limit {rtol:g}·max|y| = {tolerance:.3g}), top-1 differs on {int(hard.sum())}/{len(x)}"
        )
    return report


def _latency_input(session, info: ModelInfo | None) -> np.ndarray:
    shape = []
    for axis, dim in enumerate(session.get_inputs()[0].shape):
        if isinstance(dim, int) and dim > 0:
            shape.append(dim)
        elif axis == 0:
            shape.append(1)
        elif info is not None and axis == 2:
            shape.append(int(info.window_frames))
        else:
            raise QedgeError(f"cannot pick a size for input axis {axis} ({dim!r}) without qedge metadata")
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def ort_latency_ms(
    onnx_path: str | Path,
    repeats: int = 20,
    warmup: int = 3,
    threads: int | None = None,
) -> float:
    """Median batch-1 CPU latency (ms) of one ``session.run`` of ``onnx_path`` at its window."""
    try:
        info: ModelInfo | None = read_info(onnx_path)
    except QedgeError:
        info = None
    session = ort_session(onnx_path, threads)
    feed = {session.get_inputs()[0].name: _latency_input(session, info)}
    names = [session.get_outputs()[0].name]
    for _ in range(max(0, warmup)):
        session.run(names, feed)
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        session.run(names, feed)
        times.append((time.perf_counter() - start) * 1e3)
    return float(statistics.median(times))
