"""Figures of one scan (matplotlib): the windows a model reads and the functional connectivity matrix.

Built on `matplotlib.figure.Figure`, not `pyplot`, so that no global figure state is shared between
the requests of a server (`fmrilm app`) and no display backend is needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from .descriptors.connectivity import correlation

MAX_WINDOWS_SHOWN = 4


def windows_figure(fmri_values: np.ndarray, windows_read: int, target_tr: float, title: str = "") -> Figure:
    """Heat maps (ROI × frame) of the first windows of a scan after preprocessing.

    Args:
        fmri_values: `(n_windows, n_rois, window_length)`, as the feature extractor returns them.
        windows_read: how many of the first windows the model reads (`windows_per_scan`); their
            titles say so.
        target_tr: seconds per frame after resampling (the time axis is labelled in seconds).
        title: the figure's title.
    """
    shown = fmri_values[:MAX_WINDOWS_SHOWN]
    figure = Figure(figsize=(3.2 * len(shown) + 1.0, 3.4), layout="constrained")
    axes = figure.subplots(1, len(shown), squeeze=False)[0]
    limit = float(np.percentile(np.abs(shown), 99)) or 1.0
    length = shown.shape[2]
    for index, (axis, window) in enumerate(zip(axes, shown)):
        image = axis.imshow(
            window, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest",
            extent=(0.0, length * target_tr, window.shape[0] - 0.5, -0.5),
        )  # fmt: skip
        axis.set_title(f"window {index + 1}" + (" (read by the model)" if index < windows_read else ""), fontsize=9)
        axis.set_xlabel("time in window (s)")
        if index == 0:
            axis.set_ylabel("ROI")
    figure.colorbar(image, ax=list(axes), label="robust z", shrink=0.9)
    figure.suptitle(title or f"{len(fmri_values)} window(s) of {length} frames at TR {target_tr:g} s", fontsize=10)
    return figure


def connectivity_figure(data: np.ndarray, roi_names: Sequence[str] | None = None, title: str = "") -> Figure:
    """The Pearson correlation matrix of a scan `(n_rois, n_timepoints)`, ROI names on the axes
    when there are at most 40 of them."""
    fc = correlation(np.asarray(data, dtype=np.float64)[None])[0]
    figure = Figure(figsize=(5.2, 4.4), layout="constrained")
    axis = figure.subplots()
    image = axis.imshow(fc, cmap="RdBu_r", vmin=-1.0, vmax=1.0, interpolation="nearest")
    if roi_names is not None and len(roi_names) <= 40:
        axis.set_xticks(range(len(roi_names)), roi_names, rotation=90, fontsize=6)
        axis.set_yticks(range(len(roi_names)), roi_names, fontsize=6)
    else:
        axis.set_xlabel("ROI")
        axis.set_ylabel("ROI")
    figure.colorbar(image, ax=axis, label="Pearson r")
    axis.set_title(title or f"functional connectivity ({fc.shape[0]} ROIs)", fontsize=10)
    return figure


__all__ = ["connectivity_figure", "windows_figure"]
