"""qedge.spectral: spectral analysis of (quaternion) convolutions (design.md §7, paper 002).

- :mod:`~qedge.spectral.qft`: quaternion arrays (trailing axis r, i, j, k), Hamilton product,
  left/right QFT and inverses w.r.t. any pure unit axis μ.
- :mod:`~qedge.spectral.svd`: exact singular values of a conv's circular operator (routes "fft"
  and "qft"), spectral norms per layer and per output filter.
- :mod:`~qedge.spectral.clip`: spectral-norm clipping that keeps the kernel support; model-wide
  clipping for training (``input_sizes`` + ``clip_model_``).
- :mod:`~qedge.spectral.lipschitz`: a network's Lipschitz upper bound, layer by layer.

numpy float64 throughout; torch tensors and modules are accepted (torch is imported lazily).
"""

from qedge.spectral.clip import clip_kernel, clip_model_, clip_spectral_norm_, input_sizes
from qedge.spectral.lipschitz import LipschitzReport, lipschitz_bound, lipschitz_report
from qedge.spectral.qft import (
    from_symplectic,
    iqft,
    iqft1,
    iqft2,
    qabs,
    qconj,
    qexp,
    qft,
    qft1,
    qft2,
    qmul,
    to_symplectic,
)
from qedge.spectral.svd import (
    SpectralError,
    conv_singular_values,
    filter_spectral_norms,
    linear_spectral_norm,
    padded_grid,
    spectral_norm,
)

__all__ = [
    "qmul", "qconj", "qabs", "qexp", "qft", "iqft", "qft1", "iqft1", "qft2", "iqft2",
    "to_symplectic", "from_symplectic",
    "conv_singular_values", "spectral_norm", "filter_spectral_norms", "linear_spectral_norm", "padded_grid",
    "clip_spectral_norm_", "clip_kernel", "input_sizes", "clip_model_",
    "LipschitzReport", "lipschitz_report", "lipschitz_bound", "SpectralError",
]
