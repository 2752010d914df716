"""qedge.models: the model registry (design.md §5).

``build(name, num_classes, width=1.0, **kwargs)`` returns a freshly initialised model whose
``forward`` maps features ``(B, 4, T, M)`` to logits ``(B, classes)``. Every model carries

- ``.arch`` — its registry name, and ``.arch_kwargs`` — ``num_classes``, ``width`` and any extra
  keyword (``n_mels``, ``mean_norm``), so ``build(model.arch, **model.arch_kwargs)`` rebuilds it;
- ``.later_layers`` — module names of the convolutions of the later blocks (default pruning scope).

Names: ``cnn6 cnn10 cnn14 resnet38`` (real, read the log-mel component), their quaternion twins
``qcnn6 qcnn10 qcnn14 qresnet38`` (read the whole quaternion), and ``mccnn14`` (real CNN14 fed all
four components as channels: the paper's ablation).
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from qedge.errors import QedgeError
from qedge.models.panns import Cnn6, Cnn10, Cnn14, ResNet38

__all__ = ["build", "NAMES", "is_quaternion", "check_arch"]

_REGISTRY: dict[str, tuple[Callable[..., nn.Module], dict[str, Any]]] = {
    "cnn6": (Cnn6, {"quaternion": False}),
    "cnn10": (Cnn10, {"quaternion": False}),
    "cnn14": (Cnn14, {"quaternion": False}),
    "resnet38": (ResNet38, {"quaternion": False}),
    "qcnn6": (Cnn6, {"quaternion": True}),
    "qcnn10": (Cnn10, {"quaternion": True}),
    "qcnn14": (Cnn14, {"quaternion": True}),
    "qresnet38": (ResNet38, {"quaternion": True}),
    "mccnn6": (Cnn6, {"quaternion": False, "in_components": 4}),
    "mccnn10": (Cnn10, {"quaternion": False, "in_components": 4}),
    "mccnn14": (Cnn14, {"quaternion": False, "in_components": 4}),
}

#: Registered model names.
NAMES: tuple[str, ...] = tuple(_REGISTRY)

_EXTRA_KWARGS = {"n_mels", "mean_norm"}


def is_quaternion(name: str) -> bool:
    """True for the quaternion families (``q*``)."""
    return bool(_REGISTRY.get(name.lower(), (None, {}))[1].get("quaternion"))


def check_arch(name: str) -> str:
    """The registry key of architecture ``name``; an unknown name raises a one-line
    :class:`~qedge.errors.QedgeError` (commands call it before any slow work)."""
    key = str(name).lower()
    if key not in _REGISTRY:
        raise QedgeError(f"unknown model architecture '{name}' (choose from: {', '.join(NAMES)})")
    return key


def build(name: str, num_classes: int = 527, width: float = 1.0, **kwargs: Any) -> nn.Module:
    """Build model ``name`` with ``num_classes`` outputs, channel widths scaled by ``width``.

    Extra keywords: ``n_mels`` (mel bins of the input, default 64; sets ``bn0``) and ``mean_norm``
    (remove each window's mean log-mel per bin before ``bn0``, default False; see
    :func:`~qedge.models.blocks.subtract_log_mel_mean`). Unknown names or bad values raise
    :class:`~qedge.errors.QedgeError` with one clear line.
    """
    key = check_arch(name)
    unknown = set(kwargs) - _EXTRA_KWARGS
    if unknown:
        raise QedgeError(f"unknown option(s) for model '{key}': {', '.join(sorted(unknown))}")
    try:
        num_classes = int(num_classes)
        width = float(width)
    except (TypeError, ValueError) as exc:
        raise QedgeError(f"model '{key}': num_classes and width must be numbers ({exc})") from exc
    if num_classes < 1:
        raise QedgeError(f"model '{key}': num_classes must be at least 1, got {num_classes}")
    if not width > 0:
        raise QedgeError(f"model '{key}': width must be positive, got {width}")
    try:
        kwargs["n_mels"] = int(kwargs.get("n_mels", 64))
    except (TypeError, ValueError) as exc:
        raise QedgeError(f"model '{key}': n_mels must be an integer ({exc})") from exc
    if kwargs["n_mels"] < 1:
        raise QedgeError(f"model '{key}': n_mels must be positive, got {kwargs['n_mels']}")
    if "mean_norm" in kwargs:
        if not isinstance(kwargs["mean_norm"], bool):
            raise QedgeError(f"model '{key}': mean_norm must be true or false, got {kwargs['mean_norm']!r}")
        if not kwargs["mean_norm"]:
            del kwargs["mean_norm"]  # the default: keep arch_kwargs as older files have them
    cls, fixed = _REGISTRY[key]
    model = cls(num_classes=num_classes, width=width, **fixed, **kwargs)
    model.arch = key
    model.arch_kwargs = {"num_classes": num_classes, "width": width, **kwargs}
    return model
