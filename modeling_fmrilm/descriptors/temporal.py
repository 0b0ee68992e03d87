"""Temporal statistics per ROI of a batch of scans `(n_scans, n_rois, n_timepoints)`.

- `tsnr` (mean / std over time: meaningful on unnormalised intensities only);
- `lag1_autocorrelation`: `sum (x_t - m)(x_t+1 - m) / sum (x_t - m)^2`;
- `hurst_dfa`: Hurst exponent by detrended fluctuation analysis (Peng et al. 1994): the profile
  `cumsum(x - mean)` is cut into non-overlapping windows of each scale, a line is removed from each
  window, `F(s)` is the root-mean-square residual, and H is the least-squares slope of
  `log F(s)` on `log s`. Every scale is one vectorised projection of all scans, ROIs and windows
  (the loop runs over the ~12 scales only); the tests compare with a per-ROI `numpy.polyfit` loop.
"""

from __future__ import annotations

import numpy as np

from ..errors import FmriInputError

MIN_DFA_SCALE = 8


def tsnr(x: np.ndarray) -> np.ndarray:
    """Temporal signal-to-noise ratio mean / std over time: `(..., n_t)` -> `(...)`."""
    x = np.asarray(x, dtype=np.float64)
    return x.mean(axis=-1) / x.std(axis=-1)


def lag1_autocorrelation(x: np.ndarray) -> np.ndarray:
    """Lag-1 autocorrelation over time: `(..., n_t)` -> `(...)`."""
    centred = np.asarray(x, dtype=np.float64)
    centred = centred - centred.mean(axis=-1, keepdims=True)
    return (centred[..., 1:] * centred[..., :-1]).sum(axis=-1) / (centred**2).sum(axis=-1)


def dfa_scales(n_timepoints: int, n_scales: int = 12) -> np.ndarray:
    """Log-spaced window sizes from 8 frames to a quarter of the scan (distinct integers)."""
    largest = n_timepoints // 4
    if largest <= MIN_DFA_SCALE:
        raise FmriInputError(
            f"DFA needs more than {4 * MIN_DFA_SCALE} time points (windows of {MIN_DFA_SCALE} frames "
            f"up to a quarter of the scan), found {n_timepoints}"
        )
    return np.unique(np.geomspace(MIN_DFA_SCALE, largest, n_scales).astype(int))


def dfa_fluctuations(x: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """`F(s)` for each scale: `(..., n_t)` -> `(..., n_scales)`."""
    x = np.asarray(x, dtype=np.float64)
    profile = np.cumsum(x - x.mean(axis=-1, keepdims=True), axis=-1)
    fluctuations = []
    for scale in scales:
        n_windows = profile.shape[-1] // scale
        windows = profile[..., : n_windows * scale].reshape(*profile.shape[:-1], n_windows, scale)
        basis, _ = np.linalg.qr(np.vander(np.arange(scale, dtype=np.float64), 2))
        residual = windows - (windows @ basis) @ basis.T
        fluctuations.append(np.sqrt((residual**2).mean(axis=(-2, -1))))
    return np.stack(fluctuations, axis=-1)


def hurst_dfa(x: np.ndarray, scales: np.ndarray | None = None) -> np.ndarray:
    """Hurst exponent by DFA: `(..., n_t)` -> `(...)`; `scales` default `dfa_scales(n_t)`."""
    scales = dfa_scales(x.shape[-1]) if scales is None else np.asarray(scales)
    log_f = np.log(dfa_fluctuations(x, scales))
    log_s = np.log(scales) - np.log(scales).mean()
    return (log_f * log_s).sum(axis=-1) / (log_s**2).sum()


__all__ = ["MIN_DFA_SCALE", "dfa_fluctuations", "dfa_scales", "hurst_dfa", "lag1_autocorrelation", "tsnr"]
