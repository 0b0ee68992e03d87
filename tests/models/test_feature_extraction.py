"""FmriFeatureExtractor: resampling, robust z-score, windows, save/load, bad input."""

import json

import numpy as np
import pytest
import torch
from scipy.interpolate import interp1d
from scipy.signal import resample_poly

from modeling_fmrilm import FmriFeatureExtractor, FmriInputError
from modeling_fmrilm.feature_extraction_fmrilm import resample, resampled_length, robust_zscore
from modeling_fmrilm.io import FmriScan


def sinusoids(n_rois: int, n_time: int, tr: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n_time) * tr
    freqs = rng.uniform(0.01, 0.1, size=(n_rois, 1))
    return (np.sin(2 * np.pi * freqs * t) * 5 + 100 + rng.standard_normal((n_rois, n_time))).astype(np.float32)


def test_linear_resampling_matches_scipy_interp1d():
    data = sinusoids(5, 1200, 0.72)
    out = resample(data, 0.72, 2.0, method="linear")
    expected_frames = int(np.floor(1199 * 0.72 / 2.0)) + 1
    assert out.shape == (5, expected_frames) == (5, 432)
    reference = interp1d(np.arange(1200) * 0.72, data, axis=1)(np.arange(expected_frames) * 2.0)
    np.testing.assert_allclose(out, reference, atol=1e-4)


def test_linear_upsampling_matches_scipy_interp1d():
    data = sinusoids(3, 100, 3.0)
    out = resample(data, 3.0, 2.0, method="linear")
    reference = interp1d(np.arange(100) * 3.0, data, axis=1)(np.arange(out.shape[1]) * 2.0)
    assert out.shape[1] == 149
    np.testing.assert_allclose(out, reference, atol=1e-4)


IN_BAND = (0.02, 0.05, 0.1)  # Hz, below the 0.25 Hz Nyquist frequency of TR 2.0 s
ABOVE_NYQUIST = 0.35  # Hz; sampled every 2.0 s it folds back to |0.35 - 0.5| = 0.15 Hz
ALIAS = 0.15


def amplitudes(signal: np.ndarray, tr: float, freqs) -> np.ndarray:
    """Amplitude of each frequency in `signal` (1-D), by a joint least-squares fit of sines and cosines."""
    t = np.arange(signal.shape[-1]) * tr
    design = np.column_stack([np.ones_like(t)] + [f(2 * np.pi * q * t) for q in freqs for f in (np.sin, np.cos)])
    coefs = np.linalg.lstsq(design, signal, rcond=None)[0][1:]
    return np.hypot(coefs[0::2], coefs[1::2])


def test_antialias_matches_resample_poly_and_removes_the_alias():
    tr, target_tr = 0.72, 2.0  # resample_poly's up/down: 2.0 / 0.72 = 50 / 18
    t = np.arange(1200) * tr
    amps = np.array([1.0, 2.0, 0.5])
    in_band = sum(a * np.sin(2 * np.pi * f * t + a) for a, f in zip(amps, IN_BAND, strict=True))
    signal = (100 + in_band + np.sin(2 * np.pi * ABOVE_NYQUIST * t)).astype(np.float32)
    out = resample(signal, tr, target_tr)
    assert out.shape == (resampled_length(1200, tr, target_tr),) == (432,)  # no frame lost at the edges
    # resample_poly applies the same Kaiser low-pass; its per-phase gain at 0 Hz is off by ~1e-5, so
    # compare without the offset. Edges included: both extend the series by odd reflection.
    reference = resample_poly(signal.astype(np.float64) - 100, 18, 50, padtype="antireflect")
    np.testing.assert_allclose(out - 100, reference, atol=2e-4)
    found = amplitudes(out, target_tr, IN_BAND + (ALIAS,))
    np.testing.assert_allclose(found[:3], amps, rtol=0.02)  # in band within 2%
    assert 20 * np.log10(found[3] / 1.0) <= -20  # above Nyquist: attenuated by at least 20 dB
    # the paper's linear interpolation folds it back almost whole (the reason for the default)
    aliased = amplitudes(resample(signal, tr, target_tr, method="linear"), target_tr, IN_BAND + (ALIAS,))
    assert aliased[3] > 0.7


@pytest.mark.parametrize(
    "n,tr,target_tr", [(1200, 0.72, 2.0), (100, 3.0, 2.0), (7, 2.5, 2.0), (2, 0.72, 2.0), (355, 2.0, 2.0)]
)
def test_both_methods_share_the_length_rule(n, tr, target_tr):
    data = sinusoids(3, n, tr)
    expected = int(np.floor((n - 1) * tr / target_tr + 1e-9)) + 1
    for method in ("antialias", "linear"):
        out = resample(data, tr, target_tr, method=method)
        assert out.shape == (3, expected) and np.isfinite(out).all()
    with pytest.raises(FmriInputError, match=r"method: expected one of \('antialias', 'linear'\), found 'cubic'"):
        resample(data, tr, target_tr, method="cubic")


def test_antialias_is_vectorised_over_scans_and_rois():
    data = sinusoids(20, 300, 0.72).reshape(4, 5, 300)
    out = resample(data, 0.72, 2.0)
    assert out.shape == (4, 5, 108)
    np.testing.assert_allclose(out[2], resample(data[2], 0.72, 2.0), atol=1e-4)


def test_robust_zscore_matches_numpy_median_and_iqr():
    data = sinusoids(4, 300, 2.0) * np.array([[1], [10], [0.1], [3]], dtype=np.float32)
    out = robust_zscore(data)
    median = np.median(data, axis=1, keepdims=True)
    q75, q25 = np.percentile(data, [75, 25], axis=1, keepdims=True)
    np.testing.assert_allclose(out, (data - median) / (q75 - q25), rtol=1e-5, atol=1e-5)
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.median(out, axis=1), 0, atol=1e-5)


def test_iqr_floor_prevents_blow_up():
    data = np.zeros((1, 100), dtype=np.float32)
    data[0, 50] = 1.0  # IQR 0
    out = robust_zscore(data, iqr_floor=0.5)
    assert np.isfinite(out).all() and out.max() == pytest.approx(2.0)


@pytest.mark.parametrize(
    "n_time,tr,stride,expected_windows",
    [
        (1200, 0.72, None, 2),  # 432 frames at 2 s -> 2 windows of 160
        (1200, 0.72, 40, 7),  # starts 0..272 every 40
        (355, 2.0, None, 2),
        (320, 2.0, 160, 2),
        (160, 2.0, None, 1),
    ],
)
def test_window_counts_and_shapes(n_time, tr, stride, expected_windows):
    extractor = FmriFeatureExtractor(num_rois=6, window_stride=stride)
    out = extractor(sinusoids(6, n_time, tr), tr=tr)
    assert out["fmri_values"].shape == (expected_windows, 6, 160)
    assert out["fmri_values"].dtype == np.float32
    np.testing.assert_array_equal(out["window_index"], np.arange(expected_windows))
    np.testing.assert_array_equal(out["scan_index"], np.zeros(expected_windows))


def test_windows_are_the_normalised_resampled_scan():
    data = sinusoids(3, 400, 2.0)
    extractor = FmriFeatureExtractor(window_length=100, window_stride=50)
    out = extractor(data, tr=2.0)["fmri_values"]
    full = robust_zscore(data)
    for k in range(out.shape[0]):
        np.testing.assert_allclose(out[k], full[:, 50 * k : 50 * k + 100], atol=1e-6)


def test_batch_of_mixed_lengths_and_trs_keeps_order_and_metadata():
    scans = [
        FmriScan(sinusoids(4, 1200, 0.72, seed=1), 0.72, "a"),
        FmriScan(sinusoids(4, 355, 2.0, seed=2), 2.0, "b"),
        FmriScan(sinusoids(4, 1200, 0.72, seed=3), 0.72, "c"),
    ]
    extractor = FmriFeatureExtractor(num_rois=4)
    out = extractor(scans, return_tensors="pt")
    assert isinstance(out["fmri_values"], torch.Tensor)
    np.testing.assert_array_equal(out["scan_index"].numpy(), [0, 0, 1, 1, 2, 2])
    single = extractor(scans[2])["fmri_values"]
    np.testing.assert_allclose(out["fmri_values"][4:].numpy(), single)


def test_max_windows_per_scan_keeps_the_first():
    extractor = FmriFeatureExtractor(window_length=50, max_windows_per_scan=1)
    out = extractor(sinusoids(2, 400, 2.0), tr=2.0)
    assert out["fmri_values"].shape == (1, 2, 50)


def test_short_scan_raises_unless_interpolation_is_asked():
    short = sinusoids(3, 100, 2.0)
    with pytest.raises(FmriInputError, match=r"at least 160 time points.*found 100.*pad_strategy"):
        FmriFeatureExtractor()(short, tr=2.0)
    out = FmriFeatureExtractor(pad_strategy="interpolate")(short, tr=2.0)["fmri_values"]
    assert out.shape == (1, 3, 160)
    stretched = interp1d(np.linspace(0, 1, 100), short, axis=1)(np.linspace(0, 1, 160))
    np.testing.assert_allclose(out[0], robust_zscore(stretched.astype(np.float32)), atol=1e-4)


def test_bad_input_errors():
    extractor = FmriFeatureExtractor(num_rois=5, window_length=10)
    good = sinusoids(5, 40, 2.0)
    with pytest.raises(FmriInputError, match="no repetition time"):
        extractor(good)
    with pytest.raises(FmriInputError, match=r"expected 5 ROIs on axis 0.*axis 0: 40, axis 1: 5.*transpose"):
        extractor(good.T, tr=2.0)
    bad = good.copy()
    bad[1, 3] = np.nan
    with pytest.raises(FmriInputError, match=r"fmri\[0\].*NaN"):
        extractor(bad, tr=2.0)
    with pytest.raises(FmriInputError, match="2-D array"):
        extractor(good[None, None], tr=2.0)
    with pytest.raises(FmriInputError, match="tr: expected 2 values"):
        extractor([good, good], tr=[2.0])
    with pytest.raises(FmriInputError, match="positive repetition time"):
        extractor(good, tr=-1.0)
    with pytest.raises(FmriInputError, match="window_length"):
        FmriFeatureExtractor(window_length=1)
    with pytest.raises(FmriInputError, match=r"fmri\[0\]: expected real BOLD values, found complex dtype complex64"):
        extractor(good + 1j * good, tr=2.0)
    with pytest.raises(FmriInputError, match=r"fmri\[0\]: .*found ragged rows"):
        extractor([[[1.0, 2.0], [3.0]]], tr=2.0)


def test_extractor_resamples_with_its_method():
    data = sinusoids(3, 600, 0.72)
    for method in ("antialias", "linear"):
        extractor = FmriFeatureExtractor(window_length=100, resample_method=method)
        expected = robust_zscore(resample(data, 0.72, 2.0, method=method))[:, :100]
        np.testing.assert_allclose(extractor(data, tr=0.72)["fmri_values"][0], expected, atol=1e-5)
    with pytest.raises(FmriInputError, match="resample_method: expected one of"):
        FmriFeatureExtractor(resample_method="sinc")


def test_resample_method_defaults_new_and_legacy_configs(tmp_path):
    assert FmriFeatureExtractor().resample_method == "antialias"
    FmriFeatureExtractor(window_length=32).save_pretrained(tmp_path)
    assert FmriFeatureExtractor.from_pretrained(tmp_path).resample_method == "antialias"
    # a config saved before the option existed was made, and its checkpoint trained, with linear
    config = tmp_path / "preprocessor_config.json"
    saved = json.loads(config.read_text())
    del saved["resample_method"]
    config.write_text(json.dumps(saved))
    assert FmriFeatureExtractor.from_pretrained(tmp_path).resample_method == "linear"
    assert FmriFeatureExtractor.from_pretrained(tmp_path, resample_method="antialias").resample_method == "antialias"
    assert FmriFeatureExtractor.from_dict({"window_length": 32}).resample_method == "linear"


def test_save_and_load_round_trip(tmp_path):
    extractor = FmriFeatureExtractor(
        num_rois=5,
        target_tr=1.5,
        window_length=32,
        window_stride=8,
        pad_strategy="interpolate",
        resample_method="linear",
    )
    extractor.save_pretrained(tmp_path)
    loaded = FmriFeatureExtractor.from_pretrained(tmp_path)
    assert loaded.to_dict() == extractor.to_dict()
    data = sinusoids(5, 90, 1.0)
    np.testing.assert_array_equal(loaded(data, tr=1.0)["fmri_values"], extractor(data, tr=1.0)["fmri_values"])


def test_streaming_offsets_scan_index():
    extractor = FmriFeatureExtractor(window_length=20)
    scans = (FmriScan(sinusoids(3, 40, 2.0, seed=i), 2.0, str(i)) for i in range(5))
    batches = list(extractor.iter_windows(scans, batch_size=2))
    assert len(batches) == 3
    scan_index = np.concatenate([b["scan_index"] for b in batches])
    np.testing.assert_array_equal(scan_index, np.repeat(np.arange(5), 2))


def test_auto_feature_extractor_and_remote_code_files(tmp_path):
    from transformers import AutoFeatureExtractor

    extractor = FmriFeatureExtractor(num_rois=5, window_length=32)
    extractor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["auto_map"] == {"AutoFeatureExtractor": "feature_extraction_fmrilm.FmriFeatureExtractor"}
    assert (tmp_path / "feature_extraction_fmrilm.py").exists() and (tmp_path / "errors.py").exists()
    loaded = AutoFeatureExtractor.from_pretrained(tmp_path)
    assert type(loaded) is FmriFeatureExtractor and loaded.window_length == 32
