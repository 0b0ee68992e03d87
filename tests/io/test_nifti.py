"""NIfTI + atlas reader against nilearn's NiftiLabelsMasker; fMRIPrep derivatives; bad images."""

import json
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn.interfaces.fmriprep import load_confounds
from nilearn.maskers import NiftiLabelsMasker
from scipy.interpolate import CubicSpline

from modeling_fmrilm import FmriInputError
from modeling_fmrilm.io.nifti import find_fmriprep_bold, iter_fmriprep, read_nifti

SHAPE = (10, 12, 9)
N_TIME = 40
AFFINE = np.array([[3.0, 0, 0, -15], [0, 3.0, 0, -18], [0, 0, 3.0, -12], [0, 0, 0, 1]])


def make_atlas() -> np.ndarray:
    i, j, k = np.indices(SHAPE)
    atlas = (i // 4) * 3 + (j // 5) + 1  # 9 block labels 1..9
    atlas[k == 0] = 0  # background slab
    atlas[atlas == 5] = 12  # non-contiguous label values
    return atlas.astype(np.int16)


def make_bold(seed: int = 0, tr: float | None = 2.0) -> nib.Nifti1Image:
    rng = np.random.default_rng(seed)
    data = (800 + 50 * rng.standard_normal(SHAPE + (N_TIME,))).astype(np.float32)
    img = nib.Nifti1Image(data, AFFINE)
    if tr is not None:
        img.header.set_zooms((3.0, 3.0, 3.0, tr))
        img.header.set_xyzt_units("mm", "sec")
    return img


@pytest.fixture
def files(tmp_path):
    bold = tmp_path / "sub-01_ses-a_task-rest_bold.nii.gz"
    atlas = tmp_path / "atlas.nii.gz"
    nib.save(make_bold(), bold)
    nib.save(nib.Nifti1Image(make_atlas(), AFFINE), atlas)
    return bold, atlas


def masker_reference(bold, atlas, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        masker = NiftiLabelsMasker(str(atlas), standardize=None)
        return masker.fit_transform(str(bold), **kwargs)


def test_matches_nilearn_masker(files):
    bold, atlas = files
    scan = read_nifti(bold, atlas)
    reference = masker_reference(bold, atlas)
    assert scan.data.shape == (9, N_TIME) == reference.T.shape
    np.testing.assert_allclose(scan.data, reference.T, atol=1e-5)
    assert scan.extra["label_values"] == [1, 2, 3, 4, 6, 7, 8, 9, 12]
    assert (scan.subject, scan.session, scan.tr) == ("01", "a", 2.0)
    assert scan.extra["bids"]["task"] == "rest"


def test_confounds_match_masker_with_confounds(files, tmp_path):
    bold, atlas = files
    rng = np.random.default_rng(1)
    regressors = pd.DataFrame(rng.standard_normal((N_TIME, 3)), columns=["a", "b", "c"])
    path = tmp_path / "conf.tsv"
    regressors.to_csv(path, sep="\t", index=False)
    scan = read_nifti(bold, atlas, confounds=path, sample_mask=np.arange(2, N_TIME))
    reference = masker_reference(bold, atlas, confounds=regressors.to_numpy(), sample_mask=np.arange(2, N_TIME))
    np.testing.assert_allclose(scan.data, reference.T, atol=1e-3)
    # two leading frames censored: the series is shorter, not gapped, and the record says so
    np.testing.assert_array_equal(np.flatnonzero(scan.censored), [0, 1])
    assert scan.censored.shape == (N_TIME,) and not scan.interpolated.any()
    kept = regressors.to_numpy()[2:]
    kept = kept - kept.mean(axis=0)
    residual = scan.data - scan.data.mean(axis=1, keepdims=True)
    assert np.abs(residual @ kept).max() < 1e-2  # confounds regressed out
    plain = read_nifti(bold, atlas).data[:, 2:]
    assert np.abs((plain - plain.mean(axis=1, keepdims=True)) @ kept).max() > 10


def test_tr_from_sidecar_then_header_then_error(tmp_path, files):
    bold, atlas = files
    assert read_nifti(bold, atlas).tr == 2.0  # header
    (tmp_path / "sub-01_ses-a_task-rest_bold.json").write_text(json.dumps({"RepetitionTime": 0.8}))
    assert read_nifti(bold, atlas).tr == 0.8  # sidecar wins over header
    assert read_nifti(bold, atlas, tr=1.1).tr == 1.1
    msec = make_bold(tr=1500.0)
    msec.header.set_xyzt_units("mm", "msec")
    assert read_nifti(msec, atlas).tr == pytest.approx(1.5)
    no_tr = tmp_path / "no_tr.nii.gz"
    img = make_bold(tr=None)
    img.header.set_zooms((3.0, 3.0, 3.0, 0.0))
    nib.save(img, no_tr)
    with pytest.raises(FmriInputError, match=r"no_tr\.nii\.gz: no repetition time"):
        read_nifti(no_tr, atlas)


def test_3d_image_is_rejected(tmp_path, files):
    _, atlas = files
    path = tmp_path / "anat.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(SHAPE, np.float32), AFFINE), path)
    with pytest.raises(FmriInputError, match=r"anat\.nii\.gz: expected a 4-D image.*found 3-D"):
        read_nifti(path, atlas, tr=2.0)


def test_atlas_grid_mismatch_is_rejected(tmp_path, files):
    bold, _ = files
    wrong_shape = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(make_atlas()[:-1], AFFINE), wrong_shape)
    with pytest.raises(FmriInputError, match=r"does not match atlas .*small\.nii\.gz.*resample_to_img"):
        read_nifti(bold, wrong_shape)
    shifted = AFFINE.copy()
    shifted[0, 3] += 3
    wrong_affine = tmp_path / "shifted.nii.gz"
    nib.save(nib.Nifti1Image(make_atlas(), shifted), wrong_affine)
    with pytest.raises(FmriInputError, match="does not match atlas"):
        read_nifti(bold, wrong_affine)


def test_label_tables(tmp_path, files):
    bold, atlas = files
    values = [1, 2, 3, 4, 6, 7, 8, 9, 12]
    table = {v: f"region{v}" for v in values}
    scan = read_nifti(bold, atlas, labels=table)
    assert scan.roi_names[-1] == "region12"
    tsv = tmp_path / "labels.tsv"
    pd.DataFrame({"index": values, "name": [f"r{v}" for v in values]}).to_csv(tsv, sep="\t", index=False)
    assert read_nifti(bold, atlas, labels=tsv).roi_names[0] == "r1"
    with pytest.raises(FmriInputError, match=r"atlas label values \[12\] are not in the labels table"):
        read_nifti(bold, atlas, labels={v: "x" for v in values[:-1]})
    with pytest.raises(FmriInputError, match=r"lists \[99\] that have no voxel"):
        read_nifti(bold, atlas, labels={**table, 99: "ghost"})


def make_fmriprep_tree(root, subjects=("01", "02")):
    """A tiny fMRIPrep derivatives tree: preproc BOLD + confounds TSV/JSON per subject."""
    rng = np.random.default_rng(3)
    for i, subject in enumerate(subjects):
        func = root / f"sub-{subject}" / "func"
        func.mkdir(parents=True)
        stem = f"sub-{subject}_task-rest"
        nib.save(make_bold(seed=10 + i), func / f"{stem}_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz")
        (func / f"{stem}_space-MNI152NLin2009cAsym_desc-preproc_bold.json").write_text(
            json.dumps({"RepetitionTime": 2.0})
        )
        columns = {
            name: rng.standard_normal(N_TIME) * 0.1
            for name in ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
        }
        columns.update(csf=rng.standard_normal(N_TIME), white_matter=rng.standard_normal(N_TIME))
        fd = np.abs(rng.standard_normal(N_TIME)) * 0.1
        fd[[5, 20]] = 2.0  # two high-motion volumes to scrub
        columns.update(framewise_displacement=fd, std_dvars=np.ones(N_TIME))
        pd.DataFrame(columns).to_csv(func / f"{stem}_desc-confounds_timeseries.tsv", sep="\t", index=False)
        (func / f"{stem}_desc-confounds_timeseries.json").write_text("{}")


def test_fmriprep_tree_with_confounds_and_scrubbing(tmp_path, files):
    _, atlas = files
    root = tmp_path / "derivatives"
    make_fmriprep_tree(root)
    bolds = find_fmriprep_bold(root, space="MNI152NLin2009cAsym")
    assert [b.parent.parent.name for b in bolds] == ["sub-01", "sub-02"]
    strategy = ("motion", "wm_csf", "scrub")
    kwargs = {"motion": "basic", "scrub": 0, "fd_threshold": 0.5, "std_dvars_threshold": 100}
    with pytest.raises(FmriInputError, match=r"sub-01_task-rest.*2 of 40 frames \(5\.0%\) censored.*frames \[5, 20\]"):
        next(iter_fmriprep(root, atlas, confound_strategy=strategy, confound_kwargs=kwargs))
    scans = list(
        iter_fmriprep(root, atlas, confound_strategy=strategy, confound_kwargs=kwargs, censoring="interpolate")
    )
    assert [s.subject for s in scans] == ["01", "02"]
    assert scans[0].data.shape == (9, N_TIME)  # evenly sampled: the two scrubbed frames are filled in
    np.testing.assert_array_equal(np.flatnonzero(scans[0].censored), [5, 20])
    np.testing.assert_array_equal(np.flatnonzero(scans[0].interpolated), [5, 20])
    confounds, sample_mask = load_confounds(str(bolds[0]), strategy=strategy, **kwargs)
    reference = masker_reference(bolds[0], atlas, confounds=confounds, sample_mask=sample_mask)
    np.testing.assert_allclose(scans[0].data[:, sample_mask], reference.T, atol=1e-3)
    with pytest.raises(FmriInputError, match="space-T1w"):
        find_fmriprep_bold(root, space="T1w")


def test_interior_censoring_is_rejected_or_interpolated(files):
    bold, atlas = files
    keep = np.setdiff1d(np.arange(N_TIME), [10, 11, 25, 39])  # three inside, one at the end
    with pytest.raises(
        FmriInputError, match=r"bold\.nii\.gz: 4 of 40 frames \(10\.0%\) censored.*3 inside .*\[10, 11, 25\]"
    ):
        read_nifti(bold, atlas, sample_mask=keep)
    scan = read_nifti(bold, atlas, sample_mask=keep, censoring="interpolate")
    assert scan.data.shape == (9, N_TIME - 1)  # the trailing censored frame shortens, the inner ones are filled
    np.testing.assert_array_equal(np.flatnonzero(scan.censored), [10, 11, 25, 39])
    np.testing.assert_array_equal(np.flatnonzero(scan.interpolated), [10, 11, 25])
    reference = masker_reference(bold, atlas, sample_mask=keep).T  # kept frames only
    np.testing.assert_allclose(scan.data[:, keep], reference, atol=1e-4)
    spline = CubicSpline(keep, reference, axis=1)([10, 11, 25])  # as nilearn.signal.clean interpolates
    np.testing.assert_allclose(scan.data[:, [10, 11, 25]], spline, atol=1e-4)
    as_boolean = read_nifti(bold, atlas, sample_mask=np.isin(np.arange(N_TIME), keep), censoring="interpolate")
    np.testing.assert_array_equal(as_boolean.data, scan.data)
    assert scan.metadata()["n_censored"] == 4 and scan.metadata()["n_interpolated"] == 3


@pytest.mark.parametrize(
    "sample_mask,censoring,pattern",
    [
        (np.array([0, 5, 40]), "reject", r"indices \[40\] are outside the 40 frames"),
        (np.array([3, 2, 5]), "reject", "strictly increasing"),
        (np.ones(39, bool), "reject", "boolean sample_mask of 40 entries"),
        (np.array([7]), "reject", "keeps 1 of 40 frames"),
        (np.arange(40.0), "reject", "integer indices or a boolean mask"),
        (None, "drop", r"censoring: expected one of \('reject', 'interpolate'\)"),
    ],
)
def test_bad_sample_masks_are_named(files, sample_mask, censoring, pattern):
    bold, atlas = files
    with pytest.raises(FmriInputError, match=pattern):
        read_nifti(bold, atlas, sample_mask=sample_mask, censoring=censoring)


def test_confound_nan_is_an_error_except_the_first_row_of_derivatives(files, tmp_path):
    bold, atlas = files
    rng = np.random.default_rng(4)
    frame = pd.DataFrame(rng.standard_normal((N_TIME, 3)), columns=["trans_x", "trans_x_derivative1", "csf"])
    frame.loc[0, "trans_x_derivative1"] = np.nan  # n/a by design in fMRIPrep's file
    path = tmp_path / "confounds.tsv"
    frame.to_csv(path, sep="\t", index=False, na_rep="n/a")
    scan = read_nifti(bold, atlas, confounds=path)
    filled = frame.copy()
    filled.loc[0, "trans_x_derivative1"] = filled.loc[1, "trans_x_derivative1"]  # nilearn's rule
    np.testing.assert_allclose(scan.data, masker_reference(bold, atlas, confounds=filled.to_numpy()).T, atol=1e-3)
    frame.loc[6, "csf"] = np.nan
    frame.loc[3, "trans_x_derivative1"] = np.nan
    frame.to_csv(path, sep="\t", index=False, na_rep="n/a")
    with pytest.raises(
        FmriInputError,
        match=r"confounds\.tsv: .*NaN/inf in columns \['trans_x_derivative1 \(1 rows\)', 'csf \(1 rows\)'\]",
    ):
        read_nifti(bold, atlas, confounds=path)
    with pytest.raises(FmriInputError, match="expected 40 rows of confounds"):
        read_nifti(bold, atlas, confounds=rng.standard_normal((N_TIME - 1, 2)))
