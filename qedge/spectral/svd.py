"""Exact singular values of (quaternion) convolutions on an N×M grid, design.md §7, paper 002 §4.

Operator. A layer with weight ``(4, O, I, kh, kw)`` (R, I, J, K; ``qedge.nn.QuaternionConv2d``)
acts on I quaternion channels by the left Hamilton product. On an N×M grid with circular
boundary, stride 1 and dilation d, its taps w[t] (t = (t1, t2)) sit at grid offsets d·t (mod N, M),
and the operator is the quaternion doubly-block-circulant map y[n] = Σ_t w[t] ⊗ x[n − d·t].
(``torch.nn.functional.conv2d`` correlates, x[n + d·t − p]: that is this operator conjugated by
a real permutation, a flip and a shift, so singular values, norms and clipping are the same.)

Route "fft" (Cayley–Dickson, axis i). Write w = w1 + w2·j with w1 = r + i·x, w2 = y + i·z complex,
and a signal x = a + b·j. Since j·z = conj(z)·j, y = w ⊗ x gives y_a = w1 a − w2 conj(b) and
conj(y_b) = conj(w2) a + conj(w1) conj(b): complex-LINEAR in (a, conj b). The 2D DFT
block-diagonalises it; at frequency k the 2O × 2I complex block is

    B(k) = [[ Ŵ1(k),        −Ŵ2(k)      ],
            [ conj Ŵ2(−k),  conj Ŵ1(−k) ]]

(design.md writes the equivalent [[Ŵ1, Ŵ2], [−conj Ŵ2(−k), conj Ŵ1(−k)]], which is this one
conjugated by diag(1, −1) — same singular values; this sign matches ``hamilton_kernel``.)
B(−k) is unitarily equivalent to conj B(k), so every quaternion singular value appears exactly
twice among the blocks' singular values (and four times in the real 4NM·O × 4NM·I matrix).
The DFT is evaluated directly from the kh×kw taps, a chunk of frequency rows at a time, so memory
stays bounded for wide layers.

Route "qft" (the paper's). The right QFT of the kernel w.r.t. a pure unit axis μ gives the left
eigenvalues λ(u) (Prop. 3.5 / 3.9). Splitting λ = λs + λp·ν w.r.t. μ, the operator maps the
simplex/perplex parts (A, B·ν) of the input's QFT at frequency u by the block
[[λs(u), −λp(−u)], [conj λp(u), conj λs(−u)]] — for u ≡ −u a 1×1 quaternion block (σ = |λ(u)|
for one channel), otherwise the 2×2 block pairing u with −u (paper Prop. 4.4, Cor. 4.4.1). For
μ = i it coincides with the "fft" route; for any μ it has the same singular values.

Real ``nn.Conv2d`` (O, I/groups, kh, kw): per frequency the O×I block Ŵ(k), all its singular values.

Strides > 1: the strided operator is a row subset (a coordinate projection) of the stride-1 one,
so its singular values are NOT returned; the stride-1 σ_max returned here is an upper bound of
its norm. Zero padding: see :func:`padded_grid`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from qedge.errors import QedgeError
from qedge.spectral.qft import qft2, to_symplectic, unit_axis

__all__ = [
    "SpectralError",
    "ConvWeight",
    "conv_weight",
    "padded_grid",
    "conv_singular_values",
    "spectral_norm",
    "filter_spectral_norms",
    "linear_spectral_norm",
]

CHUNK_BYTES = 64 * 2**20


class SpectralError(QedgeError, ValueError):
    """Bad input to the spectral tools (a weight, size or threshold); one line, CLI-friendly."""


#: Below this block size, BLAS runs single-threaded: the work is many small matrices, where
#: OpenBLAS threads only spin (measured 10–20× slower on a loaded 2-core machine).
SMALL_BLOCK = 1024
_CONTROLLER: Any = None


def _controller() -> Any:
    """A cached ``threadpoolctl.ThreadpoolController`` (scanning the loaded libraries costs ~1 ms),
    or None when threadpoolctl is not installed."""
    global _CONTROLLER
    if _CONTROLLER is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # optional: without it, numpy's default threading is kept
            _CONTROLLER = False
        else:
            _CONTROLLER = ThreadpoolController()
    return _CONTROLLER or None


@contextlib.contextmanager
def blas_threads(cw: "ConvWeight | None" = None, dim: int | None = None) -> Iterator[None]:
    """Limit BLAS to one thread while handling small blocks (uses ``threadpoolctl`` when installed)."""
    if dim is None:
        scale = 2 if cw is not None and cw.quaternion else 1
        dim = scale * max(cw.out_per_group, cw.in_per_group) if cw is not None else 0
    controller = _controller() if dim < SMALL_BLOCK else None
    if controller is None:
        yield
        return
    with controller.limit(limits=1, user_api="blas"):
        yield


@dataclass
class ConvWeight:
    """A convolution kernel in float64, grouped: ``w`` is (G, 4, O, I, kh, kw) for quaternion layers
    (G independent groups: 1 for a full layer, C for a depthwise one) or (G, O, I, kh, kw) for real."""

    w: np.ndarray
    quaternion: bool
    dilation: tuple[int, int] = (1, 1)

    @property
    def groups(self) -> int:
        return self.w.shape[0]

    @property
    def out_per_group(self) -> int:
        return self.w.shape[2] if self.quaternion else self.w.shape[1]

    @property
    def in_per_group(self) -> int:
        return self.w.shape[3] if self.quaternion else self.w.shape[2]

    @property
    def kernel_size(self) -> tuple[int, int]:
        return self.w.shape[-2], self.w.shape[-1]


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    try:
        a, b = v
        return int(a), int(b)
    except (TypeError, ValueError) as exc:
        raise SpectralError(f"expected one size or a pair (height, width), got {v!r}") from exc


def conv_weight(layer_or_weight: Any, depthwise: bool = False, groups: int | None = None,
                dilation: Sequence[int] | int | None = None) -> ConvWeight:
    """Normalise a layer or a weight into a :class:`ConvWeight`.

    Accepts a ``QuaternionConv2d`` (weight (4, O, I, kh, kw)), a real ``nn.Conv2d`` (any ``groups``),
    or a bare weight: 5-D with a leading 4 → quaternion, 4-D → real. ``depthwise=True`` reads a
    quaternion weight (4, C, 1, kh, kw) as C independent 1→1 kernels (one per channel).
    ``groups`` / ``dilation`` override the layer's (bare weights: 1).
    """
    weight = getattr(layer_or_weight, "weight", layer_or_weight)
    dilation = _pair(dilation if dilation is not None else getattr(layer_or_weight, "dilation", 1))
    groups = int(groups if groups is not None else getattr(layer_or_weight, "groups", 1))
    w = _numpy(weight)
    if w.ndim == 5 and w.shape[0] == 4:
        if depthwise:
            if w.shape[2] != 1:
                raise SpectralError(f"a depthwise quaternion weight has shape (4, C, 1, kh, kw), got {w.shape}")
            w = np.transpose(w, (1, 0, 2, 3, 4))[:, :, None]  # (C, 4, 1, 1, kh, kw)
        else:
            w = w[None]
        return ConvWeight(w, True, dilation)
    if w.ndim == 4:
        o = w.shape[0]
        if depthwise:
            groups = o
        if o % groups:
            raise SpectralError(f"real conv weight {w.shape} does not split into {groups} groups")
        w = w.reshape(groups, o // groups, *w.shape[1:])
        return ConvWeight(w, False, dilation)
    raise SpectralError(
        f"expected a quaternion conv weight (4, O, I, kh, kw) or a real conv weight (O, I, kh, kw), got shape {w.shape}")


def padded_grid(input_size: Sequence[int], kernel_size: Sequence[int], dilation: Sequence[int] = (1, 1)) -> tuple[int, int]:
    """Grid on which the circular operator bounds the ZERO-padded convolution of an N×M input.

    With L = N + d(k−1) (per axis), circular convolution on L points equals the full linear
    convolution of the zero-embedded input (no wrap-around), and any zero-padded convolution's
    outputs (any padding p, any stride) are a subset of those outputs (or zeros). Embedding is an
    isometry and selecting outputs has norm ≤ 1, so ‖padded conv‖ ≤ σ_max(circular on L).
    """
    (n, m), (kh, kw), (dh, dw) = _pair(input_size), _pair(kernel_size), _pair(dilation)
    return n + dh * (kh - 1), m + dw * (kw - 1)


def _phases(n: int, k: int, d: int, rows: np.ndarray | None = None) -> np.ndarray:
    """E[u, t] = exp(−2πi·u·d·t / n) for frequencies ``rows`` (default all) and taps t < k."""
    u = np.arange(n) if rows is None else rows
    return np.exp(-2j * np.pi * np.outer(u, d * np.arange(k)) / n)


def _check_grid(cw: ConvWeight, grid: tuple[int, int]) -> None:
    if grid[0] < 1 or grid[1] < 1:
        raise SpectralError(f"input size must be positive, got {grid}")


def _row_chunks(cw: ConvWeight, grid: tuple[int, int], chunk_bytes: int, half: bool = False) -> Iterator[np.ndarray]:
    """Frequency rows u in chunks of bounded memory. ``half=True``: rows 0 … N//2 only — enough for
    norms, since the block at −k has the singular values of the block at k (B(−k) ≅ conj B(k))."""
    n, m = grid
    scale = 2 if cw.quaternion else 1
    per_row = cw.groups * m * (scale * cw.out_per_group) * (scale * cw.in_per_group) * 16
    rows = max(1, int(chunk_bytes // max(per_row, 1)))
    stop = n // 2 + 1 if half else n
    for start in range(0, stop, rows):
        yield np.arange(start, min(stop, start + rows))


def complex_parts(cw: ConvWeight) -> tuple[np.ndarray, np.ndarray]:
    """Cayley–Dickson parts w1 = r + i·x, w2 = y + i·z, each (G, O, I, kh, kw) complex."""
    w = cw.w
    return w[:, 0] + 1j * w[:, 1], w[:, 2] + 1j * w[:, 3]


def dft_taps(z: np.ndarray, e1: np.ndarray, e2: np.ndarray) -> np.ndarray:
    """Ŵ[g, u, v, o, i] = Σ_ab z[g, o, i, a, b]·e1[u, a]·e2[v, b] (two BLAS contractions)."""
    tmp = np.tensordot(z, e2, axes=([4], [1]))  # (G, O, I, kh, V)
    out = np.tensordot(tmp, e1, axes=([3], [1]))  # (G, O, I, V, U)
    return np.transpose(out, (0, 4, 3, 1, 2))


def idft_taps(big: np.ndarray, e1: np.ndarray, e2: np.ndarray) -> np.ndarray:
    """z[g, o, i, a, b] = Σ_uv big[g, u, v, o, i]·e1[u, a]·e2[v, b] (adjoint of :func:`dft_taps` for
    conjugated phases)."""
    tmp = np.tensordot(big, e1, axes=([1], [0]))  # (G, V, O, I, kh)
    return np.tensordot(tmp, e2, axes=([1], [0]))  # (G, O, I, kh, kw)


def blocks(cw: ConvWeight, grid: tuple[int, int], rows: np.ndarray) -> np.ndarray:
    """Frequency blocks for frequency rows ``rows``: (G, len(rows), M, 2O, 2I) quaternion /
    (G, len(rows), M, O, I) real (see the module docstring for the formula)."""
    n, m = grid
    (kh, kw), (dh, dw) = cw.kernel_size, cw.dilation
    e1 = _phases(n, kh, dh, rows)
    e2 = _phases(m, kw, dw)
    if not cw.quaternion:
        return dft_taps(cw.w.astype(complex), e1, e2)
    w1, w2 = complex_parts(cw)
    top = np.concatenate([dft_taps(w1, e1, e2), -dft_taps(w2, e1, e2)], axis=-1)
    # conj Ŵ(−k) = Σ conj(w) exp(−iθ_k): the DFT of the conjugated taps
    bottom = np.concatenate([dft_taps(np.conj(w2), e1, e2), dft_taps(np.conj(w1), e1, e2)], axis=-1)
    return np.concatenate([top, bottom], axis=-2)


def _qft_blocks(cw: ConvWeight, grid: tuple[int, int], mu: Any) -> np.ndarray:
    """All frequency blocks via the right QFT w.r.t. μ (the paper's route): (G, N, M, 2O, 2I)."""
    n, m = grid
    (kh, kw), (dh, dw) = cw.kernel_size, cw.dilation
    g, _, o, i = cw.w.shape[:4]
    kern = np.zeros((g, o, i, n, m, 4))
    q = np.moveaxis(cw.w, 1, -1)  # (G, O, I, kh, kw, 4)
    for t1 in range(kh):
        for t2 in range(kw):
            kern[:, :, :, (dh * t1) % n, (dw * t2) % m] += q[:, :, :, t1, t2]
    lam = qft2(kern, unit_axis(mu), side="right")  # left eigenvalues, Prop. 3.9
    s, p = to_symplectic(lam, mu)  # (G, O, I, N, M) complex
    neg = lambda z: z[..., (-np.arange(n)) % n, :][..., (-np.arange(m)) % m]  # noqa: E731
    s_neg, p_neg = neg(s), neg(p)
    top = np.concatenate([s, -p_neg], axis=2)
    bottom = np.concatenate([np.conj(p), np.conj(s_neg)], axis=2)
    full = np.concatenate([top, bottom], axis=1)  # (G, 2O, 2I, N, M)
    return np.moveaxis(full, (1, 2), (-2, -1))


def conv_singular_values(
    layer_or_weight: Any,
    input_size: Sequence[int] | int,
    method: str = "fft",
    depthwise: bool = False,
    mu: Any = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """All singular values (descending) of a convolution's circular operator on an N×M grid, stride 1.

    Quaternion layers: the N·M·min(O, I) quaternion singular values per group (each appears 4× in
    the real 4NM·O × 4NM·I matrix). Real convs: the N·M·min(O, I) real ones per group. Depthwise /
    grouped operators are block-diagonal: the union over groups. ``method``: "fft" or "qft"
    (quaternion only; axis ``mu``, default (i + j + k)/√3). Strides are ignored (stride-1 operator,
    whose σ_max bounds the strided one). A kernel larger than the grid wraps around (aliasing).
    """
    cw = conv_weight(layer_or_weight, depthwise)
    grid = _pair(input_size)
    _check_grid(cw, grid)
    if method not in ("fft", "qft"):
        raise SpectralError(f"method must be 'fft' or 'qft', got {method!r}")
    if method == "qft" and not cw.quaternion:
        raise SpectralError("method='qft' needs a quaternion layer; use method='fft' for real convs")
    with blas_threads(cw):
        if method == "qft":
            sv = np.linalg.svd(_qft_blocks(cw, grid, mu), compute_uv=False).ravel()
        else:
            parts = [np.linalg.svd(blocks(cw, grid, rows), compute_uv=False).ravel()
                     for rows in _row_chunks(cw, grid, CHUNK_BYTES)]
            sv = np.concatenate(parts)
    sv = np.sort(sv)[::-1]
    if cw.quaternion:
        sv = sv[::2]  # each quaternion singular value appears exactly twice among the complex blocks'
    return sv


def _block_max_sv(b: np.ndarray) -> np.ndarray:
    """σ_max of each trailing matrix via the largest eigenvalue of the smaller Gram matrix."""
    if b.shape[-2] <= b.shape[-1]:
        gram = b @ np.conj(np.swapaxes(b, -1, -2))
    else:
        gram = np.conj(np.swapaxes(b, -1, -2)) @ b
    ev = np.linalg.eigvalsh(gram)[..., -1]
    return np.sqrt(np.maximum(ev, 0.0))


def spectral_norm(
    layer_or_weight: Any,
    input_size: Sequence[int] | int,
    method: str = "fft",
    depthwise: bool = False,
    mu: Any = (1.0, 1.0, 1.0),
) -> float:
    """σ_max of the circular operator on an N×M grid (stride 1): the largest of
    :func:`conv_singular_values`, computed per frequency chunk from the Gram matrices (fft route)."""
    if method == "qft":
        return float(conv_singular_values(layer_or_weight, input_size, "qft", depthwise, mu)[0])
    if method != "fft":
        raise SpectralError(f"method must be 'fft' or 'qft', got {method!r}")
    cw = conv_weight(layer_or_weight, depthwise)
    grid = _pair(input_size)
    _check_grid(cw, grid)
    return max_block_norm(cw, grid)


def max_block_norm(cw: ConvWeight, grid: tuple[int, int]) -> float:
    """σ_max over all frequency blocks (and groups) of ``cw`` on ``grid``."""
    best = 0.0
    with blas_threads(cw):
        for rows in _row_chunks(cw, grid, CHUNK_BYTES, half=True):
            best = max(best, float(_block_max_sv(blocks(cw, grid, rows)).max()))
    return best


def filter_spectral_norms(layer: Any, input_size: Sequence[int] | int) -> np.ndarray:
    """σ_max of each output filter's operator (the 1-output sub-layer), shape (O,) — quaternion
    filters for a quaternion layer, real output channels for a real conv (groups=1).

    For output o the operator is the rows {o, O + o} of each block B(k) (a 2 × 2I matrix);
    its σ_max² is the largest eigenvalue of that 2×2 Gram matrix, maximised over frequencies.
    """
    cw = conv_weight(layer, False)
    if cw.groups != 1:
        raise SpectralError("filter_spectral_norms needs an ungrouped layer")
    grid = _pair(input_size)
    _check_grid(cw, grid)
    o = cw.out_per_group
    best = np.zeros(o)
    with blas_threads(cw):
        best = _filter_norms(cw, grid, best)
    return best


def _filter_norms(cw: ConvWeight, grid: tuple[int, int], best: np.ndarray) -> np.ndarray:
    o = cw.out_per_group
    for rows in _row_chunks(cw, grid, CHUNK_BYTES, half=True):
        b = blocks(cw, grid, rows)[0]  # (u, v, rows, cols)
        if cw.quaternion:
            sub = b.reshape(*b.shape[:2], 2, o, b.shape[-1]).swapaxes(2, 3)  # (u, v, O, 2, 2I)
        else:
            sub = b[..., :, None, :]  # (u, v, O, 1, I)
        gram = sub @ np.conj(np.swapaxes(sub, -1, -2))
        ev = np.linalg.eigvalsh(gram)[..., -1]
        best = np.maximum(best, np.sqrt(np.maximum(ev, 0.0)).max(axis=(0, 1)))
    return best


def linear_spectral_norm(layer_or_weight: Any) -> float:
    """σ_max of a linear layer: a real (out, in) matrix, or a ``QuaternionLinear`` via its
    assembled ``real_weight()`` (design.md §3)."""
    if hasattr(layer_or_weight, "real_weight"):
        w = _numpy(layer_or_weight.real_weight())
    else:
        w = _numpy(getattr(layer_or_weight, "weight", layer_or_weight))
    if w.ndim != 2:
        raise SpectralError(f"a linear weight is 2-D (out, in), got shape {w.shape}")
    with blas_threads(dim=min(w.shape)):
        return float(np.linalg.norm(w, 2))
