"""Readers for parcellated files: round trips, TR resolution, key choice, bad input."""

import json

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io

from modeling_fmrilm import FmriInputError
from modeling_fmrilm.io import find_scan_files, load_scans, parse_entities, read_array_file


@pytest.fixture
def scan_array():
    rng = np.random.default_rng(0)
    return rng.standard_normal((7, 50)).astype(np.float32) * 10 + 100


def test_mat_round_trip_with_key_choice(tmp_path, scan_array):
    path = tmp_path / "sub-01_ses-2_task-rest_bold.mat"
    scipy.io.savemat(path, {"tc": scan_array, "other": np.ones((2, 2)), "tr": 0.8})
    with pytest.raises(FmriInputError, match=r"other.*tc|key=<name>"):
        read_array_file(path)
    with pytest.raises(FmriInputError, match="'nope' not found"):
        read_array_file(path, key="nope")
    scan = read_array_file(path, key="tc")
    np.testing.assert_array_equal(scan.data, scan_array)
    assert scan.data.dtype == np.float32
    assert scan.tr == pytest.approx(0.8)
    assert (scan.subject, scan.session) == ("01", "2")


def test_npy_npz_round_trip_and_time_major(tmp_path, scan_array):
    np.save(tmp_path / "a.npy", scan_array.T)
    scan = read_array_file(tmp_path / "a.npy", tr=2.0, time_major=True)
    np.testing.assert_array_equal(scan.data, scan_array)
    np.savez(tmp_path / "b.npz", bold=scan_array, TR=1.5)
    scan = read_array_file(tmp_path / "b.npz")
    np.testing.assert_array_equal(scan.data, scan_array)
    assert scan.tr == 1.5


def test_h5_round_trip_dataset_path_and_attribute_tr(tmp_path, scan_array):
    path = tmp_path / "c.h5"
    with h5py.File(path, "w") as handle:
        dataset = handle.create_dataset("group/timeseries", data=scan_array)
        dataset.attrs["tr"] = 0.72
        handle.create_dataset("group/confounds", data=np.zeros(3))
    with pytest.raises(FmriInputError, match="group/confounds"):
        read_array_file(path)
    scan = read_array_file(path, key="group/timeseries")
    np.testing.assert_array_equal(scan.data, scan_array)
    assert scan.tr == pytest.approx(0.72)


@pytest.mark.parametrize("suffix,sep", [(".tsv", "\t"), (".csv", ",")])
def test_table_is_time_rows_roi_columns_as_nilearn_writes(tmp_path, scan_array, suffix, sep):
    path = tmp_path / f"sub-07_timeseries{suffix}"
    names = [f"roi_{i}" for i in range(scan_array.shape[0])]
    pd.DataFrame(scan_array.T, columns=names).to_csv(path, sep=sep, index=False)
    (tmp_path / "sub-07_timeseries.json").write_text(json.dumps({"RepetitionTime": 2.5}))
    scan = read_array_file(path)
    np.testing.assert_allclose(scan.data, scan_array, rtol=1e-6)
    assert scan.roi_names == names
    assert scan.tr == 2.5
    assert scan.subject == "07"


def test_tr_precedence_argument_over_sidecar_over_file(tmp_path, scan_array):
    path = tmp_path / "d.npz"
    np.savez(path, x=scan_array, tr=1.0)
    assert read_array_file(path).tr == 1.0
    (tmp_path / "d.json").write_text(json.dumps({"RepetitionTime": 3.0}))
    assert read_array_file(path).tr == 3.0
    assert read_array_file(path, tr=0.5).tr == 0.5


def test_missing_tr_is_an_error(tmp_path, scan_array):
    np.save(tmp_path / "e.npy", scan_array)
    with pytest.raises(FmriInputError, match=r"e\.npy: no repetition time"):
        read_array_file(tmp_path / "e.npy")


def test_roi_count_mismatch_names_both_axes_and_suggests_transpose(tmp_path, scan_array):
    np.save(tmp_path / "f.npy", scan_array.T)
    with pytest.raises(FmriInputError) as error:
        read_array_file(tmp_path / "f.npy", tr=2.0, num_rois=7)
    message = str(error.value)
    assert "f.npy" in message and "axis 0: 50" in message and "axis 1: 7" in message
    assert "transpose" in message and "looks like time" in message


def test_folder_reading_and_bids_entities(tmp_path, scan_array):
    for subject in ("01", "02", "03"):
        folder = tmp_path / f"sub-{subject}" / "func"
        folder.mkdir(parents=True)
        np.save(folder / f"sub-{subject}_task-rest_bold.npy", scan_array + int(subject))
        (folder / f"sub-{subject}_task-rest_bold.json").write_text(json.dumps({"RepetitionTime": 2.0}))
    files = find_scan_files(tmp_path)
    assert [f.suffix for f in files] == [".npy"] * 3  # sidecars skipped
    scans = load_scans(tmp_path)
    assert [s.subject for s in scans] == ["01", "02", "03"]
    np.testing.assert_array_equal(scans[2].data, scan_array + 3)
    assert parse_entities(files[0]) == {"sub": "01", "task": "rest"}
    with pytest.raises(FmriInputError, match="no such folder"):
        find_scan_files(tmp_path / "missing")


@pytest.mark.parametrize("dtype,order", [("<f4", "C"), (">f8", "C"), ("<i2", "C"), ("<f8", "F")])
def test_npy_read_in_blocks_keeps_values_and_layout(tmp_path, scan_array, dtype, order, monkeypatch):
    """The .npy reader fills its float32 result block by block (a block smaller than the array here)."""
    from modeling_fmrilm.io import readers

    monkeypatch.setattr(readers, "_BLOCK_BYTES", 64)
    stored = np.asarray(scan_array, dtype=dtype, order=order)
    np.save(tmp_path / "a.npy", stored)
    scan = read_array_file(tmp_path / "a.npy", tr=2.0)
    assert scan.data.dtype == np.float32
    np.testing.assert_array_equal(scan.data, stored.astype(np.float32))


def test_more_rois_than_frames_warns_unless_the_count_is_given(tmp_path):
    data = np.random.default_rng(0).standard_normal((30, 12))
    np.save(tmp_path / "tall.npy", data)
    with pytest.warns(
        UserWarning, match=r"tall\.npy: 30 ROIs on axis 0 but only 12 frames on axis 1; if the array is time-major"
    ):
        read_array_file(tmp_path / "tall.npy", tr=2.0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_array_file(tmp_path / "tall.npy", tr=2.0, num_rois=30).n_rois == 30
    with pytest.raises(
        FmriInputError,
        match=r"expected 12 ROIs on axis 0, found shape \(axis 0: 30, axis 1: 12\); axis 1 has 12 entries",
    ):
        read_array_file(tmp_path / "tall.npy", tr=2.0, num_rois=12)
