"""Compact ONNX (``qedge export --compact``): each quaternion kernel stored once, assembled in-graph.

The folded graph (export/onnx.py) stores every quaternion layer as its real kernel: 16 blocks built
from 4 component tensors (design.md §3), i.e. 4× the quaternion parameters. This module rewrites a
folded ONNX graph so that each such weight is stored as its four components R, I, J, K
(initializers ``<w>.r/.i/.j/.k`` of shape ``(O/4, I/4, kh, kw)``) and re-assembled with standard
operators only::

      nI = Neg(I)  nJ = Neg(J)  nK = Neg(K)
      W  = Concat([Concat([R, nI, nJ, nK], 1), Concat([I, R, nK, J], 1),
                   Concat([J, K, R, nI], 1),  Concat([K, nJ, I, R], 1)], 0)

(the rows of the Hamilton matrix of design.md §3). Every input of these nodes is an initializer,
so ONNX Runtime and TensorRT constant-fold the assembly once when they load the model.

BatchNorm: the fold fuses BN into the conv, W' = diag(s)·H, b' = s·b + t with s = γ/√(var+ε) per
REAL output channel, which breaks the Hamilton structure (the four rows of one quaternion filter
get different scales). Choice made here: factor the folded weight back, per quaternion filter o,
as W'_o = diag(ρ_r, ρ_i, ρ_j, ρ_k)·H'_o with H'_o Hamilton (its component vector taken from the
row of largest norm, so that row's ρ = 1) and keep the scale as a per-channel ``Mul`` after the
assembled conv, then ``Add`` the folded bias::

      y = Add(Mul(Conv(x, W(R,I,J,K)), ρ), b')

Working on the folded graph needs no access to the torch model or its BN layers and applies to any
exporter's output; the factorisation is checked (max residual ≤ ``tol``·max|W'|) and a layer that
does not factor is left as it is. Storage per BN'd conv layer: ¼ of the weights + O scales.
The alternative (BatchNormalization nodes after an unfused quaternion conv) stores 4·O BN
numbers per layer instead of O and gives the same runtime graph after ORT's Conv+Mul+Add fusion;
the file sizes and latencies are in the export report (benchmarks/export.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from qedge.errors import QedgeError

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["Factor", "factor_hamilton", "compact_model", "compact_onnx", "CompactReport"]

# (component index, sign) of each block (row a = output component, column b = input component)
# of the Hamilton matrix, components ordered R, I, J, K (design.md §3).
_BLOCKS = (
    ((0, 1), (1, -1), (2, -1), (3, -1)),
    ((1, 1), (0, 1), (3, -1), (2, 1)),
    ((2, 1), (3, 1), (0, 1), (1, -1)),
    ((3, 1), (2, -1), (1, 1), (0, 1)),
)


@dataclass
class Factor:
    """W (O, I, ...) = diag(scale) · hamilton(components); ``scale`` is None when it is all ones."""

    components: np.ndarray  # (4, O/4, I/4, ...)
    scale: np.ndarray | None  # (O,)
    residual: float  # max |W − diag(scale)·H| / max |W|


def factor_hamilton(weight: np.ndarray, tol: float = 1e-5) -> Factor | None:
    """Factor a real kernel ``(O, I, ...)`` as a per-output-channel scale times a Hamilton kernel.

    For quaternion filter o the row block a (output component a) holds, once each block is
    un-signed and put back in R, I, J, K order, the vector u_a = s_a · q_o. The reference is the
    u_a of largest norm (q'_o = u_a*), ρ_a = ⟨u_a, q'⟩ / ⟨q', q'⟩. Returns None if the channel
    counts are not multiples of 4 or the residual exceeds ``tol`` · max|W|.
    """
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim < 2 or w.shape[0] % 4 or w.shape[1] % 4 or w.size == 0:
        return None
    o, c = w.shape[0] // 4, w.shape[1] // 4
    # u[a, comp, o, c, ...]: row block a, component comp, un-signed
    u = np.empty((4, 4, o, c, *w.shape[2:]))
    for a, row in enumerate(_BLOCKS):
        for b, (comp, sign) in enumerate(row):
            u[a, comp] = sign * w[a * o:(a + 1) * o, b * c:(b + 1) * c]
    vec = np.moveaxis(u, 2, 1).reshape(4, o, -1)  # (a, filter, 4·c·k)
    norms = np.linalg.norm(vec, axis=2)  # (a, o)
    ref = norms.argmax(axis=0)  # (o,)
    q = vec[ref, np.arange(o)]  # (o, n)
    qq = np.einsum("on,on->o", q, q)
    safe = np.where(qq > 0, qq, 1.0)
    rho = np.einsum("aon,on->ao", vec, q) / safe  # (a, o)
    rho[:, qq == 0] = 1.0
    rebuilt = rho[:, :, None] * q[None]
    scale_max = float(np.abs(w).max())
    residual = float(np.abs(rebuilt - vec).max()) / scale_max if scale_max > 0 else 0.0
    if residual > tol:
        return None
    components = np.moveaxis(q.reshape(o, 4, c, *w.shape[2:]), 1, 0)
    scale = rho.reshape(-1)  # output channel a·o + f
    if np.abs(scale - 1.0).max() <= 1e-7:
        scale_out = None
    else:
        scale_out = scale.astype(np.float32)
    return Factor(components.astype(np.float32), scale_out, residual)


@dataclass
class CompactReport:
    """What :func:`compact_model` did: layers rewritten / left, and the stored float counts."""

    compacted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    floats_before: int = 0
    floats_after: int = 0
    max_residual: float = 0.0


def _weight_nodes(graph: "onnx.GraphProto", inits: dict) -> list[tuple[object, str, bool]]:
    """(node, weight name, transposed) for Conv / Gemm / MatMul nodes whose weight is an initializer."""
    out = []
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or len(node.input) < 2 or node.input[1] not in inits:
            continue
        if node.op_type == "Conv":
            out.append((node, node.input[1], False))
        elif node.op_type == "Gemm":
            attrs = {a.name: a for a in node.attribute}
            trans_a = attrs["transA"].i if "transA" in attrs else 0
            alpha = attrs["alpha"].f if "alpha" in attrs else 1.0
            beta = attrs["beta"].f if "beta" in attrs else 1.0
            if trans_a == 0 and alpha == 1.0 and beta == 1.0:
                trans_b = attrs["transB"].i if "transB" in attrs else 0
                out.append((node, node.input[1], not trans_b))
        elif node.op_type == "MatMul" and len(inits[node.input[1]].dims) == 2:
            out.append((node, node.input[1], True))
    return out


def _constant(graph: "onnx.GraphProto", inits: dict, name: str) -> np.ndarray | None:
    """The value of ``name`` if it is an initializer, or an ``Identity`` of one (the TorchScript
    exporter shares equal initializers, e.g. all-zero biases, through Identity nodes)."""
    from onnx import numpy_helper

    for _ in range(8):
        if name in inits:
            return numpy_helper.to_array(inits[name])
        producer = next((n for n in graph.node if name in n.output), None)
        if producer is None or producer.op_type != "Identity":
            return None
        name = producer.input[0]
    return None


def compact_model(proto: "onnx.ModelProto", tol: float = 1e-5) -> tuple["onnx.ModelProto", CompactReport]:
    """Rewrite every Hamilton-structured weight of a folded graph as components + in-graph assembly."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    report = CompactReport()
    report.floats_before = sum(int(np.prod(t.dims)) for t in graph.initializer)
    prologue: list = []
    new_inits: list = []
    drop: set[str] = set()
    rewired: list = []  # nodes appended after a rewritten node: (node, extra nodes)
    for node, wname, transposed in _weight_nodes(graph, inits):
        if uses.get(wname, 0) != 1 or wname in drop:
            report.skipped.append(wname)
            continue
        w = numpy_helper.to_array(inits[wname])
        if w.dtype != np.float32:
            report.skipped.append(wname)
            continue
        has_bias = len(node.input) > 2 and bool(node.input[2])
        bias_value = _constant(graph, inits, node.input[2]) if has_bias else None
        if has_bias and bias_value is None:
            report.skipped.append(wname)  # a computed bias cannot be moved after the scale
            continue
        oriented = w.T if transposed else w
        fac = factor_hamilton(oriented, tol)
        if fac is None:
            report.skipped.append(wname)
            continue
        report.compacted.append(wname)
        report.max_residual = max(report.max_residual, fac.residual)
        drop.add(wname)
        base = wname.replace("/", "_")
        names = [f"{base}.{s}" for s in "rijk"]
        for name, comp in zip(names, fac.components):
            new_inits.append(numpy_helper.from_array(np.ascontiguousarray(comp), name))
        r, i, j, k = names
        ni, nj, nk = (f"{base}.neg_{s}" for s in "ijk")
        prologue += [helper.make_node("Neg", [src], [dst], name=f"{base}/neg_{s}")
                     for src, dst, s in ((i, ni, "i"), (j, nj, "j"), (k, nk, "k"))]
        rows = ([r, ni, nj, nk], [i, r, nk, j], [j, k, r, ni], [k, nj, i, r])
        row_names = [f"{base}.row_{s}" for s in "rijk"]
        prologue += [helper.make_node("Concat", cols, [rn], axis=1, name=f"{base}/{rn.rsplit('.', 1)[1]}")
                     for cols, rn in zip(rows, row_names)]
        assembled = f"{base}.hamilton"
        prologue.append(helper.make_node("Concat", row_names, [assembled], axis=0, name=f"{base}/assemble"))
        if transposed:
            prologue.append(helper.make_node("Transpose", [assembled], [f"{assembled}.T"], perm=[1, 0],
                                             name=f"{base}/transpose"))
            assembled = f"{assembled}.T"
        node.input[1] = assembled
        if fac.scale is None:
            continue
        # y = Add(Mul(op(x, H), ρ), bias): the bias (if any) moves after the per-channel scale.
        out_channels = fac.scale.shape[0]
        channel_shape = [1, out_channels] + [1] * (w.ndim - 2) if node.op_type == "Conv" else [out_channels]
        scale_name = f"{base}.scale"
        new_inits.append(numpy_helper.from_array(fac.scale.reshape(channel_shape), scale_name))
        bias_name = None
        if bias_value is not None:
            if node.input[2] in inits and uses.get(node.input[2], 0) == 1:
                drop.add(node.input[2])
            bias_name = f"{base}.bias"
            new_inits.append(numpy_helper.from_array(bias_value.reshape(channel_shape), bias_name))
            del node.input[2]
        final = node.output[0]
        raw = f"{final}.unscaled"
        node.output[0] = raw
        scaled = final if bias_name is None else f"{final}.scaled"
        extra = [helper.make_node("Mul", [raw, scale_name], [scaled], name=f"{base}/scale")]
        if bias_name is not None:
            extra.append(helper.make_node("Add", [scaled, bias_name], [final], name=f"{base}/bias"))
        rewired.append((node, extra))
    # Rebuild the node list: the assembly prologue first (it reads initializers only), then the
    # original nodes with each rewritten layer's Mul/Add right after it (topological order kept).
    after = {id(n): extra for n, extra in rewired}
    nodes = list(prologue)
    for node in graph.node:
        nodes.append(node)
        nodes.extend(after.get(id(node), []))
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [t for t in graph.initializer if t.name not in drop]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    report.floats_after = sum(int(np.prod(t.dims)) for t in graph.initializer)
    return model, report


def compact_onnx(folded_onnx: str | Path, out: str | Path, tol: float = 1e-5) -> tuple[Path, CompactReport]:
    """Write the compact form of a folded ONNX file (same inputs/outputs/metadata) atomically."""
    import onnx

    from qedge.export.onnx import check_standard_ops, save_onnx

    path = Path(folded_onnx)
    if not path.is_file():
        raise QedgeError(f"{path}: no such ONNX file")
    proto = onnx.load(str(path))
    compact, report = compact_model(proto, tol)
    if not report.compacted:
        raise QedgeError(f"{path}: no quaternion (Hamilton-structured) weights found to compact")
    check_standard_ops(compact, str(out))
    return save_onnx(compact, out), report
