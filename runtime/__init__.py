"""qedge.runtime: the torch-free streaming runtime (features, audio sources, backends, listen loop).

Never import torch here or in any module below: a Jetson or a laptop runs this with numpy,
scipy, onnxruntime (or TensorRT), soundfile and sounddevice only. A test enforces it.
"""

from qedge.runtime.audio import load_audio, read_audio
from qedge.runtime.backends import Backend, OrtBackend, TensorRTBackend, load_backend
from qedge.runtime.features import FeatureConfig, LogMelDeltas, StreamingLogMelDeltas
from qedge.runtime.listen import Listener, ListenStats
from qedge.runtime.model_info import ListenSettings, ModelInfo
from qedge.runtime.ring import RingBuffer
from qedge.runtime.sources import FileSource, MicrophoneSource, Source, StdinSource

__all__ = ["load_audio", "read_audio", "Backend", "OrtBackend", "TensorRTBackend", "load_backend",
           "FeatureConfig", "LogMelDeltas", "StreamingLogMelDeltas", "Listener", "ListenStats", "ModelInfo",
           "ListenSettings",
           "RingBuffer", "FileSource", "MicrophoneSource", "Source", "StdinSource"]
