"""Structured filter pruning at quaternion granularity (design.md §6).

Removing quaternion output filter ``f`` of a layer with F quaternion filters removes its four real
channels {f, F+f, 2F+f, 3F+f} (component-major layout, design.md §3) and, in every consumer, the
matching input slices: the next :class:`~qedge.nn.QuaternionConv2d` loses ``weight[:, :, f]``, a
BatchNorm loses the same four real channels, a :class:`~qedge.nn.QuaternionLinear` or real
``nn.Linear`` after pooling loses the matching inputs, and residual partners (layers whose outputs
are added) are pruned together with the same indices. Every remaining kernel is still a left
Hamilton product because whole quaternions are cut from the component tensors.

Real convolutions (``nn.Conv2d`` of the CNN / MCCNN baselines) are pruned by the same rules at
real-channel granularity: a filter is one output channel, scored as a one-component layer
(:mod:`qedge.compress.scores`), and Torch-Pruning's own Conv2d pruner cuts it. That is what makes
"pruned QCNN vs pruned MCCNN" a like-for-like comparison: same criterion, same ratio, same layers.

The surgery uses Torch-Pruning's :class:`DependencyGraph` with a custom pruner for the quaternion
layers (:class:`QuaternionPruner`: channel counts in REAL channels, indices mapped to quaternion
indices). The graph is traced on a weight-free twin of the model on the ``meta`` device (no
arithmetic, so a full-size QCNN14 traces in well under a second) with the quaternion weights
detached, so it sees each quaternion layer as one operator (the Hamilton kernel assembly is not
traced); every pruning operation of a group is then applied to the twin and to the real copy.

Per layer (or per coupled group of layers), the lowest ``floor(p·F)`` quaternion filters by the
chosen criterion (any registered in :data:`qedge.compress.scores.IMPORTANCES`; each is handed the
layer's traced spatial input size) are removed, at least one filter is kept. Layers are
processed in network order and scored on the current (already input-pruned) weights. With
``round_to = N`` (a multiple of 4) the kept count is rounded UP to a multiple of N/4 quaternions so
that the real width is a multiple of N (Torch-Pruning's own ``round_to`` works on real channels and
would over-prune quaternion groups).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import torch
from torch import nn

from qedge.compress.scores import filter_scores, importance, output_filters
from qedge.errors import QedgeError, require
from qedge.nn import QuaternionConv2d, QuaternionLinear

tp = require("torch_pruning", "train", "Pruning")

__all__ = ["QuaternionPruner", "prune", "resolve_layers", "kept_filters", "quaternion_layers", "prunable_layers"]

_QLAYERS = (QuaternionConv2d, QuaternionLinear)


def quaternion_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Name -> module of every quaternion layer of ``model`` (network definition order)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, _QLAYERS)}


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Name -> module of every layer whose output filters :func:`prune` can remove: the quaternion
    layers and the real ungrouped ``nn.Conv2d`` (network definition order)."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, _QLAYERS) or (isinstance(m, nn.Conv2d) and m.groups == 1)}


def _channels_per_filter(layer: nn.Module) -> int:
    """Real channels one prunable filter spans: 4 for a quaternion layer, 1 for a real conv."""
    return 4 if isinstance(layer, _QLAYERS) else 1


def _real_channels(layer: nn.Module, filters: Sequence[int]) -> list[int]:
    """Real output channel indices of ``layer``'s filters ``filters``."""
    return _real_of(filters, output_filters(layer)) if isinstance(layer, _QLAYERS) else sorted(int(f) for f in filters)


def _to_quaternion(idxs: Sequence[int], filters: int, what: str) -> list[int]:
    """Map real channel indices to quaternion indices; they must cover whole quaternions."""
    real = sorted({int(i) for i in idxs})
    quats = sorted({i % filters for i in real})
    whole = sorted(c * filters + q for q in quats for c in range(4))
    if real != whole:
        raise RuntimeError(f"{what}: real channel indices {real[:8]}... do not cover whole quaternions "
                           f"(component-major layout of {filters} quaternions); refusing to break the "
                           "Hamilton structure")
    return quats


def _real_of(quats: Sequence[int], filters: int) -> list[int]:
    """Real channel indices {c·F + q} of quaternion indices ``quats`` (component-major)."""
    return sorted(c * filters + q for q in quats for c in range(4))


class QuaternionPruner(tp.pruner.function.BasePruningFunc):
    """Torch-Pruning handler for :class:`QuaternionConv2d` / :class:`QuaternionLinear`.

    Channel counts are REAL channels (4 per quaternion); the indices Torch-Pruning hands over are
    real indices, mapped to quaternion indices f = idx mod F and checked to cover whole quaternions.
    The weight ``(4, F_out, F_in, ...)`` is cut along dim 1 (outputs) or dim 2 (inputs); the real
    bias keeps the real channels of the kept quaternions.
    """

    TARGET_MODULES = _QLAYERS

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        filters = layer.weight.shape[1]
        drop = set(_to_quaternion(idxs, filters, f"{type(layer).__name__} outputs"))
        keep = [q for q in range(filters) if q not in drop]
        layer.weight = nn.Parameter(layer.weight.data[:, keep].clone(),
                                    requires_grad=layer.weight.requires_grad)
        if layer.bias is not None:
            layer.bias = nn.Parameter(layer.bias.data[_real_of(keep, filters)].clone(),
                                      requires_grad=layer.bias.requires_grad)
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        filters = layer.weight.shape[2]
        drop = set(_to_quaternion(idxs, filters, f"{type(layer).__name__} inputs"))
        keep = [q for q in range(filters) if q not in drop]
        layer.weight = nn.Parameter(layer.weight.data[:, :, keep].clone(),
                                    requires_grad=layer.weight.requires_grad)
        return layer

    def get_out_channels(self, layer: nn.Module) -> int:
        return 4 * layer.weight.shape[1]

    def get_in_channels(self, layer: nn.Module) -> int:
        return 4 * layer.weight.shape[2]


def resolve_layers(model: nn.Module, layers: str | Sequence[str]) -> list[str]:
    """Names of the layers to prune: ``'later'`` (``model.later_layers``), ``'all'`` (every
    quaternion convolution, or every real convolution of a real model), or explicit names (a
    list, or one comma-separated string) of :func:`prunable_layers`."""
    qlayers = prunable_layers(model)
    if isinstance(layers, str) and layers == "later":
        names = list(getattr(model, "later_layers", None) or [])
        if not names:
            raise QedgeError(f"model {getattr(model, 'arch', type(model).__name__)} defines no later "
                             "layers; pass --layers all or a list of layer names")
    elif isinstance(layers, str) and layers == "all":
        convs = [n for n, m in qlayers.items() if isinstance(m, QuaternionConv2d)]
        names = convs or [n for n, m in qlayers.items() if isinstance(m, nn.Conv2d)]
    else:
        names = [s.strip() for s in layers.split(",")] if isinstance(layers, str) else list(layers)
        names = [n for n in names if n]
    bad = [n for n in names if n not in qlayers]
    if bad:
        raise QedgeError(f"cannot prune {', '.join(bad)}: not a prunable layer of this model "
                         f"(prunable layers: {', '.join(qlayers) or 'none'})")
    if not names:
        raise QedgeError("no layers to prune")
    return names


def kept_filters(filters: int, ratio: float, round_to: int | None = None, channels_per_filter: int = 4) -> int:
    """Filters kept out of ``filters`` at ratio p: F − floor(p·F), at least 1; with ``round_to`` =
    N, rounded up to a multiple of N / ``channels_per_filter`` (capped at F) so the real width is a
    multiple of N whenever F allows it (4 real channels per quaternion filter, 1 per real one)."""
    keep = max(1, filters - math.floor(ratio * filters + 1e-9))
    if round_to:
        step = max(1, round_to // channels_per_filter)
        keep = min(filters, math.ceil(keep / step) * step)
    return keep


def _default_input(model: nn.Module) -> torch.Tensor:
    bn0 = getattr(model, "bn0", None)
    mels = getattr(bn0, "num_features", None)
    if mels is None:
        raise QedgeError("prune() needs example_input for a model without a bn0 over mel bins")
    return torch.randn(1, 4, 128, int(mels))


def _meta_twin(model: nn.Module) -> tuple[nn.Module, dict[nn.Module, nn.Module]]:
    """A weight-free copy of ``model`` on the ``meta`` device (no data copied) and the map from
    each twin module to the real one. Tracing and dependency bookkeeping run on the twin, so the
    Hamilton kernels of a full-size model are never assembled just to find the graph."""
    memo: dict[int, Any] = {}
    for t in list(model.parameters()) + list(model.buffers()):
        ghost = torch.empty_like(t, device="meta")
        memo[id(t)] = nn.Parameter(ghost, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else ghost
    twin = copy.deepcopy(model, memo)
    real = dict(model.named_modules())
    return twin, {m: real[n] for n, m in twin.named_modules()}


def _trace_graph(twin: nn.Module, example: torch.Tensor, names: Sequence[str]):
    """Build the dependency graph of ``twin``; record each target layer's spatial input size."""
    modules = dict(twin.named_modules())
    sizes: dict[str, tuple[int, ...]] = {}
    hooks = [modules[n].register_forward_hook(
        lambda m, inp, out, n=n: sizes.__setitem__(n, tuple(inp[0].shape[2:])))
        for n in names]
    for layer in quaternion_layers(twin).values():  # keep the kernel assembly out of the graph
        layer.weight.requires_grad_(False)
    pruner = QuaternionPruner()
    try:
        with torch.enable_grad():
            graph = tp.DependencyGraph().build_dependency(
                twin, example_inputs=example.detach().to("meta").requires_grad_(True),
                customized_pruners={QuaternionConv2d: pruner, QuaternionLinear: pruner})
    finally:
        for h in hooks:
            h.remove()
    return graph, sizes


def _apply(group: Any, to_real: dict[nn.Module, nn.Module]) -> None:
    """Run every pruning operation of ``group`` on the twin and on the real model."""
    for item in group:
        dep, idxs = item.dep, item.idxs
        module = dep.target.module
        if isinstance(module, nn.Parameter):
            raise QedgeError(f"cannot prune through the bare parameter {dep.target.name}: only "
                             "parameters of modules are supported")
        dep.handler(module, idxs)
        if module in to_real:  # a real layer (graph pseudo-ops such as ReLU/Add have no twin)
            dep.handler(to_real[module], idxs)


def _out_handler(graph: Any, layer: nn.Module) -> Any:
    """The out-channel pruning function of ``layer`` in ``graph`` (quaternion or Torch-Pruning's own)."""
    return graph.get_pruner_of_module(layer).prune_out_channels


def _is_out_pruning(handler: Any) -> bool:
    return getattr(handler, "__name__", "") == "prune_out_channels"


def _coupled(graph: Any, root: nn.Module, names_of: dict[nn.Module, str]) -> list[nn.Module]:
    """Prunable layers whose OUTPUTS are pruned together with ``root``'s (residual partners)."""
    filters = output_filters(root)
    group = graph.get_pruning_group(root, _out_handler(graph, root), _real_channels(root, [0]))
    out = []
    for item in group:
        dep = item.dep
        module = dep.target.module
        if module in names_of and _is_out_pruning(dep.handler) and isinstance(module, type(root)):
            if output_filters(module) != filters:
                raise QedgeError(f"coupled layers {names_of[root]} and {names_of[module]} have different widths")
            out.append(module)
    return out


def prune(
    model: nn.Module,
    method: str = "opnorm",
    ratio: float = 0.5,
    layers: str | Sequence[str] = "later",
    example_input: torch.Tensor | None = None,
    round_to: int | None = None,
) -> nn.Module:
    """Prune the lowest fraction ``ratio`` of the output filters of ``layers`` (data-free; quaternion
    filters of quaternion layers, real channels of real convolutions), ranked by the registered
    criterion ``method`` (:data:`qedge.compress.scores.METHODS`).

    Returns a pruned deep copy (``model`` is untouched): the same kind of model, same ``.arch`` /
    ``.arch_kwargs`` / ``.later_layers``, with ``.pruning`` recording the criterion, ratio, layer
    groups, removed quaternion indices and the widths before/after. See the module docstring for
    the rules (design.md §6).
    """
    importance(method)  # an unknown criterion fails before any work
    if not 0.0 <= float(ratio) < 1.0:
        raise QedgeError(f"pruning ratio must be in [0, 1), got {ratio}")
    quaternion = bool(quaternion_layers(model))
    if round_to is not None and (int(round_to) <= 0 or (quaternion and int(round_to) % 4)):
        raise QedgeError(f"--round-to must be a positive multiple of 4 (one quaternion = 4 real "
                         f"channels), got {round_to}")
    pruned = copy.deepcopy(model)
    was_training = pruned.training
    names = resolve_layers(pruned, layers)
    example = example_input if example_input is not None else _default_input(pruned)
    twin, to_real = _meta_twin(pruned)
    twin_modules = dict(twin.named_modules())
    names_of = {m: n for n, m in prunable_layers(twin).items()}
    widths_before = {n: output_filters(m) * _channels_per_filter(m) for m, n in names_of.items()}

    graph, sizes = _trace_graph(twin, example, names)
    groups: list[dict[str, Any]] = []
    done: set[str] = set()
    for name in names:
        if name in done:
            continue
        root = twin_modules[name]
        members = _coupled(graph, root, names_of) or [root]
        member_names = [names_of[m] for m in members]
        done.update(member_names)
        filters = output_filters(root)
        keep = kept_filters(filters, ratio, round_to, _channels_per_filter(root))
        if keep >= filters:
            groups.append({"layers": member_names, "filters_before": filters, "filters_after": filters,
                           "removed": []})
            continue
        per_layer = []
        for m in members:
            s = filter_scores(to_real[m], method, input_size=sizes.get(names_of[m]))
            peak = s.abs().max()
            per_layer.append(s / peak if (len(members) > 1 and peak > 0) else s)
        score = torch.stack(per_layer).mean(dim=0)
        order = torch.argsort(score, stable=True)
        removed = sorted(int(q) for q in order[: filters - keep])
        _apply(graph.get_pruning_group(root, _out_handler(graph, root), _real_channels(root, removed)), to_real)
        groups.append({"layers": member_names, "filters_before": filters, "filters_after": keep,
                       "removed": removed})
    pruned.train(was_training)
    record = {
        "method": method,
        "ratio": float(ratio),
        "layers": layers if isinstance(layers, str) else list(layers),
        "round_to": int(round_to) if round_to else None,
        "groups": groups,
        "widths_before": widths_before,
        "widths_after": {n: output_filters(to_real[m]) * _channels_per_filter(m) for m, n in names_of.items()},
    }
    previous = getattr(model, "pruning", None)
    if previous:
        record["previous"] = previous
    pruned.pruning = record
    return pruned
