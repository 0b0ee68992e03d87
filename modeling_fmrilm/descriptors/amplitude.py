"""Low-frequency amplitude of a batch of scans: ALFF, fALFF (Zang 2007; Zou 2008), band power ratios.

All functions take `x` of shape `(n_scans, n_rois, n_timepoints)` sampled every `tr` seconds
and use one real FFT along time for the whole batch. The spectrum is scipy's
`signal.periodogram(x, fs=1/tr)` with its defaults (mean removed, boxcar window, one-sided power
spectral density), the tests' reference:

- ALFF = mean of `sqrt(P(f))` over `0.01 <= f <= 0.08` Hz;
- fALFF = sum of `sqrt(P(f))` over that band / sum over `0 < f <= min(0.25 Hz, Nyquist)`;
- band ratio = summed power in one band / summed power in another (ICA spectral ratio
  0.01-0.1 Hz vs 0.1-0.25 Hz, the lower band's upper edge excluded).

A band is resolved only when the scan lasts at least one period of its lowest frequency
(`min_timepoints`) and the Nyquist frequency exceeds the band's lower edge; `check_band` raises
`FmriInputError` otherwise.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import FmriInputError

ALFF_BAND = (0.01, 0.08)
FULL_RANGE_MAX = 0.25


def periodogram(x: np.ndarray, tr: float) -> tuple[np.ndarray, np.ndarray]:
    """One-sided power spectral density of `(..., n_t)` -> frequencies `(F,)` (Hz), power `(..., F)`."""
    n_t = x.shape[-1]
    fs = 1.0 / tr
    spectrum = np.fft.rfft(x - x.mean(axis=-1, keepdims=True), axis=-1)
    power = (spectrum.real**2 + spectrum.imag**2) / (fs * n_t)
    last = power.shape[-1] if n_t % 2 else power.shape[-1] - 1
    power[..., 1:last] *= 2
    return np.fft.rfftfreq(n_t, d=tr), power


def min_timepoints(tr: float, band: tuple[float, float] = ALFF_BAND) -> int:
    """Fewest frames resolving `band`: the scan must last one period of its lowest frequency."""
    return math.ceil(1.0 / (band[0] * tr))


def check_band(name: str, n_timepoints: int, tr: float, band: tuple[float, float] = ALFF_BAND) -> None:
    """Raise `FmriInputError` naming the scan when `band` cannot be measured on it."""
    nyquist = 0.5 / tr
    if nyquist <= band[0]:
        raise FmriInputError(
            f"{name}: TR {tr} s gives a Nyquist frequency of {nyquist:.3f} Hz, at or below the "
            f"{band[0]}-{band[1]} Hz band; expected TR < {0.5 / band[0]:.1f} s"
        )
    needed = min_timepoints(tr, band)
    if n_timepoints < needed:
        raise FmriInputError(
            f"{name}: {n_timepoints} frames at TR {tr} s last {n_timepoints * tr:.0f} s; the "
            f"{band[0]}-{band[1]} Hz band needs at least {needed} frames ({1 / band[0]:.0f} s)"
        )


def alff(
    x: np.ndarray, tr: float, band: tuple[float, float] = ALFF_BAND, full_max: float = FULL_RANGE_MAX
) -> tuple[np.ndarray, np.ndarray]:
    """ALFF and fALFF per ROI: `(n, R, n_t)` -> two `(n, R)` arrays (input units, not normalised)."""
    freqs, power = periodogram(x, tr)
    amplitude = np.sqrt(power)
    in_band = (freqs >= band[0]) & (freqs <= band[1])
    full = (freqs > 0) & (freqs <= min(full_max, 0.5 / tr))
    band_sum = amplitude[..., in_band].sum(axis=-1)
    return band_sum / in_band.sum(), band_sum / amplitude[..., full].sum(axis=-1)


def band_ratio(
    x: np.ndarray, tr: float, low: tuple[float, float] = (0.01, 0.1), high: tuple[float, float] = (0.1, 0.25)
) -> np.ndarray:
    """Power in `low` (upper edge excluded) over power in `high` (capped at Nyquist): `(..., n_t)` -> `(...)`."""
    freqs, power = periodogram(x, tr)
    low_mask = (freqs >= low[0]) & (freqs < low[1])
    high_mask = (freqs >= high[0]) & (freqs <= high[1])
    high_power = power[..., high_mask].sum(axis=-1)
    return np.divide(
        power[..., low_mask].sum(axis=-1), high_power, out=np.full_like(high_power, np.nan), where=high_power > 0
    )


__all__ = ["ALFF_BAND", "FULL_RANGE_MAX", "alff", "band_ratio", "check_band", "min_timepoints", "periodogram"]
