"""BIDS metadata by the inheritance principle, on a small BIDS tree written by the test."""

import json

import nibabel as nib
import numpy as np
import pytest
from nilearn.interfaces.bids import parse_bids_filename

from modeling_fmrilm import FmriInputError
from modeling_fmrilm.io import (
    applicable_sidecars,
    bids_metadata,
    parse_entities,
    read_array_file,
    read_nifti,
    sidecar_tr,
)


def write_json(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))


@pytest.fixture
def bids(tmp_path):
    """Raw BIDS tree: RepetitionTime at the dataset root, overridden at subject and session levels."""
    root = tmp_path / "ds"
    write_json(root / "dataset_description.json", {"Name": "toy", "BIDSVersion": "1.10.0"})
    write_json(root / "bold.json", {"RepetitionTime": 5.0, "Manufacturer": "Acme"})  # fewer entities: applied first
    write_json(root / "task-rest_bold.json", {"RepetitionTime": 2.0})
    write_json(root / "task-motor_bold.json", {"RepetitionTime": 9.0})  # other task: not applicable
    write_json(root / "task-rest_physio.json", {"RepetitionTime": 9.0})  # other suffix: not applicable
    write_json(root / "sub-01" / "func" / "sub-01_task-rest_run-2_bold.json", {"RepetitionTime": 9.0})  # more entities
    write_json(root / "sub-02" / "sub-02_task-rest_bold.json", {"RepetitionTime": 0.72})  # subject level
    write_json(root / "sub-03" / "ses-1" / "sub-03_ses-1_bold.json", {"RepetitionTime": 1.5})  # session level
    write_json(root / "sub-03" / "ses-1" / "func" / "sub-03_ses-1_task-rest_bold.json", {"RepetitionTime": 0.8})
    rng = np.random.default_rng(0)
    files = {
        "01": root / "sub-01" / "func" / "sub-01_task-rest_bold.npy",
        "02": root / "sub-02" / "ses-1" / "func" / "sub-02_ses-1_task-rest_bold.npy",
        "03": root / "sub-03" / "ses-1" / "func" / "sub-03_ses-1_task-rest_bold.npy",
        "04": root / "sub-04" / "ses-1" / "func" / "sub-04_ses-1_task-rest_bold.npy",
    }
    for file in files.values():
        file.parent.mkdir(parents=True, exist_ok=True)
        np.save(file, rng.standard_normal((4, 30)).astype(np.float32))
    return root, files


def test_dataset_level_repetition_time_is_found_by_the_reader(bids):
    _, files = bids
    scan = read_array_file(files["01"])  # before: "no repetition time found"
    assert scan.tr == 2.0 and scan.subject == "01"


def test_nearest_level_wins(bids):
    root, files = bids
    assert [sidecar_tr(files[s]) for s in ("01", "02", "03", "04")] == [2.0, 0.72, 0.8, 2.0]
    assert [p.relative_to(root).as_posix() for p in applicable_sidecars(files["03"])] == [
        "bold.json",
        "task-rest_bold.json",
        "sub-03/ses-1/sub-03_ses-1_bold.json",
        "sub-03/ses-1/func/sub-03_ses-1_task-rest_bold.json",
    ]
    assert bids_metadata(files["02"]) == {"RepetitionTime": 0.72, "Manufacturer": "Acme"}  # merged, nearest wins


def test_root_without_dataset_description_is_the_subject_folders_parent(bids):
    root, files = bids
    (root / "dataset_description.json").unlink()
    assert sidecar_tr(files["01"]) == 2.0
    lone = root.parent / "loose" / "scan_bold.npy"
    lone.parent.mkdir()
    assert applicable_sidecars(lone) == []  # no BIDS tree: only the file's own folder is searched


def test_nifti_reader_takes_the_inherited_tr_over_the_header(bids):
    root, _ = bids
    bold = root / "sub-05" / "func" / "sub-05_task-rest_bold.nii.gz"
    bold.parent.mkdir(parents=True)
    rng = np.random.default_rng(1)
    image = nib.Nifti1Image(rng.standard_normal((3, 3, 2, 20)).astype(np.float32), np.eye(4))
    image.header.set_zooms((1.0, 1.0, 1.0, 3.0))
    nib.save(image, bold)
    atlas = nib.Nifti1Image(np.arange(18).reshape(3, 3, 2).astype(np.int16) % 3 + 1, np.eye(4))
    assert read_nifti(bold, atlas).tr == 2.0


def test_unordered_conflict_is_an_error(bids):
    root, files = bids
    write_json(root / "run-1_bold.json", {"RepetitionTime": 3.0})  # as many entities as task-rest_bold.json
    renamed = files["01"].with_name("sub-01_task-rest_run-1_bold.npy")
    files["01"].rename(renamed)
    with pytest.raises(
        FmriInputError,
        match=r"task-rest_bold\.json: sets RepetitionTime=2\.0 while run-1_bold\.json .* sets RepetitionTime=3\.0",
    ):
        sidecar_tr(renamed)


def test_entities_are_nilearns_parse():
    name = "sub-01_ses-2_task-rest_acq-mb_run-3_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
    assert parse_entities(name) == parse_bids_filename(name)["entities"]
    assert parse_entities(name)["space"] == "MNI152NLin2009cAsym"
    assert parse_entities("TC_rsfMRI_REST1_LR.mat") == {}  # words without values are not entities
