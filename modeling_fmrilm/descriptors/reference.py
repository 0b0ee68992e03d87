"""The descriptor pipeline and the cohort reference it is measured against.

`CohortReference` holds what is fitted once on a cohort (its training split): the tangent-space
mean, the gradient reference (gradients of the mean Pearson connectivity), the group-ICA mixing
matrix, and the mean/SD of every scalar descriptor and network pair per dataset (and pooled).
It is saved beside the corpus as `cohort_reference.json` (settings, names, norms) +
`cohort_reference.npz` (arrays, loaded with `allow_pickle=False`) and reused by `describe` to
place new scans on the same scale.

`compute_features(x, tr, reference)` measures a batch `(n_scans, n_rois, n_t)` of scans that share
length and TR; scans of different shapes are grouped by the caller (`corpus.py`). Every series is
first resampled to `settings.target_tr` (default 2.0 s, the model's TR) with the feature
extractor's `resample`, so the descriptors see what the model sees and scans of a multi-site
cohort (TR 0.72 s and 2.0 s) are measured on one time grid: their text does not encode the site's
TR.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import write_atomically, write_text_atomically
from ..errors import FmriInputError
from ..feature_extraction_fmrilm import resample, validate_fmri
from . import amplitude, connectivity, gradients, graph, ica, temporal

REFERENCE_VERSION = "fmrilm-descriptors/2"  # 2: features at the target TR, compiled graph code
POOLED = "__all__"

# The 23 described scalars, by domain, in text order.
DOMAINS: dict[str, list[str]] = {
    "connectivity": ["fc_mean", "fc_within", "fc_between"],
    "gradients": [f"gradient{g}_{s}" for g in (1, 2, 3) for s in ("range", "variance")],
    "graph": ["global_efficiency", "local_efficiency", "clustering", "modularity", "strength", "participation"],
    "dynamics": [
        "ica_amplitude",
        "ica_variability",
        "ica_spectral_ratio",
        "ica_autocorrelation",
        "ica_outlier_rate",
        "ica_fnc",
        "falff",
        "hurst",
    ],
}
DESCRIBED = [name for names in DOMAINS.values() for name in names]
# Further scalars kept (raw and z) in every record but not phrased.
EXTRA = [
    "global_efficiency_binary",
    "clustering_binary",
    "modularity_binary",
    "partial_mean_abs",
    "tangent_deviation",
    "autocorrelation",
    "tsnr",
]
SCALARS = DESCRIBED + EXTRA
# Vector features kept in every record: name -> what indexes it.
VECTORS = {
    "network_pair_fc": "network pair",
    "gradient1_per_network": "network",
    "participation_per_network": "network",
    "ica_fnc_pairs": "component pair",
    "alff": "ROI",
    "falff_per_roi": "ROI",
    "hurst_per_roi": "ROI",
    "tsnr_per_roi": "ROI",
}


@dataclass(frozen=True)
class DescriptorSettings:
    """Every choice that shapes the descriptors (recorded in the reference and the dataset card)."""

    target_tr: float = 2.0
    density: float = 0.1
    gradient_sparsity: float = 0.9
    gradient_kernel: str = "normalized_angle"
    n_gradients: int = 3
    n_ica_components: int = 10
    alff_band: tuple[float, float] = amplitude.ALFF_BAND
    full_range_max: float = amplitude.FULL_RANGE_MAX
    covariance_estimator: connectivity.CovarianceEstimator = "ledoit_wolf"
    seed: int = 0
    max_fit_scans: int = 200
    max_fit_frames: int = 60000
    min_norm_scans: int = 3

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> DescriptorSettings:
        values = dict(values)
        values["alff_band"] = tuple(values["alff_band"])
        return cls(**values)


@dataclass
class CohortReference:
    """What one cohort's descriptors are measured against (see module docstring)."""

    settings: DescriptorSettings
    roi_labels: list[str]
    atlas: str
    tangent_mean: np.ndarray
    gradient_reference: np.ndarray
    ica_mixing: np.ndarray
    norms: dict[str, dict[str, dict[str, list[float] | float]]] = field(default_factory=dict)
    version: str = REFERENCE_VERSION

    @property
    def networks(self) -> list[str]:
        return connectivity.network_membership(self.roi_labels)[0]

    @property
    def network_pairs(self) -> list[str]:
        return connectivity.network_pair_names(self.networks)

    @property
    def n_rois(self) -> int:
        return len(self.roi_labels)

    def save(self, folder: str | Path, stem: str = "cohort_reference") -> None:
        """Write `<stem>.npz`, then `<stem>.json` (which `load` reads first), each atomically."""
        folder = Path(folder)
        arrays = {
            "tangent_mean": self.tangent_mean,
            "gradient_reference": self.gradient_reference,
            "ica_mixing": self.ica_mixing,
        }
        write_atomically(folder / f"{stem}.npz", lambda handle: np.savez(handle, **arrays))
        meta = {
            "version": self.version,
            "atlas": self.atlas,
            "roi_labels": self.roi_labels,
            "networks": self.networks,
            "network_pairs": self.network_pairs,
            "settings": self.settings.to_dict(),
            "scalars": SCALARS,
            "described": DOMAINS,
            "norms": self.norms,
            "arrays": f"{stem}.npz",
        }
        write_text_atomically(folder / f"{stem}.json", json.dumps(meta, indent=1))

    @classmethod
    def load(cls, folder: str | Path, stem: str = "cohort_reference") -> CohortReference:
        """Read a reference written by `save`; refuses another version."""
        folder = Path(folder)
        path = folder / f"{stem}.json"
        if not path.is_file():
            raise FmriInputError(f"{path}: no cohort reference there (expected {stem}.json + {stem}.npz)")
        meta = json.loads(path.read_text())
        if meta.get("version") != REFERENCE_VERSION:
            raise FmriInputError(
                f"{path}: expected reference version {REFERENCE_VERSION}, found {meta.get('version')!r}"
            )
        with np.load(folder / meta["arrays"], allow_pickle=False) as arrays:
            return cls(
                settings=DescriptorSettings.from_dict(meta["settings"]),
                roi_labels=meta["roi_labels"],
                atlas=meta["atlas"],
                tangent_mean=arrays["tangent_mean"],
                gradient_reference=arrays["gradient_reference"],
                ica_mixing=arrays["ica_mixing"],
                norms=meta["norms"],
            )


def at_target_tr(x: np.ndarray, tr: float, settings: DescriptorSettings) -> np.ndarray:
    """`(..., n_t)` sampled every `tr` s, resampled to `settings.target_tr`, as float64."""
    return np.asarray(resample(np.asarray(x, dtype=np.float64), float(tr), settings.target_tr), dtype=np.float64)


def target_length(n_timepoints: int, tr: float, settings: DescriptorSettings) -> int:
    """Frames of a scan of `n_timepoints` every `tr` s once resampled to the target TR."""
    return at_target_tr(np.zeros((1, n_timepoints)), tr, settings).shape[-1]


def validate_scan(data: np.ndarray, tr: float, name: str, n_rois: int, settings: DescriptorSettings) -> np.ndarray:
    """Check one scan for the descriptors: finite, no constant ROI, ROI count, and, once resampled
    to the target TR, long enough for the ALFF band and DFA.

    Raises `FmriInputError` naming the scan. Returns float32 `(n_rois, n_t)` (at the scan's TR).
    """
    array = validate_fmri(data, name, num_rois=n_rois, tr=tr, require_tr=True)
    n_target = target_length(array.shape[1], tr, settings)
    amplitude.check_band(f"{name} (at TR {settings.target_tr} s)", n_target, settings.target_tr, settings.alff_band)
    try:
        temporal.dfa_scales(n_target)
    except FmriInputError as error:
        raise FmriInputError(f"{name} (at TR {settings.target_tr} s): {error}") from None
    return array


def release_freed_memory() -> None:
    """Hand the memory of freed temporaries back to the operating system (glibc `malloc_trim`).

    After large arrays are freed glibc raises its mmap threshold, so later arrays of that size come
    from the heap, whose freed pages stay resident: at 450 ROIs the reference fit's per-batch
    covariances left ~400 MB resident under the group ICA's SVD (peak 1.76 GB; 1.38 GB trimmed).
    A no-op where the C library is not glibc.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class FrameSelection:
    """The frames the group ICA fits on, gathered while the batches stream.

    Of `total` frames (all fitting scans at the target TR, in batch order) it keeps all, or beyond
    `size` the seeded subset `sort(default_rng(seed).choice(total, size, replace=False))`: the
    subset is drawn up front, so only the chosen rows are ever copied, into one buffer of at most
    `size` rows.
    """

    def __init__(self, total: int, size: int, seed: int) -> None:
        self.total = total
        self.chosen = (
            np.sort(np.random.default_rng(seed).choice(total, size, replace=False))
            if total > size
            else np.arange(total)
        )
        self.rows: np.ndarray | None = None
        self.seen = 0

    def add(self, rows: np.ndarray) -> None:
        """Take the chosen rows among the next `len(rows)` frames."""
        if self.rows is None:
            self.rows = np.empty((len(self.chosen), rows.shape[1]), dtype=rows.dtype)
        low, high = np.searchsorted(self.chosen, [self.seen, self.seen + len(rows)])
        self.rows[low:high] = rows[self.chosen[low:high] - self.seen]
        self.seen += len(rows)

    @property
    def frames(self) -> np.ndarray:
        if self.seen != self.total or self.rows is None:
            raise FmriInputError(
                f"cohort reference: expected {self.total} frames to fit the ICA on, found {self.seen}"
            )
        return self.rows


def fit_structure(
    batches: Iterable[tuple[np.ndarray, float]],
    roi_labels: Sequence[str],
    atlas: str,
    settings: DescriptorSettings,
    n_frames: int | None = None,
) -> CohortReference:
    """Fit the tangent mean, gradient reference and group ICA on batches `(n, n_rois, n_t)` + their TR.

    Each batch is resampled to the target TR first. The caller passes at most
    `settings.max_fit_scans` scans (all of a small cohort). The ICA fits on all their frames, or,
    beyond `settings.max_fit_frames`, on a seeded subset of that many (`FrameSelection`).
    `n_frames`, the batches' total frames at the target TR, lets the batches stream (the corpus
    passes it); without it they are held first to count them. The covariances are kept per batch,
    never concatenated.
    """
    if n_frames is None:
        batches = list(batches)
        n_frames = sum(len(batch) * target_length(batch.shape[-1], tr, settings) for batch, tr in batches)
    covariances, fc_sum, n_scans = [], 0.0, 0
    frames = FrameSelection(n_frames, settings.max_fit_frames, settings.seed)
    for batch, tr in batches:
        batch = at_target_tr(batch, tr, settings)
        z = connectivity.standardize(batch)
        fc = connectivity.covariance(z, "empirical")
        covariances.append(connectivity.covariance(z, settings.covariance_estimator, empirical=fc))
        fc_sum = fc_sum + fc.sum(axis=0)
        frames.add(z.transpose(0, 2, 1).reshape(-1, batch.shape[1]))
        n_scans += batch.shape[0]
    if n_scans < 2:
        raise FmriInputError(f"cohort reference: expected at least 2 scans to fit on, found {n_scans}")
    tangent = connectivity.TangentSpace().fit(covariances)
    del covariances
    release_freed_memory()  # before the ICA's SVD, the step with the largest temporaries
    reference_gradients, _ = gradients.gradients(
        (fc_sum / n_scans)[None], settings.n_gradients, settings.gradient_sparsity, settings.gradient_kernel
    )
    group_ica = ica.GroupICA(settings.n_ica_components, settings.seed).fit(frames.frames)
    return CohortReference(
        settings=settings,
        roi_labels=list(roi_labels),
        atlas=atlas,
        tangent_mean=tangent.mean_,
        gradient_reference=reference_gradients[0],
        ica_mixing=group_ica.mixing,
    )


def compute_features(x: np.ndarray, tr: float, reference: CohortReference) -> dict[str, np.ndarray]:
    """Every descriptor of a batch `(n, n_rois, n_t)` of scans sharing length and TR.

    The series are resampled from `tr` to the reference's target TR first (module docstring).

    Returns `(n,)` arrays for each name in `SCALARS` and `(n, m)` arrays for each in `VECTORS`,
    and `graph_components` `(n,)` (connected components of the thresholded graph).
    """
    settings, labels = reference.settings, reference.roi_labels
    if x.shape[1] != reference.n_rois:
        raise FmriInputError(
            f"descriptors: expected {reference.n_rois} ROIs (the reference), found batch shape {x.shape}"
        )
    x = at_target_tr(x, tr, settings)
    tr = settings.target_tr
    z = connectivity.standardize(x)
    fc = connectivity.covariance(z, "empirical")  # Pearson r: every row of z has unit variance
    covariance = connectivity.covariance(z, settings.covariance_estimator, empirical=fc)
    off = ~np.eye(x.shape[1], dtype=bool)
    _, member = connectivity.network_membership(labels)
    same_network = (member @ member.T > 0) & off
    partial = connectivity.covariance_to_correlation(connectivity.precision(covariance))
    features: dict[str, np.ndarray] = {
        "fc_mean": fc[:, off].mean(axis=1),
        "fc_within": fc[:, same_network].mean(axis=1),
        "fc_between": fc[:, off & ~same_network].mean(axis=1),
        "network_pair_fc": connectivity.network_pair_fc(fc, labels),
        "partial_mean_abs": np.abs(partial[:, off]).mean(axis=1),
        "tangent_deviation": connectivity.TangentSpace.from_mean(reference.tangent_mean).distance(covariance),
    }
    grads, _ = gradients.gradients(fc, settings.n_gradients, settings.gradient_sparsity, settings.gradient_kernel)
    features.update(
        gradients.gradient_summary(gradients.procrustes_align(grads, reference.gradient_reference), labels)
    )
    features.update(graph.graph_metrics(fc, labels, settings.density, settings.seed))
    timecourses, _ = ica.GroupICA(mixing=reference.ica_mixing).dual_regression(z)
    components = ica.component_features(timecourses, tr)
    for name in ("amplitude", "variability", "spectral_ratio", "autocorrelation", "outlier_rate"):
        features[f"ica_{name}"] = components[name].mean(axis=1)
    features["ica_fnc"] = np.abs(components["fnc"]).mean(axis=1)
    features["ica_fnc_pairs"] = components["fnc"]
    alff, falff = amplitude.alff(x, tr, settings.alff_band, settings.full_range_max)
    hurst = temporal.hurst_dfa(z)
    tsnr = temporal.tsnr(x)
    features.update(
        alff=alff,
        falff=falff.mean(axis=1),
        falff_per_roi=falff,
        hurst=hurst.mean(axis=1),
        hurst_per_roi=hurst,
        autocorrelation=temporal.lag1_autocorrelation(x).mean(axis=1),
        tsnr=tsnr.mean(axis=1),
        tsnr_per_roi=tsnr,
    )
    return features


NORMED = [*SCALARS, "network_pair_fc"]


class CohortNorms:
    """Mean and SD (ddof 1) of every scalar and network pair, per dataset and pooled, streamed.

    `add` takes the features of any number of training scans at a time; the running count, mean
    and sum of squared deviations of each batch are combined with Chan et al.'s (1979) pairwise
    update, so memory does not grow with the cohort. NaN entries (a within-network pair of a
    one-ROI network) are left out of their element's statistics.
    """

    def __init__(self) -> None:
        self.groups: dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        self.n_scans: dict[str, int] = {}

    def add(self, features: dict[str, np.ndarray], datasets: Sequence[str]) -> None:
        datasets = np.asarray(datasets)
        masks = {POOLED: np.ones(len(datasets), dtype=bool)}
        masks.update({name: datasets == name for name in np.unique(datasets)})
        for group, mask in masks.items():
            self.n_scans[group] = self.n_scans.get(group, 0) + int(mask.sum())
            stats = self.groups.setdefault(group, {})
            for name in NORMED:
                values = np.asarray(features[name], dtype=np.float64)[mask]
                count = (~np.isnan(values)).sum(axis=0)
                with np.errstate(invalid="ignore", divide="ignore"):
                    mean = np.nansum(values, axis=0) / count
                squares = np.nansum((values - mean) ** 2, axis=0)
                stats[name] = combine_moments(stats.get(name), (count, mean, squares))

    def norms(self, min_scans: int) -> dict[str, dict[str, dict[str, list[float] | float]]]:
        """`{group: {name: {"mean", "sd"}, "n_scans"}}` for the pooled cohort and each dataset with
        `min_scans` or more scans."""
        result = {}
        for group, stats in self.groups.items():
            n_scans = self.n_scans[group]
            if group != POOLED and n_scans < min_scans:
                continue
            if n_scans < 2:
                raise FmriInputError(f"cohort norms: expected at least 2 training scans, found {n_scans}")
            result[group] = {}
            for name, (count, mean, squares) in stats.items():
                with np.errstate(invalid="ignore", divide="ignore"):
                    sd = np.sqrt(squares / (count - 1))
                result[group][name] = {
                    "mean": np.where(count > 0, mean, np.nan).tolist(),
                    "sd": np.where(count > 1, sd, np.nan).tolist(),
                }
            result[group]["n_scans"] = n_scans
        return result


def combine_moments(
    first: tuple[np.ndarray, np.ndarray, np.ndarray] | None, second: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean and sum of squared deviations of two samples together (Chan et al. 1979)."""
    if first is None:
        return second
    (n_a, mean_a, m2_a), (n_b, mean_b, m2_b) = first, second
    total = n_a + n_b
    with np.errstate(invalid="ignore", divide="ignore"):
        delta = np.where(n_b > 0, mean_b, 0.0) - np.where(n_a > 0, mean_a, 0.0)
        share = np.where(total > 0, n_b / total, 0.0)
        mean = np.where(n_a > 0, mean_a, 0.0) + delta * share
        m2 = np.where(n_a > 0, m2_a, 0.0) + np.where(n_b > 0, m2_b, 0.0) + delta**2 * n_a * share
    return total, mean, m2


def zscores(features: dict[str, np.ndarray], dataset: str, reference: CohortReference) -> dict[str, np.ndarray]:
    """z of every scalar and network pair against the dataset's norms (pooled for an unknown dataset).

    An SD of 0 gives z = 0. Values are rounded to 2 decimals: the text prints exactly these.
    """
    norms = reference.norms.get(dataset, reference.norms[POOLED])
    result = {}
    for name in NORMED:
        mean, sd = np.asarray(norms[name]["mean"]), np.asarray(norms[name]["sd"])
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.where(sd > 0, (features[name] - mean) / np.where(sd > 0, sd, 1.0), 0.0)
        result[name] = np.round(z, 2) + 0.0
    return result


__all__ = [
    "DESCRIBED",
    "DOMAINS",
    "EXTRA",
    "NORMED",
    "POOLED",
    "REFERENCE_VERSION",
    "SCALARS",
    "VECTORS",
    "CohortNorms",
    "CohortReference",
    "DescriptorSettings",
    "FrameSelection",
    "at_target_tr",
    "combine_moments",
    "compute_features",
    "fit_structure",
    "release_freed_memory",
    "target_length",
    "validate_scan",
    "zscores",
]
