"""Functional connectivity of a batch of scans: Pearson, partial correlation, tangent, network pairs.

Every function takes a batch `x` of shape `(n_scans, n_rois, n_timepoints)` (ROI-major, the
package's data contract) and works on all scans at once with batched linear algebra
(`numpy.matmul`, `numpy.linalg.eigh/inv`) instead of a per-scan loop. The reference is nilearn's
`ConnectivityMeasure`, which is time-major and fits one scan at a time; the tests check these
functions against it number by number:

- `correlation` = `ConnectivityMeasure(kind="correlation", cov_estimator=EmpiricalCovariance())`
  (Pearson's r);
- `partial_correlation` and `TangentSpace` = `ConnectivityMeasure(kind="partial correlation" |
  "tangent")` with its default Ledoit-Wolf covariance (sklearn `LedoitWolf`, whose shrinkage is
  computed here in closed form for the whole batch);
- `TangentSpace.fit` is the geometric (Riemannian) mean of the cohort's covariances by gradient
  descent on the manifold of SPD matrices (Fletcher & Joshi 2007, Algorithm 3, as nilearn does),
  fitted once on the cohort and stored in the cohort reference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, get_args

import numpy as np
from scipy.linalg import lapack

from ..errors import FmriInputError

CovarianceEstimator = Literal["empirical", "ledoit_wolf"]
ESTIMATORS = get_args(CovarianceEstimator)


def standardize(x: np.ndarray) -> np.ndarray:
    """Z-score every ROI over time: `(n_scans, n_rois, n_t)` -> same shape, float64, ddof 0."""
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(axis=-1, keepdims=True)
    return centred / centred.std(axis=-1, keepdims=True)


def covariance(x: np.ndarray, estimator: str = "ledoit_wolf", empirical: np.ndarray | None = None) -> np.ndarray:
    """Covariance of each scan `(n_scans, n_rois, n_t)` -> `(n_scans, n_rois, n_rois)`.

    `"empirical"`: the maximum-likelihood estimate (divides by n_t), as sklearn
    `EmpiricalCovariance`. `"ledoit_wolf"`: shrunk towards `mu * I` with the Ledoit-Wolf (2004)
    shrinkage, as sklearn `LedoitWolf` (the nilearn default). `empirical`: the empirical
    covariance of `x` when the caller has it already (it is then not computed again).
    """
    if estimator not in ESTIMATORS:
        raise FmriInputError(f"estimator: expected one of {ESTIMATORS}, found {estimator!r}")
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(axis=-1, keepdims=True)
    cov = centred @ centred.transpose(0, 2, 1) / x.shape[-1] if empirical is None else empirical
    return cov if estimator == "empirical" else ledoit_wolf_shrinkage(cov, centred)


def ledoit_wolf_shrinkage(cov: np.ndarray, centred: np.ndarray) -> np.ndarray:
    """sklearn `LedoitWolf`'s estimate from the empirical covariance `(n, R, R)` of the centred data `(n, R, n_t)`.

    The shrinkage's `beta` term `sum_ij sum_t x_it^2 x_jt^2` is computed as `sum_t (sum_i x_it^2)^2`
    (the same sum, O(R n_t) instead of a matrix product).
    """
    n_rois, n_t = centred.shape[1:]
    mu = np.trace(cov, axis1=1, axis2=2) / n_rois
    beta_sum = ((centred**2).sum(axis=1) ** 2).sum(axis=-1)
    delta_sum = (cov**2).sum(axis=(1, 2))
    beta = (beta_sum / n_t - delta_sum) / (n_rois * n_t)
    delta = (delta_sum - 2 * mu * mu * n_rois + n_rois * mu**2) / n_rois
    beta = np.minimum(beta, delta)
    shrinkage = np.divide(beta, delta, out=np.zeros_like(beta), where=beta != 0)
    eye = np.eye(n_rois)
    return (1 - shrinkage)[:, None, None] * cov + (shrinkage * mu)[:, None, None] * eye


def covariance_to_correlation(cov: np.ndarray) -> np.ndarray:
    """`(..., n, n)` covariance -> correlation (unit diagonal)."""
    scale = 1.0 / np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
    return cov * scale[..., :, None] * scale[..., None, :]


def correlation(x: np.ndarray) -> np.ndarray:
    """Pearson correlation of each scan: `(n_scans, n_rois, n_t)` -> `(n_scans, n_rois, n_rois)`."""
    return covariance_to_correlation(covariance(x, "empirical"))


def precision(cov: np.ndarray) -> np.ndarray:
    """Inverse of symmetric positive definite matrices `(n, R, R)` by Cholesky (LAPACK potrf/potri),
    a third of the work of a general inverse.

    Raises:
        FmriInputError: a matrix that is not positive definite.
    """
    out = np.empty_like(cov, dtype=np.float64)
    lower = np.tril_indices(cov.shape[-1], -1)
    for index, matrix in enumerate(cov):
        factor, info = lapack.dpotrf(matrix, lower=False)
        if info == 0:
            inverse, info = lapack.dpotri(factor, lower=False)
        if info != 0:
            raise FmriInputError(
                f"precision: covariance {index} of the batch is not positive definite (LAPACK info {info})"
            )
        inverse[lower] = inverse.T[lower]
        out[index] = inverse
    return out


def partial_correlation(x: np.ndarray, estimator: str = "ledoit_wolf") -> np.ndarray:
    """Partial correlation `-P_ij / sqrt(P_ii P_jj)` from the precision P; unit diagonal.

    `(n_scans, n_rois, n_t)` -> `(n_scans, n_rois, n_rois)`.
    """
    partial = -covariance_to_correlation(precision(covariance(x, estimator)))
    diagonal = np.arange(partial.shape[-1])
    partial[:, diagonal, diagonal] = 1.0
    return partial


def map_eigenvalues(function: Callable[[np.ndarray], np.ndarray], matrices: np.ndarray) -> np.ndarray:
    """Apply `function` to the eigenvalues of symmetric matrices `(..., n, n)` (batched `eigh`)."""
    values, vectors = np.linalg.eigh(matrices)
    return (vectors * function(values)[..., None, :]) @ np.swapaxes(vectors, -1, -2)


class TangentSpace:
    """Tangent-space connectivity (Varoquaux et al. 2010): `logm(M^-1/2 C M^-1/2)`, as an estimator
    in nilearn's manner (parameters in the constructor, fitted state with a trailing underscore).

    `fit` computes `M`, the geometric mean of the cohort's covariances, into `mean_` and its
    whitening `M^-1/2` into `whitening_` (once); `from_mean` restores a fitted one from a stored
    mean. `transform` maps any batch of covariances `(n_scans, n, n)` to tangent vectors of the
    same shape, `distance` to their norms.

    Args:
        max_iter: gradient-descent steps of the geometric mean at most (30, as nilearn's fit).
        tol: stop once the gradient norm per entry falls below it (nilearn's criterion).
        chunk: matrices per step of the work, so its temporaries do not grow with the cohort.
    """

    def __init__(self, max_iter: int = 30, tol: float = 1e-7, chunk: int = 16) -> None:
        self.max_iter = max_iter
        self.tol = tol
        self.chunk = chunk

    @classmethod
    def from_mean(cls, mean: np.ndarray, **parameters: Any) -> TangentSpace:
        """A fitted estimator of a stored geometric mean `(n, n)` (a cohort reference's)."""
        return cls(**parameters)._fitted(np.asarray(mean, dtype=np.float64))

    def _fitted(self, mean: np.ndarray) -> TangentSpace:
        self.mean_ = mean
        self.whitening_ = map_eigenvalues(lambda v: 1.0 / np.sqrt(v), mean)
        return self

    def fit(self, covariances: np.ndarray | Sequence[np.ndarray]) -> TangentSpace:
        """Geometric mean of SPD matrices by Riemannian gradient descent.

        `covariances`: one `(n_scans, n, n)` array or a list of such batches (not concatenated,
        so a large cohort needs no second copy). Starts at the arithmetic mean; each step moves
        along the geodesic by the mean of the whitened logarithms, halving the step whenever the
        gradient norm grows.
        """
        batches = [np.asarray(covariances, dtype=np.float64)] if isinstance(covariances, np.ndarray) else covariances
        chunk = self.chunk
        pieces = [batch[start : start + chunk] for batch in batches for start in range(0, len(batch), chunk)]
        n_scans = sum(len(piece) for piece in pieces)
        mean = sum(piece.sum(axis=0) for piece in pieces) / n_scans
        best_norm, step = np.inf, 1.0
        for _ in range(self.max_iter):
            values, vectors = np.linalg.eigh(mean)
            inv_sqrt = (vectors / np.sqrt(values)) @ vectors.T
            sqrt = (vectors * np.sqrt(values)) @ vectors.T
            logs_mean = (
                sum(map_eigenvalues(np.log, inv_sqrt @ piece @ inv_sqrt).sum(axis=0) for piece in pieces) / n_scans
            )
            norm = np.linalg.norm(logs_mean)
            mean = sqrt @ map_eigenvalues(lambda v, step=step: np.exp(v * step), logs_mean) @ sqrt
            if norm < best_norm:
                best_norm = norm
            elif norm > best_norm:
                step /= 2.0
                norm = best_norm
            if norm / mean.size < self.tol:
                break
        return self._fitted(mean)

    def _checked_whitening(self, covariances: np.ndarray) -> np.ndarray:
        whitening = getattr(self, "whitening_", None)
        if whitening is None:
            raise FmriInputError("TangentSpace: not fitted; call fit(covariances) on the cohort first")
        if covariances.shape[-1] != whitening.shape[0]:
            raise FmriInputError(
                f"tangent transform: expected {whitening.shape[0]} ROIs (the fitted mean), "
                f"found covariances of shape {covariances.shape}"
            )
        return whitening

    def transform(self, covariances: np.ndarray) -> np.ndarray:
        """`(n_scans, n, n)` covariances -> tangent vectors (symmetric matrices), same shape."""
        whitening = self._checked_whitening(covariances)
        return map_eigenvalues(np.log, whitening @ covariances @ whitening)

    def distance(self, covariances: np.ndarray) -> np.ndarray:
        """Frobenius norm of each tangent vector, `(n_scans, n, n)` -> `(n_scans,)`: the affine-invariant
        Riemannian distance to the mean, `sqrt(sum log(l)^2)` over the eigenvalues `l` of
        `M^-1/2 C M^-1/2` (eigenvalues only: no eigenvectors, no matrix logarithm)."""
        whitening = self._checked_whitening(covariances)
        return np.sqrt((np.log(np.linalg.eigvalsh(whitening @ covariances @ whitening)) ** 2).sum(axis=-1))


def network_membership(labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Network names (order of first appearance) and one-hot membership `(n_rois, n_networks)`."""
    names = list(dict.fromkeys(labels))
    index = np.array([names.index(label) for label in labels])
    return names, (index[:, None] == np.arange(len(names))[None, :]).astype(np.float64)


def network_pair_names(networks: Sequence[str]) -> list[str]:
    """`"A-B"` for every pair of networks with A <= B in order (within-network pairs included)."""
    rows, cols = np.triu_indices(len(networks))
    return [f"{networks[i]}-{networks[j]}" for i, j in zip(rows, cols, strict=True)]


def network_pair_fc(fc: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """Mean connectivity between and within networks.

    Args:
        fc: `(n_scans, n_rois, n_rois)` connectivity.
        labels: one network name per ROI (`n_rois`).

    Returns:
        `(n_scans, n_pairs)` with `n_pairs = K(K+1)/2` in the order of `network_pair_names`:
        the mean of `fc[i, j]` over ROI i in A and j in B, the diagonal (i == j) excluded within
        a network. A network with a single ROI has no within-network pair: NaN there.
    """
    if fc.shape[-1] != len(labels):
        raise FmriInputError(
            f"network labelling: expected one label per ROI ({fc.shape[-1]} ROIs), found {len(labels)} labels"
        )
    _, member = network_membership(labels)
    off_diagonal = fc - np.eye(fc.shape[-1]) * np.diagonal(fc, axis1=1, axis2=2)[:, :, None]
    sums = member.T @ off_diagonal @ member
    sizes = member.sum(axis=0)
    counts = np.outer(sizes, sizes) - np.diag(sizes)
    rows, cols = np.triu_indices(member.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums[:, rows, cols] / counts[rows, cols]


__all__ = [
    "ESTIMATORS",
    "CovarianceEstimator",
    "TangentSpace",
    "correlation",
    "covariance",
    "covariance_to_correlation",
    "ledoit_wolf_shrinkage",
    "map_eigenvalues",
    "network_membership",
    "network_pair_fc",
    "network_pair_names",
    "partial_correlation",
    "precision",
    "standardize",
]
