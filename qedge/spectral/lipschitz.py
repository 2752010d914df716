"""Upper bound of a network's Lipschitz constant (ℓ2 → ℓ2, one example), design.md §7, paper 002 §4.

The model runs once (eval mode, batch 1) under a ``TorchFunctionMode`` that follows every tensor
derived from the input and carries L(t), an upper bound of the Lipschitz constant of
input ↦ t. Each operation maps the bounds of its inputs to a bound of its output:

- convolution: σ_max of its operator. A zero-padded (any padding), strided, dilated conv on an
  N×M input is bounded by the circular operator on the grid (N + d(kh−1)) × (M + d(kw−1))
  (:func:`qedge.spectral.svd.padded_grid`: no wrap-around there, the padded conv's outputs are a
  subset of it; strides subsample outputs). ``QuaternionConv2d``: the exact quaternion route;
  real ``nn.Conv2d`` (and folded models): the real per-frequency blocks (groups: max over groups).
- eval BatchNorm: max_c |γ_c / √(var_c + ε)| (the shift does not matter); merged into the
  preceding conv's row when it follows one (``bn_factor``). ``bn0`` over mel bins likewise.
- linear: σ_max of the weight (``QuaternionLinear`` via ``real_weight()``).
- ReLU, dropout (eval), reshapes, transposes, basic slicing: 1; broadcasting copies (expand,
  repeat) √(copies). Max-pooling / max over an axis: 1
  (|max a − max b| ≤ max |a − b|) times √(windows covering one input) if windows overlap.
  Average pooling with kernel k, stride s: √(⌈kh/sh⌉⌈kw/sw⌉ / (kh·kw)) — 1/2 for 2×2 non-
  overlapping. Mean over n values: 1/√n (Cauchy–Schwarz); sum over n values: √n.
- a + b: L(a) + L(b) (so a residual y = x + f(x) gets L(x)·(1 + Lip f)); concatenation:
  √(Σ L_i²); product with a constant c: max |c|. Sigmoid 1/4, tanh 1, GELU 1.13, SiLU 1.1.

Any other operation touching a traced tensor raises a :class:`QedgeError` naming it, so a bound
is never silently wrong. The PANNs head max + mean over time therefore gets 1 + 1/√T.

One file on purpose (over the ~400-line guideline): the tracer's per-operation rules (the op
tables and :meth:`_Tracer.handle` with its conv / linear / BatchNorm / pooling helpers) are the
proof of the bound, one rule per line of the list above, and they compose into the single number
:func:`lipschitz_report` returns; a rule is only checkable next to the others and that list, so
they are kept together rather than split by operation family.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from qedge.errors import QedgeError
from qedge.spectral.svd import conv_weight, linear_spectral_norm, max_block_norm, padded_grid, spectral_norm

__all__ = ["LipschitzReport", "lipschitz_report", "lipschitz_bound"]


@dataclass
class LipschitzReport:
    """Per-operation factors and the network bound.

    ``rows``: dicts with keys ``layer`` (module name, or ``module.<op>`` for functional ops),
    ``input_size`` ((H, W) for convolutions, else None), ``sigma_max`` (conv / linear operator
    norm or None), ``bn_factor`` (max |γ/√(var+ε)| of a BatchNorm or None), ``factor`` (the row's
    multiplier, None for sums) and ``cumulative`` (bound of input ↦ this row's output).
    ``bound``: the Lipschitz upper bound of the whole model (input features → logits).
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    bound: float = 0.0
    input_shape: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"bound": self.bound, "input_shape": list(self.input_shape), "rows": self.rows}

    def table(self) -> str:
        """Plain-text table (one row per operation)."""
        lines = [f"{'layer':40s} {'input':>10s} {'sigma_max':>10s} {'bn':>8s} {'factor':>9s} {'cumulative':>11s}"]
        fmt = lambda v, w: (f"{v:{w}.4g}" if isinstance(v, float) else f"{'-':>{w}s}")  # noqa: E731
        for r in self.rows:
            size = "x".join(map(str, r["input_size"])) if r["input_size"] else "-"
            lines.append(f"{r['layer'][:40]:40s} {size:>10s} {fmt(r['sigma_max'], 10)} {fmt(r['bn_factor'], 8)} "
                         f"{fmt(r['factor'], 9)} {fmt(r['cumulative'], 11)}")
        lines.append(f"Lipschitz upper bound: {self.bound:.6g}")
        return "\n".join(lines)


_IDENTITY = {
    "transpose", "transpose_", "permute", "reshape", "view", "view_as", "flatten", "contiguous", "squeeze",
    "unsqueeze", "__getitem__", "clone", "to", "float", "double", "half", "type", "detach", "relu", "relu_",
    "dropout", "dropout2d", "alpha_dropout", "feature_alpha_dropout", "identity", "neg", "__neg__", "negative",
    "narrow", "select", "split", "chunk", "unbind", "hardtanh", "relu6", "tanh",
    "softmax", "abs", "cpu", "cuda", "movedim", "swapaxes",
}
_DUPLICATE = {"expand", "expand_as", "repeat", "tile", "broadcast_to", "repeat_interleave"}
_CONSTANT = {"zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "new_zeros",
             "new_ones", "new_empty", "new_full", "new_tensor"}
_REDUCE_MAX = {"amax", "amin", "max", "min"}
_ACTIVATION = {"sigmoid": 0.25, "gelu": 1.13, "silu": 1.1, "elu": 1.0, "softplus": 1.0, "mish": 1.1}
_ADD = {"add", "__add__", "__radd__", "add_", "__iadd__", "sub", "__sub__", "__rsub__", "sub_", "__isub__"}
_MUL = {"mul", "__mul__", "__rmul__", "mul_", "__imul__"}
_DIV = {"div", "__truediv__", "div_", "__itruediv__"}
_SKIP_ROW = _IDENTITY - {"softmax", "tanh", "hardtanh"}


def _flat(obj: Any) -> list[Any]:
    if isinstance(obj, (list, tuple)):
        return [y for x in obj for y in _flat(x)]
    if isinstance(obj, dict):
        return [y for x in obj.values() for y in _flat(x)]
    return [obj]


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    v = tuple(v)
    return (int(v[0]), int(v[0])) if len(v) == 1 else (int(v[0]), int(v[1]))


def _basic_index(index: Any) -> bool:
    """True for indexes built from ints, slices, None and Ellipsis (each element selected at most once)."""
    items = index if isinstance(index, tuple) else (index,)
    return all(i is None or i is Ellipsis or isinstance(i, (int, slice)) for i in items)


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


class _Tracer:
    """Carries Lipschitz bounds through one forward pass (see the module docstring)."""

    def __init__(self, model: Any) -> None:
        import torch

        self.torch = torch
        self.bounds: dict[int, tuple[float, int | None]] = {}  # id(tensor) -> (L, producing row)
        self.keep: list[Any] = []
        self.rows: list[dict[str, Any]] = []
        self.stack: list[tuple[str, Any]] = []
        self.cache: dict[tuple, float] = {}
        self.model = model

    # -- bookkeeping ------------------------------------------------------------------------
    def track(self, t: Any, bound: float, row: int | None) -> None:
        self.bounds[id(t)] = (bound, row)
        self.keep.append(t)

    def bound_of(self, t: Any) -> float | None:
        entry = self.bounds.get(id(t)) if isinstance(t, self.torch.Tensor) else None
        return None if entry is None else entry[0]

    def where(self) -> tuple[str, Any]:
        return self.stack[-1] if self.stack else ("", self.model)

    def add_row(self, layer: str, factor: float | None, cumulative: float, input_size=None,
                sigma_max: float | None = None, bn_factor: float | None = None) -> int:
        self.rows.append({"layer": layer, "input_size": input_size, "sigma_max": sigma_max,
                          "bn_factor": bn_factor, "factor": factor, "cumulative": cumulative})
        return len(self.rows) - 1

    def op_name(self, name: str) -> str:
        mod = self.where()[0]
        return f"{mod}.<{name}>" if mod else f"<{name}>"

    def unsupported(self, name: str, why: str = "") -> QedgeError:
        where = self.where()[0] or "the model's forward"
        return QedgeError(f"lipschitz bound: unsupported operation '{name}' in {where}"
                          f"{': ' + why if why else ''} (no safe upper bound known)")

    # -- the dispatcher -----------------------------------------------------------------------
    def handle(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        torch = self.torch
        inputs = [a for a in _flat((args, kwargs)) if isinstance(a, torch.Tensor)]
        tracked = [(a, self.bounds[id(a)]) for a in inputs if id(a) in self.bounds]
        if not tracked:
            return
        outs = [o for o in _flat(out) if isinstance(o, torch.Tensor)]
        if not outs:
            return  # shapes, dims, sizes: no data flows on
        name = getattr(func, "__name__", str(func))
        if name in ("__get__", "__set__"):
            name = getattr(getattr(func, "__self__", None), "__name__", name)
            if name in ("shape", "dtype", "device", "T", "mT", "data"):
                if name in ("T", "mT", "data"):
                    self._unary(outs, tracked, 1.0, None)
                return
        x, (lx, src) = tracked[0]
        if name in _CONSTANT:
            return  # the output does not depend on the input's values
        if name == "__getitem__" and not _basic_index(args[1] if len(args) > 1 else None):
            raise self.unsupported(name, "advanced indexing (may repeat elements)")
        if name in _DUPLICATE:
            # every element copied n times: ‖Δ‖ grows by √n
            self._unary(outs, tracked, math.sqrt(outs[0].numel() / max(1, x.numel())), self.op_name(name))
            return
        if name in _ADD:
            alpha = abs(float(kwargs.get("alpha", 1.0)))
            operands = list(args[:2]) + ([kwargs["other"]] if "other" in kwargs else [])
            ls = []
            for index, a in enumerate(operands):
                b = self.bound_of(a)
                if b is not None:
                    ls.append(b * (alpha if index == 1 else 1.0))
            total = float(sum(ls))
            row = self.add_row(self.op_name(name), None, total) if len(ls) > 1 else src
            self._set(outs, total, row)
            return
        if name in _MUL or name in _DIV:
            if len(tracked) > 1:
                raise self.unsupported(name, "product of two input-dependent tensors")
            other = [a for a in _flat(args) if not (isinstance(a, torch.Tensor) and id(a) == id(x))]
            other = other[0] if other else 1.0
            mag = float(other.detach().abs().max()) if isinstance(other, torch.Tensor) else abs(float(other))
            if name in _DIV:
                if not (len(args) >= 1 and id(args[0]) == id(x)):
                    raise self.unsupported(name, "division by an input-dependent tensor")
                mag = float(other.detach().abs().min()) if isinstance(other, torch.Tensor) else abs(float(other))
                mag = math.inf if mag == 0 else 1.0 / mag
            self._unary(outs, tracked, mag, self.op_name(name))
            return
        if name in ("cat", "concat", "concatenate", "stack", "hstack", "vstack"):
            total = math.sqrt(sum(b * b for _, (b, _) in tracked))
            row = self.add_row(self.op_name(name), None, total)
            self._set(outs, total, row)
            return
        if len(tracked) > 1 and name not in ("conv2d", "linear", "batch_norm"):
            raise self.unsupported(name, "several input-dependent operands")
        if name in _IDENTITY:
            if name in ("dropout", "dropout2d", "alpha_dropout", "feature_alpha_dropout") and \
                    bool(_arg(args, kwargs, 2, "training", True)):
                raise self.unsupported(name, "dropout in training mode")
            self._unary(outs, tracked, 1.0, None if name in _SKIP_ROW else self.op_name(name))
            return
        if name in ("leaky_relu", "leaky_relu_"):
            slope = abs(float(_arg(args, kwargs, 1, "negative_slope", 0.01)))
            self._unary(outs, tracked, max(1.0, slope), None)
            return
        if name in _ACTIVATION:
            self._unary(outs, tracked, _ACTIVATION[name], self.op_name(name))
            return
        if name in _REDUCE_MAX:
            if name in ("max", "min") and len(args) >= 2 and isinstance(args[1], torch.Tensor):
                raise self.unsupported(name, "elementwise max of two tensors")
            self._unary(outs[:1], tracked, 1.0, self.op_name(name))
            return
        if name in ("mean", "sum", "nanmean"):
            n = x.numel() / max(1, outs[0].numel())
            f = 1.0 / math.sqrt(n) if name != "sum" else math.sqrt(n)
            self._unary(outs, tracked, f, self.op_name(name))
            return
        if name in ("avg_pool2d", "max_pool2d", "max_pool2d_with_indices", "avg_pool1d", "max_pool1d"):
            self._pool(name, args, kwargs, outs, tracked)
            return
        if name == "adaptive_avg_pool2d" or name == "adaptive_max_pool2d":
            (h, w), (oh, ow) = x.shape[-2:], outs[0].shape[-2:]
            if h % oh or w % ow:
                raise self.unsupported(name, "non-uniform adaptive windows")
            kh, kw = h // oh, w // ow
            f = 1.0 if name == "adaptive_max_pool2d" else 1.0 / math.sqrt(kh * kw)
            self._unary(outs[:1], tracked, f, self.op_name(name))
            return
        if name == "pad":
            mode = _arg(args, kwargs, 2, "mode", "constant")
            if mode != "constant":
                raise self.unsupported(name, f"padding mode '{mode}'")
            self._unary(outs, tracked, 1.0, None)
            return
        if name == "conv2d":
            self._conv(args, kwargs, outs, tracked)
            return
        if name == "linear":
            self._linear(args, kwargs, outs, tracked)
            return
        if name == "batch_norm":
            self._batch_norm(args, kwargs, outs, tracked)
            return
        raise self.unsupported(name)

    def _set(self, outs: list, bound: float, row: int | None) -> None:
        for o in outs:
            self.track(o, bound, row)

    def _unary(self, outs: list, tracked: list, factor: float, row_name: str | None) -> None:
        _, (lx, src) = tracked[0]
        bound = lx * factor
        row = self.add_row(row_name, factor, bound) if row_name is not None else src
        self._set(outs, bound, row)

    def _pool(self, name: str, args: tuple, kwargs: dict, outs: list, tracked: list) -> None:
        x = tracked[0][0]
        dims = 1 if name.endswith("1d") else 2
        k = _arg(args, kwargs, 1, "kernel_size")
        s = _arg(args, kwargs, 2, "stride", None)
        p = _arg(args, kwargs, 3, "padding", 0)
        norm = (lambda v: (int(v),) * dims if isinstance(v, (int, np.integer)) else tuple(int(a) for a in v))  # noqa: E731
        k = norm(k)
        s = k if s is None or (isinstance(s, (list, tuple)) and len(s) == 0) else norm(s)
        p = norm(p)
        if name.startswith("max"):
            dil = norm(_arg(args, kwargs, 4, "dilation", 1))
            span = tuple(d * (kk - 1) + 1 for d, kk in zip(dil, k))
            overlap = math.prod(math.ceil(sp / st) for sp, st in zip(span, s))
            factor = math.sqrt(overlap)
        else:
            overlap = math.prod(math.ceil(kk / st) for kk, st in zip(k, s))
            ceil_mode = bool(_arg(args, kwargs, 4, "ceil_mode", False))
            include_pad = bool(_arg(args, kwargs, 5, "count_include_pad", True))
            divisor = _arg(args, kwargs, 6, "divisor_override", None)
            if divisor is not None:
                factor = math.sqrt(overlap * math.prod(k)) / float(divisor)
            elif ceil_mode or (any(p) and not include_pad):
                factor = math.sqrt(overlap)  # a partial window averages ≥ 1 value: ≤ ‖window‖
            else:
                factor = math.sqrt(overlap / math.prod(k))
        del x
        self._unary(outs[:1], tracked, factor, self.op_name(name))

    def _conv(self, args: tuple, kwargs: dict, outs: list, tracked: list) -> None:
        from qedge.nn import QuaternionConv2d

        x, (lx, _) = tracked[0]
        if id(args[0]) != id(x) or len(tracked) > 1:
            raise self.unsupported("conv2d", "input-dependent weights")
        weight = _arg(args, kwargs, 1, "weight")
        dilation = _pair(_arg(args, kwargs, 5, "dilation", 1))
        groups = int(_arg(args, kwargs, 6, "groups", 1))
        name, mod = self.where()
        size = (int(x.shape[-2]), int(x.shape[-1]))
        grid = padded_grid(size, weight.shape[-2:], dilation)
        key = (id(weight) if not isinstance(mod, QuaternionConv2d) else id(mod), grid, dilation, groups)
        if key not in self.cache:
            if isinstance(mod, QuaternionConv2d) and mod.dilation == dilation and groups == 1:
                self.cache[key] = spectral_norm(mod, grid)
            else:
                cw = conv_weight(weight.detach(), groups=groups, dilation=dilation)
                self.cache[key] = max_block_norm(cw, grid)
        sigma = self.cache[key]
        bound = lx * sigma
        row = self.add_row(name or self.op_name("conv2d"), sigma, bound, input_size=size, sigma_max=sigma)
        self._set(outs, bound, row)

    def _linear(self, args: tuple, kwargs: dict, outs: list, tracked: list) -> None:
        x, (lx, _) = tracked[0]
        if id(args[0]) != id(x) or len(tracked) > 1:
            raise self.unsupported("linear", "input-dependent weights")
        weight = _arg(args, kwargs, 1, "weight")
        name, mod = self.where()
        key = ("linear", id(weight))
        if key not in self.cache:
            self.cache[key] = linear_spectral_norm(weight)
        sigma = self.cache[key]
        row = self.add_row(name or self.op_name("linear"), sigma, lx * sigma, sigma_max=sigma)
        self._set(outs, lx * sigma, row)

    def _batch_norm(self, args: tuple, kwargs: dict, outs: list, tracked: list) -> None:
        x, (lx, src) = tracked[0]
        if id(args[0]) != id(x) or len(tracked) > 1:
            raise self.unsupported("batch_norm", "input-dependent statistics")
        running_var = _arg(args, kwargs, 2, "running_var")
        weight = _arg(args, kwargs, 3, "weight")
        training = bool(_arg(args, kwargs, 5, "training", False))
        eps = float(_arg(args, kwargs, 7, "eps", 1e-5))
        if training or running_var is None:
            raise self.unsupported("batch_norm", "batch statistics (training mode); call model.eval()")
        var = running_var.detach().cpu().double()
        gamma = weight.detach().cpu().double() if weight is not None else 1.0
        factor = float((abs(gamma) / (var + eps).sqrt()).max()) if var.numel() else 1.0
        bound = lx * factor
        name = self.where()[0] or self.op_name("batch_norm")
        if src is not None and self.rows[src]["sigma_max"] is not None and self.rows[src]["bn_factor"] is None \
                and self.rows[src]["cumulative"] == lx and self.rows[src]["input_size"] is not None:
            r = self.rows[src]
            r["bn_factor"] = factor
            r["factor"] = r["sigma_max"] * factor
            r["cumulative"] = bound
            row = src
        else:
            row = self.add_row(name, factor, bound, bn_factor=factor)
        self._set(outs, bound, row)


def lipschitz_report(model: Any, input_shape: Sequence[int]) -> LipschitzReport:
    """Lipschitz upper bound of ``model`` (features (1, 4, T, M) → logits), per-operation rows.

    ``input_shape``: e.g. (1, 4, 101, 64) or (4, 101, 64); the batch is forced to 1 (the bound is
    per example). The model runs once in eval mode (its mode is restored). Works for every
    ``qedge.models`` family, folded models and any network built from the operations listed in
    the module docstring; anything else raises :class:`QedgeError`.
    """
    import torch
    from torch.overrides import TorchFunctionMode

    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) < 2:
        raise QedgeError(f"lipschitz bound: input shape {shape} needs (batch, channels, ...)")
    shape = (1, *shape[1:])
    tracer = _Tracer(model)

    class _Mode(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            tracer.handle(func, args, kwargs, out)
            return out

    handles = []
    for name, mod in model.named_modules():
        handles.append(mod.register_forward_pre_hook(lambda m, a, _n=name: tracer.stack.append((_n, m))))
        handles.append(mod.register_forward_hook(lambda m, a, o: tracer.stack.pop() and None))
    was_training = model.training
    param = next(model.parameters(), None)
    device = param.device if param is not None else "cpu"
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    threads = torch.get_num_threads()
    try:
        # one example through the model: torch's OpenMP workers would only spin while numpy
        # computes the spectral norms between the ops (measured ~10× slower on 2 loaded cores)
        torch.set_num_threads(1)
        model.eval()
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
        tracer.track(x, 1.0, None)
        with torch.no_grad(), _Mode():
            out = model(x)
    except QedgeError:
        raise
    except RuntimeError as exc:
        raise QedgeError(f"lipschitz bound: the model does not run on input shape {shape}: {exc}") from exc
    finally:
        torch.set_num_threads(threads)
        for h in handles:
            h.remove()
        model.train(was_training)
    outs = [o for o in _flat(out) if isinstance(o, torch.Tensor)]
    bound = max((tracer.bound_of(o) or 0.0) for o in outs) if outs else 0.0
    if tracer.rows:
        tracer.rows.append({"layer": "<output>", "input_size": None, "sigma_max": None, "bn_factor": None,
                            "factor": None, "cumulative": bound})
    return LipschitzReport(rows=tracer.rows, bound=float(bound), input_shape=shape)


def lipschitz_bound(model: Any, input_shape: Sequence[int]) -> float:
    """The bound of :func:`lipschitz_report` alone."""
    return lipschitz_report(model, input_shape).bound
