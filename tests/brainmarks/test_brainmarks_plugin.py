"""The Brainmarks plugin `brainmarks/models/fmrilm.py`: skipped unless brainmarks is installed (it is in
`.venv-brainmarks`, where `make brainmarks-test` runs this file beside Brainmarks' own model test)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modeling_fmrilm import FmriInputError
from modeling_fmrilm.embeddings import RANDOM_CONFIG
from modeling_fmrilm.feature_extraction_fmrilm import resample, robust_zscore, stretch
from tests.support.tiny_tokenizer import save_stage1_folder

pytest.importorskip("brainmarks.models.base")  # a bare `brainmarks` can be this repository's namespace portion
from brainmarks.models.registry import list_models  # noqa: E402

from brainmarks.models import fmrilm as plugin  # noqa: E402


def brainmarks_sample(series: np.ndarray, tr: float) -> dict:
    """A Brainmarks sample of `series` `(T, 450)`: z-scored per ROI over time, with its mean and std."""
    mean, std = series.mean(axis=0, keepdims=True), series.std(axis=0, keepdims=True)
    as_tensor = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    return {
        "bold": as_tensor((series - mean) / std),
        "mean": as_tensor(mean),
        "std": as_tensor(std),
        "tr": tr,
        "target": 1,
    }


def test_plugin_registers_both_names_and_unnormalises_the_sample():
    assert {"fmrilm", "fmrilm_tokenizer"} <= set(list_models())
    series = np.random.default_rng(0).normal(5.0, 3.0, (50, 450)) + np.arange(450)
    np.testing.assert_allclose(plugin.unnormalise(brainmarks_sample(series, 0.8)), series.T, rtol=1e-5, atol=1e-4)


def test_transform_resamples_with_the_antialiased_resampler_and_reads_the_first_window(stage1_folder):
    """TR 0.5 s -> the checkpoint's 1.5 s: a 0.05 Hz wave survives, a 0.6 Hz one (above the new
    Nyquist, 0.33 Hz) is filtered out instead of folding back; the window is the extractor's first."""
    transform, _ = plugin.fmrilm_tokenizer(checkpoint=str(stage1_folder))
    time = np.arange(240) * 0.5
    phases = np.linspace(0, np.pi, 450)
    slow = np.sin(2 * np.pi * 0.05 * time[:, None] + phases)
    series = 100 + slow + 0.8 * np.sin(2 * np.pi * 0.6 * time[:, None])
    out = transform(brainmarks_sample(series, 0.5))
    assert set(out) == {"fmri_values", "mean", "std", "tr", "target"} and out["target"] == 1
    window = out["fmri_values"].numpy()
    assert window.shape == (450, 32)
    expected = robust_zscore(resample(series.T.astype(np.float32), 0.5, 1.5, "antialias"))[:, :32]
    np.testing.assert_allclose(window, expected, atol=1e-4)
    clean = robust_zscore(np.sin(2 * np.pi * 0.05 * np.arange(80)[None, :] * 1.5 + phases[:, None]))[
        :, :32
    ]  # 80 frames at 1.5 s
    np.testing.assert_allclose(window, clean, atol=0.06)  # measured: 0.050
    aliased = robust_zscore(resample(series.T, 0.5, 1.5, "linear"))[
        :, :32
    ]  # linear: every third frame, the 0.6 Hz wave folded to 0.067 Hz
    assert np.abs(aliased - clean).max() > 0.5  # measured: 1.10


def test_short_samples_are_stretched_with_a_warning_or_refused(stage1_folder):
    series = np.random.default_rng(1).standard_normal(
        (30, 450)
    )  # 30 frames at TR 1 s: 20 at 1.5 s, under a window of 32
    transform, _ = plugin.fmrilm_tokenizer(checkpoint=str(stage1_folder))
    with pytest.warns(UserWarning, match="shorter than one window"):
        window = transform(brainmarks_sample(series, 1.0))["fmri_values"].numpy()
    expected = robust_zscore(stretch(resample(series.T.astype(np.float32), 1.0, 1.5), 32))
    np.testing.assert_allclose(window, expected, atol=1e-4)
    assert transform.stretched == 1
    strict, _ = plugin.fmrilm_tokenizer(checkpoint=str(stage1_folder), pad_strategy=None)
    with pytest.raises(FmriInputError, match="expected at least 48 time points at TR 1.0 s .* found 30"):
        strict(brainmarks_sample(series, 1.0))
    with pytest.raises(FmriInputError, match="pad_strategy: expected one of"):
        plugin.fmrilm_tokenizer(checkpoint=str(stage1_folder), pad_strategy="zeros")


def test_wrapper_returns_per_roi_embeddings_their_mean_and_the_tokens(tmp_path, monkeypatch):
    from torch.utils.data import default_collate

    saved = save_stage1_folder(tmp_path)
    monkeypatch.setenv(plugin.CHECKPOINT_ENV, str(tmp_path))
    transform, wrapper = plugin.fmrilm_tokenizer()
    assert wrapper.__space__ == "schaefer400_tians3" and not any(p.requires_grad for p in wrapper.parameters())
    rng = np.random.default_rng(2)
    batch = default_collate([transform(brainmarks_sample(rng.standard_normal((64, 450)), 1.5)) for _ in range(2)])
    with torch.no_grad():
        cls, reg, patch = wrapper(batch)
        tokens = saved.embed(batch["fmri_values"])
    dim = RANDOM_CONFIG["code_dim"]
    assert cls.shape == (2, 1, dim) and reg.shape == (2, 450, dim) and patch.shape == (2, 450 * 4, dim)
    torch.testing.assert_close(patch, tokens)
    torch.testing.assert_close(reg, tokens.reshape(2, 450, 4, dim).mean(dim=2))
    torch.testing.assert_close(cls[:, 0], reg.mean(dim=1))
    with pytest.raises(FmriInputError, match="model_type 'fmrilm', found model_type 'fmri_tokenizer'"):
        plugin.fmrilm()


def test_without_a_checkpoint_the_plugin_warns_and_runs_random_weights(monkeypatch):
    monkeypatch.delenv(plugin.CHECKPOINT_ENV, raising=False)
    with pytest.warns(UserWarning, match="random weights"):
        transform, wrapper = plugin.fmrilm()
    sample = transform(
        brainmarks_sample(np.random.default_rng(3).standard_normal((400, 450)), 1.0)
    )  # 200 frames at 2 s: no stretch
    cls, reg, patch = wrapper({key: value[None] if torch.is_tensor(value) else value for key, value in sample.items()})
    assert transform.stretched == 0 and reg.shape == (1, 450, RANDOM_CONFIG["code_dim"]) and patch.shape[1] == 450 * 4
