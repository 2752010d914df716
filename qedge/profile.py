"""THE parameter and MAC counter of qedge (design.md §3, §5).

``profile(model, input_shape)`` runs one forward pass with hooks and counts multiply–accumulates
(MACs) of the weight layers:

- convolution (real ``nn.Conv2d`` or :class:`~qedge.nn.QuaternionConv2d`):
  MACs = N_out · (C_in / groups) · k_h · k_w, with N_out the number of output elements
  (batch × C_out × H_out × W_out). A quaternion convolution is one real convolution with the
  assembled Hamilton kernel (design.md §3), so it costs exactly the real convolution of the same
  real width — and a model and its fold (:func:`qedge.export.fold.fold`) have the same MACs;
- fully connected (``nn.Linear`` / :class:`~qedge.nn.QuaternionLinear`):
  MACs = (output elements) · in_features.

Batch norm, activations, pooling and bias additions are not counted (BN folds into the preceding
convolution at export; the others are O(activations), negligible against the convolutions).
``Profile.backbone_macs`` counts the convolutions only: PANNs' figure for CNN14 at a 10 s clip
(1001 frames × 64 mels) is ≈ 20.04 G; QCNN14's ≈ 20.15 G differs only by the first convolution
reading 4 input channels instead of 1.

``params`` is the number of trainable parameters of ``model`` as it stands (a quaternion layer
counts its four component kernels: 1/4 of its fold). The forward pass runs on the ``meta`` device
(shapes only, no arithmetic, no copy of the weights), so profiling full-size models is instant;
models that cannot run on ``meta`` fall back to a CPU pass on zeros.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from qedge.nn import QuaternionConv2d, QuaternionLinear

__all__ = ["LayerProfile", "Profile", "profile", "layer_macs", "count_params", "width_for_budget"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, QuaternionConv2d)
_LINEAR = (nn.Linear, QuaternionLinear)


@dataclass
class LayerProfile:
    """One weight layer: its module name, type, MACs, own parameters and output shape."""

    name: str
    type: str
    macs: int
    params: int
    out_shape: tuple[int, ...]


@dataclass
class Profile:
    """Totals for one forward pass at ``input_shape`` (MACs for the whole batch given)."""

    params: int
    macs: int
    layers: list[LayerProfile] = field(default_factory=list)
    input_shape: tuple[int, ...] = ()

    @property
    def backbone_macs(self) -> int:
        """MACs of the convolutions only (the PANNs "backbone" figure)."""
        return sum(row.macs for row in self.layers if row.type.endswith(("Conv1d", "Conv2d", "Conv3d")))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["backbone_macs"] = self.backbone_macs
        return data


def count_params(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters; shared tensors are counted once."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """MACs of one call of a conv / linear ``module`` that produced ``output`` (0 for other modules)."""
    if isinstance(module, _CONV):
        groups = getattr(module, "groups", 1)
        kernel = 1
        for k in module.kernel_size:
            kernel *= int(k)
        return int(output.numel()) * (int(module.in_channels) // int(groups)) * kernel
    if isinstance(module, _LINEAR):
        return int(output.numel()) * int(module.in_features)
    return 0


def _own_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters(recurse=False))


def profile(model: nn.Module, input_shape: tuple[int, ...] = (1, 4, 1001, 64)) -> Profile:
    """Count parameters and MACs of ``model`` for one forward pass on an input of ``input_shape``.

    Rows (``Profile.layers``) list every conv / linear call in execution order. The model's
    training flag is restored afterwards; its weights are neither read nor changed.
    """
    input_shape = tuple(int(s) for s in input_shape)
    rows: list[LayerProfile] = []
    names = {module: name for name, module in model.named_modules()}

    def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            rows.append(LayerProfile(
                name=names.get(module, type(module).__name__),
                type=type(module).__name__,
                macs=layer_macs(module, output),
                params=_own_params(module),
                out_shape=tuple(int(s) for s in output.shape),
            ))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _CONV + _LINEAR)]
    was_training = {m: m.training for m in model.modules()}
    model.eval()
    try:
        try:
            _forward_meta(model, input_shape)
        except NotImplementedError:  # an op without a meta kernel: count on a real pass instead
            rows.clear()
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
            dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
            with torch.no_grad():
                model(torch.zeros(input_shape, device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        for m, flag in was_training.items():
            m.training = flag
    return Profile(
        params=count_params(model),
        macs=sum(row.macs for row in rows),
        layers=rows,
        input_shape=input_shape,
    )


def _forward_meta(model: nn.Module, input_shape: tuple[int, ...]) -> None:
    """Forward on the meta device through ``functional_call`` with meta stand-ins for every tensor."""
    from torch.func import functional_call

    tensors: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        tensors[name] = torch.empty_like(p, device="meta")
    for name, b in model.named_buffers(remove_duplicate=False):
        tensors[name] = torch.empty_like(b, device="meta")
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    x = torch.zeros(input_shape, device="meta", dtype=dtype)
    with torch.no_grad():
        functional_call(model, tensors, (x,), strict=False, tie_weights=False)


def width_for_budget(arch: str, budget: int, input_shape: tuple[int, ...], num_classes: int, *,
                     measure: str = "macs", n_mels: int | None = None, tolerance: float = 0.02) -> float:
    """Width multiplier of ``arch`` whose ``measure`` (``"macs"`` at ``input_shape``, or
    ``"params"``) is the largest not above ``budget`` · (1 + ``tolerance``), by bisection (both
    grow monotonically, ~quadratically, with width; models are built on the ``meta`` device).
    Sizes a KD student to a pruned model's MACs, or a real CNN to a quaternion one's MACs or
    parameters. Rounded down to 4 decimals."""
    import math

    from qedge.models import build

    if measure not in ("macs", "params"):
        raise ValueError(f"measure must be 'macs' or 'params', got {measure!r}")
    kwargs: dict[str, Any] = {} if n_mels is None else {"n_mels": int(n_mels)}

    def size(width: float) -> int:
        with torch.device("meta"):
            model = build(arch, num_classes, width=width, **kwargs)
        return profile(model, input_shape).macs if measure == "macs" else count_params(model)

    lo, hi = 1e-3, 1.0
    while size(hi) < budget and hi < 64:
        hi *= 2
    for _ in range(10):
        mid = 0.5 * (lo + hi)
        if size(mid) <= budget * (1 + tolerance):
            lo = mid
        else:
            hi = mid
    return math.floor(lo * 1e4) / 1e4
