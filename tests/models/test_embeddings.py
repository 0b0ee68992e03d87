"""The Stage 1 encoder embeddings (`embeddings.py`) and the embedding probe of `fmrilm evaluate` (`tasks/embedding_probe.py`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modeling_fmrilm import FmriInputError, FmriTokenizerConfig, FmriTokenizerModel
from modeling_fmrilm.cli import evaluation_parser
from modeling_fmrilm.embeddings import RANDOM_CONFIG, load_encoder, roi_embeddings
from modeling_fmrilm.io import FmriScan
from modeling_fmrilm.tasks import EvaluationSettings, TaskData, evaluate, get_task
from modeling_fmrilm.tasks.embedding_probe import EMBEDDING_PROBE, scan_embeddings
from tests.support import tiny_lm
from tests.support.tiny_tokenizer import save_stage1_folder

# -- embeddings.py ----------------------------------------------------------------------------------


def test_roi_embeddings_average_each_rois_patches_of_the_encoder_vectors():
    torch.manual_seed(0)
    tokenizer = FmriTokenizerModel(
        FmriTokenizerConfig(num_rois=5, **{**RANDOM_CONFIG, "window_length": 12, "patch_length": 4})
    ).eval()
    values = torch.randn(3, 5, 12)
    with torch.no_grad():
        tokens, rois = roi_embeddings(tokenizer, values)
        expected = tokenizer.embed(values)
    assert tokens.shape == (3, 15, RANDOM_CONFIG["code_dim"]) and rois.shape == (3, 5, RANDOM_CONFIG["code_dim"])
    torch.testing.assert_close(tokens, expected)
    torch.testing.assert_close(rois[:, 2], expected[:, 6:9].mean(dim=1))  # ROI 2: tokens 6, 7, 8 (ROI-major)
    torch.testing.assert_close(tokens.norm(dim=-1), torch.ones(3, 15))


def test_encoder_loads_from_a_stage1_folder_and_from_an_fmrilm_folder(tmp_path):

    saved = save_stage1_folder(tmp_path / "stage1", num_rois=tiny_lm.NUM_ROIS)
    tokenizer, extractor = load_encoder(tmp_path / "stage1", tiny_lm.NUM_ROIS)
    values = torch.randn(2, tiny_lm.NUM_ROIS, 32)
    with torch.no_grad():
        torch.testing.assert_close(tokenizer.embed(values), saved.embed(values))
    assert (extractor.window_length, extractor.target_tr) == (32, 1.5)

    model, processor = tiny_lm.build("gpt2")
    model.save_pretrained(tmp_path / "lm")
    processor.save_pretrained(tmp_path / "lm")
    tokenizer, extractor = load_encoder(tmp_path / "lm", tiny_lm.NUM_ROIS, require_lm=True)
    values = torch.randn(2, tiny_lm.NUM_ROIS, tiny_lm.WINDOW_LENGTH)
    with torch.no_grad():
        torch.testing.assert_close(tokenizer.embed(values), model.fmri_tokenizer.embed(values))
    assert extractor.to_dict() == processor.feature_extractor.to_dict()

    with pytest.raises(FmriInputError, match="model_type 'fmrilm', found model_type 'fmri_tokenizer'"):
        load_encoder(tmp_path / "stage1", tiny_lm.NUM_ROIS, require_lm=True)
    with pytest.raises(FmriInputError, match="expected a tokenizer of 450 ROIs, found num_rois=6"):
        load_encoder(tmp_path / "lm", 450)


def test_no_checkpoint_builds_the_random_tokenizer_and_says_so():
    with pytest.warns(UserWarning, match="random weights"):
        tokenizer, extractor = load_encoder(None, 450)
    assert tokenizer.config.num_rois == extractor.num_rois == 450
    assert extractor.window_length == tokenizer.config.window_length == RANDOM_CONFIG["window_length"]


# -- the embedding probe of fmrilm evaluate ----------------------------------------------------------


def test_scan_embeddings_average_the_encoder_over_rois_and_the_windows_the_model_reads():

    model, processor = tiny_lm.build("gpt2", windows_per_scan=2)
    scans = [FmriScan(tiny_lm.scan(i), 2.0, f"s{i}") for i in range(3)]
    embeddings = scan_embeddings(model, processor, scans, batch_size=2)
    windows = processor(
        text=["<fmri>"] * 3, fmri=[s.data for s in scans], tr=[s.tr for s in scans], return_tensors="pt"
    )["fmri_values"]
    with torch.no_grad():
        tokens = model.fmri_tokenizer.embed(windows).double().numpy()  # (3 scans x 2 windows, tokens, dim)
    np.testing.assert_allclose(embeddings, tokens.reshape(3, -1, tokens.shape[-1]).mean(axis=1), rtol=1e-5, atol=1e-6)


def ramp_task(n: int = 24) -> TaskData:
    """Class 1 adds a ramp 0, 2, 4, 6 over every 4-frame patch (the tiny tokenizer's patch) of every ROI to the noise of class 0."""
    rng = np.random.default_rng(0)
    targets = np.tile([0, 1], n // 2)
    ramp = 2.0 * np.tile(np.arange(tiny_lm.PATCH_LENGTH), 40 // tiny_lm.PATCH_LENGTH)
    scans = [
        FmriScan(
            (rng.standard_normal((tiny_lm.NUM_ROIS, 40)) + target * ramp).astype(np.float32),
            2.0,
            f"s{i:02d}",
            dataset="toy",
        )
        for i, target in enumerate(targets)
    ]
    return TaskData(
        get_task("sex"), scans, targets, [f"toy/{s.subject}" for s in scans], cohort_lines=["Cohort: toy.\n"] * n
    )


def test_evaluate_adds_the_brainmarks_probe_on_the_embeddings_on_the_same_subjects():

    model, processor = tiny_lm.build("gpt2")
    data = ramp_task()
    settings = EvaluationSettings(seeds=(0, 1), shots=(0,), n_resplits=0, view_probes=False, embedding_probe=True)
    report = evaluate([data], model, processor, settings, progress=False)
    row = report.row("sex", EMBEDDING_PROBE)
    assert (
        len(row.runs) == 2
        and row.n_test
        == report.row("sex", "brainmarks_fc").n_test
        == report.row("sex", "fmrilm loglik", 0, "single").n_test
    )
    assert row.summary()["balanced_accuracy"]["mean"] > 0.9
    assert report.delta_vs_fc(row) is not None and "| fmrilm embeddings, Brainmarks probe |" in report.to_markdown()
    without = evaluate(
        [data],
        model,
        processor,
        EvaluationSettings(seeds=(0,), shots=(0,), n_resplits=0, view_probes=False),
        progress=False,
    )
    assert EMBEDDING_PROBE not in {r.method for r in without.rows}
    with pytest.raises(FmriInputError, match="embedding_probe: expected a model"):
        evaluate([data], settings=settings, progress=False)


def test_the_evaluate_flag_turns_the_embedding_row_on():

    def parsed(argv):
        return evaluation_parser().parse_args_into_dataclasses(argv)[1]

    assert parsed(["--embedding_probe"]).embedding_probe and parsed(["--embedding_probe"]).settings().embedding_probe
    assert not parsed([]).embedding_probe
