"""qedge.export: fold quaternion layers into real ones, fuse BatchNorm, export ONNX / INT8 / TensorRT."""
