"""Importance scores of output filters, quaternion or real (design.md §6).

A quaternion layer holds its weight component-first, ``(4, F, C, kh, kw)`` for a
:class:`~qedge.nn.QuaternionConv2d` (``(4, F, C)`` for a :class:`~qedge.nn.QuaternionLinear`):
quaternion output filter ``f`` is the slice ``weight[:, f]``, i.e. its four real component kernels
R_f, I_f, J_f, K_f. Removing it removes real output channels {f, F+f, 2F+f, 3F+f}. A real
``nn.Conv2d`` (the CNN / MCCNN baselines, pruned for the paper's pruned-QCNN-vs-pruned-MCCNN
comparison) is read as ONE component, ``(1, F, C, kh, kw)``: filter ``f`` is real output channel
``f``, and every formula below holds with the sum over components reduced to that one term (so
``opnorm`` is then exactly Singh & Plumbley's real criterion). Every criterion returns one score
per output filter; the LOWEST scores are pruned first.

- ``l1``: s_f = Σ_{q∈{r,i,j,k}} Σ_{c,u,v} |W_q[f, c, u, v]|.
- ``opnorm`` (Singh & Plumbley, "passive" operator-norm criterion): per component tensor
  W (F, C, k²) and per input channel c, A_c = W[:, c, :], μ_c = mean_f A_c[f], v_c = the top right
  singular vector of A_c − 1μ_cᵀ; s_f = (Σ_c ⟨W[f, c, :] − μ_c, v_c⟩)², divided by its maximum over
  f; the four components' scores are averaged. A singular vector is defined only up to its sign,
  which changes the sum over c, so the sign is fixed: the entry of v_c of largest magnitude is
  positive (ties: the first one).
- ``gm`` (FPGM, He et al. 2019): s_f = Σ_g ‖w_f − w_g‖₂ with w_f the filter's four components
  (components) flattened; filters closest to the geometric median of the layer (smallest s_f) go first.
- ``spectral``: σ_max of the filter's convolution operator at the layer's input size (design.md §7),
  computed by :func:`qedge.spectral.filter_spectral_norms`.
- ``random``: the floor any criterion is judged against. Scores are uniform draws from a
  :class:`torch.Generator` seeded from :data:`RANDOM_SEED` and the layer's weight shape (never the
  global RNG nor the weights), so the same model prunes the same filters on every run; layers of
  equal shape get equal scores. Other seeds: register ``functools.partial(random_scores, seed=7)``.

Extension point: :data:`IMPORTANCES` maps each criterion's name to an *importance*, a callable
``(layer, input_size) -> (F,) scores`` (``input_size``: the layer's spatial input size (H, W) as
traced by :func:`qedge.compress.prune.prune`, or ``None``) returning float scores, lowest pruned
first. :func:`register_importance` adds one; :func:`filter_scores` and
:func:`qedge.compress.prune.prune` then accept its name, as does ``qedge compress --method`` once
the registering module is imported (:data:`METHODS`: the registered names, in order)::

    from qedge.compress.scores import register_importance

    @register_importance("l2")
    def l2_scores(layer, input_size=None):
        return layer.weight.detach().double().flatten(2).square().sum(dim=(0, 2)).sqrt()
"""

from __future__ import annotations

import hashlib
from typing import Callable, Sequence

import torch
from torch import nn

from qedge.errors import QedgeError
from qedge.nn import QuaternionConv2d, QuaternionLinear

#: Layers whose output filters can be scored: quaternion layers, and real convolutions (groups=1).
SCORED_LAYERS = (QuaternionConv2d, QuaternionLinear, nn.Conv2d)

__all__ = ["Importance", "IMPORTANCES", "METHODS", "RANDOM_SEED", "register_importance", "importance",
           "filter_scores", "output_filters", "SCORED_LAYERS", "l1_scores", "opnorm_scores", "gm_scores", "spectral_scores", "random_scores"]

#: An importance criterion: ``(layer, spatial input size or None) -> (F,) scores``.
Importance = Callable[[nn.Module, "Sequence[int] | None"], torch.Tensor]

#: Registered criteria by name, in registration order (see :func:`register_importance`).
IMPORTANCES: dict[str, Importance] = {}

#: The registered criteria's names (kept equal to ``tuple(IMPORTANCES)`` by :func:`register_importance`).
METHODS: tuple[str, ...] = ()

#: The fixed seed of the ``random`` criterion.
RANDOM_SEED = 0


def register_importance(name: str, *, replace: bool = False) -> Callable[[Importance], Importance]:
    """Decorator: register ``fn(layer, input_size) -> (F,) scores`` as criterion ``name``.

    Returns the function unchanged. Re-registering a taken name is an error unless ``replace``.
    """
    if not name or not isinstance(name, str) or "," in name or name != name.strip():
        raise QedgeError(f"a pruning criterion needs a plain name, got {name!r}")

    def add(fn: Importance) -> Importance:
        global METHODS
        if not callable(fn):
            raise QedgeError(f"pruning criterion '{name}' must be callable")
        if name in IMPORTANCES and not replace and IMPORTANCES[name] is not fn:
            raise QedgeError(f"pruning criterion '{name}' is already registered (pass replace=True)")
        IMPORTANCES[name] = fn
        METHODS = tuple(IMPORTANCES)
        return fn

    return add


def importance(name: str) -> Importance:
    """The registered criterion ``name``; an unknown name is a one-line :class:`QedgeError`."""
    try:
        return IMPORTANCES[name]
    except (KeyError, TypeError):
        raise QedgeError(f"unknown pruning criterion '{name}' (choose from {', '.join(IMPORTANCES)})") from None


def output_filters(layer: nn.Module) -> int:
    """The number of prunable output filters of ``layer``: quaternion filters F of a quaternion
    layer (weight ``(4, F, ...)``), real output channels of a real ``nn.Conv2d``."""
    if isinstance(layer, (QuaternionConv2d, QuaternionLinear)):
        return int(layer.weight.shape[1])
    if isinstance(layer, nn.Conv2d):
        return int(layer.weight.shape[0])
    raise QedgeError(f"filter scores need a quaternion layer or a real Conv2d, got {type(layer).__name__}")


def _filters(layer: nn.Module) -> torch.Tensor:
    """The layer's weight as float64 ``(components, F, C, taps)``: 4 components for a quaternion
    layer, 1 for a real convolution (taps = kh·kw, 1 for a linear layer)."""
    output_filters(layer)  # a scorable layer
    if isinstance(layer, nn.Conv2d) and layer.groups != 1:
        raise QedgeError(f"filter scores need an ungrouped convolution (groups={layer.groups})")
    w = layer.weight.detach().to(device="cpu", dtype=torch.float64)
    if isinstance(layer, nn.Conv2d):
        w = w.unsqueeze(0)
    return w.reshape(w.shape[0], w.shape[1], w.shape[2], -1)


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


@register_importance("opnorm")
def opnorm_scores(layer: nn.Module, input_size: Sequence[int] | None = None) -> torch.Tensor:
    """Operator-norm criterion (Singh & Plumbley; design.md §6), averaged over the components.

    For each component W (F, C, k²): s_f = (Σ_c ⟨W[f,c,:] − μ_c, v_c⟩)² / max_g(...), with μ_c the
    mean of W[:, c, :] over filters and v_c the (sign-fixed) top right-singular vector of the
    centred matrix W[:, c, :] − μ_c. A component whose scores are all zero contributes zeros.
    ``input_size`` is unused.
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


@register_importance("l1")
def l1_scores(layer: nn.Module, input_size: Sequence[int] | None = None) -> torch.Tensor:
    """ℓ1 norm of each filter: Σ |w| over its components (4, or 1 for a real conv) and all (c, kh, kw)."""
    return _filters(layer).abs().sum(dim=(0, 2, 3))


@register_importance("gm")
def gm_scores(layer: nn.Module, input_size: Sequence[int] | None = None) -> torch.Tensor:
    """FPGM: s_f = Σ_g ‖w_f − w_g‖₂ over the layer's filters (components flattened)."""
    w = _filters(layer)
    flat = w.permute(1, 0, 2, 3).reshape(w.shape[1], -1)
    return torch.cdist(flat, flat, p=2).sum(dim=1)


@register_importance("spectral")
def spectral_scores(layer: nn.Module, input_size: int | Sequence[int] | None) -> torch.Tensor:
    """σ_max of each filter's operator at ``input_size`` via :func:`qedge.spectral.filter_spectral_norms`."""
    from qedge.spectral import filter_spectral_norms

    if not isinstance(layer, (QuaternionConv2d, nn.Conv2d)):
        raise QedgeError("the spectral criterion scores convolutions only")
    if input_size is None:
        raise QedgeError("the spectral criterion needs the layer's input size (H, W)")
    scores = torch.as_tensor(filter_spectral_norms(layer, input_size), dtype=torch.float64).reshape(-1)
    if scores.numel() != output_filters(layer):
        raise QedgeError(f"spectral scores: expected {output_filters(layer)} values, got {scores.numel()}")
    return scores


@register_importance("random")
def random_scores(layer: nn.Module, input_size: Sequence[int] | None = None, *,
                  seed: int = RANDOM_SEED) -> torch.Tensor:
    """Uniform [0, 1) scores from a :class:`torch.Generator` seeded by ``seed`` and the layer's
    weight shape: reproducible, independent of the weights and of the global RNG."""
    filters = output_filters(layer)
    shape = tuple(layer.weight.shape)
    digest = hashlib.sha256(f"qedge-random:{int(seed)}:{shape}".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    return torch.rand(filters, generator=gen, dtype=torch.float64)


def filter_scores(layer: nn.Module, method: str, input_size: int | Sequence[int] | None = None) -> torch.Tensor:
    """Importance of each output filter of ``layer`` (float64 ``(F,)``; lowest pruned first): its
    quaternion filters, or the real output channels of a real ``nn.Conv2d``.

    ``method`` names a registered criterion (:data:`METHODS`: ``opnorm``, ``l1``, ``gm``,
    ``spectral``, ``random`` and any added by :func:`register_importance`); ``input_size`` is the
    layer's spatial input size, needed by ``spectral`` only. A criterion's result is checked to
    hold one finite score per quaternion filter.
    """
    fn = importance(method)
    filters = output_filters(layer)
    scores = torch.as_tensor(fn(layer, input_size)).detach().to(device="cpu", dtype=torch.float64).reshape(-1)
    if scores.numel() != filters:
        raise QedgeError(f"pruning criterion '{method}' returned {scores.numel()} scores for {filters} "
                         "output filters")
    if not bool(torch.isfinite(scores).all()):
        raise QedgeError(f"pruning criterion '{method}' returned non-finite scores")
    return scores
