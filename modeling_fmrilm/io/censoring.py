"""Censored frames (a `sample_mask`): recorded, and never handed on as a series with hidden gaps.

A sample mask keeps some acquired frames and drops (censors) the others, e.g. fMRIPrep's
non-steady-state volumes or motion scrubbing. Frames dropped at the start or the end only shorten
the series, which stays evenly sampled. Frames dropped inside it would leave gaps that resampling,
spectra, DFA and autocorrelation cannot see, so a reader either fills them by interpolation
(`censoring="interpolate"`: a cubic spline through the kept frames, as Power et al. 2014 interpolate
censored volumes and as `nilearn.signal.clean` does before filtering) or rejects the scan
(`censoring="reject"`, an `FmriInputError` naming it and the censored fraction). Either way the scan
record keeps the mask (`FmriScan.censored`).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import numpy as np

from ..errors import FmriInputError

Censoring = Literal["reject", "interpolate"]
CENSORING = get_args(Censoring)


def kept_frames(sample_mask: Any, n_frames: int, name: str) -> np.ndarray:
    """The kept frame indices of `sample_mask`, checked: increasing indices or a boolean mask.

    Args:
        sample_mask: indices of the frames to keep (nilearn's convention) or a boolean mask of
            `n_frames` entries (True = keep).
        n_frames: acquired frames.
        name: how errors name the scan.

    Raises:
        FmriInputError: a boolean mask of another length, indices outside `[0, n_frames)`, indices
            not strictly increasing, fewer than two kept frames.
    """
    mask = np.asarray(sample_mask)
    if mask.dtype == bool:
        if mask.shape != (n_frames,):
            raise FmriInputError(
                f"{name}: expected a boolean sample_mask of {n_frames} entries (one per frame), found shape {mask.shape}"
            )
        kept = np.flatnonzero(mask)
    elif mask.ndim == 1 and np.issubdtype(mask.dtype, np.integer):
        kept = mask.astype(np.int64)
        outside = kept[(kept < 0) | (kept >= n_frames)]
        if outside.size:
            raise FmriInputError(
                f"{name}: sample_mask indices {outside[:10].tolist()} are outside the {n_frames} frames [0, {n_frames})"
            )
        if np.any(np.diff(kept) <= 0):
            raise FmriInputError(
                f"{name}: expected strictly increasing sample_mask indices, found repeats or disorder"
            )
    else:
        raise FmriInputError(
            f"{name}: expected sample_mask as 1-D integer indices or a boolean mask, found dtype {mask.dtype} "
            f"shape {mask.shape}"
        )
    if kept.size < 2:
        raise FmriInputError(f"{name}: the sample mask keeps {kept.size} of {n_frames} frames; expected at least 2")
    return kept


def censored_mask(kept: np.ndarray, n_frames: int) -> np.ndarray:
    """Boolean `(n_frames,)`: True for each frame that `kept` leaves out."""
    censored = np.ones(n_frames, dtype=bool)
    censored[kept] = False
    return censored


def check_gaps(kept: np.ndarray, n_frames: int, censoring: str, name: str) -> None:
    """Raise for censored frames inside the series unless `censoring="interpolate"` (one of `CENSORING`)."""
    inside = np.flatnonzero(censored_mask(kept, n_frames)[kept[0] : kept[-1] + 1]) + kept[0]
    if inside.size and censoring == "reject":
        n_censored = n_frames - kept.size
        raise FmriInputError(
            f"{name}: {n_censored} of {n_frames} frames ({n_censored / n_frames:.1%}) censored by the sample mask, "
            f"{inside.size} inside the series (frames {inside[:10].tolist()}{'…' if inside.size > 10 else ''}): "
            "dropping them would leave gaps that resampling and temporal measures cannot see; pass "
            "censoring='interpolate' to fill them by cubic spline (Power et al. 2014), or leave the scan out"
        )


def fill_censored(signals: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Kept frames `(n_rois, n_kept)` -> the contiguous series from the first to the last kept frame.

    Censored frames inside that span get the value of a cubic spline (not-a-knot, as
    `nilearn.signal.clean` interpolates) through the kept frames of each ROI; kept frames are
    unchanged. Nothing is extrapolated past the first or last kept frame.
    """
    span = np.arange(kept[0], kept[-1] + 1)
    if span.size == kept.size:
        return signals
    from scipy.interpolate import CubicSpline

    filled = CubicSpline(kept, signals, axis=1)(span).astype(signals.dtype)
    filled[:, kept - kept[0]] = signals
    return filled


__all__ = ["CENSORING", "Censoring", "censored_mask", "check_gaps", "fill_censored", "kept_frames"]
