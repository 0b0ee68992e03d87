"""Label sources on fixture files written in each source's on-disk layout; every left-out subject named."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pytest

from modeling_fmrilm import FmriInputError
from modeling_fmrilm.io import FmriScan, read_nifti
from modeling_fmrilm.tasks import (
    ColumnSpec,
    get_task,
    load_table_scans,
    read_abide_pcp,
    read_adhd200,
    read_hcp_behavioral,
    read_participants_tsv,
    read_pcp_timeseries,
    read_subject_csv,
    task_data_from_table,
    task_targets,
)

RNG = np.random.default_rng(0)


def scans_of(subjects, dataset="toy", n_rois=5, n_timepoints=30):
    return [
        FmriScan(RNG.standard_normal((n_rois, n_timepoints)).astype(np.float32), 2.0, s, dataset=dataset)
        for s in subjects
    ]


# -- BIDS participants.tsv ----------------------------------------------------------------------


def test_bids_participants_tsv(tmp_path):
    root = tmp_path / "ds000001"
    root.mkdir()
    (root / "participants.tsv").write_text(
        "participant_id\tage\tsex\tgroup\n"
        "sub-01\t23\tM\tcontrol\n"
        "sub-02\t31.5\tF\tpatient\n"
        "sub-03\tn/a\tfemale\tcontrol\n"
        "sub-04\t40\tn/a\tpatient\n"
        "sub-05\t28\tX\tcontrol\n"
        "sub-06\t35\tmale\tcontrol\n"
    )
    table = read_participants_tsv(root)
    assert table.dataset == "ds000001" and table.subjects == ["01", "02", "03", "04", "05", "06"]
    assert table.columns["sex"] == ["male", "female", "female", None, "X", "male"]
    assert table.columns["age"] == [23.0, 31.5, None, 40.0, 28.0, 35.0]
    scans = scans_of(["01", "02", "03", "04", "05", "07"])  # 07 has no row; 06 has no scan
    with pytest.raises(FmriInputError) as error:
        task_targets(get_task("sex"), table, [s.subject for s in scans])
    message = str(error.value)
    assert "missing label for 1 subject(s): ['04']" in message and "('05', 'X')" in message and "['07']" in message
    with pytest.warns(UserWarning, match="no scan for 1 labelled subject"):
        kept, targets, report = task_targets(get_task("sex"), table, [s.subject for s in scans], strict=False)
    assert kept.tolist() == [0, 1, 2] and targets.tolist() == [0, 1, 1]
    assert (report.missing_label, report.unknown_value, report.no_label_row, report.no_scan) == (
        ["04"],
        [("05", "X")],
        ["07"],
        ["06"],
    )
    with pytest.warns(UserWarning, match=r"missing label for 1 subject\(s\): \['03'\]"):
        data = task_data_from_table("age", table, scans[:3] + scans_of(["06"]), strict=False)
    assert data.targets.tolist() == [23.0, 31.5, 35.0] and data.report.missing_label == ["03"]
    assert data.subject_keys == ["toy/01", "toy/02", "toy/06"] and data.cohort_lines[0] == "Cohort: toy.\n"
    custom = read_participants_tsv(
        root / "participants.tsv", {"group": ColumnSpec("group", {"patient": "patient", "control": "control"})}
    )
    assert custom.columns["group"][:2] == ["control", "patient"]
    with pytest.raises(FmriInputError, match="expected columns \\['diagnosis'\\]"):
        read_participants_tsv(root, {"diagnosis": "diagnosis"})


# -- ABIDE (PCP), as nilearn.datasets.fetch_abide_pcp leaves it -------------------------------------

ABIDE_HEADER = (
    ",Unnamed: 0,SUB_ID,X,subject,SITE_ID,FILE_ID,DX_GROUP,DSM_IV_TR,AGE_AT_SCAN,SEX,HANDEDNESS_CATEGORY,"
    "qc_rater_1,qc_notes_rater_1,qc_anat_rater_2,qc_func_rater_2,qc_anat_rater_3,qc_func_rater_3\n"
)
ABIDE_ROWS = [
    # SUB_ID, SITE_ID, FILE_ID, DX_GROUP, AGE_AT_SCAN, SEX, notes with commas (quoted, as in the real file)
    (50003, "PITT", "Pitt_0050003", 1, "24.45", 1, '"ok, slight motion, rater 1"'),
    (50004, "PITT", "Pitt_0050004", 2, "19.09", 2, "OK"),
    (50005, "PITT", "Pitt_0050005", 2, "-9999", 1, "OK"),
    (50006, "PITT", "no_filename", 1, "22.1", 1, "OK"),
    (50007, "PITT", "Pitt_0050007", 3, "30.2", 2, "OK"),
]


def write_abide(tmp_path, n_rois=6, n_timepoints=40):
    root = tmp_path / "ABIDE_pcp"
    folder = root / "cpac" / "nofilt_noglobal"
    folder.mkdir(parents=True)
    lines = [ABIDE_HEADER]
    for i, (sub, site, file_id, dx, age, sex, notes) in enumerate(ABIDE_ROWS):
        lines.append(f"{i},{i},{sub},{i},{sub},{site},{file_id},{dx},0,{age},{sex},R,OK,{notes},OK,OK,OK,OK\n")
        if file_id != "no_filename":
            series = RNG.standard_normal((n_timepoints, n_rois))
            header = "#" + "\t".join(f"#{2001 + r}" for r in range(n_rois))
            np.savetxt(folder / f"{file_id}_rois_cc200.1D", series, delimiter="\t", header=header[1:], comments="#")
    (root / "Phenotypic_V1_0b_preprocessed1.csv").write_text("".join(lines))
    return tmp_path


def test_abide_pcp_layout_and_join(tmp_path):
    write_abide(tmp_path)
    table = read_abide_pcp(tmp_path)
    assert table.subjects == ["50003", "50004", "50005", "50006", "50007"]
    assert table.columns["diagnosis"] == ["autism", "control", "control", "autism", "3"]
    assert table.columns["sex"] == ["male", "female", "male", "male", "female"]
    assert table.columns["age"] == [24.45, 19.09, None, 22.1, 30.2]  # -9999 is ABIDE's missing code
    assert table.no_scan == ["50006"] and sorted(table.scan_files) == ["50003", "50004", "50005", "50007"]
    assert table.scan_files["50003"].name == "Pitt_0050003_rois_cc200.1D"
    scans = load_table_scans(table, lambda path, subject: read_pcp_timeseries(path, tr=2.0, subject=subject))
    assert [s.subject for s in scans] == ["50003", "50004", "50005", "50007"] and scans[0].data.shape == (6, 40)
    series = np.loadtxt(table.scan_files["50003"])
    np.testing.assert_allclose(scans[0].data, series.T.astype(np.float32))
    with pytest.raises(FmriInputError, match=r"unknown label value for 1 subject\(s\): \[\('50007', '3'\)\]"):
        task_targets(get_task("autism"), table, [s.subject for s in scans])
    with pytest.warns(UserWarning, match=r"no scan for 1 labelled subject\(s\): \['50006'\]"):
        kept, targets, report = task_targets(get_task("autism"), table, [s.subject for s in scans], strict=False)
    assert targets.tolist() == [1, 0, 0] and report.unknown_value == [("50007", "3")] and report.no_scan == ["50006"]
    # nilearn's own fetcher reads the same files (offline: every file is already there)
    from nilearn.datasets import fetch_abide_pcp

    fetched = fetch_abide_pcp(data_dir=str(tmp_path), derivatives=["rois_cc200"], quality_checked=False, verbose=0)
    assert fetched.phenotypic["SUB_ID"].tolist() == [50003, 50004, 50005, 50007]
    np.testing.assert_allclose(fetched.rois_cc200[0], series)


def test_pcp_timeseries_errors_name_the_file(tmp_path):
    bad = tmp_path / "x_rois_cc200.1D"
    bad.write_text("#a\tb\n1\tnot-a-number\n")
    with pytest.raises(FmriInputError, match="x_rois_cc200.1D"):
        read_pcp_timeseries(bad, tr=2.0, subject="x")
    constant = tmp_path / "c_rois_cc200.1D"
    np.savetxt(constant, np.column_stack([RNG.standard_normal(20), np.zeros(20)]))
    with pytest.raises(FmriInputError, match="c_rois_cc200.1D"):
        read_pcp_timeseries(constant, tr=2.0, subject="c")


# -- ADHD-200, as nilearn.datasets.fetch_adhd leaves it ----------------------------------------------


def write_adhd(tmp_path, with_images=("0010042", "0010064")):
    root = tmp_path / "adhd"
    root.mkdir()
    (root / "ADHD200_40subs_motion_parameters_and_phenotypics.csv").write_text(
        "Subject,RestScan,MeanFD,site,sex,age,adhd\n"
        "10042,1,0.08,NYU,1,9.1,1\n"
        "10064,1,0.11,NYU,0,11.2,0\n"
        "21019,1,0.09,NYU,1,,1\n"
        "23008,1,0.10,NYU,1,10.0,2\n"
    )
    atlas = np.zeros((4, 4, 4), dtype=np.int16)
    atlas[:2], atlas[2:] = 1, 2
    for subject in with_images:
        folder = root / "data" / subject
        folder.mkdir(parents=True)
        image = RNG.standard_normal((4, 4, 4, 30)).astype(np.float32) + 100
        img = nib.Nifti1Image(image, np.eye(4))
        img.header.set_zooms((1.0, 1.0, 1.0, 2.0))
        nib.save(img, folder / f"{subject}_rest_tshift_RPI_voreg_mni.nii.gz")
        np.savetxt(folder / f"{subject}_regressors.csv", RNG.standard_normal((30, 2)), delimiter="\t")
    return nib.Nifti1Image(atlas, np.eye(4))


def test_adhd200_layout_and_join(tmp_path):
    atlas = write_adhd(tmp_path)
    table = read_adhd200(tmp_path)
    assert table.subjects == ["0010042", "0010064", "0021019", "0023008"]
    assert table.columns["diagnosis"] == ["adhd", "control", "adhd", "2"]
    assert table.columns["sex"] == ["male", "female", "male", "male"] and table.columns["age"][2] is None
    assert sorted(table.scan_files) == ["0010042", "0010064"] and table.no_scan == ["0021019", "0023008"]
    scans = load_table_scans(table, lambda path, subject: read_nifti(path, atlas, subject=subject, dataset="adhd200"))
    assert (
        [s.subject for s in scans] == ["0010042", "0010064"] and scans[0].data.shape == (2, 30) and scans[0].tr == 2.0
    )
    with pytest.warns(UserWarning, match=r"no scan for 2 labelled subject\(s\): \['0021019', '0023008'\]"):
        data = task_data_from_table("adhd", table, scans)
    assert data.targets.tolist() == [1, 0] and data.report.no_scan == ["0021019", "0023008"]
    from nilearn.datasets import fetch_adhd

    fetched = fetch_adhd(n_subjects=2, data_dir=str(tmp_path), verbose=0)
    assert fetched.phenotypic["Subject"].tolist() == ["0010042", "0010064"]
    assert [str(table.scan_files[s]) for s in ("0010042", "0010064")] == [str(f) for f in fetched.func]


# -- HCP unrestricted behavioural CSV -------------------------------------------------------------


def test_hcp_behavioral_columns_and_families(tmp_path):
    behavioural = tmp_path / "unrestricted_hcp.csv"
    behavioural.write_text(
        "Subject,Release,Acquisition,Gender,Age,MMSE_Score,CogFluidComp_Unadj,CogFluidComp_AgeAdj\n"
        "101309,S500,Q06,M,26-30,29,110.5,108.2\n"
        "102311,S500,Q06,F,22-25,30,95.12,97.0\n"
        "102816,S500,Q07,F,36+,30,,101.1\n"
        "131217,S900,Q08,M,31-35,28,121.9,119.3\n"
    )
    families = tmp_path / "restricted_hcp.csv"
    families.write_text("Subject,Family_ID,Mother_ID\n101309,F1,M1\n102311,F2,M2\n102816,F2,M2\n131217,F3,M3\n")
    table = read_hcp_behavioral(behavioural, family_csv=families)
    assert table.subjects == ["101309", "102311", "102816", "131217"]
    assert table.columns["sex"] == ["male", "female", "female", "male"]
    assert table.columns["age_band"] == ["26-30", "22-25", "36+", "31-35"]
    assert table.columns["fluid_intelligence"] == [110.5, 95.12, None, 121.9]
    assert table.families == {"101309": "F1", "102311": "F2", "102816": "F2", "131217": "F3"}
    scans = scans_of(table.subjects, dataset="hcp")
    sex = task_data_from_table("sex", table, scans)
    assert sex.targets.tolist() == [0, 1, 1, 0] and sex.split_groups == ["F1", "F2", "F2", "F3"]
    bands = task_data_from_table("hcp_age_band", table, scans)
    assert bands.targets.tolist() == [1, 0, 3, 2]
    with pytest.raises(FmriInputError, match=r"missing label for 1 subject\(s\): \['102816'\]"):
        task_data_from_table("fluid_intelligence", table, scans)


# -- any CSV with a subject column ---------------------------------------------------------------


def test_generic_subject_csv(tmp_path):
    (tmp_path / "scans").mkdir()
    table_path = tmp_path / "adni.csv"
    table_path.write_text("RID,DX,scan\n002,CN,scans/002.npy\n003,AD,scans/003.npy\n004,MCI,scans/004.npy\n005,AD,\n")
    table = read_subject_csv(
        table_path,
        "RID",
        {"diagnosis": ColumnSpec("DX", {"cn": "cn", "ad": "ad"})},
        dataset="adni",
        scan_column="scan",
    )
    assert table.columns["diagnosis"] == ["cn", "ad", "MCI", "ad"] and table.no_scan == ["005"]
    assert table.scan_files["002"] == tmp_path / "scans" / "002.npy"
    with pytest.raises(FmriInputError, match=r"\('004', 'MCI'\)"):
        task_targets(get_task("alzheimer"), table, ["002", "003", "004"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kept, targets, report = task_targets(get_task("alzheimer"), table, ["002", "003", "004"], strict=False)
    assert targets.tolist() == [0, 1] and report.no_scan == ["005"] and any("MCI" in str(w.message) for w in caught)
    with pytest.raises(FmriInputError, match="expected columns \\['SEX'\\]"):
        read_subject_csv(table_path, "RID", {"sex": ColumnSpec("SEX")})
    duplicated = tmp_path / "dup.csv"
    duplicated.write_text("id,sex\n1,M\n1,F\n")
    with pytest.raises(FmriInputError, match="several for \\['1'\\]"):
        read_subject_csv(duplicated, "id", {"sex": "sex"})
    with pytest.raises(FmriInputError, match="no such file"):
        read_subject_csv(tmp_path / "missing.csv", "id", {})
