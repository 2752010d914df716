"""Importance scores of quaternion output filters (design.md §6).

A quaternion layer holds its weight component-first, ``(4, F, C, kh, kw)`` for a
:class:`~qedge.nn.QuaternionConv2d` (``(4, F, C)`` for a :class:`~qedge.nn.QuaternionLinear`):
quaternion output filter ``f`` is the slice ``weight[:, f]``, i.e. its four real component kernels
R_f, I_f, J_f, K_f. Removing it removes real output channels {f, F+f, 2F+f, 3F+f}. Every criterion
here returns one score per quaternion filter; the LOWEST scores are pruned first.

- ``l1``: s_f = Σ_{q∈{r,i,j,k}} Σ_{c,u,v} |W_q[f, c, u, v]|.
- ``opnorm`` (Singh & Plumbley, "passive" operator-norm criterion): per component tensor
  W (F, C, k²) and per input channel c, A_c = W[:, c, :], μ_c = mean_f A_c[f], v_c = the top right
  singular vector of A_c − 1μ_cᵀ; s_f = (Σ_c ⟨W[f, c, :] − μ_c, v_c⟩)², divided by its maximum over
  f; the four components' scores are averaged. A singular vector is defined only up to its sign,
  which changes the sum over c, so the sign is fixed: the entry of v_c of largest magnitude is
  positive (ties: the first one).
- ``gm`` (FPGM, He et al. 2019): s_f = Σ_g ‖w_f − w_g‖₂ with w_f the filter's four components
  flattened; filters closest to the geometric median of the layer (smallest s_f) go first.
- ``spectral``: σ_max of the filter's convolution operator at the layer's input size (design.md §7),
  computed by :func:`qedge.spectral.filter_spectral_norms`.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from qedge.errors import QedgeError
from qedge.nn import QuaternionConv2d, QuaternionLinear

__all__ = ["METHODS", "filter_scores", "l1_scores", "opnorm_scores", "gm_scores", "spectral_scores"]

METHODS: tuple[str, ...] = ("opnorm", "l1", "gm", "spectral")


def _filters(layer: nn.Module) -> torch.Tensor:
    """The layer's weight as float64 ``(4, F, C, taps)`` (taps = kh·kw, 1 for a linear layer)."""
    if not isinstance(layer, (QuaternionConv2d, QuaternionLinear)):
        raise QedgeError(f"filter scores need a quaternion layer, got {type(layer).__name__}")
    w = layer.weight.detach().to(device="cpu", dtype=torch.float64)
    return w.reshape(w.shape[0], w.shape[1], w.shape[2], -1)


def l1_scores(layer: nn.Module) -> torch.Tensor:
    """ℓ1 norm of each quaternion filter: Σ |w| over its 4 components and all (c, kh, kw)."""
    return _filters(layer).abs().sum(dim=(0, 2, 3))


def _top_right_singular(a: torch.Tensor) -> torch.Tensor:
    """Top right-singular vectors of a batch of matrices ``(B, F, K)`` -> ``(B, K)``, sign-fixed
    so that each vector's largest-magnitude entry is positive.

    Computed as the top eigenvector of the K×K Gram matrix AᵀA (K = kh·kw is small), which is the
    top right-singular vector of A; far cheaper than a batched SVD of the tall F×K matrices.
    """
    gram = a.transpose(1, 2) @ a
    _, vecs = torch.linalg.eigh(gram)
    v = vecs[:, :, -1]
    pivot = v.abs().argmax(dim=1, keepdim=True)
    sign = torch.sign(torch.gather(v, 1, pivot))
    sign[sign == 0] = 1.0
    return v * sign


def opnorm_scores(layer: nn.Module) -> torch.Tensor:
    """Operator-norm criterion (Singh & Plumbley; design.md §6), averaged over the 4 components.

    For each component W (F, C, k²): s_f = (Σ_c ⟨W[f,c,:] − μ_c, v_c⟩)² / max_g(...), with μ_c the
    mean of W[:, c, :] over filters and v_c the (sign-fixed) top right-singular vector of the
    centred matrix W[:, c, :] − μ_c. A component whose scores are all zero contributes zeros.
    """
    w = _filters(layer)
    total = torch.zeros(w.shape[1], dtype=torch.float64)
    for comp in w:  # (F, C, K)
        a = comp.permute(1, 0, 2)  # (C, F, K)
        centred = a - a.mean(dim=1, keepdim=True)
        v = _top_right_singular(centred)  # (C, K)
        proj = torch.einsum("cfk,ck->f", centred, v)
        s = proj.square()
        peak = s.max()
        total += s / peak if peak > 0 else s
    return total / w.shape[0]


def gm_scores(layer: nn.Module) -> torch.Tensor:
    """FPGM: s_f = Σ_g ‖w_f − w_g‖₂ over the layer's filters (4 components flattened)."""
    w = _filters(layer)
    flat = w.permute(1, 0, 2, 3).reshape(w.shape[1], -1)
    return torch.cdist(flat, flat, p=2).sum(dim=1)


def spectral_scores(layer: nn.Module, input_size: int | Sequence[int] | None) -> torch.Tensor:
    """σ_max of each filter's operator at ``input_size`` via :func:`qedge.spectral.filter_spectral_norms`."""
    from qedge.spectral import filter_spectral_norms

    if not isinstance(layer, QuaternionConv2d):
        raise QedgeError("the spectral criterion scores quaternion convolutions only")
    if input_size is None:
        raise QedgeError("the spectral criterion needs the layer's input size (H, W)")
    scores = torch.as_tensor(filter_spectral_norms(layer, input_size), dtype=torch.float64).reshape(-1)
    if scores.numel() != layer.weight.shape[1]:
        raise QedgeError(f"spectral scores: expected {layer.weight.shape[1]} values, got {scores.numel()}")
    return scores


def filter_scores(layer: nn.Module, method: str, input_size: int | Sequence[int] | None = None) -> torch.Tensor:
    """Importance of each quaternion output filter of ``layer`` (float64 ``(F,)``; lowest pruned first).

    ``method`` is one of ``opnorm``, ``l1``, ``gm``, ``spectral`` (design.md §6); ``input_size`` is the
    layer's spatial input size, needed by ``spectral`` only.
    """
    if method == "l1":
        return l1_scores(layer)
    if method == "opnorm":
        return opnorm_scores(layer)
    if method == "gm":
        return gm_scores(layer)
    if method == "spectral":
        return spectral_scores(layer, input_size)
    raise QedgeError(f"unknown pruning criterion '{method}' (choose from {', '.join(METHODS)})")
