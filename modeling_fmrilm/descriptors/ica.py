"""Group temporal ICA with dual regression, and the features of each component's time course.

`GroupICA.fit` runs scikit-learn `FastICA` (seeded) once on the cohort: the z-scored time series of
its scans are concatenated along time `(total frames, n_rois)` (a seeded subset of frames when
they exceed `max_frames`; FastICA treats frames as independent samples), giving temporally
independent sources and a spatial mixing matrix `(n_rois, n_components)`. Components are ordered
by the variance they explain and signed so that their largest loading is positive.

`GroupICA.dual_regression` describes any batch of scans the same way (Beckmann et al. 2009;
Nickerson et al. 2017), batched with `numpy.linalg.pinv`/`solve`:
stage 1, time courses `(n, C, n_t) = pinv(mixing) @ x`; stage 2, scan-specific maps
`(n, C, n_rois)` by regressing `x` on those time courses.

`component_features` gives per component: amplitude (std), variability (std of the
frame-to-frame difference), spectral ratio (power 0.01-0.1 Hz / 0.1-0.25 Hz), lag-1
autocorrelation, outlier rate (fraction of frames with |z| > 3), and functional network
connectivity (FNC: Pearson correlation of each component pair).
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import FastICA

from ..errors import FmriInputError
from .amplitude import band_ratio
from .connectivity import correlation
from .temporal import lag1_autocorrelation

OUTLIER_Z = 3.0


class GroupICA:
    """Group temporal ICA fitted once on a cohort; `mixing` `(n_rois, n_components)`."""

    def __init__(self, n_components: int = 10, seed: int = 0, mixing: np.ndarray | None = None) -> None:
        self.n_components = n_components
        self.seed = seed
        self.mixing = None if mixing is None else np.asarray(mixing, dtype=np.float64)

    def fit(self, frames: np.ndarray, max_iter: int = 1000) -> GroupICA:
        """Fit on concatenated z-scored frames `(total frames, n_rois)`."""
        if frames.shape[0] <= frames.shape[1]:
            raise FmriInputError(
                f"group ICA: expected more frames than ROIs, found {frames.shape[0]} frames x {frames.shape[1]} ROIs"
            )
        ica = FastICA(
            n_components=self.n_components, random_state=self.seed, whiten="unit-variance", max_iter=max_iter, tol=1e-4
        )
        ica.fit(frames)
        mixing = ica.mixing_
        mixing = mixing[:, np.argsort(-np.linalg.norm(mixing, axis=0), kind="stable")]
        peak = mixing[np.abs(mixing).argmax(axis=0), np.arange(mixing.shape[1])]
        self.mixing = mixing * np.sign(peak)
        return self

    def dual_regression(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Time courses `(n, C, n_t)` and maps `(n, C, n_rois)` of z-scored scans `(n, n_rois, n_t)`."""
        if self.mixing is None:
            raise FmriInputError("GroupICA: not fitted; call fit() on the cohort first")
        if x.shape[1] != self.mixing.shape[0]:
            raise FmriInputError(
                f"dual regression: expected {self.mixing.shape[0]} ROIs (the group ICA), found shape {x.shape}"
            )
        timecourses = np.linalg.pinv(self.mixing) @ x
        gram = timecourses @ timecourses.transpose(0, 2, 1)
        maps = np.linalg.solve(gram, timecourses @ x.transpose(0, 2, 1))
        return timecourses, maps


def component_features(timecourses: np.ndarray, tr: float) -> dict[str, np.ndarray]:
    """Features of component time courses `(n, C, n_t)` sampled every `tr` s.

    Returns `(n, C)` arrays `amplitude`, `variability`, `spectral_ratio`, `autocorrelation`,
    `outlier_rate`, and `fnc` `(n, C (C - 1) / 2)` (upper triangle, row-major).
    """
    std = timecourses.std(axis=-1)
    z = (timecourses - timecourses.mean(axis=-1, keepdims=True)) / std[..., None]
    rows, cols = np.triu_indices(timecourses.shape[1], 1)
    return {
        "amplitude": std,
        "variability": np.diff(timecourses, axis=-1).std(axis=-1),
        "spectral_ratio": band_ratio(timecourses, tr),
        "autocorrelation": lag1_autocorrelation(timecourses),
        "outlier_rate": (np.abs(z) > OUTLIER_Z).mean(axis=-1),
        "fnc": correlation(timecourses)[:, rows, cols],
    }


__all__ = ["OUTLIER_Z", "GroupICA", "component_features"]
