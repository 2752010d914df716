"""qedge.runtime: the torch-free streaming runtime (features, audio sources, backends, listen loop).

Never import torch here or in any module below: a Jetson or a laptop runs this with numpy,
scipy, onnxruntime (or TensorRT), soundfile and sounddevice only. A test enforces it.
"""
