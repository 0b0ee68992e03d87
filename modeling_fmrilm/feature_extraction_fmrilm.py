"""Feature extractor for fMRI-LM: validation, TR resampling, windowing and robust z-scoring.

Remote-code rule (README, "Layout"): this file imports only numpy, torch, transformers and sibling
modules, so that `save_pretrained` can copy it into a Hub repository.

A scan is a float array `(n_rois, n_timepoints)` (ROI-major) sampled every `tr` seconds. The
extractor turns a batch of scans into windows `(n_windows, n_rois, window_length)`:

1. validate (finite, no constant ROI, ROI count, enough time points),
2. resample every scan to `target_tr` (`resample_method`): `"antialias"` (default) low-pass
   filters below the new Nyquist frequency while resampling, `"linear"` interpolates linearly as
   the paper does (and aliases when downsampling); either way frames lie at `k * target_tr` up to
   the last input instant, with no extrapolation (`resampled_length`),
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

from .errors import FmriInputError, MissingTRError

PAD_STRATEGIES = (None, "interpolate")
RESAMPLE_METHODS = ("antialias", "linear")
# A saved feature-extractor config without `resample_method` predates the option; it was made (and
# its checkpoint trained) with linear interpolation, the paper's method.
LEGACY_RESAMPLE_METHOD = "linear"
# Low-pass design of the anti-aliased resampler, in periods of the slower of the two grids: the
# defaults of `scipy.signal.resample_poly` (Kaiser window, beta 5, 10 periods each side).
ANTIALIAS_HALF_WIDTH = 10
ANTIALIAS_KAISER_BETA = 5.0
# Output frames per matrix product of the anti-aliased resampler (bounds its dense weight block).
ANTIALIAS_BLOCK = 64
# Values per block of the finiteness check of `validate_fmri` (its mask stays at 4 MiB).
_CHECK_BLOCK_VALUES = 1 << 22


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
        FmriInputError: ragged rows, not 2-D, not real numbers (complex values are rejected, not
            cast), ROI-count mismatch (saying which axis looks like time), too few time points,
            NaN/inf, a constant ROI, a missing or non-positive TR.
    """
    try:
        array = np.asarray(data)
    except ValueError as error:  # numpy refuses nested sequences of unequal lengths
        raise FmriInputError(
            f"{name}: expected a 2-D array (n_rois, n_timepoints), found ragged rows of unequal length ({error})"
        ) from None
    if array.ndim != 2:
        raise FmriInputError(f"{name}: expected a 2-D array (n_rois, n_timepoints), found shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number):
        raise FmriInputError(f"{name}: expected numbers, found dtype {array.dtype}")
    if np.iscomplexobj(array):
        raise FmriInputError(
            f"{name}: expected real BOLD values, found complex dtype {array.dtype} (casting would drop the "
            "imaginary part); pass the magnitude or the real part explicitly"
        )
    n_rois, n_time = array.shape
    if num_rois is not None and n_rois != num_rois:
        hint = ""
        if n_time == num_rois:
            hint = (
                f"; axis 1 has {num_rois} entries, so the array looks time-major "
                f"(n_timepoints, n_rois): transpose it (axis 0, {n_rois} entries, looks like time)"
            )
        raise FmriInputError(
            f"{name}: expected {num_rois} ROIs on axis 0, found shape (axis 0: {n_rois}, axis 1: {n_time}){hint}"
        )
    if n_time < min_timepoints:
        raise FmriInputError(
            f"{name}: expected at least {min_timepoints} time points on axis 1, found {n_time} (shape {array.shape})"
        )
    if require_tr and tr is None:
        raise MissingTRError(f"{name}: no repetition time (tr) given")
    if tr is not None and not (np.isfinite(tr) and tr > 0):
        raise FmriInputError(f"{name}: expected a positive repetition time in seconds, found tr={tr!r}")
    array = array.astype(np.float32, copy=False)
    rows = max(1, _CHECK_BLOCK_VALUES // max(1, n_time))  # the finiteness mask is made block by block of ROIs
    rois = np.concatenate(
        [np.empty(0, np.int64)]
        + [np.flatnonzero(~np.isfinite(array[i : i + rows]).all(axis=1)) + i for i in range(0, n_rois, rows)]
    )
    if rois.size:
        first = (int(rois[0]), int(np.flatnonzero(~np.isfinite(array[rois[0]]))[0]))
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


def resampled_length(n_timepoints: int, tr: float, target_tr: float) -> int:
    """Frames on the new grid: every `k * target_tr` not later than the last input instant.

    `n_out = floor((n - 1) * tr / target_tr) + 1`, the same for every method: the output spans the
    input's duration, with no extrapolation past its last frame.
    """
    return int(np.floor((n_timepoints - 1) * tr / target_tr + 1e-9)) + 1


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

    Returns `(left, weight)`, each `(n_out,)` (`n_out` from `resampled_length`): output frame `k`
    at time `k * target_tr` is `x[left] * (1 - weight) + x[left + 1] * weight`.
    """
    n_out = resampled_length(n_timepoints, tr, target_tr)
    position = np.arange(n_out, dtype=np.float64) * (target_tr / tr)
    left = np.minimum(np.floor(position).astype(np.int64), n_timepoints - 2)
    weight = (position - left).astype(np.float32)
    return left, weight


def antialias_plan(n_timepoints: int, tr: float, target_tr: float) -> tuple[np.ndarray, np.ndarray]:
    """Windowed-sinc plan from a grid every `tr` s to one every `target_tr` s (anti-aliased).

    The kernel is a low-pass at the Nyquist frequency of the slower grid, `1 / (2 max(tr,
    target_tr))` Hz, windowed by a Kaiser window (beta 5) of `ANTIALIAS_HALF_WIDTH` slower periods
    each side: the filter `scipy.signal.resample_poly` designs, evaluated in continuous time so that
    any ratio of TRs works. Each output frame's weights are normalised to sum to 1 (unit gain at 0 Hz).

    Returns `(taps, weights)`, each `(n_out, n_taps)`: output frame `k` is
    `sum_j weights[k, j] * x[taps[k, j]]`. Near the ends `taps` runs past the input (below 0 or
    beyond `n_timepoints - 1`): the caller extends the series there (see `resample`).
    """
    n_out = resampled_length(n_timepoints, tr, target_tr)
    period = max(tr, target_tr)
    half_width = ANTIALIAS_HALF_WIDTH * period  # seconds
    reach = int(np.ceil(half_width / tr))  # input frames each side
    position = np.arange(n_out, dtype=np.float64) * (target_tr / tr)
    taps = np.floor(position).astype(np.int64)[:, None] + np.arange(1 - reach, reach + 1)
    lag = (position[:, None] - taps) * tr  # seconds between output instant and tap
    window = np.i0(ANTIALIAS_KAISER_BETA * np.sqrt(np.clip(1 - (lag / half_width) ** 2, 0, None)))
    weights = np.sinc(lag / period) * window * (np.abs(lag) <= half_width)
    weights /= weights.sum(axis=1, keepdims=True)
    return taps, weights


def resample(data: np.ndarray, tr: float, target_tr: float, method: str = "antialias") -> np.ndarray:
    """Resample `(..., n_timepoints)` sampled every `tr` s to every `target_tr` s.

    Args:
        data: array, time on the last axis.
        tr, target_tr: seconds between input and output frames.
        method: `"antialias"` (default) low-pass filters below the new Nyquist frequency while it
            interpolates (a windowed sinc, see `antialias_plan`), so that power above it is removed
            instead of folding back into the band; the series is extended past each end by odd
            reflection about the end frame (`scipy.signal.resample_poly`'s `padtype="antireflect"`),
            which keeps level and slope continuous. `"linear"` interpolates between the two
            neighbouring frames, as the paper does; downsampling this way aliases.

    Returns:
        `(..., n_out)` with `n_out = resampled_length(n_timepoints, tr, target_tr)` frames at
        `k * target_tr`; `data` itself when the TRs are equal.
    """
    if method not in RESAMPLE_METHODS:
        raise FmriInputError(f"method: expected one of {RESAMPLE_METHODS}, found {method!r}")
    if np.isclose(tr, target_tr):
        return data
    if method == "linear":
        left, weight = resample_indices(data.shape[-1], tr, target_tr)
        lower = np.take(data, left, axis=-1)
        out = np.take(data, left + 1, axis=-1)
        out -= lower
        out *= weight
        out += lower
        return out
    return _antialias(data, tr, target_tr)


def _antialias(data: np.ndarray, tr: float, target_tr: float) -> np.ndarray:
    """The anti-aliased resampling of `resample`, as one matrix product per block of output frames.

    Each block of `ANTIALIAS_BLOCK` output frames reads a contiguous span of the (mean-removed,
    reflected) input, so its weights form a small dense matrix: BLAS does the work, and memory stays
    at one copy of the input whatever the scan length.
    """
    dtype = np.result_type(data.dtype, np.float32)
    n_timepoints = data.shape[-1]
    taps, weights = antialias_plan(n_timepoints, tr, target_tr)
    reach = max(-int(taps.min()), int(taps.max()) - n_timepoints + 1, 0)
    taps = taps + reach  # index the extended series
    flat = data.reshape(-1, n_timepoints).astype(dtype, copy=False)
    mean = flat.mean(axis=1, keepdims=True)  # removed so the sums stay small in float32
    extended = np.pad(flat - mean, ((0, 0), (reach, reach)), mode="reflect", reflect_type="odd")
    out = np.empty((flat.shape[0], taps.shape[0]), dtype=dtype)
    for start in range(0, taps.shape[0], ANTIALIAS_BLOCK):
        block_taps = taps[start : start + ANTIALIAS_BLOCK]
        first = block_taps[0, 0]
        matrix = np.zeros((block_taps[-1, -1] + 1 - first, block_taps.shape[0]), dtype=dtype)
        matrix[block_taps - first, np.arange(block_taps.shape[0])[:, None]] = weights[start : start + ANTIALIAS_BLOCK]
        out[:, start : start + ANTIALIAS_BLOCK] = extended[:, first : first + matrix.shape[0]] @ matrix
    out += mean
    return out.reshape(data.shape[:-1] + (taps.shape[0],))


def stretch(data: np.ndarray, length: int) -> np.ndarray:
    """Linearly interpolate `(..., n)` onto `length` evenly spaced points spanning the same interval.

    Used to bring a scan shorter than one window up to the window (`pad_strategy="interpolate"`, as
    the paper does); this only upsamples, so linear interpolation cannot alias.
    """
    n = data.shape[-1]
    return resample(data, 1.0, (n - 1) / (length - 1), method="linear") if n != length else data


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
        resample_method (`str`, defaults to `"antialias"`): how scans reach `target_tr` (see
            `resample`): `"antialias"` low-pass filters below the new Nyquist frequency while
            resampling; `"linear"` is the paper's plain linear interpolation, which folds power above
            that frequency back into the band. A saved config without this key was made before the
            option existed and loads as `"linear"`, the preprocessing its checkpoint was trained with.

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
        resample_method: str = "antialias",
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
            raise FmriInputError(f"normalization: expected 'robust', 'zscore' or 'none', found {normalization!r}")
        if pad_strategy not in PAD_STRATEGIES:
            raise FmriInputError(f"pad_strategy: expected one of {PAD_STRATEGIES}, found {pad_strategy!r}")
        if resample_method not in RESAMPLE_METHODS:
            raise FmriInputError(f"resample_method: expected one of {RESAMPLE_METHODS}, found {resample_method!r}")
        self.num_rois = num_rois
        self.target_tr = float(target_tr)
        self.window_length = int(window_length)
        self.window_stride = window_stride
        self.max_windows_per_scan = max_windows_per_scan
        self.normalization = normalization
        self.iqr_floor = float(iqr_floor)
        self.pad_strategy = pad_strategy
        self.resample_method = resample_method

    @classmethod
    def from_dict(cls, feature_extractor_dict: dict[str, Any], **kwargs: Any) -> Any:
        """Build from a saved config; one without `resample_method` loads as `"linear"`.

        Such a config was written before the option existed, by an extractor that always
        interpolated linearly, so its checkpoint keeps the preprocessing it was trained with. A
        `resample_method` keyword still overrides it.
        """
        return super().from_dict({"resample_method": LEGACY_RESAMPLE_METHOD, **feature_extractor_dict}, **kwargs)

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
        for i, (item, scan_tr) in enumerate(zip(items, trs, strict=True)):
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

    def validate(self, fmri: Any, tr: float | Sequence[float] | None = None) -> None:
        """Check scans as a call would, without computing any window.

        Raises:
            FmriInputError: naming the first scan that is not 2-D, has another ROI count, non-finite
                values, no TR, or too few time points for one window.
        """
        self._as_scans(fmri, tr)

    def preprocess(self, data: np.ndarray, tr: float) -> np.ndarray:
        """Resample, (stretch if asked) and normalise `(..., n_rois, n_timepoints)` sampled at `tr`."""
        data = resample(data, tr, self.target_tr, method=self.resample_method)
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
            pieces.update(zip(members, cut, strict=True))
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


__all__ = [
    "RESAMPLE_METHODS",
    "FmriFeatureExtractor",
    "per_scan_trs",
    "quantiles",
    "resample",
    "resampled_length",
    "robust_zscore",
    "validate_fmri",
    "window_starts",
]
