"""Quaternion arrays and the quaternion Fourier transform (QFT), design.md §7, paper 002 §3.

Representation: a quaternion array is a numpy ``float64`` array whose LAST axis has length 4 and
holds the components (r, i, j, k). Signal axes are the other axes; ``axes`` arguments below count
them WITHOUT the trailing component axis (``axes=(-1,)`` is the last signal axis).

QFT w.r.t. a pure unit axis μ (Ell & Sangwine; paper 002 eq. 7 and Appendix), N-point, 1D::

    right:  X[u] = Σ_n x[n] · exp(−μ 2π u n / N)        left:  X[u] = Σ_n exp(−μ 2π u n / N) · x[n]
    inverse right: x[n] = 1/N Σ_u X[u] · exp(+μ 2π u n / N)   (inverse left likewise, exponential left)

2D uses exp(−μ 2π (u m / N + v n / M)) (one axis μ, so the two exponentials commute). With
``norm="ortho"`` both directions carry 1/√(N·M) and the transforms are unitary.

Fast evaluation through the symplectic (Cayley–Dickson) split w.r.t. μ: pick a pure unit ν ⊥ μ
and write x = a + b·ν with a, b ∈ C_μ = span{1, μ} (``a`` the simplex, ``b·ν`` the perplex part).
Elements of C_μ commute with exp(μθ), while ν·exp(−μθ) = exp(+μθ)·ν, hence

    left QFT:   X = FFT(a) + FFT(b)·ν
    right QFT:  X[u] = FFT(a)[u] + (Σ_n b[n] exp(+μ 2π u n / N))·ν = FFT(a)[u] + FFT(b)[−u]·ν

where C_μ is identified with C (μ ↦ i). The inverse w.r.t. μ is the forward transform w.r.t. −μ
with the inverse scaling.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = [
    "as_quaternion",
    "qmul",
    "qconj",
    "qabs",
    "unit_axis",
    "axis_basis",
    "to_symplectic",
    "from_symplectic",
    "qexp",
    "qft",
    "iqft",
    "qft1",
    "iqft1",
    "qft2",
    "iqft2",
]


def as_quaternion(x: Any) -> np.ndarray:
    """Convert ``x`` (numpy array, torch tensor, nested list) to a float64 array with a trailing axis of 4."""
    if hasattr(x, "detach"):  # torch tensor, without importing torch
        x = x.detach().cpu().double().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 0 or arr.shape[-1] != 4:
        raise ValueError(f"a quaternion array needs a trailing axis of length 4 (r, i, j, k), got shape {arr.shape}")
    return arr


def qmul(p: Any, q: Any) -> np.ndarray:
    """Hamilton product p·q of broadcastable quaternion arrays (design.md §3)."""
    p, q = as_quaternion(p), as_quaternion(q)
    pr, pi, pj, pk = np.moveaxis(p, -1, 0)
    qr, qi, qj, qk = np.moveaxis(q, -1, 0)
    return np.stack(
        [
            pr * qr - pi * qi - pj * qj - pk * qk,
            pr * qi + pi * qr + pj * qk - pk * qj,
            pr * qj - pi * qk + pj * qr + pk * qi,
            pr * qk + pi * qj - pj * qi + pk * qr,
        ],
        axis=-1,
    )


def qconj(q: Any) -> np.ndarray:
    """Quaternion conjugate r − i·x − j·y − k·z."""
    q = as_quaternion(q).copy()
    q[..., 1:] *= -1.0
    return q


def qabs(q: Any) -> np.ndarray:
    """Modulus |q| = √(r² + x² + y² + z²)."""
    return np.sqrt(np.sum(as_quaternion(q) ** 2, axis=-1))


def unit_axis(mu: Any) -> np.ndarray:
    """A pure unit quaternion axis from a 3-vector (x, y, z) or a 4-vector with zero real part
    (normalised to unit length; a zero vector or a non-zero real part is an error)."""
    m = np.asarray(mu.detach().cpu().numpy() if hasattr(mu, "detach") else mu, dtype=np.float64).reshape(-1)
    if m.size == 3:
        m = np.concatenate([[0.0], m])
    if m.size != 4:
        raise ValueError(f"a QFT axis is a pure unit quaternion (3 or 4 numbers), got {m.size} numbers")
    if abs(m[0]) > 1e-12 * max(1.0, float(np.linalg.norm(m))) or np.linalg.norm(m[1:]) < 1e-12:
        raise ValueError(f"a QFT axis must be a non-zero pure quaternion, got {m.tolist()}")
    m = m.copy()
    m[0] = 0.0
    return m / np.linalg.norm(m)


def axis_basis(mu: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(μ, ν, μν): μ the axis, ν a pure unit quaternion ⊥ μ, μν = μ × ν (pure, ⊥ both)."""
    m = unit_axis(mu)
    v = m[1:]
    helper = np.eye(3)[int(np.argmin(np.abs(v)))]
    n = np.cross(v, helper)
    n /= np.linalg.norm(n)
    nu = np.concatenate([[0.0], n])
    return m, nu, qmul(m, nu)


def to_symplectic(q: Any, mu: Any) -> tuple[np.ndarray, np.ndarray]:
    """Split q = a + b·ν w.r.t. μ; returns complex (a, b) with μ ↦ 1j (shapes: q without its last axis)."""
    q = as_quaternion(q)
    m, nu, xi = axis_basis(mu)
    vec = q[..., 1:]
    a = q[..., 0] + 1j * (vec @ m[1:])
    b = (vec @ nu[1:]) + 1j * (vec @ xi[1:])
    return a, b


def from_symplectic(a: np.ndarray, b: np.ndarray, mu: Any) -> np.ndarray:
    """Inverse of :func:`to_symplectic`: q = Re a + Im a·μ + Re b·ν + Im b·μν."""
    m, nu, xi = axis_basis(mu)
    a = np.asarray(a)
    b = np.asarray(b)
    q = a.real[..., None] * np.array([1.0, 0, 0, 0]) + a.imag[..., None] * m
    return q + b.real[..., None] * nu + b.imag[..., None] * xi


def qexp(theta: Any, mu: Any) -> np.ndarray:
    """exp(μθ) = cos θ + μ sin θ for real ``theta`` (any shape) and pure unit μ."""
    th = np.asarray(theta, dtype=np.float64)
    m = unit_axis(mu)
    return np.cos(th)[..., None] * np.array([1.0, 0, 0, 0]) + np.sin(th)[..., None] * m


_SWAP = {"backward": "forward", "ortho": "ortho", "forward": "backward"}


def _signal_axes(ndim: int, axes: Sequence[int]) -> tuple[int, ...]:
    out = []
    for ax in axes:
        if not -ndim <= ax < ndim:
            raise ValueError(f"axis {ax} out of range for a quaternion signal with {ndim} signal axes")
        out.append(ax % ndim)
    return tuple(out)


def qft(
    x: Any,
    mu: Any = (1.0, 1.0, 1.0),
    side: str = "right",
    axes: Sequence[int] = (-1,),
    inverse: bool = False,
    norm: str = "backward",
) -> np.ndarray:
    """Left or right QFT (or its inverse) of a quaternion signal along ``axes`` w.r.t. axis μ.

    ``mu`` is normalised if given as an unnormalised 3-vector (default (1,1,1)/√3).
    ``norm``: "backward" (forward unscaled, inverse 1/N) or "ortho" (1/√N both ways: unitary).
    See the module docstring for the definitions and the symplectic evaluation.
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    if norm not in ("backward", "ortho"):
        raise ValueError(f"norm must be 'backward' or 'ortho', got {norm!r}")
    x = as_quaternion(x)
    m = unit_axis(mu)
    ax = _signal_axes(x.ndim - 1, axes)
    if inverse:
        # inverse w.r.t. μ = forward w.r.t. −μ with the inverse scaling
        m = -m
        fnorm = "forward" if norm == "backward" else "ortho"
    else:
        fnorm = norm
    a, b = to_symplectic(x, m)
    big_a = np.fft.fftn(a, axes=ax, norm=fnorm)
    if side == "left":
        big_b = np.fft.fftn(b, axes=ax, norm=fnorm)
    else:
        # Σ_n b[n] exp(+i 2π u n / N) with the same scaling as the forward transform
        big_b = np.fft.ifftn(b, axes=ax, norm=_SWAP[fnorm])
    return from_symplectic(big_a, big_b, m)


def iqft(x: Any, mu: Any = (1.0, 1.0, 1.0), side: str = "right", axes: Sequence[int] = (-1,),
         norm: str = "backward") -> np.ndarray:
    """Inverse of :func:`qft` with the same μ, side, axes and norm."""
    return qft(x, mu, side, axes, inverse=True, norm=norm)


def qft1(x: Any, mu: Any = (1.0, 1.0, 1.0), side: str = "right", norm: str = "backward") -> np.ndarray:
    """1D QFT along the last signal axis."""
    return qft(x, mu, side, (-1,), False, norm)


def iqft1(x: Any, mu: Any = (1.0, 1.0, 1.0), side: str = "right", norm: str = "backward") -> np.ndarray:
    """Inverse 1D QFT along the last signal axis."""
    return qft(x, mu, side, (-1,), True, norm)


def qft2(x: Any, mu: Any = (1.0, 1.0, 1.0), side: str = "right", norm: str = "backward") -> np.ndarray:
    """2D QFT over the last two signal axes (paper 002 Prop. 3.8–3.9)."""
    return qft(x, mu, side, (-2, -1), False, norm)


def iqft2(x: Any, mu: Any = (1.0, 1.0, 1.0), side: str = "right", norm: str = "backward") -> np.ndarray:
    """Inverse 2D QFT over the last two signal axes."""
    return qft(x, mu, side, (-2, -1), True, norm)
