"""Functional gradients: diffusion-map embedding of thresholded connectivity, batched over scans.

The reference is BrainSpace `GradientMaps(approach="dm")` with its defaults
(Margulies et al. 2016; Coifman & Lafon 2006), reproduced step by step for a batch
`(n_scans, n_rois, n_rois)`:

1. affinity: keep the top `int(n_rois * (1 - sparsity))` entries of every row (sparsity 0.9),
   then the normalised angle between rows (BrainSpace's default kernel; `kernel=None` uses the
   sparsified matrix, negatives zeroed, symmetrised);
2. anisotropic normalisation `W = D^-a A D^-a` (alpha = 0.5), diffusion operator
   `P = D_W^-1 W`;
3. eigenvectors of `P` from the symmetric conjugate `D_W^-1/2 W D_W^-1/2` (exact: LAPACK's
   `syevr` for the largest `n_components + 1` pairs only, where BrainSpace calls ARPACK per scan),
   divided by the first so that it is all ones;
4. the first (trivial) pair dropped, eigenvalues rescaled `l / (1 - l)` (multi-scale diffusion
   map, diffusion time 0), gradients = eigenvectors times eigenvalues, each signed so that its
   largest-magnitude entry is positive.

Scans are then aligned to a group reference (the gradients of the cohort's mean connectivity,
fitted once) by orthogonal Procrustes rotation (batched SVD), as BrainSpace's `procrustes`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import linalg

from ..errors import FmriInputError
from .connectivity import network_membership

KERNELS = ("normalized_angle", None)


def affinity(fc: np.ndarray, sparsity: float = 0.9, kernel: str | None = "normalized_angle") -> np.ndarray:
    """Affinity of connectivity rows `(n, R, R)` -> `(n, R, R)`, symmetric and non-negative.

    Every row keeps its top `int(R * (1 - sparsity))` entries (the rest set to 0); with
    `kernel="normalized_angle"` (BrainSpace's default) the affinity is `1 - arccos(cos_ij) / pi`
    of the cosine similarity between the sparsified rows; with `kernel=None` it is the sparsified
    matrix itself, negatives zeroed and symmetrised `(A + A^T) / 2`.
    """
    if kernel not in KERNELS:
        raise FmriInputError(f"gradient kernel: expected one of {KERNELS}, found {kernel!r}")
    n_rois = fc.shape[-1]
    keep = int(n_rois * (1 - sparsity))
    if keep <= 0:
        raise FmriInputError(f"sparsity {sparsity} keeps no entry of {n_rois}-ROI rows; lower it")
    top = np.argpartition(fc, n_rois - keep, axis=-1)[..., -keep:]
    sparse = np.zeros_like(fc, dtype=np.float64)
    np.put_along_axis(sparse, top, np.take_along_axis(fc, top, axis=-1), axis=-1)
    if kernel is None:
        sparse = np.maximum(sparse, 0.0)
        return (sparse + np.swapaxes(sparse, -1, -2)) / 2
    unit = sparse / np.linalg.norm(sparse, axis=-1, keepdims=True)
    cosine = unit @ np.swapaxes(unit, -1, -2)
    np.clip(cosine, -1.0, 1.0, out=cosine)
    angle = np.arccos(cosine, out=cosine)
    angle *= -1.0 / np.pi
    angle += 1.0
    return angle


def top_eigenpairs(matrices: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The `k` largest eigenvalues `(n, k)` (descending) and eigenvectors `(n, R, k)` of symmetric `(n, R, R)`.

    LAPACK `syevr` restricted to those `k` pairs, one call per matrix: about half the work of a full
    `eigh` at R = 450.
    """
    n_rois = matrices.shape[-1]
    values = np.empty((matrices.shape[0], k))
    vectors = np.empty((matrices.shape[0], n_rois, k))
    for index, matrix in enumerate(matrices):
        pair_values, pair_vectors = linalg.eigh(matrix, subset_by_index=[n_rois - k, n_rois - 1], driver="evr")
        values[index], vectors[index] = pair_values[::-1], pair_vectors[:, ::-1]
    return values, vectors


def diffusion_map(matrix: np.ndarray, n_components: int = 3, alpha: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Diffusion-map embedding of affinities `(n, R, R)`.

    Returns:
        gradients `(n, R, n_components)` and eigenvalues `(n, n_components)`, largest first.
    """
    degree = matrix.sum(axis=-1)
    if (degree <= 0).any():
        raise FmriInputError("diffusion map: a ROI has no positive affinity (an all-zero row); check the input")
    scale = degree**-alpha
    weights = matrix * scale[..., :, None] * scale[..., None, :]
    root = np.sqrt(weights.sum(axis=-1))
    symmetric = weights / root[..., :, None] / root[..., None, :]
    values, vectors = top_eigenpairs(symmetric, n_components + 1)
    vectors = vectors / root[..., :, None]
    vectors = vectors / vectors[..., :, :1]
    values = values / values[..., :1]
    values, vectors = values[..., 1:], vectors[..., 1:]
    values = values / (1 - values)
    vectors = vectors * values[..., None, :]
    peak = np.take_along_axis(vectors, np.abs(vectors).argmax(axis=-2)[..., None, :], axis=-2)
    return vectors * np.sign(peak), values


def gradients(
    fc: np.ndarray, n_components: int = 3, sparsity: float = 0.9, kernel: str | None = "normalized_angle"
) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of connectivity `(n, R, R)` -> `(n, R, n_components)`, eigenvalues `(n, n_components)`."""
    return diffusion_map(affinity(fc, sparsity, kernel), n_components)


def procrustes_align(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Rotate each `(n, R, k)` source onto `(R, k)` reference: `source @ U V^T`, `U S V^T = svd(source^T ref)`."""
    u, _, vt = np.linalg.svd(np.swapaxes(source, -1, -2) @ reference)
    return source @ (u @ vt)


def gradient_summary(aligned: np.ndarray, labels: Sequence[str]) -> dict[str, np.ndarray]:
    """Range and variance of each aligned gradient and the per-network mean of the first.

    Args:
        aligned: `(n, R, k)` aligned gradients.
        labels: network of each ROI.

    Returns:
        `gradient{g}_range`, `gradient{g}_variance` `(n,)` for g = 1..k, and
        `gradient1_per_network` `(n, K)`.
    """
    _, member = network_membership(labels)
    summary: dict[str, np.ndarray] = {}
    for g in range(aligned.shape[-1]):
        summary[f"gradient{g + 1}_range"] = np.ptp(aligned[..., g], axis=-1)
        summary[f"gradient{g + 1}_variance"] = aligned[..., g].var(axis=-1)
    summary["gradient1_per_network"] = aligned[..., 0] @ member / member.sum(axis=0)
    return summary


__all__ = [
    "KERNELS",
    "affinity",
    "diffusion_map",
    "gradient_summary",
    "gradients",
    "procrustes_align",
    "top_eigenpairs",
]
