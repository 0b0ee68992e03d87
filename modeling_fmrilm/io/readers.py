"""Readers for already-parcellated scans: .mat, .npy, .npz, .h5/.hdf5, .tsv/.csv.

Every reader returns an `FmriScan` whose array is ROI-major float32 `(n_rois, n_timepoints)`.
Table files follow nilearn's convention (time rows, ROI columns) and are transposed here, at the
boundary; binary arrays are taken as ROI-major unless `time_major=True`.

A file its library cannot parse (empty, truncated, corrupt, pickled objects, ragged rows, text
cells) is an `FmriInputError` naming the file, what was found and what was expected; so are
complex, non-numeric and non-finite values (`validate_fmri`).

The repetition time comes from, in order: the `tr` argument, the BIDS JSON metadata
(`RepetitionTime`, by the inheritance principle), the file itself (a `tr`/`TR` entry of a .mat/.npz, an attribute of the .h5
dataset); otherwise `FmriInputError`.

Sizes are checked before anything is allocated, against what a parcellated scan can be: at most
`MAX_ROIS` ROIs, `MAX_FRAMES` frames and `MAX_VALUES` values in all (512 MiB as float32; 1 GiB
as stored). A .npy or .h5 array is checked by its header's shape (a .npy also against the file's
length); a .npy is then read in blocks into the float32 result. A text table is first streamed
once, in blocks of `_BLOCK_BYTES`: it may hold no NUL byte, at most `MAX_FRAMES` rows below its
header, lines of at most `MAX_ROIS * MAX_CHARS_PER_VALUE` bytes and at most `MAX_VALUES` cells,
so that no more than `MAX_VALUES * MAX_CHARS_PER_VALUE` bytes are ever parsed.
"""

from __future__ import annotations

import csv
import math
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FmriInputError, MissingTRError
from ..feature_extraction_fmrilm import validate_fmri
from .bids import sidecar_tr, subject_and_session
from .nifti import read_nifti
from .scan import FmriScan, require_file

MAX_ROIS = 100_000
"""Most ROIs a scan may have (dense CIFTI grayordinates are 91,282)."""
MAX_FRAMES = 100_000
"""Most frames a scan may have (almost 3 hours at TR 0.1 s)."""
MAX_VALUES = 2**27
"""Most values (ROIs x frames) a scan may hold: 512 MiB as float32."""
MAX_CHARS_PER_VALUE = 32
"""Most bytes a table cell may take with its separator (`%.18e` of a negative number takes 26)."""
_BLOCK_BYTES = 1 << 20

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


def _unreadable(path: Path, kind: str, error: BaseException) -> FmriInputError:
    """The error for a file its library cannot parse: truncated, corrupt or of another format."""
    found = "an empty file (0 bytes)" if path.stat().st_size == 0 else "a truncated or corrupt file"
    return FmriInputError(f"{path}: expected a readable {kind}, found {found} ({type(error).__name__}: {error})")


def _read_mat(path: Path, key: str | None) -> tuple[np.ndarray, float | None]:
    import scipy.io

    try:
        content = scipy.io.loadmat(path)
    except NotImplementedError:  # MATLAB v7.3 files are HDF5
        return _read_h5(path, key)
    except (OSError, EOFError, ValueError, TypeError, IndexError, KeyError, scipy.io.matlab.MatReadError) as error:
        raise _unreadable(path, "MATLAB .mat file", error) from None
    keys = [k for k in content if not k.startswith("__")]
    chosen = _choose(keys, key, path, "variable")
    tr = next((float(np.squeeze(content[k])) for k in _TR_KEYS if k in content), None)
    return content[chosen], tr


def check_declared_size(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Refuse, before reading, an array whose declared shape no parcellated scan has: an axis longer than
    `MAX_ROIS` (= `MAX_FRAMES`), more than `MAX_VALUES` values or more than `MAX_VALUES * 8` bytes."""
    values = math.prod(shape)
    if (
        values > MAX_VALUES
        or max(shape, default=0) > max(MAX_ROIS, MAX_FRAMES)
        or values * dtype.itemsize > MAX_VALUES * 8
    ):
        raise FmriInputError(
            f"{path}: expected a parcellated scan of at most {MAX_ROIS:,} ROIs x {MAX_FRAMES:,} frames, "
            f"{MAX_VALUES:,} values and {MAX_VALUES * 8 / 2**30:g} GiB, found a declared shape {shape} of {dtype} "
            f"({values * dtype.itemsize / 2**20:,.1f} MiB)"
        )


def _npy_header(path: Path) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """`(shape, fortran_order, dtype, data offset)` of a .npy file, or `FmriInputError` saying why there is none."""
    if path.stat().st_size == 0:
        raise _npy_error(path, "an empty file (0 bytes)")
    read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            shape, fortran_order, dtype = read_header[version](handle)
            offset = handle.tell()
    except (OSError, EOFError, ValueError, KeyError) as error:
        raise _npy_error(path, f"no readable .npy header ({type(error).__name__}: {error})") from None
    if dtype.hasobject:
        raise _npy_error(path, f"an array of Python objects (dtype {dtype}, shape {shape}), which is never unpickled")
    return shape, fortran_order, dtype, offset


def _npy_error(path: Path, found: str) -> FmriInputError:
    return FmriInputError(f"{path}: expected a numeric NumPy .npy array, found {found}")


def _read_npy(path: Path) -> np.ndarray:
    """The array of a .npy file: header checked against the caps and the file's length, then read in
    blocks straight into float32 (real numbers) so that the file is never held twice."""
    shape, fortran_order, dtype, offset = _npy_header(path)
    check_declared_size(path, shape, dtype)
    needed = math.prod(shape) * dtype.itemsize
    if path.stat().st_size - offset < needed:
        raise _npy_error(
            path,
            f"{path.stat().st_size - offset} data bytes where the header's shape {shape} of {dtype} needs {needed}: "
            "the file is truncated",
        )
    stored = shape[::-1] if fortran_order else shape
    array = np.empty(stored, np.float32 if dtype.kind in "fiu" else dtype)
    flat = array.reshape(-1)
    step = max(1, _BLOCK_BYTES // dtype.itemsize)
    with open(path, "rb") as handle:
        handle.seek(offset)
        for start in range(0, flat.size, step):
            flat[start : start + step] = np.fromfile(handle, dtype=dtype, count=min(step, flat.size - start))
    return array.T if fortran_order else array


def _read_npz(path: Path, key: str | None) -> tuple[np.ndarray, float | None]:
    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as content:
            chosen = _choose(list(content.files), key, path, "array")
            tr = next((float(content[k]) for k in _TR_KEYS if k in content.files), None)
            return content[chosen], tr
    except FmriInputError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
        raise _unreadable(path, "NumPy .npz archive of numeric arrays", error) from None


def _read_h5(path: Path, key: str | None) -> tuple[np.ndarray, float | None]:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            datasets: list[str] = []
            handle.visititems(lambda name, obj: datasets.append(name) if isinstance(obj, h5py.Dataset) else None)
            chosen = _choose(datasets, key, path, "dataset")
            dataset = handle[chosen]
            check_declared_size(path, dataset.shape, dataset.dtype)
            tr = next((float(dataset.attrs[k]) for k in _TR_KEYS if k in dataset.attrs), None)
            if tr is None:
                tr = next((float(handle.attrs[k]) for k in _TR_KEYS if k in handle.attrs), None)
            return dataset[()], tr
    except FmriInputError:
        raise
    except (OSError, KeyError, ValueError) as error:
        raise _unreadable(path, "HDF5 file", error) from None


def _read_table(path: Path) -> tuple[np.ndarray, list[str]]:
    """Time rows x ROI columns with a header row; ragged rows and text cells are named."""
    import pandas as pd

    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    _check_table_size(path, sep)
    try:
        frame = pd.read_csv(path, sep=sep)
    except pd.errors.EmptyDataError as error:
        raise _unreadable(path, "table of time rows x ROI columns with a header row", error) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        _check_ragged(path, sep)
        raise _unreadable(path, "table of time rows x ROI columns with a header row", error) from None
    if frame.empty:
        raise FmriInputError(
            f"{path}: expected time rows below the header row (time rows x ROI columns), found "
            f"{len(frame.columns)} column name(s) and no rows"
        )
    if frame.isna().to_numpy().any():
        _check_ragged(path, sep)  # pandas pads short rows with NaN
    text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if text:
        column = frame[text[0]]
        row = int(np.flatnonzero(pd.to_numeric(column, errors="coerce").isna() & column.notna())[0])
        raise FmriInputError(
            f"{path}: expected numbers in every cell (time rows x ROI columns, as nilearn writes them), found text "
            f"in {len(text)} column(s) {[str(c) for c in text[:5]]} (first: {column.iloc[row]!r} in column "
            f"{text[0]!r}, line {row + 2})"
        )
    return frame.to_numpy().T, [str(c) for c in frame.columns]


def _check_table_size(path: Path, sep: str) -> None:
    """Stream over a table's bytes once, in blocks, before it is parsed: refuse NUL bytes, a line longer
    than `MAX_ROIS * MAX_CHARS_PER_VALUE` bytes, more than `MAX_FRAMES` rows below the header and
    more than `MAX_VALUES` cells (the rule of the module docstring)."""
    expected = (
        f"a text table of at most {MAX_FRAMES:,} time rows below its header, {MAX_ROIS:,} ROI columns "
        f"({MAX_ROIS * MAX_CHARS_PER_VALUE:,} bytes a line) and {MAX_VALUES:,} cells"
    )
    longest_line, separator = MAX_ROIS * MAX_CHARS_PER_VALUE, ord(sep)
    offset = line_start = lines = cells = 0
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK_BYTES):
            data = np.frombuffer(block, np.uint8)
            if not data.all():
                nul = offset + int(np.argmin(data))
                raise FmriInputError(f"{path}: expected {expected}, found binary content (a NUL byte at byte {nul:,})")
            ends = np.flatnonzero(data == ord("\n")) + offset
            starts = np.concatenate(([line_start], ends + 1))
            lengths = np.append(ends, offset + data.size) - starts
            lines += ends.size
            cells += int(np.count_nonzero(data == separator)) + ends.size
            if lengths.max() > longest_line:
                line = lines - ends.size + int(np.argmax(lengths > longest_line)) + 1
                raise FmriInputError(
                    f"{path}: expected {expected}, found line {line:,} longer than {longest_line:,} bytes"
                )
            if lines > MAX_FRAMES + 1:
                raise FmriInputError(f"{path}: expected {expected}, found at least {lines - 1:,} rows")
            if cells > MAX_VALUES:
                raise FmriInputError(f"{path}: expected {expected}, found at least {cells:,} cells")
            line_start, offset = int(starts[-1]), offset + data.size


def _check_ragged(path: Path, sep: str) -> None:
    """Raise naming the lines whose field count differs from the header's (a diagnosis: error path only)."""
    with open(path, newline="", errors="replace") as handle:
        counts = [(line, len(fields)) for line, fields in enumerate(csv.reader(handle, delimiter=sep), 1) if fields]
    if not counts:
        return
    expected = counts[0][1]
    ragged = [(line, n) for line, n in counts if n != expected]
    if ragged:
        listed = ", ".join(f"line {line}: {n}" for line, n in ragged[:5])
        raise FmriInputError(
            f"{path}: expected {expected} fields on every line (as in the header), found {len(ragged)} ragged row(s) "
            f"({listed}{', …' if len(ragged) > 5 else ''})"
        )


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
        num_rois: expected ROI count; a mismatch raises `FmriInputError` naming both axes. Without
            it, a scan with more ROIs than frames (often a time-major array) gives a `UserWarning`.
        subject, session: ids; by default from BIDS entities in the name, else the parent folder.
        dataset, atlas, roi_names: metadata carried into the record.

    Returns:
        `FmriScan` with ROI-major float32 data.
    """
    path = Path(path)
    require_file(path, "a scan file")
    suffix = path.suffix.lower()
    file_tr: float | None = None
    names = roi_names
    if suffix == ".mat":
        data, file_tr = _read_mat(path, key)
    elif suffix == ".npy":
        data = _read_npy(path)
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
        raise MissingTRError(
            f"{path}: no repetition time found (no tr argument, no RepetitionTime in a JSON sidecar, "
            "no tr entry in the file)"
        )
    array = validate_fmri(data, str(path), num_rois=num_rois, tr=resolved_tr)
    if num_rois is None and array.shape[0] > array.shape[1]:
        warnings.warn(
            f"{path}: {array.shape[0]} ROIs on axis 0 but only {array.shape[1]} frames on axis 1; if the array is "
            "time-major (n_timepoints, n_rois), transpose it (time_major=True), or give the ROI count to check it "
            "(num_rois, fmrilm preprocess --num-rois)",
            stacklevel=2,
        )
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


def iter_scans(paths: str | Path | Sequence[str | Path], pattern: str = "*", **kwargs: Any) -> Iterator[FmriScan]:
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


class ScanFiles(Sequence[FmriScan]):
    """The scans of a folder (or a list of files) as a lazy sequence: an item is read when asked
    for, so a share of a sharded build reads only its own files. `read_options` go to the readers
    (`iter_scans`)."""

    def __init__(self, paths: str | Path | Sequence[str | Path], **read_options: Any) -> None:
        single = isinstance(paths, (str, Path))
        self.files = (
            find_scan_files(paths)
            if single and Path(paths).is_dir()
            else [Path(p) for p in ([paths] if single else paths)]
        )
        self.read_options = read_options

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> FmriScan:
        return next(iter_scans([self.files[index]], **self.read_options))


def load_scans(paths: str | Path | Sequence[str | Path], pattern: str = "*", **kwargs: Any) -> list[FmriScan]:
    """All scans of a folder or file list, as a list (see `iter_scans`)."""
    return list(iter_scans(paths, pattern, **kwargs))


__all__ = [
    "ARRAY_SUFFIXES",
    "MAX_CHARS_PER_VALUE",
    "MAX_FRAMES",
    "MAX_ROIS",
    "MAX_VALUES",
    "NIFTI_SUFFIXES",
    "ScanFiles",
    "check_declared_size",
    "find_scan_files",
    "iter_scans",
    "load_scans",
    "read_array_file",
]
