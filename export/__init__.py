"""qedge.export: fold quaternion layers into real ones, fuse BatchNorm, export ONNX / INT8 / TensorRT.

The library API: ``fold(model)`` (every Hamilton-product layer → a plain ``Conv2d`` / ``Linear``,
BatchNorm fused), ``export_onnx(model, info, path)`` with ``model_info(model, meta)``, ``verify_onnx``,
``compact_onnx`` and ``build_engine``. Importing this package imports torch (the runtime does not).
"""

from qedge.export.fold import assert_hamilton, fold, fuse_conv_bn, to_real
from qedge.export.onnx import export_onnx, model_info, read_info, verify_onnx
from qedge.export.compact import compact_onnx
from qedge.export.tensorrt import build_engine

__all__ = ["fold", "fuse_conv_bn", "to_real", "assert_hamilton", "export_onnx", "model_info", "read_info",
           "verify_onnx", "compact_onnx", "build_engine"]
