"""What the runtime needs to know about a deployed model, and how it travels with the model.

One definition of the contract between export (which writes it) and the runtime (which reads it):
ONNX ``metadata_props`` keys ``qedge.*`` (design.md §8) and the JSON sidecar beside a TensorRT
engine (``model.engine.json``), which has no metadata of its own. Torch-free.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qedge.errors import QedgeError

#: Name of the model's input: features of shape (batch, 4, frames, mels).
INPUT_NAME = "features"
#: Name of the model's output: class scores (softmax for single-label, sigmoid for multi-label).
OUTPUT_NAME = "scores"

_PREFIX = "qedge."
_REQUIRED = ("labels", "features", "arch", "macs", "params", "window_frames", "task")


@dataclass
class ListenSettings:
    """How ``qedge listen`` runs a model by default: recorded in the model file (``meta["listen"]``)
    and the ONNX metadata (``qedge.listen``); command-line flags override each.

    window_frames / hop_frames: the listen window and hop in feature frames (None: the runtime
    derives them from the model's ``window_frames``). thresholds: per-label score that makes a tag
    (and switches an event on); labels missing use ``default_threshold``. off_ratio: an event
    ends when its score falls below ``off_ratio`` × its threshold (hysteresis). smooth: moving
    average over that many windows. min_duration: shortest event reported (s). background: the
    label of an open-set model's "none of my classes" output, never reported as a tag.
    chosen_on: how the values were chosen (for reports).
    """

    window_frames: int | None = None
    hop_frames: int | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    default_threshold: float = 0.25
    off_ratio: float = 0.5
    smooth: int = 1
    min_duration: float = 0.0
    background: str | None = None
    chosen_on: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "ListenSettings":
        data = dict(data or {})
        try:
            out = cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
            out.thresholds = {str(k): float(v) for k, v in (out.thresholds or {}).items()}
        except (TypeError, ValueError) as exc:
            raise QedgeError(f"malformed listen settings in the model ({exc})") from exc
        return out

    def threshold_vector(self, labels: list[str]) -> "list[float]":
        """Per-output thresholds in label order; the background output never tags (inf)."""
        return [float("inf") if lab == self.background else float(self.thresholds.get(lab, self.default_threshold))
                for lab in labels]


@dataclass
class ModelInfo:
    """Metadata of a deployed model.

    labels: class names in output order.  features: ``FeatureConfig.to_dict()``.
    arch: ``{"name": ..., "kwargs": {...}}``.  macs: MACs of one window (batch 1).
    params: parameter count of the (quaternion) model.  window_frames: frames per window (the
    time axis of the input).  task: ``"single-label"`` or ``"multi-label"``.
    lipschitz: the network's Lipschitz upper bound when known.  listen: how ``qedge listen``
    runs it by default (:class:`ListenSettings`).  extra: anything else (strings).
    """

    labels: list[str]
    features: dict[str, Any]
    arch: dict[str, Any]
    macs: int
    params: int
    window_frames: int
    task: str = "single-label"
    lipschitz: float | None = None
    listen: ListenSettings = field(default_factory=ListenSettings)
    extra: dict[str, str] = field(default_factory=dict)

    # -- ONNX metadata_props -------------------------------------------------------------------
    def to_props(self) -> dict[str, str]:
        """Flatten to string key/value pairs for ONNX ``metadata_props``."""
        props = {
            _PREFIX + "labels": json.dumps(self.labels),
            _PREFIX + "features": json.dumps(self.features, sort_keys=True),
            _PREFIX + "arch": json.dumps(self.arch, sort_keys=True),
            _PREFIX + "macs": str(int(self.macs)),
            _PREFIX + "params": str(int(self.params)),
            _PREFIX + "window_frames": str(int(self.window_frames)),
            _PREFIX + "task": self.task,
        }
        if self.lipschitz is not None:
            props[_PREFIX + "lipschitz"] = repr(float(self.lipschitz))
        props[_PREFIX + "listen"] = json.dumps(self.listen.to_dict(), sort_keys=True)
        for key, value in self.extra.items():
            props[_PREFIX + key] = str(value)
        return props

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "model") -> "ModelInfo":
        """Parse ``metadata_props``; a model without the qedge keys is refused with a clear error."""
        missing = [k for k in _REQUIRED if _PREFIX + k not in props]
        if missing:
            raise QedgeError(
                f"{source} has no qedge metadata ({', '.join(_PREFIX + k for k in missing)} missing): "
                "export it with 'qedge export'"
            )
        try:
            known = {_PREFIX + k for k in (*_REQUIRED, "lipschitz", "listen")}
            return cls(
                labels=list(json.loads(props[_PREFIX + "labels"])),
                features=dict(json.loads(props[_PREFIX + "features"])),
                arch=dict(json.loads(props[_PREFIX + "arch"])),
                macs=int(props[_PREFIX + "macs"]),
                params=int(props[_PREFIX + "params"]),
                window_frames=int(props[_PREFIX + "window_frames"]),
                task=props[_PREFIX + "task"],
                lipschitz=float(props[_PREFIX + "lipschitz"]) if _PREFIX + "lipschitz" in props else None,
                listen=ListenSettings.from_dict(json.loads(props.get(_PREFIX + "listen", "{}"))),
                extra={k[len(_PREFIX):]: v for k, v in props.items() if k.startswith(_PREFIX) and k not in known},
            )
        except (ValueError, TypeError) as exc:
            raise QedgeError(f"{source} has malformed qedge metadata: {exc}") from exc

    # -- TensorRT sidecar ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model") -> "ModelInfo":
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise QedgeError(f"{source} lacks {', '.join(missing)}: rebuild it with 'qedge export --trt'")
        kwargs = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        kwargs["listen"] = ListenSettings.from_dict(data.get("listen"))
        return cls(**kwargs)

    def write_sidecar(self, engine_path: str | Path) -> Path:
        """Write ``<engine>.json`` beside a TensorRT engine."""
        path = sidecar_path(engine_path)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def read_sidecar(cls, engine_path: str | Path) -> "ModelInfo":
        path = sidecar_path(engine_path)
        if not path.exists():
            raise QedgeError(f"{engine_path}: no sidecar {path.name} beside the engine (labels, features)")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise QedgeError(f"{path}: not valid JSON ({exc})") from exc
        return cls.from_dict(data, source=str(path))


def sidecar_path(engine_path: str | Path) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")
