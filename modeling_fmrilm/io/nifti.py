"""NIfTI 4D images + a label atlas -> parcellated scans; fMRIPrep derivatives with confounds.

Extraction gives the same numbers as nilearn's `NiftiLabelsMasker` (mean over the voxels of each
label, then `nilearn.signal.clean` for confounds, `sample_mask` and standardisation, as the
masker itself does), but it is done here rather than by calling the masker, for speed: most of the
time of reading a `.nii.gz` is gzip decompression, which we do with ISA-L (`isal`, 3-4x zlib) when
it is installed, and the label means are one gather + `np.add.reduceat` over voxels sorted by label
(float64 accumulation), instead of the masker's per-call image checks and copies. The tests check
the result against `NiftiLabelsMasker` directly.

The atlas must be on the image's grid: a shape or affine mismatch is an error (resample it first
with `nilearn.image.resample_to_img(atlas, img, interpolation="nearest")`), never a silent
resampling. A file that cannot be read (truncated or corrupt gzip, not a NIfTI header, fewer data
bytes than the header's shape needs) is an `FmriInputError` naming it.

Censoring: a `sample_mask` (given, or from fMRIPrep's confounds when scrubbing) never leaves hidden
gaps; see `modeling_fmrilm.io.censoring` and the `censoring` argument of `read_nifti`. Confounds
must be finite, except the first row of fMRIPrep's `*_derivative1*` columns, which is n/a by design
and takes the second row's value, as `nilearn.interfaces.fmriprep.load_confounds` does.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import reduce
from operator import mul
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ..errors import FmriInputError, MissingTRError
from ..feature_extraction_fmrilm import validate_fmri
from .bids import parse_entities, sidecar_tr, subject_and_session
from .censoring import CENSORING, Censoring, censored_mask, check_gaps, fill_censored, kept_frames
from .scan import FmriScan, require_file

try:  # ISA-L's inflate is a drop-in for zlib's, 3-4x faster
    from isal import isal_zlib as _zlib
except ImportError:  # pragma: no cover - isal is a dependency, zlib is the fallback
    import zlib as _zlib

ImageLike = str | Path | nib.Nifti1Image
LabelsLike = Mapping[int, str] | Sequence[str] | str | Path | None
_TIME_UNITS = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}
# What nibabel, gzip and zlib/ISA-L raise for a file that is not a readable NIfTI.
_UNREADABLE = (
    OSError,
    EOFError,
    ValueError,
    _zlib.error,
    nib.filebasedimages.ImageFileError,
    nib.spatialimages.HeaderDataError,
    nib.wrapstruct.WrapStructError,
)


def load_image(img: ImageLike) -> nib.Nifti1Image:
    """A NIfTI image from a path (gzip decompressed with ISA-L when available) or an image object."""
    if isinstance(img, nib.spatialimages.SpatialImage):
        return img
    path = Path(img)
    require_file(path, "a NIfTI file")
    if path.stat().st_size == 0:
        raise FmriInputError(f"{path}: expected a NIfTI-1/2 image, found an empty file (0 bytes)")
    if path.name.endswith(".gz"):
        compressed = path.read_bytes()
        try:
            raw = gunzip(compressed)
        except _UNREADABLE as error:
            raise FmriInputError(
                f"{path}: expected a complete gzip-compressed NIfTI file, found a truncated or corrupt gzip stream "
                f"({len(compressed)} bytes; {type(error).__name__}: {error})"
            ) from None
        return _parse_image(lambda: nib.Nifti1Image.from_bytes(raw), path)
    return _parse_image(lambda: nib.load(path), path)


def _parse_image(parse: Callable[[], nib.Nifti1Image], path: Path) -> nib.Nifti1Image:
    try:
        return parse()
    except _UNREADABLE as error:
        raise FmriInputError(
            f"{path}: expected a NIfTI-1/2 image, found content nibabel cannot read as one ({type(error).__name__}: {error})"
        ) from None


def gunzip(compressed: bytes) -> bytes:
    """Decompress gzip bytes in one shot; files of several gzip members go through `gzip`."""
    inflater = _zlib.decompressobj(wbits=31)
    raw = inflater.decompress(compressed)
    if inflater.unused_data or not inflater.eof:
        return gzip.decompress(compressed)
    return raw


def image_data(image: nib.Nifti1Image, name: str = "img") -> np.ndarray:
    """The voxel array of `image`, scaled; without a copy when the image was read from bytes.

    Raises:
        FmriInputError: the file holds fewer data bytes than the header's shape and dtype need.
    """
    try:
        return _image_data(image)
    except _UNREADABLE as error:
        raise FmriInputError(
            f"{name}: expected {image.shape} voxels of {image.get_data_dtype()} as the header says, found a "
            f"truncated data block ({type(error).__name__}: {error})"
        ) from None


def _image_data(image: nib.Nifti1Image) -> np.ndarray:
    proxy = image.dataobj
    buffer = getattr(getattr(proxy, "file_like", None), "getbuffer", None)
    if buffer is None or not nib.is_proxy(proxy):
        return np.asanyarray(proxy)
    count = reduce(mul, proxy.shape, 1)
    flat = np.frombuffer(buffer(), dtype=proxy.dtype, count=count, offset=int(proxy.offset))
    data = flat.reshape(proxy.shape, order=proxy.order)
    if proxy.slope != 1 or proxy.inter != 0:
        data = data * np.float32(proxy.slope) + np.float32(proxy.inter)
    return data


def _header_tr(img: nib.Nifti1Image) -> float | None:
    zooms = img.header.get_zooms()
    if len(zooms) < 4 or not zooms[3] > 0:
        return None
    unit = img.header.get_xyzt_units()[1]
    return float(zooms[3]) * _TIME_UNITS.get(unit, 1.0)


def resolve_tr(img: nib.Nifti1Image, path: str | Path | None, tr: float | None) -> float:
    """TR from the argument, else the JSON sidecar's `RepetitionTime`, else the NIfTI header."""
    if tr is not None:
        return float(tr)
    if path is not None:
        found = sidecar_tr(path)
        if found is not None:
            return found
    found = _header_tr(img)
    if found is None:
        raise MissingTRError(
            f"{path or 'img'}: no repetition time (no tr argument, no RepetitionTime in a JSON sidecar, "
            "no time zoom in the NIfTI header)"
        )
    return found


def _label_names(present: np.ndarray, labels: LabelsLike, atlas_name: str) -> list[str] | None:
    """Names for the atlas's non-background label values, checking they match `labels`."""
    if labels is None:
        return None
    if isinstance(labels, (str, Path)):
        import pandas as pd

        table = pd.read_csv(labels, sep="\t" if str(labels).endswith(".tsv") else ",")
        key = "index" if "index" in table.columns else "label"
        if key not in table.columns or "name" not in table.columns:
            raise FmriInputError(
                f"{labels}: expected columns 'index' (or 'label') and 'name', found {list(table.columns)}"
            )
        labels = dict(zip(table[key].astype(int), table["name"].astype(str), strict=True))
    if not isinstance(labels, Mapping):
        names = list(labels)
        if len(names) != present.size:
            raise FmriInputError(
                f"labels: {len(names)} names given for {present.size} non-background labels in {atlas_name}"
            )
        return names
    known = {int(k) for k in labels}
    unknown = sorted(set(present.tolist()) - known)
    if unknown:
        raise FmriInputError(f"{atlas_name}: atlas label values {unknown[:10]} are not in the labels table")
    missing = sorted(known - set(present.tolist()))
    if missing:
        raise FmriInputError(
            f"{atlas_name}: labels table lists {missing[:10]} that have no voxel in the atlas image; "
            "drop them from the table or fix the atlas"
        )
    return [labels[int(v)] for v in present]


class LabelAverager:
    """Mean signal per atlas label, for any number of images on the atlas's grid.

    Args:
        atlas_img: 3-D integer label image (0 = background).
        background_label: label value ignored.

    `transform(data)` maps `(x, y, z, t)` data to `(n_labels, t)` float32 with float64 sums.
    """

    def __init__(self, atlas_img: ImageLike, background_label: int = 0) -> None:
        atlas = load_image(atlas_img)
        self.name = str(atlas_img) if not isinstance(atlas_img, nib.spatialimages.SpatialImage) else "atlas_img"
        values = image_data(atlas, self.name)
        if values.ndim == 4 and values.shape[3] == 1:
            values = values[..., 0]
        if values.ndim != 3:
            raise FmriInputError(f"{self.name}: expected a 3-D label image, found shape {values.shape}")
        if not np.allclose(values, np.round(values)):
            raise FmriInputError(f"{self.name}: expected integer labels, found non-integer values")
        self.shape = values.shape
        self.affine = atlas.affine
        flat = np.round(values).astype(np.int64).ravel(order="F")
        foreground = np.flatnonzero(flat != background_label)
        self.order = foreground[np.argsort(flat[foreground], kind="stable")]
        sorted_labels = flat[self.order]
        self.labels, self.starts, self.counts = np.unique(sorted_labels, return_index=True, return_counts=True)
        if self.labels.size == 0:
            raise FmriInputError(f"{self.name}: the atlas has no label other than background {background_label}")

    def check_grid(self, img: nib.Nifti1Image, name: str) -> None:
        if img.shape[:3] != self.shape or not np.allclose(img.affine, self.affine, atol=1e-4):
            raise FmriInputError(
                f"{name}: image grid {img.shape[:3]} (affine diag {np.diag(img.affine)[:3].round(3).tolist()}) "
                f"does not match atlas {self.name} grid {self.shape} (affine diag "
                f"{np.diag(self.affine)[:3].round(3).tolist()}); resample the atlas with "
                "nilearn.image.resample_to_img(atlas, img, interpolation='nearest')"
            )

    def transform(self, data: np.ndarray, frames_per_chunk: int = 32) -> np.ndarray:
        """`(x, y, z, t)` -> `(n_labels, t)` label means.

        Frames are processed in chunks of `frames_per_chunk` (gather voxels in label order, cast to
        float64, `np.add.reduceat`), which bounds the float64 copy to one chunk.
        """
        n_time = data.shape[3]
        # F-ordered (x, y, z, t) is (t, voxel) C-contiguous after this reshape: no copy.
        frames = np.reshape(data, (-1, n_time), order="F").T
        sums = np.empty((n_time, self.labels.size), dtype=np.float64)
        for start in range(0, n_time, frames_per_chunk):
            chunk = frames[start : start + frames_per_chunk][:, self.order].astype(np.float64)
            sums[start : start + frames_per_chunk] = np.add.reduceat(chunk, self.starts, axis=1)
        return (sums / self.counts).T.astype(np.float32)


def confound_matrix(confounds: Any, n_volumes: int, source: str) -> np.ndarray:
    """Regressors `(n_volumes, n_confounds)` float64 from a TSV/CSV path, a DataFrame or an array.

    The first row of fMRIPrep's derivative columns (`*_derivative1*`) is n/a by design (a
    derivative has no value at the first frame): like `nilearn.interfaces.fmriprep.load_confounds`,
    it takes the second row's value. Any other NaN/inf is an error naming the columns.

    Args:
        confounds: path (`.tsv` tab-separated, else comma-separated, with a header), DataFrame, or
            array `(n_volumes,)` / `(n_volumes, n_confounds)`.
        n_volumes: frames of the image.
        source: how errors name the confounds when they are not a path.
    """
    import pandas as pd

    if isinstance(confounds, (str, Path)):
        source = str(confounds)
        try:
            frame = pd.read_csv(confounds, sep="\t" if str(confounds).endswith(".tsv") else ",")
        except (OSError, ValueError) as error:  # pandas parse errors are ValueErrors
            raise FmriInputError(
                f"{source}: expected a table of confound regressors, found an unreadable file ({error})"
            ) from None
    elif isinstance(confounds, pd.DataFrame):
        frame = confounds
    else:
        array = np.asarray(confounds)
        array = array[:, None] if array.ndim == 1 else array
        if array.ndim != 2:
            raise FmriInputError(f"{source}: expected confounds (n_volumes, n_confounds), found shape {array.shape}")
        frame = pd.DataFrame(array, columns=[f"column {i}" for i in range(array.shape[1])])
    non_numeric = [str(c) for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise FmriInputError(
            f"{source}: expected numeric confound columns, found non-numeric columns {non_numeric[:10]}"
        )
    if len(frame) != n_volumes:
        raise FmriInputError(f"{source}: expected {n_volumes} rows of confounds (one per frame), found {len(frame)}")
    values = frame.to_numpy(dtype=np.float64, copy=True)
    bad = ~np.isfinite(values)
    by_design = bad[0] & np.array(["derivative1" in str(c) for c in frame.columns]) & (len(frame) > 1)
    values[0, by_design] = values[1, by_design]
    bad[0, by_design] = False
    if bad.any():
        columns = [f"{frame.columns[c]} ({bad[:, c].sum()} rows)" for c in np.flatnonzero(bad.any(axis=0))]
        raise FmriInputError(
            f"{source}: expected finite confounds, found NaN/inf in columns {columns[:10]}; only the first row of "
            "fMRIPrep's *_derivative1* columns may be n/a (select regressors with "
            "nilearn.interfaces.fmriprep.load_confounds, or fill them yourself)"
        )
    return values


def read_nifti(
    img: ImageLike,
    atlas_img: ImageLike | LabelAverager,
    labels: LabelsLike = None,
    tr: float | None = None,
    confounds: Any = None,
    sample_mask: np.ndarray | None = None,
    censoring: Censoring = "reject",
    confound_strategy: Sequence[str] = ("motion", "high_pass", "wm_csf"),
    confound_kwargs: Mapping[str, Any] | None = None,
    standardize: str | None = None,
    detrend: bool = False,
    subject: str | None = None,
    session: str | None = None,
    dataset: str = "unknown",
    atlas: str | None = None,
) -> FmriScan:
    """Parcellate a 4-D NIfTI image with a label atlas.

    Args:
        img: 4-D image `(x, y, z, t)`, path or nibabel image.
        atlas_img: 3-D label image on the same grid, or a `LabelAverager` built once for a cohort.
        labels: names for the labels: `{value: name}`, names in label order, or a TSV/CSV with
            columns `index` (or `label`) and `name`. Atlas values missing from the table (or table
            entries missing from the atlas) raise `FmriInputError`.
        tr: seconds; else `RepetitionTime` from the BIDS JSON metadata (inheritance principle);
            else the header's time zoom.
        confounds: `None`; `"fmriprep"` to load them from the fMRIPrep derivatives next to `img`
            with `nilearn.interfaces.fmriprep.load_confounds(img, confound_strategy, **confound_kwargs)`
            (which also gives `sample_mask` when scrubbing); or an array/DataFrame/TSV path of
            regressors `(t, n_confounds)` (see `confound_matrix` for NaN).
        sample_mask: frames to keep, as indices (nilearn's convention) or a boolean mask; when
            given it takes precedence over the one fMRIPrep's confounds give.
        censoring: what to do with censored frames inside the series (frames censored at the start
            or end only shorten it): `"reject"` (default) raises `FmriInputError` naming the scan and
            the censored fraction; `"interpolate"` regresses the confounds on the kept frames, as
            nilearn does, then fills the censored frames by a cubic spline through the cleaned kept
            frames (Power et al. 2014), so the series stays evenly sampled.
        standardize: passed to `nilearn.signal.clean` (`None` keeps the signal's scale).
        detrend: passed to `nilearn.signal.clean`.
        subject, session: ids; default from BIDS entities of the file name.
        dataset, atlas: metadata for the record.

    Returns:
        `FmriScan` `(n_labels, t)` float32: `t` runs from the first to the last kept frame, and
        `censored` records the mask over the acquired frames (`None` without a mask); `extra`
        holds the BIDS entities and the atlas label values.
    """
    if censoring not in CENSORING:
        raise FmriInputError(f"censoring: expected one of {CENSORING}, found {censoring!r}")
    path = None if isinstance(img, nib.spatialimages.SpatialImage) else Path(img)
    name = str(path) if path is not None else "img"
    image = load_image(img)
    if image.ndim != 4:
        raise FmriInputError(f"{name}: expected a 4-D image (x, y, z, time), found {image.ndim}-D shape {image.shape}")
    averager = atlas_img if isinstance(atlas_img, LabelAverager) else LabelAverager(atlas_img)
    averager.check_grid(image, name)
    resolved_tr = resolve_tr(image, path, tr)
    n_volumes = image.shape[3]
    if isinstance(confounds, str) and confounds == "fmriprep":
        if path is None:
            raise FmriInputError("confounds='fmriprep' needs img as a path inside fMRIPrep derivatives")
        from nilearn.interfaces.fmriprep import load_confounds

        confounds, found_mask = load_confounds(str(path), strategy=tuple(confound_strategy), **(confound_kwargs or {}))
        confounds = confound_matrix(confounds, n_volumes, f"{name} (fMRIPrep confounds)")
        sample_mask = found_mask if sample_mask is None else sample_mask
    elif confounds is not None:
        confounds = confound_matrix(confounds, n_volumes, "confounds")
    kept = kept_frames(sample_mask, n_volumes, name) if sample_mask is not None else None
    if kept is not None:
        check_gaps(kept, n_volumes, censoring, name)
    signals = averager.transform(image_data(image, name))
    if confounds is not None or kept is not None or standardize or detrend:
        from nilearn.signal import clean

        signals = clean(
            signals.T,
            confounds=confounds,
            sample_mask=kept,
            t_r=resolved_tr,
            standardize=standardize,
            detrend=detrend,
            standardize_confounds=True,
        ).T.astype(np.float32)
    if kept is not None:
        signals = fill_censored(signals, kept)
    names = _label_names(averager.labels, labels, averager.name)
    array = validate_fmri(signals, name, tr=resolved_tr)
    default_subject, default_session = subject_and_session(path) if path is not None else ("unknown", None)
    entities = parse_entities(path) if path is not None else {}
    return FmriScan(
        data=array,
        tr=resolved_tr,
        subject=subject or default_subject,
        session=session or default_session,
        dataset=dataset,
        atlas=atlas or averager.name,
        roi_names=names,
        source=name,
        censored=censored_mask(kept, n_volumes) if kept is not None else None,
        extra={"bids": entities, "label_values": averager.labels.tolist()},
    )


def find_fmriprep_bold(derivatives: str | Path, space: str | None = None, task: str | None = None) -> list[Path]:
    """Preprocessed BOLD images (`*_desc-preproc_bold.nii[.gz]`) under an fMRIPrep derivatives folder."""
    root = Path(derivatives)
    if not root.is_dir():
        raise FmriInputError(f"{root}: expected an fMRIPrep derivatives folder, found no such folder")
    found = []
    for file in sorted(root.rglob("*_desc-preproc_bold.nii*")):
        entities = parse_entities(file)
        if (space is None or entities.get("space") == space) and (task is None or entities.get("task") == task):
            found.append(file)
    if not found:
        raise FmriInputError(
            f"{root}: no *_desc-preproc_bold.nii[.gz] files"
            + (f" with space-{space}" if space else "")
            + (f" and task-{task}" if task else "")
        )
    return found


def iter_fmriprep(
    derivatives: str | Path,
    atlas_img: ImageLike,
    space: str | None = None,
    task: str | None = None,
    **kwargs: Any,
) -> Iterator[FmriScan]:
    """Yield one scan per preprocessed BOLD run of an fMRIPrep tree, with its confounds.

    `kwargs` go to `read_nifti`; `confounds` defaults to `"fmriprep"`.
    """
    kwargs.setdefault("confounds", "fmriprep")
    averager = LabelAverager(atlas_img)
    for file in find_fmriprep_bold(derivatives, space, task):
        yield read_nifti(file, averager, **kwargs)


__all__ = [
    "ImageLike",
    "LabelAverager",
    "LabelsLike",
    "confound_matrix",
    "find_fmriprep_bold",
    "gunzip",
    "image_data",
    "iter_fmriprep",
    "load_image",
    "read_nifti",
    "resolve_tr",
]
