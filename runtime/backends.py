"""Inference backends for the runtime: ONNX Runtime and TensorRT engines (design.md §8, §9).

Both expose ``.info`` (:class:`~qedge.runtime.model_info.ModelInfo`, read from the model's
``qedge.*`` metadata or the engine's JSON sidecar), ``.name`` and ``.run(features) -> scores``
with features ``(B, 4, T, M)`` float32 and scores ``(B, C)`` float32 probabilities. A model
without qedge metadata is refused with a clear error. Torch-free; TensorRT is imported lazily.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from qedge.errors import QedgeError
from qedge.runtime.model_info import INPUT_NAME, OUTPUT_NAME, ModelInfo

__all__ = ["Backend", "OrtBackend", "TensorRTBackend", "load_backend", "ort_providers"]


class Backend:
    """What the listener needs: metadata, a name for reports and a forward pass."""

    info: ModelInfo
    name: str = "backend"
    #: Fixed number of frames the model accepts (None: any).
    fixed_frames: int | None = None

    def run(self, features: np.ndarray) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError


def ort_providers(providers: str | Sequence[str] = "auto") -> list[str]:
    """Execution providers for a session.

    ``'auto'``: CUDA when installed, then CPU. ``'trt'``: TensorRT, CUDA, CPU (TensorRT must be
    installed). A list (or comma-separated string) is checked against what is installed.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    if providers == "auto":
        preferred = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return [p for p in preferred if p in available] or ["CPUExecutionProvider"]
    if providers == "trt":
        providers = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
        if "TensorrtExecutionProvider" not in available:
            raise QedgeError("ONNX Runtime here has no TensorRT execution provider "
                             f"(installed: {', '.join(available)}); use --backend ort or a .engine file")
        return [p for p in providers if p in available]
    if isinstance(providers, str):
        providers = [p.strip() for p in providers.split(",") if p.strip()]
    missing = [p for p in providers if p not in available]
    if missing:
        raise QedgeError(f"execution provider(s) {', '.join(missing)} not installed "
                         f"(available: {', '.join(available)})")
    return list(providers)


class OrtBackend(Backend):
    """ONNX Runtime session on an exported qedge model (CPU, CUDA or TensorRT EP)."""

    def __init__(self, onnx_path: str | Path, providers: str | Sequence[str] = "auto",
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        path = Path(onnx_path)
        if not path.is_file():
            raise QedgeError(f"{path}: no such model file")
        options = ort.SessionOptions()
        if threads:
            if threads < 1:
                raise QedgeError(f"--threads must be ≥ 1, got {threads}")
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        resolved = ort_providers(providers)
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=resolved)
        except Exception as exc:  # onnxruntime raises its own (Fail, InvalidGraph, ...) types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise QedgeError(f"{path}: not a loadable ONNX model ({first})") from exc
        props = dict(self.session.get_modelmeta().custom_metadata_map)
        self.info = ModelInfo.from_props(props, source=str(path))
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
            raise QedgeError(f"{path}: expected input '{INPUT_NAME}' and output '{OUTPUT_NAME}', found "
                             f"inputs {sorted(inputs)} and outputs {sorted(outputs)}")
        shape = inputs[INPUT_NAME].shape
        if len(shape) != 4:
            raise QedgeError(f"{path}: input '{INPUT_NAME}' has shape {shape}, expected (batch, 4, frames, mels)")
        self.fixed_frames = shape[2] if isinstance(shape[2], int) else None
        self.providers = self.session.get_providers()
        self.path = path
        self.name = f"onnxruntime {ort.__version__} ({self.providers[0].replace('ExecutionProvider', '')})"

    def run(self, features: np.ndarray) -> np.ndarray:
        feats = np.ascontiguousarray(features, dtype=np.float32)
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: feats})[0]


class TensorRTBackend(Backend):
    """A serialized TensorRT engine (``qedge export --trt``) with its JSON sidecar.

    Uses the TensorRT Python API (named I/O tensors, ``execute_async_v3``) and cuda-python for
    device memory; both imported lazily, with a clear error where absent.
    """

    def __init__(self, engine_path: str | Path) -> None:
        path = Path(engine_path)
        if not path.is_file():
            raise QedgeError(f"{path}: no such engine file")
        self.info = ModelInfo.read_sidecar(path)
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise QedgeError(f"{path}: running a TensorRT engine needs TensorRT (pip install "
                             "\"qedge[trt]\" or JetPack's python3-libnvinfer); or run the .onnx with "
                             "--backend ort") from exc
        self._cudart = _cudart()
        self._trt = trt
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise QedgeError(f"{path}: TensorRT {trt.__version__} cannot deserialize this engine "
                             "(built for another TensorRT version or GPU?): rebuild it with 'qedge export --trt'")
        self.engine = engine
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        if INPUT_NAME not in names or OUTPUT_NAME not in names:
            raise QedgeError(f"{path}: engine tensors {names} lack '{INPUT_NAME}'/'{OUTPUT_NAME}'")
        shape = tuple(engine.get_tensor_shape(INPUT_NAME))
        self.fixed_frames = shape[2] if shape[2] > 0 else None
        self._stream = self._check(self._cudart.cudaStreamCreate())[0]
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self.path = path
        self.name = f"TensorRT {trt.__version__}"

    def _check(self, result: Any) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise QedgeError(f"CUDA error {err} while running {self.path.name}")
        return rest

    def _device(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                self._check(self._cudart.cudaFree(ptr))
            ptr = self._check(self._cudart.cudaMalloc(nbytes))[0]
            self._buffers[name] = (ptr, nbytes)
            self.context.set_tensor_address(name, int(ptr))
        return int(ptr)

    def run(self, features: np.ndarray) -> np.ndarray:
        cudart = self._cudart
        feats = np.ascontiguousarray(features, dtype=np.float32)
        self.context.set_input_shape(INPUT_NAME, feats.shape)
        out_shape = tuple(self.context.get_tensor_shape(OUTPUT_NAME))
        out = np.empty(out_shape, dtype=np.float32)
        d_in = self._device(INPUT_NAME, feats.nbytes)
        d_out = self._device(OUTPUT_NAME, out.nbytes)
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(cudart.cudaMemcpyAsync(d_in, feats.ctypes.data, feats.nbytes, h2d, self._stream))
        if not self.context.execute_async_v3(int(self._stream)):
            raise QedgeError(f"TensorRT execution failed for {self.path.name}")
        self._check(cudart.cudaMemcpyAsync(out.ctypes.data, d_out, out.nbytes, d2h, self._stream))
        self._check(cudart.cudaStreamSynchronize(self._stream))
        return out

    def __del__(self) -> None:  # pragma: no cover - needs a GPU
        for ptr, _ in getattr(self, "_buffers", {}).values():
            try:
                self._cudart.cudaFree(ptr)
            except Exception:
                pass


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python ≥ 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as exc:
            raise QedgeError("running a TensorRT engine needs cuda-python (pip install cuda-python)") from exc
    return cudart


def load_backend(model: str | Path, backend: str = "auto", providers: str | Sequence[str] = "auto",
                 threads: int | None = None) -> Backend:
    """Open ``model`` with the right backend.

    ``.engine`` / ``.plan`` → :class:`TensorRTBackend`; ``.onnx`` → :class:`OrtBackend` (with
    ``backend='trt'``: through ONNX Runtime's TensorRT execution provider).
    """
    path = Path(model)
    if backend not in ("auto", "ort", "trt"):
        raise QedgeError(f"--backend {backend!r}: use 'ort' or 'trt'")
    if not path.exists():
        raise QedgeError(f"{path}: no such model file")
    suffix = path.suffix.lower()
    if suffix in (".engine", ".plan", ".trt"):
        if backend == "ort":
            raise QedgeError(f"{path}: a TensorRT engine cannot run on ONNX Runtime; pass the .onnx file")
        return TensorRTBackend(path)
    if suffix == ".onnx":
        return OrtBackend(path, providers="trt" if backend == "trt" else providers, threads=threads)
    raise QedgeError(f"{path}: expected an .onnx model or a TensorRT .engine")
