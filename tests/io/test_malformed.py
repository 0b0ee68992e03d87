"""Every kind of malformed file ends in an FmriInputError naming the file, what was found and what was expected.

One case per kind, each fixture file written by the test. Array files go through `read_array_file`,
images through `read_nifti`. (A missing TR and an ROI-count mismatch are in test_readers.py.)
"""

import gzip

import h5py
import nibabel as nib
import numpy as np
import pytest
import scipy.io

from modeling_fmrilm import FmriInputError
from modeling_fmrilm.io import read_array_file, read_nifti

ROIS, FRAMES = 7, 50


def good() -> np.ndarray:
    return (np.random.default_rng(0).standard_normal((ROIS, FRAMES)) * 10 + 100).astype(np.float32)


def truncated(path, fraction=0.5):
    """Cut a file written in full to `fraction` of its bytes."""
    content = path.read_bytes()
    path.write_bytes(content[: int(len(content) * fraction)])


def npy_truncated(path):
    np.save(path, good())
    truncated(path)


def mat_truncated(path):
    scipy.io.savemat(path, {"tc": good()})
    truncated(path)


def h5_truncated(path):
    with h5py.File(path, "w") as handle:
        handle["tc"] = good()
    truncated(path)


def npz_truncated(path):
    np.savez(path, tc=good())
    truncated(path)


def sparse(path, size):
    """A file of `size` zero bytes that takes no disk space."""
    with open(path, "wb") as handle:
        handle.truncate(size)


def npy_header_only(path, shape, descr, fill=False):
    """A .npy header declaring `shape`, followed (`fill`) by as many zero data bytes as it needs, sparse."""
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": descr, "fortran_order": False, "shape": shape})
        if fill:
            handle.truncate(handle.tell() + int(np.prod(shape)) * np.dtype(descr).itemsize)


def with_value(row, column, value):
    def write(path):
        data = good()
        data[row, column] = value
        np.save(path, data)

    return write


def table(text):
    return lambda path: path.write_text(text)


HEADER = ",".join(f"roi{i}" for i in range(3))
ARRAY_CASES = {
    # kind: (file name, writer, pattern for what was found and what was expected)
    "empty .npy": (
        "a.npy",
        lambda p: p.write_bytes(b""),
        r"expected a numeric NumPy \.npy array, found an empty file \(0 bytes\)",
    ),
    "truncated .npy": (
        "a.npy",
        npy_truncated,
        r"found \d+ data bytes where the header's shape \(7, 50\) of float32 needs 1400: the file is truncated",
    ),
    "pickled object .npy": (
        "a.npy",
        lambda p: np.save(p, np.array([good(), "x"], dtype=object), allow_pickle=True),
        r"expected a numeric NumPy \.npy array, found an array of Python objects \(dtype object.*never unpickled",
    ),
    "not an .npy": ("a.npy", lambda p: p.write_bytes(b"hello world" * 20), r"found no readable \.npy header"),
    "truncated .mat": (
        "a.mat",
        mat_truncated,
        r"expected a readable MATLAB \.mat file, found a truncated or corrupt file",
    ),
    "empty .mat": (
        "a.mat",
        lambda p: p.write_bytes(b""),
        r"expected a readable MATLAB \.mat file, found an empty file",
    ),
    "not a .mat": (
        "a.mat",
        lambda p: p.write_bytes(b"hello world" * 20),
        r"expected a readable MATLAB \.mat file, found a truncated or corrupt",
    ),
    "corrupt .h5": (
        "a.h5",
        lambda p: p.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100),
        r"expected a readable HDF5 file, found a truncated or corrupt",
    ),
    "truncated .h5": ("a.h5", h5_truncated, r"expected a readable HDF5 file, found a truncated or corrupt"),
    "truncated .npz": (
        "a.npz",
        npz_truncated,
        r"expected a readable NumPy \.npz archive .*found a truncated or corrupt",
    ),
    "CSV with text cells": (
        "a.csv",
        table(f"{HEADER}\n1,2,3\n4,five,6\n7,8,9\n"),
        r"expected numbers in every cell .*found text in 1 column\(s\) \['roi1'\] \(first: 'five' in column 'roi1', line 3\)",
    ),
    "ragged CSV, long row": (
        "a.csv",
        table(f"{HEADER}\n1,2,3\n4,5,6,7\n7,8,9\n"),
        r"expected 3 fields on every line .*1 ragged row\(s\) \(line 3: 4\)",
    ),
    "ragged TSV, short row": (
        "a.tsv",
        table("r0\tr1\tr2\n1\t2\t3\n4\t5\n7\t8\t9\n"),
        r"expected 3 fields on every line .*\(line 3: 2\)",
    ),
    "empty CSV": ("a.csv", table(""), r"expected a readable table .* found an empty file \(0 bytes\)"),
    "complex values": (
        "a.npy",
        lambda p: np.save(p, good() + 1j),
        r"expected real BOLD values, found complex dtype complex64",
    ),
    "boolean values": ("a.npy", lambda p: np.save(p, good() > 100), r"expected numbers, found dtype bool"),
    "text array": ("a.npy", lambda p: np.save(p, good().astype(str)), r"expected numbers, found dtype <U"),
    "3-D array": (
        "a.npy",
        lambda p: np.save(p, good()[None]),
        r"expected a 2-D array \(n_rois, n_timepoints\), found shape \(1, 7, 50\)",
    ),
    "NaN": (
        "a.npy",
        with_value(3, 10, np.nan),
        r"expected finite values, found NaN/inf in 1 ROI\(s\) \(ROI indices \[3\]; first at \(3, 10\)\)",
    ),
    "inf": (
        "a.npy",
        with_value(2, 5, np.inf),
        r"expected finite values, found NaN/inf in 1 ROI\(s\) \(ROI indices \[2\]",
    ),
    "constant ROI": (
        "a.npy",
        lambda p: np.save(p, np.where(np.arange(ROIS)[:, None] == 4, 1.0, good())),
        r"expected every ROI to vary in time, found 1 constant ROI\(s\) \(indices \[4\]\)",
    ),
    "too short": ("a.npy", lambda p: np.save(p, good()[:, :1]), r"expected at least 2 time points on axis 1, found 1"),
    "several arrays, no key": (
        "a.npz",
        lambda p: np.savez(p, x=good(), y=good()),
        r"expected one array holding the time series or key=<name>, found \['x', 'y'\]",
    ),
    "unknown suffix": ("a.txt", table("1 2 3\n"), r"expected one of \('\.mat'.*found '\.txt'"),
    "missing file": ("a.npy", lambda p: None, r"a\.npy: expected a scan file, found no such file"),
    "a folder": ("a.npy", lambda p: p.mkdir(), r"a\.npy: expected a scan file, found a folder"),
    "symbolic link loop": (
        "a.npy",
        lambda p: (p.symlink_to(p.with_name("b.npy")), p.with_name("b.npy").symlink_to(p)),
        r"a\.npy: expected a scan file, found a symbolic link loop",
    ),
    "header-only TSV": (
        "a.tsv",
        table("r0\tr1\tr2\n"),
        r"expected time rows below the header row .*found 3 column name\(s\) and no rows",
    ),
    "NUL-filled TSV (1 GB, sparse)": (
        "a.tsv",
        lambda p: sparse(p, 2**30),
        r"expected a text table of at most 100,000 time rows .*found binary content \(a NUL byte at byte 0\)",
    ),
    "CSV line too long": (
        "a.csv",
        table("r0\n" + "1" * 3_200_001 + "\n"),
        r"found line 2 longer than 3,200,000 bytes",
    ),
    "CSV of too many rows": ("a.csv", table("r0,r1\n" + "1,2\n" * 100_001), r"found at least 100,001 rows"),
    ".npy declaring shape (94, 1e12)": (
        "a.npy",
        lambda p: npy_header_only(p, (94, 10**12), "<f4"),
        r"expected a parcellated scan of at most 100,000 ROIs x 100,000 frames, 134,217,728 values and 1 GiB, found a declared shape \(94, 1000000000000\) of float32",
    ),
    ".npy of 1 GB, valid header (sparse)": (
        "a.npy",
        lambda p: npy_header_only(p, (94, 2_856_000), "<f4", fill=True),
        r"found a declared shape \(94, 2856000\) of float32 \(1,024\.1 MiB\)",
    ),
    ".npy declaring 4 GB of text": (
        "a.npy",
        lambda p: npy_header_only(p, (1000, 10_000), "<U100", fill=True),
        r"and 1 GiB, found a declared shape \(1000, 10000\) of <U100 \(3,814\.7 MiB\)",
    ),
    ".h5 declaring a huge dataset": (
        "a.h5",
        lambda p: h5py.File(p, "w").create_dataset("tc", shape=(94, 10**9), dtype="f4"),
        r"found a declared shape \(94, 1000000000\) of float32",
    ),
}


SHAPE = (4, 4, 3)


def bold_image(n_time=12) -> nib.Nifti1Image:
    data = np.random.default_rng(1).standard_normal(SHAPE + (n_time,)).astype(np.float32) + 100
    image = nib.Nifti1Image(data, np.eye(4))
    image.header.set_zooms((1.0, 1.0, 1.0, 2.0))
    return image


def atlas_image(shape=SHAPE, affine=None) -> nib.Nifti1Image:
    return nib.Nifti1Image(
        (np.arange(np.prod(shape)).reshape(shape) % 3 + 1).astype(np.int16), np.eye(4) if affine is None else affine
    )


def nifti_truncated_gzip(path):
    nib.save(bold_image(), path)
    truncated(path, 0.6)


def nifti_truncated_data(path):
    nib.save(bold_image(), path)  # uncompressed: the header survives, the data block is cut
    truncated(path, 0.7)


NIFTI_CASES = {
    "truncated gzip": (
        "bold.nii.gz",
        nifti_truncated_gzip,
        r"expected a complete gzip-compressed NIfTI file, found a truncated or corrupt gzip stream",
    ),
    "corrupt gzip": (
        "bold.nii.gz",
        lambda p: p.write_bytes(b"\x1f\x8b\x08\x00" + b"garbage" * 30),
        r"found a truncated or corrupt gzip stream",
    ),
    "not a NIfTI": (
        "bold.nii.gz",
        lambda p: p.write_bytes(gzip.compress(b"hello world" * 60)),
        r"expected a NIfTI-1/2 image, found content nibabel cannot read",
    ),
    "truncated data block": (
        "bold.nii",
        nifti_truncated_data,
        r"expected \(4, 4, 3, 12\) voxels of float32 as the header says, found a truncated data block",
    ),
    "empty file": (
        "bold.nii.gz",
        lambda p: p.write_bytes(b""),
        r"expected a NIfTI-1/2 image, found an empty file \(0 bytes\)",
    ),
    "a few bytes of gzip": (
        "bold.nii.gz",
        lambda p: p.write_bytes(gzip.compress(b"\x00" * 10)),
        r"expected a NIfTI-1/2 image, found content nibabel cannot read",
    ),
    "3-D image": (
        "bold.nii.gz",
        lambda p: nib.save(nib.Nifti1Image(np.ones(SHAPE, np.float32), np.eye(4)), p),
        r"expected a 4-D image \(x, y, z, time\), found 3-D",
    ),
}


CASES = {
    **{kind: (*case, lambda path: read_array_file(path, tr=2.0)) for kind, case in ARRAY_CASES.items()},
    **{kind: (*case, lambda path: read_nifti(path, atlas_image(), tr=2.0)) for kind, case in NIFTI_CASES.items()},
}


@pytest.mark.parametrize("kind", list(CASES))
def test_malformed_file_is_named(tmp_path, kind):
    file_name, write, pattern, read = CASES[kind]
    path = tmp_path / file_name
    write(path)
    with pytest.raises(FmriInputError, match=pattern) as error:
        read(path)
    assert str(error.value).startswith(str(path))


ATLAS_CASES = {
    "atlas on another grid (shape)": (
        atlas_image((4, 4, 2)),
        r"bold\.nii\.gz: image grid \(4, 4, 3\) .*does not match atlas",
    ),
    "atlas on another grid (affine)": (
        atlas_image(affine=np.diag([2.0, 2.0, 2.0, 1.0])),
        r"does not match atlas .*resample_to_img",
    ),
    "atlas with several volumes": (
        nib.Nifti1Image(np.ones(SHAPE + (2,), np.int16), np.eye(4)),
        r"atlas_img: expected a 3-D label image, found shape \(4, 4, 3, 2\)",
    ),
    "atlas of non-integer values": (
        nib.Nifti1Image(np.full(SHAPE, 1.5, np.float32), np.eye(4)),
        r"atlas_img: expected integer labels",
    ),
    "atlas of background only": (
        nib.Nifti1Image(np.zeros(SHAPE, np.int16), np.eye(4)),
        r"atlas_img: the atlas has no label other than background",
    ),
}


@pytest.mark.parametrize("kind", list(ATLAS_CASES))
def test_bad_atlas_is_named(tmp_path, kind):
    atlas, pattern = ATLAS_CASES[kind]
    path = tmp_path / "bold.nii.gz"
    nib.save(bold_image(), path)
    with pytest.raises(FmriInputError, match=pattern):
        read_nifti(path, atlas, tr=2.0)


PEAK_SCRIPT = """
import resource, sys, time
import pandas  # noqa: F401  (imported by the table reader; its own memory is not the file's)
from modeling_fmrilm import FmriInputError
from modeling_fmrilm.io import read_array_file
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    read_array_file(sys.argv[1], tr=2.0)
except FmriInputError as error:
    print(type(error).__name__)
print(time.perf_counter() - start, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


@pytest.mark.parametrize("name,write", [
    ("nul.tsv", lambda p: sparse(p, 2**30)),
    ("big.npy", lambda p: npy_header_only(p, (94, 2_856_000), "<f4", fill=True)),
    ("constant.npy", lambda p: npy_header_only(p, (3000, 10_000), "<f8", fill=True)),  # 240 MB of zeros, inside the caps
])  # fmt: skip
def test_hostile_files_are_refused_in_bounded_memory(tmp_path, name, write):
    """Peak memory of reading the file, in a fresh process, over what the process held before: a 1 GB
    NUL-filled table or a 1 GB .npy beyond the caps is refused within a second and a few MiB; a
    constant .npy inside the caps costs its float32 result (120 MB), never the file twice."""
    import subprocess
    import sys

    write(tmp_path / name)
    result = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(tmp_path / name)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    refused, figures = result.stdout.splitlines()
    seconds, peak_mib = map(float, figures.split())
    assert refused == "FmriInputError"
    limit_s, limit_mib = (5.0, 200) if name == "constant.npy" else (1.0, 20)
    assert seconds < limit_s and peak_mib < limit_mib, (seconds, peak_mib)
