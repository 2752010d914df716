"""Torch front end: the same log-mel + Δ1 Δ2 Δ3 features as ``qedge.runtime.features``, batched.

For training on GPU from raw waveforms. Every constant (periodic Hann window, Slaney mel
filterbank, Savitzky–Golay derivative kernels) comes from the numpy module, registered here as
buffers, so the two front ends cannot drift apart (design.md §4). Matches
``LogMelDeltas.compute`` to ≤ 1e-4 (computed in float64 by default, returned as float32).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from qedge.runtime.features import (
    AMIN,
    FeatureConfig,
    poly_derivative_weights,
    delta_kernels,
    hann_window,
    mel_filterbank,
)

__all__ = ["TorchLogMelDeltas"]


class TorchLogMelDeltas(nn.Module):
    """(B, samples) or (samples,) waveform → (B, 4, frames, n_mels) float32 features.

    ψ = 10·log10(max(M·|STFT|², 1e-10)) with centred, reflect-padded, periodic-Hann frames;
    Δk = order-k Savitzky–Golay derivative of ψ along time over ``delta_width`` frames with
    'interp' edges (the first/last width//2 frames repeat the nearest full-window value; clips
    shorter than the window use one polynomial fit over all frames). frames = 1 + samples // hop.

    Args:
        config: the feature configuration (default: PANNs CNN14 front end).
        compute_dtype: internal precision (float64 default, which matches numpy to ~1e-6 dB;
            float32 is faster on GPU and within ~1e-3 dB away from the 1e-10 floor).
    """

    def __init__(self, config: FeatureConfig | dict | None = None, compute_dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        if config is None:
            config = FeatureConfig()
        elif not isinstance(config, FeatureConfig):
            config = FeatureConfig.from_dict(config)
        self.config = config
        self.compute_dtype = compute_dtype
        self.register_buffer("window", torch.from_numpy(hann_window(config.n_fft)).to(compute_dtype), persistent=False)
        self.register_buffer(
            "filterbank", torch.from_numpy(mel_filterbank(config).T.copy()).to(compute_dtype), persistent=False
        )  # (F, M)
        kernels = delta_kernels(config.delta_width)  # (3, W) correlation order
        self.register_buffer("kernels", torch.from_numpy(kernels).to(compute_dtype).unsqueeze(1), persistent=False)
        self._pad_cache: dict[tuple[int, str], torch.Tensor] = {}

    def _pad_index(self, n: int, device: torch.device) -> torch.Tensor:
        """Gather index of numpy's reflect padding by n_fft//2 (repeated reflection for very short
        clips), cached per (length, device)."""
        key = (n, str(device))
        idx = self._pad_cache.get(key)
        if idx is None:
            pad = self.config.n_fft // 2
            raw = np.pad(np.arange(n), pad, mode="reflect" if n > 1 else "edge")
            idx = torch.from_numpy(raw).to(device)
            if len(self._pad_cache) > 8:
                self._pad_cache.clear()
            self._pad_cache[key] = idx
        return idx

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.to_dict().items())

    def logmel(self, waveform: torch.Tensor) -> torch.Tensor:
        """Log-mel (B, frames, n_mels) in ``compute_dtype``."""
        cfg = self.config
        x = waveform.to(self.compute_dtype)
        if x.dim() == 1:
            x = x.unsqueeze(0)
        if x.dim() != 2 or x.shape[-1] == 0:
            raise ValueError(f"expected (batch, samples) with samples > 0, got {tuple(waveform.shape)}")
        n = x.shape[-1]
        padded = x[:, self._pad_index(n, x.device)]
        frames = padded.unfold(-1, cfg.n_fft, cfg.hop_length)  # (B, T, n_fft)
        spec = torch.fft.rfft(frames * self.window, dim=-1)
        power = spec.real.square() + spec.imag.square()
        mel = power @ self.filterbank
        return 10.0 * torch.log10(torch.clamp(mel, min=AMIN))

    def deltas(self, logmel: torch.Tensor) -> torch.Tensor:
        """Δ1..Δ3 of (B, T, M) log-mel along T → (B, 3, T, M), 'interp' edges."""
        b, t, m = logmel.shape
        width = self.kernels.shape[-1]
        half = width // 2
        seq = logmel.transpose(1, 2).reshape(b * m, 1, t)  # (B·M, 1, T)
        if t >= width:
            inner = F.conv1d(seq, self.kernels)  # (B·M, 3, T−W+1), correlation = numpy order
            out = F.pad(inner, (half, half), mode="replicate")
        else:
            w = np.stack([poly_derivative_weights(t, k) for k in (1, 2, 3)])  # (3, T)
            wt = torch.from_numpy(w).to(device=seq.device, dtype=seq.dtype)
            out = (wt @ seq.squeeze(1).T).T.unsqueeze(-1).expand(b * m, 3, t)
        return out.reshape(b, m, 3, t).permute(0, 2, 3, 1)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        psi = self.logmel(waveform)
        out = torch.cat([psi.unsqueeze(1), self.deltas(psi)], dim=1)
        return out.to(torch.float32)
