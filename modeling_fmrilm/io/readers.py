"""Readers for already-parcellated scans: .mat, .npy, .npz, .h5/.hdf5, .tsv/.csv.

Every reader returns an `FmriScan` whose array is ROI-major float32 `(n_rois, n_timepoints)`.
Table files follow nilearn's convention (time rows, ROI columns) and are transposed here, at the
boundary; binary arrays are taken as ROI-major unless `time_major=True`.

The repetition time comes from, in order: the `tr` argument, the file's JSON sidecar
(`RepetitionTime`), the file itself (a `tr`/`TR` entry of a .mat/.npz, an attribute of the .h5
dataset); otherwise `FmriInputError`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FmriInputError
from ..feature_extraction_fmrilm import validate_fmri
from .bids import sidecar_tr, subject_and_session
from .nifti import read_nifti
from .scan import FmriScan

ARRAY_SUFFIXES = (".mat", ".npy", ".npz", ".h5", ".hdf5", ".tsv", ".csv")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
_TR_KEYS = ("tr", "TR", "RepetitionTime")


def _choose(keys: Sequence[str], key: str | None, path: Path, what: str) -> str:
    """Pick `key` among `keys`, or the only data key; otherwise fail listing the keys found."""
    data_keys = [k for k in keys if k not in _TR_KEYS]
    if key is not None:
        if key not in keys:
            raise FmriInputError(f"{path}: {what} {key!r} not found; found {sorted(keys)}")
        return key
    if len(data_keys) == 1:
        return data_keys[0]
    raise FmriInputError(
        f"{path}: expected one {what} holding the time series or key=<name>, found {sorted(data_keys)}"
    )


def _read_mat(path: Path, key: str | None) -> tuple[np.ndarray, float | None]:
    import scipy.io

    try:
        content = scipy.io.loadmat(path)
    except NotImplementedError:  # MATLAB v7.3 files are HDF5
        return _read_h5(path, key)
    keys = [k for k in content if not k.startswith("__")]
    chosen = _choose(keys, key, path, "variable")
    tr = next((float(np.squeeze(content[k])) for k in _TR_KEYS if k in content), None)
    return content[chosen], tr


def _read_npz(path: Path, key: str | None) -> tuple[np.ndarray, float | None]:
    with np.load(path, allow_pickle=False) as content:
        chosen = _choose(list(content.files), key, path, "array")
        tr = next((float(content[k]) for k in _TR_KEYS if k in content.files), None)
        return content[chosen], tr


def _read_h5(path: Path, key: str | None) -> tuple[np.ndarray, float | None]:
    import h5py

    with h5py.File(path, "r") as handle:
        datasets: list[str] = []
        handle.visititems(lambda name, obj: datasets.append(name) if isinstance(obj, h5py.Dataset) else None)
        chosen = _choose(datasets, key, path, "dataset")
        dataset = handle[chosen]
        tr = next((float(dataset.attrs[k]) for k in _TR_KEYS if k in dataset.attrs), None)
        if tr is None:
            tr = next((float(handle.attrs[k]) for k in _TR_KEYS if k in handle.attrs), None)
        return dataset[()], tr


def _read_table(path: Path) -> tuple[np.ndarray, list[str]]:
    import pandas as pd

    frame = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
    non_numeric = [c for c in frame.columns if not np.issubdtype(frame[c].dtype, np.number)]
    if non_numeric:
        raise FmriInputError(
            f"{path}: expected numeric ROI columns (time rows, as nilearn writes them), "
            f"found non-numeric columns {non_numeric[:5]}"
        )
    return frame.to_numpy().T, [str(c) for c in frame.columns]


def read_array_file(
    path: str | Path,
    tr: float | None = None,
    key: str | None = None,
    time_major: bool = False,
    num_rois: int | None = None,
    subject: str | None = None,
    session: str | None = None,
    dataset: str = "unknown",
    atlas: str = "unknown",
    roi_names: list[str] | None = None,
) -> FmriScan:
    """Read one parcellated scan from .mat/.npy/.npz/.h5/.hdf5/.tsv/.csv.

    Args:
        path: the file.
        tr: repetition time in seconds (overrides sidecar and file).
        key: variable (.mat), array (.npz) or dataset path (.h5) that holds the time series;
            needed when the file holds more than one.
        time_major: the stored array is `(n_timepoints, n_rois)` (ignored for tables, which are
            always time rows).
        num_rois: expected ROI count; a mismatch raises `FmriInputError` naming both axes.
        subject, session: ids; by default from BIDS entities in the name, else the parent folder.
        dataset, atlas, roi_names: metadata carried into the record.

    Returns:
        `FmriScan` with ROI-major float32 data.
    """
    path = Path(path)
    if not path.is_file():
        raise FmriInputError(f"{path}: file not found")
    suffix = path.suffix.lower()
    file_tr: float | None = None
    names = roi_names
    if suffix == ".mat":
        data, file_tr = _read_mat(path, key)
    elif suffix == ".npy":
        data = np.load(path, allow_pickle=False)
    elif suffix == ".npz":
        data, file_tr = _read_npz(path, key)
    elif suffix in (".h5", ".hdf5"):
        data, file_tr = _read_h5(path, key)
    elif suffix in (".tsv", ".csv"):
        data, columns = _read_table(path)
        names = names or columns
    else:
        raise FmriInputError(f"{path}: expected one of {ARRAY_SUFFIXES} (or NIfTI with an atlas), found {suffix!r}")
    if time_major and suffix not in (".tsv", ".csv"):
        data = np.asarray(data).T
    resolved_tr = tr if tr is not None else sidecar_tr(path)
    resolved_tr = resolved_tr if resolved_tr is not None else file_tr
    if resolved_tr is None:
        raise FmriInputError(
            f"{path}: no repetition time found (no tr argument, no RepetitionTime in a JSON sidecar, "
            "no tr entry in the file); pass tr=<seconds>"
        )
    array = validate_fmri(data, str(path), num_rois=num_rois, tr=resolved_tr)
    if names is not None and len(names) != array.shape[0]:
        raise FmriInputError(f"{path}: {len(names)} ROI names given for {array.shape[0]} ROIs")
    default_subject, default_session = subject_and_session(path)
    return FmriScan(
        data=array,
        tr=float(resolved_tr),
        subject=subject or default_subject,
        session=session or default_session,
        dataset=dataset,
        atlas=atlas,
        roi_names=list(names) if names is not None else None,
        source=str(path),
    )


def find_scan_files(folder: str | Path, pattern: str = "*") -> list[Path]:
    """Scan files under `folder` (recursively) whose suffix a reader knows, sorted; JSON sidecars are skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FmriInputError(f"{folder}: expected a folder of scans, found no such folder")
    found = sorted(
        p
        for p in folder.rglob(pattern)
        if p.is_file() and (p.suffix.lower() in ARRAY_SUFFIXES or p.name.endswith(NIFTI_SUFFIXES))
    )
    if not found:
        raise FmriInputError(f"{folder}: no scan files ({', '.join(ARRAY_SUFFIXES)}) found")
    return found


def iter_scans(
    paths: str | Path | Sequence[str | Path], pattern: str = "*", **kwargs: Any
) -> Iterator[FmriScan]:
    """Yield scans one at a time from a folder or a list of files (bounded memory for any cohort).

    `kwargs` go to `read_array_file`, or to `read_nifti` for NIfTI files (which need `atlas_img`).
    """
    if isinstance(paths, (str, Path)) and Path(paths).is_dir():
        files: Sequence[str | Path] = find_scan_files(paths, pattern)
    elif isinstance(paths, (str, Path)):
        files = [paths]
    else:
        files = paths
    for file in files:
        if str(file).endswith(NIFTI_SUFFIXES):
            yield read_nifti(file, **kwargs)
        else:
            yield read_array_file(file, **kwargs)


def load_scans(paths: str | Path | Sequence[str | Path], pattern: str = "*", **kwargs: Any) -> list[FmriScan]:
    """All scans of a folder or file list, as a list (see `iter_scans`)."""
    return list(iter_scans(paths, pattern, **kwargs))
