"""Stage 1 training loop and recipe: subject split, metrics, checkpoints, resume, atomic final save."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from modeling_fmrilm import FmriInputError, FmriTokenizerModel
from modeling_fmrilm.io import FmriScan
from modeling_fmrilm.training_stage1 import (
    Stage1Arguments,
    reconstruction_r2,
    save_final,
    split_by_subject,
    train_stage1,
    windows_of,
)

TINY_OVERRIDES = {"domain_hidden_size": 8, "kmeans_iters": 3}


def synthetic_scans(n_subjects: int = 4, n_rois: int = 6, n_frames: int = 48, seed: int = 0) -> list[FmriScan]:
    rng = np.random.default_rng(seed)
    return [
        FmriScan(
            data=np.cumsum(rng.standard_normal((n_rois, n_frames)), axis=1).astype(np.float32),
            tr=2.0,
            subject=f"s{i}",
            dataset="toy",
        )
        for i in range(n_subjects)
    ]


def tiny_args(output_dir: Path, **overrides) -> Stage1Arguments:
    values = dict(
        output_dir=str(output_dir),
        validation_subjects=1,
        window_length=16,
        window_stride=8,
        patch_length=4,
        hidden_size=16,
        num_hidden_layers=1,
        num_decoder_layers=1,
        num_attention_heads=2,
        num_codes=8,
        code_dim=8,
        config_overrides=TINY_OVERRIDES,
        num_epochs=2,
        batch_size=4,
        warmup_steps=0,
        progress=False,
    )
    return Stage1Arguments(**{**values, **overrides})


def test_split_by_subject_is_disjoint_and_seeded():
    subjects = ["a", "b", "c", "d", "e", "a", "b"]
    train, validation = split_by_subject(subjects, 2, seed=3)
    assert len(validation) == 2 and len(train) == 3
    assert set(train) | set(validation) == {"a", "b", "c", "d", "e"} and not set(train) & set(validation)
    assert split_by_subject(subjects, 2, seed=3) == (train, validation)
    with pytest.raises(FmriInputError, match="validation_subjects: expected 0 <= n < 5"):
        split_by_subject(subjects, 5, seed=0)


def test_reconstruction_r2_numbers():
    target = torch.randn(3, 4, 8)
    assert reconstruction_r2(target, target) == pytest.approx(1.0)
    assert reconstruction_r2(target, target.mean(dim=-1, keepdim=True).expand_as(target)) == pytest.approx(0.0, abs=1e-9)
    assert reconstruction_r2(target, 0.5 * target + 0.5 * target.mean(-1, keepdim=True)) == pytest.approx(0.75)


def test_train_split_keeps_subjects_apart(tmp_path):
    scans = synthetic_scans()
    result = train_stage1(tiny_args(tmp_path, num_epochs=1), scans)
    train_windows, train_keys = windows_of(scans, result.train_subjects, result.feature_extractor)
    _, validation_keys = windows_of(scans, result.validation_subjects, result.feature_extractor)
    assert not set(train_keys) & set(validation_keys)
    assert len(set(train_keys)) == 3 and len(set(validation_keys)) == 1
    assert train_windows.shape == (3 * 5, 6, 16)
    record = json.loads((tmp_path / "final" / "training_args.json").read_text())
    assert record["validation_subjects"] == result.validation_subjects


@pytest.mark.slow
def test_recipe_checkpoints_and_resumes(tmp_path):
    """The recipe script trains, checkpoints every step, and resuming from a checkpoint ends where an uninterrupted run does."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for scan in synthetic_scans():
        np.save(data_dir / f"sub-{scan.subject}_bold.npy", scan.data)
    spec = importlib.util.spec_from_file_location("stage1_recipe", Path(__file__).parents[1] / "recipes" / "stage1_tokenizer.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    common = [
        "--data_dir", str(data_dir), "--tr", "2.0", "--validation_subjects", "1",
        "--window_length", "16", "--window_stride", "8", "--patch_length", "4", "--hidden_size", "16",
        "--num_hidden_layers", "1", "--num_decoder_layers", "1", "--num_attention_heads", "2",
        "--num_codes", "8", "--code_dim", "8", "--config_overrides", json.dumps(TINY_OVERRIDES),
        "--num_epochs", "2", "--batch_size", "4", "--warmup_steps", "0", "--no-progress",
    ]  # fmt: skip
    full = tmp_path / "full"
    recipe.main([*common, "--output_dir", str(full), "--checkpointing_steps", "1"])
    checkpoints = sorted((full / "checkpoints").iterdir(), key=lambda p: int(p.name.split("_")[1]))
    steps = [int(p.name.split("_")[1]) for p in checkpoints]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) == 2 * 3  # 15 windows, batch 4, drop_last
    metrics = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [0, 1] and "validation_r2" in metrics[-1]
    assert metrics[-1]["step"] == 6

    # resume from the middle of epoch 1 into a fresh folder
    resumed = tmp_path / "resumed"
    recipe.main([*common, "--output_dir", str(resumed), "--resume_from_checkpoint", str(full / "checkpoints" / "step_4")])
    resumed_metrics = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in resumed_metrics] == [1] and resumed_metrics[0]["step"] == 6
    expected, found = load_file(full / "final" / "model.safetensors"), load_file(resumed / "final" / "model.safetensors")
    assert expected.keys() == found.keys()
    for name in expected:
        torch.testing.assert_close(found[name], expected[name], msg=name)

    # "latest" picks the highest step; the final folder loads with AutoModel
    recipe.main([*common, "--output_dir", str(full), "--resume_from_checkpoint", "latest", "--num_epochs", "3"])
    assert json.loads((full / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 9
    model = FmriTokenizerModel.from_pretrained(full / "final")
    assert model.encode(torch.randn(2, 6, 16)).shape == (2, 24)
    assert (full / "final" / "preprocessor_config.json").exists()


def test_save_final_is_atomic(tmp_path, monkeypatch):
    result_dir = tmp_path / "final"
    scans = synthetic_scans(n_subjects=2)
    result = train_stage1(tiny_args(tmp_path / "run", num_epochs=1, max_steps=1), scans)
    save_final(result.model, result.feature_extractor, result_dir, {"run": 1})
    before = sorted(p.name for p in result_dir.iterdir())

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(type(result.feature_extractor), "save_pretrained", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        save_final(result.model, result.feature_extractor, result_dir, {"run": 2})
    assert sorted(p.name for p in result_dir.iterdir()) == before
    assert json.loads((result_dir / "training_args.json").read_text()) == {"run": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final", "run"]  # no staging folder left


def test_text_dataset_turns_on_the_contrastive_loss(tmp_path):
    """Per-subject texts from a dataset folder are embedded by MiniLM (mean pooling) and feed the SigLIP loss."""
    from datasets import Dataset

    from modeling_fmrilm.training_stage1 import encode_texts

    scans = synthetic_scans()
    folder = tmp_path / "texts"
    (folder / "data").mkdir(parents=True)
    texts = {f"s{i}": f"subject {i}: default mode connectivity {'elevated' if i % 2 else 'lower'}" for i in range(4)}
    Dataset.from_dict({"subject": list(texts), "text": list(texts.values())}).to_parquet(folder / "data" / "train-00000.parquet")
    result = train_stage1(tiny_args(tmp_path / "run", num_epochs=1, text_dataset=str(folder)), scans)
    assert result.model.config.text_embed_dim == 384
    assert result.history[0]["train_contrastive_loss"] > 0

    embeddings = encode_texts(["elevated connectivity", "elevated connectivity", "lower amplitude"])
    assert embeddings.shape == (3, 384)
    torch.testing.assert_close(embeddings[0], embeddings[1])
    assert torch.cosine_similarity(embeddings[0], embeddings[2], dim=0) < 0.95

    del texts["s1"], texts["s2"], texts["s3"]
    Dataset.from_dict({"subject": list(texts), "text": list(texts.values())}).to_parquet(folder / "data" / "train-00000.parquet")
    with pytest.raises(FmriInputError, match="every training subject needs a text"):
        train_stage1(tiny_args(tmp_path / "run2", num_epochs=1, text_dataset=str(folder)), scans)


def test_split_dataset_decides_the_subjects_and_hides_test(tmp_path):
    """Stage 1 follows a corpus's subject splits: train on 'train', validate on 'validation', never see 'test'."""
    from datasets import Dataset

    scans = synthetic_scans(n_subjects=5)
    folder = tmp_path / "corpus"
    (folder / "data").mkdir(parents=True)
    splits = {"train": ["s0", "s3"], "validation": ["s4"], "test": ["s1", "s2"]}
    for name, subjects in splits.items():
        rows = {"subject": subjects, "dataset": ["toy"] * len(subjects), "text": [f"scan of {s}" for s in subjects]}
        Dataset.from_dict(rows).to_parquet(folder / "data" / f"{name}-00000.parquet")
    result = train_stage1(tiny_args(tmp_path / "run", num_epochs=1, split_dataset=str(folder)), scans)
    assert result.train_subjects == ["toy/s0", "toy/s3"]
    assert result.validation_subjects == ["toy/s4"]

    with pytest.raises(FmriInputError, match=r"subjects \['toy/s9'\] are in none of its splits"):
        train_stage1(tiny_args(tmp_path / "run2", split_dataset=str(folder)), scans + synthetic_scans(10)[9:])
