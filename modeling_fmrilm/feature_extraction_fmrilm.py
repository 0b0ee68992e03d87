"""Feature extractor for fMRI-LM: validation, TR resampling, windowing and robust z-scoring.

Remote-code rule (DESIGN.md §2): this file imports only numpy, torch, transformers and sibling
modules, so that `save_pretrained` can copy it into a Hub repository.

A scan is a float array `(n_rois, n_timepoints)` (ROI-major) sampled every `tr` seconds. The
extractor turns a batch of scans into windows `(n_windows, n_rois, window_length)`:

1. validate (finite, no constant ROI, ROI count, enough time points),
2. resample every scan to `target_tr` by linear interpolation on the scan's own time grid (no
   extrapolation: the last output frame is the last input instant that the new grid reaches),
3. robust z-score per ROI per scan: `(x - median) / max(IQR, iqr_floor)`,
4. cut windows of `window_length` frames every `window_stride` frames.

All steps are vectorised over ROIs, time points and same-shaped scans; the only Python loop is
over groups of scans that share a shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature, FeatureExtractionMixin

from .errors import FmriInputError

PAD_STRATEGIES = (None, "interpolate")


def validate_fmri(
    data: Any,
    name: str,
    num_rois: int | None = None,
    min_timepoints: int = 2,
    tr: float | None = None,
    require_tr: bool = False,
) -> np.ndarray:
    """Check one scan and return it as a float32 array `(n_rois, n_timepoints)`.

    Args:
        data: array-like `(n_rois, n_timepoints)`.
        name: how the error messages name the scan (a file path, an argument, an id).
        num_rois: expected ROI count (first axis); `None` accepts any.
        min_timepoints: fewest time points accepted.
        tr: repetition time in seconds, checked when given or when `require_tr`.
        require_tr: raise when `tr` is missing.

    Raises:
        FmriInputError: not 2-D, ROI-count mismatch (saying which axis looks like time), too few
            time points, NaN/inf, a constant ROI, a missing or non-positive TR.
    """
    array = np.asarray(data)
    if array.ndim != 2:
        raise FmriInputError(
            f"{name}: expected a 2-D array (n_rois, n_timepoints), found shape {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.number):
        raise FmriInputError(f"{name}: expected numbers, found dtype {array.dtype}")
    n_rois, n_time = array.shape
    if num_rois is not None and n_rois != num_rois:
        hint = ""
        if n_time == num_rois:
            hint = (
                f"; axis 1 has {num_rois} entries, so the array looks time-major "
                f"(n_timepoints, n_rois): transpose it (axis 0, {n_rois} entries, looks like time)"
            )
        raise FmriInputError(
            f"{name}: expected {num_rois} ROIs on axis 0, found shape "
            f"(axis 0: {n_rois}, axis 1: {n_time}){hint}"
        )
    if n_time < min_timepoints:
        raise FmriInputError(
            f"{name}: expected at least {min_timepoints} time points on axis 1, found {n_time} "
            f"(shape {array.shape})"
        )
    if require_tr and tr is None:
        raise FmriInputError(f"{name}: no repetition time (tr) given; pass tr=<seconds>")
    if tr is not None and not (np.isfinite(tr) and tr > 0):
        raise FmriInputError(f"{name}: expected a positive repetition time in seconds, found tr={tr!r}")
    array = array.astype(np.float32, copy=False)
    finite = np.isfinite(array)
    if not finite.all():
        rois = np.flatnonzero(~finite.all(axis=1))
        first = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise FmriInputError(
            f"{name}: expected finite values, found NaN/inf in {rois.size} ROI(s) "
            f"(ROI indices {rois[:10].tolist()}{'…' if rois.size > 10 else ''}; first at {first})"
        )
    constant = np.ptp(array, axis=1) == 0
    if constant.any():
        rois = np.flatnonzero(constant)
        raise FmriInputError(
            f"{name}: expected every ROI to vary in time, found {rois.size} constant ROI(s) "
            f"(indices {rois[:10].tolist()}{'…' if rois.size > 10 else ''})"
        )
    return array


def per_scan_trs(tr: float | Sequence[float | None] | None, n_scans: int) -> list[float | None]:
    """One repetition time (or `None`: the scan's own `.tr`) per scan, from one for all or one per scan.

    Raises:
        FmriInputError: a sequence whose length is not `n_scans`.
    """
    if tr is None or np.isscalar(tr):
        return [tr] * n_scans
    trs = list(tr)
    if len(trs) != n_scans:
        raise FmriInputError(f"tr: expected {n_scans} values (one per scan), found {len(trs)}")
    return trs


def resample_indices(n_timepoints: int, tr: float, target_tr: float) -> tuple[np.ndarray, np.ndarray]:
    """Linear-interpolation plan from a grid of `n_timepoints` every `tr` s to one every `target_tr` s.

    Returns `(left, weight)`, each `(n_out,)`: output frame `k` at time `k * target_tr` is
    `x[left] * (1 - weight) + x[left + 1] * weight`. `n_out = floor((n - 1) * tr / target_tr) + 1`.
    """
    duration = (n_timepoints - 1) * tr
    n_out = int(np.floor(duration / target_tr + 1e-9)) + 1
    position = np.arange(n_out, dtype=np.float64) * (target_tr / tr)
    left = np.minimum(np.floor(position).astype(np.int64), n_timepoints - 2)
    weight = (position - left).astype(np.float32)
    return left, weight


def resample(data: np.ndarray, tr: float, target_tr: float) -> np.ndarray:
    """Resample `(..., n_timepoints)` sampled every `tr` s to every `target_tr` s (linear)."""
    if np.isclose(tr, target_tr):
        return data
    left, weight = resample_indices(data.shape[-1], tr, target_tr)
    lower = np.take(data, left, axis=-1)
    out = np.take(data, left + 1, axis=-1)
    out -= lower
    out *= weight
    out += lower
    return out


def stretch(data: np.ndarray, length: int) -> np.ndarray:
    """Linearly interpolate `(..., n)` onto `length` evenly spaced points spanning the same interval."""
    n = data.shape[-1]
    return resample(data, 1.0, (n - 1) / (length - 1)) if n != length else data


def robust_zscore(data: np.ndarray, iqr_floor: float = 1e-6) -> np.ndarray:
    """Robust z-score along the last axis: `(x - median) / max(IQR, iqr_floor)`.

    Args:
        data: `(..., n_timepoints)`.
        iqr_floor: smallest divisor, so that a near-flat ROI cannot blow up.
    Returns:
        float32 array of the same shape.
    """
    q25, median, q75 = quantiles(data, (0.25, 0.5, 0.75))
    scale = np.maximum(q75 - q25, iqr_floor).astype(np.float32)
    out = data - median.astype(np.float32)
    out /= scale
    return out.astype(np.float32, copy=False)


def quantiles(data: np.ndarray, probabilities: Sequence[float]) -> list[np.ndarray]:
    """Quantiles along the last axis, numpy's default (linear) definition, each `(..., 1)`.

    One vectorised sort serves every quantile; this is several times faster than `np.quantile`
    with an `axis`, which partitions once per requested position.
    """
    ordered = np.sort(data, axis=-1)
    n = data.shape[-1]
    result = []
    for probability in probabilities:
        position = (n - 1) * probability
        low = int(np.floor(position))
        high = min(low + 1, n - 1)
        fraction = position - low
        below = ordered[..., low : low + 1].astype(np.float64)
        result.append(below + (ordered[..., high : high + 1] - below) * fraction)
    return result


def window_starts(n_timepoints: int, window_length: int, window_stride: int) -> np.ndarray:
    """First frame of each window; the frames after the last full window are not used."""
    return np.arange(0, n_timepoints - window_length + 1, window_stride)


class FmriFeatureExtractor(FeatureExtractionMixin):
    r"""Turns parcellated BOLD scans into normalised windows for the fMRI tokenizer.

    Args:
        num_rois (`int`, *optional*): ROI count every scan must have on axis 0 (450 in the paper:
            Schaefer-400 + Tian-S3). `None` accepts any count.
        target_tr (`float`, defaults to 2.0): seconds between frames after resampling.
        window_length (`int`, defaults to 160): frames per window.
        window_stride (`int`, *optional*): frames between window starts; defaults to
            `window_length` (non-overlapping windows).
        max_windows_per_scan (`int`, *optional*): keep only the first windows of each scan (the
            paper keeps the first one); `None` keeps all.
        normalization (`str`, defaults to `"robust"`): `"robust"` (median/IQR per ROI per scan),
            `"zscore"` (mean/std) or `"none"`.
        iqr_floor (`float`, defaults to 1e-6): smallest IQR (or std) used as a divisor.
        pad_strategy (`str`, *optional*): what to do with a scan shorter than one window after
            resampling. `None` raises `FmriInputError`; `"interpolate"` stretches it to
            `window_length` frames (as the paper does).

    Calling it returns a `BatchFeature` with `fmri_values` `(n_windows, n_rois, window_length)`,
    `scan_index` `(n_windows,)` (position of the source scan in the input list) and
    `window_index` `(n_windows,)` (window number within its scan).
    """

    model_input_names = ["fmri_values"]

    def __init__(
        self,
        num_rois: int | None = None,
        target_tr: float = 2.0,
        window_length: int = 160,
        window_stride: int | None = None,
        max_windows_per_scan: int | None = None,
        normalization: str = "robust",
        iqr_floor: float = 1e-6,
        pad_strategy: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if window_length < 2:
            raise FmriInputError(f"window_length: expected an integer >= 2, found {window_length!r}")
        if window_stride is not None and window_stride < 1:
            raise FmriInputError(f"window_stride: expected a positive integer, found {window_stride!r}")
        if not target_tr > 0:
            raise FmriInputError(f"target_tr: expected a positive number of seconds, found {target_tr!r}")
        if normalization not in ("robust", "zscore", "none"):
            raise FmriInputError(
                f"normalization: expected 'robust', 'zscore' or 'none', found {normalization!r}"
            )
        if pad_strategy not in PAD_STRATEGIES:
            raise FmriInputError(f"pad_strategy: expected one of {PAD_STRATEGIES}, found {pad_strategy!r}")
        self.num_rois = num_rois
        self.target_tr = float(target_tr)
        self.window_length = int(window_length)
        self.window_stride = window_stride
        self.max_windows_per_scan = max_windows_per_scan
        self.normalization = normalization
        self.iqr_floor = float(iqr_floor)
        self.pad_strategy = pad_strategy

    @property
    def stride(self) -> int:
        return self.window_stride or self.window_length

    def min_timepoints(self, tr: float) -> int:
        """Fewest frames at `tr` that give one window at `target_tr` without padding."""
        return int(np.ceil((self.window_length - 1) * self.target_tr / tr - 1e-9)) + 1

    def normalize(self, data: np.ndarray) -> np.ndarray:
        """Per-ROI normalisation of `(..., n_rois, n_timepoints)` along time."""
        if self.normalization == "robust":
            return robust_zscore(data, self.iqr_floor)
        if self.normalization == "zscore":
            mean = data.mean(axis=-1, keepdims=True)
            std = np.maximum(data.std(axis=-1, keepdims=True), self.iqr_floor)
            return ((data - mean) / std).astype(np.float32, copy=False)
        return data.astype(np.float32, copy=False)

    def _as_scans(self, fmri: Any, tr: float | Sequence[float] | None) -> list[tuple[str, np.ndarray, float]]:
        """Normalise the call's input into `(name, array, tr)` triples, validated."""
        if (isinstance(fmri, np.ndarray) and fmri.ndim == 3) or _is_tensor(fmri, 3):
            items: list[Any] = list(np.asarray(fmri))
        elif isinstance(fmri, (list, tuple)):
            items = list(fmri)
        else:
            items = [fmri]
        if not items:
            raise FmriInputError("fmri: expected at least one scan, found an empty list")
        trs = per_scan_trs(tr, len(items))
        scans = []
        for i, (item, scan_tr) in enumerate(zip(items, trs)):
            data = getattr(item, "data", item)
            name = getattr(item, "name", None) or f"fmri[{i}]"
            scan_tr = scan_tr if scan_tr is not None else getattr(item, "tr", None)
            if _is_tensor(data):
                data = data.detach().cpu().numpy()
            array = validate_fmri(data, name, num_rois=self.num_rois, tr=scan_tr, require_tr=True)
            needed = self.min_timepoints(scan_tr)
            if self.pad_strategy is None and array.shape[1] < needed:
                raise FmriInputError(
                    f"{name}: expected at least {needed} time points at TR {scan_tr} s for one window of "
                    f"{self.window_length} frames at TR {self.target_tr} s, found {array.shape[1]}; "
                    "pass pad_strategy='interpolate' to stretch short scans"
                )
            scans.append((name, array, float(scan_tr)))
        return scans

    def preprocess(self, data: np.ndarray, tr: float) -> np.ndarray:
        """Resample, (stretch if asked) and normalise `(..., n_rois, n_timepoints)` sampled at `tr`."""
        data = resample(data, tr, self.target_tr)
        if data.shape[-1] < self.window_length:
            data = stretch(data, self.window_length)
        return self.normalize(data)

    def windows(self, data: np.ndarray) -> np.ndarray:
        """Cut `(..., n_rois, n_frames)` into `(..., n_windows, n_rois, window_length)` (a view)."""
        starts = window_starts(data.shape[-1], self.window_length, self.stride)
        if self.max_windows_per_scan is not None:
            starts = starts[: self.max_windows_per_scan]
        view = np.lib.stride_tricks.sliding_window_view(data, self.window_length, axis=-1)
        return np.moveaxis(view[..., starts, :], -2, -3)

    def __call__(
        self,
        fmri: Any,
        tr: float | Sequence[float] | None = None,
        return_tensors: str | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Preprocess one scan or a batch.

        Args:
            fmri: one scan `(n_rois, n_timepoints)`, a list of scans (they may differ in length
                and TR), a stacked array `(batch, n_rois, n_timepoints)`, or objects with `.data`
                and `.tr` (the `modeling_fmrilm.io.FmriScan` record).
            tr: seconds between frames, one for all or one per scan; taken from `.tr` when absent.
            return_tensors: `"pt"` or `"np"`.

        Returns:
            `BatchFeature` with `fmri_values` `(n_windows, n_rois, window_length)` float32,
            `scan_index` and `window_index` `(n_windows,)` int64.
        """
        if kwargs:
            raise TypeError(f"FmriFeatureExtractor got unexpected arguments {sorted(kwargs)}")
        scans = self._as_scans(fmri, tr)
        groups: dict[tuple[int, float], list[int]] = {}
        for i, (_, array, scan_tr) in enumerate(scans):
            groups.setdefault((array.shape[1], scan_tr), []).append(i)
        pieces: dict[int, np.ndarray] = {}
        for (_, scan_tr), members in groups.items():
            stacked = np.stack([scans[i][1] for i in members])
            cut = self.windows(self.preprocess(stacked, scan_tr))
            pieces.update(zip(members, cut))
        order = range(len(scans))
        values = np.concatenate([pieces[i] for i in order]).astype(np.float32, copy=False)
        counts = [pieces[i].shape[0] for i in order]
        scan_index = np.repeat(np.arange(len(scans)), counts)
        window_index = np.concatenate([np.arange(c) for c in counts])
        return BatchFeature(
            {"fmri_values": values, "scan_index": scan_index, "window_index": window_index},
            tensor_type=return_tensors,
        )

    def iter_windows(
        self, scans: Iterable[Any], batch_size: int = 32, return_tensors: str | None = None
    ) -> Iterable[BatchFeature]:
        """Stream `scans` (any iterable, e.g. a reader's generator) in batches of `batch_size` scans.

        Memory stays bounded by one batch whatever the cohort size. `scan_index` counts from the
        start of the stream.
        """
        batch: list[Any] = []
        offset = 0
        for scan in scans:
            batch.append(scan)
            if len(batch) == batch_size:
                yield self._offset(self(batch, return_tensors=return_tensors), offset)
                offset += len(batch)
                batch = []
        if batch:
            yield self._offset(self(batch, return_tensors=return_tensors), offset)

    @staticmethod
    def _offset(features: BatchFeature, offset: int) -> BatchFeature:
        features["scan_index"] = features["scan_index"] + offset
        return features


def _is_tensor(value: Any, ndim: int | None = None) -> bool:
    return isinstance(value, torch.Tensor) and (ndim is None or value.ndim == ndim)


__all__ = ["FmriFeatureExtractor", "per_scan_trs", "quantiles", "resample", "robust_zscore", "validate_fmri", "window_starts"]
