"""Stage 1 on transformers.Trainer: subject split, logged metrics, exact resume, atomic final save,
argument parsing, the text loss, and two-process runs (gloo on CPU) against one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoFeatureExtractor, AutoModel

from modeling_fmrilm import FmriInputError, FmriTokenizerModel
from modeling_fmrilm.feature_extraction_fmrilm import FmriFeatureExtractor
from modeling_fmrilm.io import FmriScan
from modeling_fmrilm.training.common import last_complete_checkpoint, resolve_resume
from modeling_fmrilm.training.stage1 import (
    reconstruction_r2,
    train_stage1,
)
from modeling_fmrilm.training.text_inputs import load_texts
from modeling_fmrilm.window_store import WindowStore
from tests.support import ROOT
from tests.support.equivalence import SGD_STEP, assert_same_step
from tests.support.stage1_runs import EXACT, TINY_MODEL, manifest, parse, synthetic_scans, tiny_run

RECIPE = ROOT / "recipes" / "stage1_tokenizer.py"


@pytest.fixture
def four_subjects(tmp_path):
    split = manifest(
        tmp_path / "split", {"toy/s0": "train", "toy/s1": "train", "toy/s2": "validation", "toy/s3": "test"}
    )
    return synthetic_scans(), split


def test_reconstruction_r2_numbers():
    target = torch.randn(3, 4, 8)
    assert reconstruction_r2(target, target) == pytest.approx(1.0)
    assert reconstruction_r2(target, target.mean(dim=-1, keepdim=True).expand_as(target)) == pytest.approx(
        0.0, abs=1e-9
    )
    assert reconstruction_r2(target, 0.5 * target + 0.5 * target.mean(-1, keepdim=True)) == pytest.approx(0.75)


def test_both_flag_spellings_and_bad_overrides(tmp_path):
    args, training = parse(["--output-dir", str(tmp_path), "--num-codes", "7", "--per_device_train_batch_size", "3"])
    assert training.output_dir == str(tmp_path) and args.num_codes == 7 and training.per_device_train_batch_size == 3
    assert training.lr_scheduler_type == "cosine" and training.eval_strategy == "epoch"
    with pytest.raises(FmriInputError, match="config_overrides: expected a JSON object"):
        parse(["--config_overrides", "{hidden: 3"])[0].overrides()


def test_split_metrics_and_final_folder(tmp_path, four_subjects):
    """Trains on the train split only, never reads the test subject, logs the Stage 1 metrics, and
    writes a final folder that AutoModel and AutoFeatureExtractor load with the same codes."""
    scans, split = four_subjects
    result = train_stage1(*tiny_run(tmp_path / "run", split), scans=scans)
    assert set(result.trainer.train_dataset.subject_keys) == {"toy/s0", "toy/s1"}
    assert set(result.trainer.eval_dataset.subject_keys) == {"toy/s2"}
    assert len(result.trainer.train_dataset) == 2 * 5  # 48 frames, windows of 16 every 8

    train_logs = [entry for entry in result.history if "reconstruction_loss" in entry]
    assert len(train_logs) == 2 and train_logs[-1]["loss"] < train_logs[0]["loss"]
    last = result.last_eval()
    assert 0 < last["eval_utilisation"] <= 1 and 1 <= last["eval_perplexity"] <= 8
    assert last["eval_mse"] == pytest.approx(last["eval_reconstruction_loss"], rel=1e-4)

    final = tmp_path / "run" / "final"
    record = json.loads((final / "training_record.json").read_text())
    assert record["split"]["subjects"]["toy/s3"] == "test" and record["mixed_precision"] == "no"
    loaded = AutoModel.from_pretrained(final)
    assert isinstance(loaded, FmriTokenizerModel)
    extractor = AutoFeatureExtractor.from_pretrained(final)
    windows = extractor(scans[3], return_tensors="pt")["fmri_values"]
    torch.testing.assert_close(loaded.encode(windows), result.model.base_model.encode(windows))
    with torch.no_grad():
        values = result.trainer.eval_dataset.windows[:]["fmri_values"]
        evaluated = reconstruction_r2(values, loaded.decode(loaded.encode(values)))
    assert evaluated == pytest.approx(last["eval_r2"], abs=1e-4)
    assert not list(final.parent.glob(".final-*"))


def test_a_run_that_ends_before_the_kmeans_initialisation_says_so(tmp_path, four_subjects):
    scans, split = four_subjects
    kmeans = json.dumps({"domain_hidden_size": 8, "kmeans_init": True})
    with pytest.warns(
        UserWarning,
        match=r"Stage 1 ended after 6 steps, before the codebook's k-means initialisation \(100 warm-up steps",
    ):
        train_stage1(*tiny_run(tmp_path / "short", split, "--config_overrides", kmeans), scans=scans)
    record = json.loads((tmp_path / "short" / "final" / "training_record.json").read_text())
    assert record["codebook_initialised"] is False
    # 96 encoder outputs a step (4 windows x 24 tokens) and 32 needed: the first step after the warm-up fits it
    result = train_stage1(
        *tiny_run(tmp_path / "fitted", split, "--config_overrides", kmeans, "--kmeans_warmup_steps", "1"), scans=scans
    )
    assert int(result.model.base_model.quantizer.kmeans_vectors_used) > 0
    assert (
        json.loads((tmp_path / "fitted" / "final" / "training_record.json").read_text())["codebook_initialised"]
        is True
    )


def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path, four_subjects):
    scans, split = four_subjects
    full = tmp_path / "full"
    train_stage1(*tiny_run(full, split), scans=scans)
    first = last_complete_checkpoint(full)
    assert first is not None and first.endswith("checkpoint-6")
    checkpoints = sorted(p.name for p in full.glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-3", "checkpoint-6"]

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-3", resumed / "checkpoint-3")
    shutil.copytree(full / "checkpoint-6", resumed / "checkpoint-6")
    (resumed / "checkpoint-6" / "trainer_state.json").unlink()  # interrupted mid-save: skipped
    assert resolve_resume("latest", str(resumed)).endswith("checkpoint-3")
    train_stage1(*tiny_run(resumed, split, "--resume_from_checkpoint", "latest"), scans=scans)
    expected, found = (
        load_file(full / "final" / "model.safetensors"),
        load_file(resumed / "final" / "model.safetensors"),
    )
    assert expected.keys() == found.keys()
    for name in expected:
        torch.testing.assert_close(found[name], expected[name], msg=name)
    with pytest.raises(FmriInputError, match="expected a Trainer checkpoint folder"):
        resolve_resume(str(tmp_path / "nowhere"), str(resumed))


def test_text_dataset_feeds_the_contrastive_loss_by_dataset_subject(tmp_path):
    """Texts are keyed by dataset/subject[/session]: the same subject id in two datasets gets its own text."""
    from datasets import Dataset

    scans = synthetic_scans(3, dataset="a") + synthetic_scans(3, seed=1, dataset="b")
    split = manifest(tmp_path / "split", {f"{d}/s{i}": "train" for d in "ab" for i in range(3)})
    folder = tmp_path / "texts"
    (folder / "data").mkdir(parents=True)
    rows = [
        (d, f"s{i}", f"cohort {d} subject {i}: connectivity {'elevated' if i % 2 else 'lower'}")
        for d in "ab"
        for i in range(3)
    ]
    Dataset.from_dict(
        {"dataset": [r[0] for r in rows], "subject": [r[1] for r in rows], "text": [r[2] for r in rows]}
    ).to_parquet(folder / "data" / "train-00000.parquet")
    result = train_stage1(
        *tiny_run(tmp_path / "run", split, "--text_dataset", str(folder), "--num_train_epochs", "1"), scans=scans
    )
    assert result.model.config.text_embed_dim == 384
    assert [entry["contrastive_loss"] for entry in result.history if "contrastive_loss" in entry][0] > 0
    assert load_texts(folder)["b/s1"] == "cohort b subject 1: connectivity elevated"  # a Path works as well as a str

    Dataset.from_dict({"dataset": ["a"], "subject": ["s0"], "text": ["only one"]}).to_parquet(
        folder / "data" / "train-00000.parquet"
    )
    with pytest.raises(FmriInputError, match=r"no 'text' for scans \['a/s1'"):
        train_stage1(*tiny_run(tmp_path / "run2", split, "--text_dataset", str(folder)), scans=scans)


# -- several processes (gloo on CPU) ---------------------------------------------------------


def write_scans(folder: Path, n_subjects: int = 4) -> Path:
    folder.mkdir(parents=True)
    for scan in synthetic_scans(n_subjects):
        np.save(folder / f"sub-{scan.subject}_bold.npy", scan.data)
    return folder


def run_recipe(launcher: list[str], output_dir: Path, *extra: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", "PYTHONPATH": str(ROOT)}
    command = [*launcher, str(RECIPE), *TINY_MODEL, "--output_dir", str(output_dir), *extra]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((output_dir / "final" / "training_record.json").read_text())


@pytest.mark.slow
def test_two_processes_match_one_process_on_the_doubled_batch(tmp_path):
    """torchrun with 2 gloo processes, 2 windows each, takes the SGD step of 1 process on 4 windows (tests/support/equivalence.py)."""
    data = write_scans(tmp_path / "data")
    split = manifest(tmp_path / "split", {f"unknown/s{i}": "train" if i < 3 else "validation" for i in range(4)})
    common = ["--data_dir", str(data), "--tr", "2.0", "--split_manifest", str(split), "--config_overrides", EXACT,
              "--max_steps", "1", "--logging_steps", "1", "--save_strategy", "no", "--eval_strategy", "no", *SGD_STEP]  # fmt: skip
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531"]
    two = run_recipe(torchrun, tmp_path / "two", *common, "--per_device_train_batch_size", "2")
    one = run_recipe([sys.executable], tmp_path / "one", *common, "--per_device_train_batch_size", "4")
    run_recipe(
        [sys.executable], tmp_path / "initial", *common, "--per_device_train_batch_size", "4", "--learning_rate", "0"
    )
    assert two["num_processes"] == 2 and one["num_processes"] == 1
    assert len(set(two["codebook_sha256_per_process"])) == 1 and len(two["codebook_sha256_per_process"]) == 2
    first_loss = [next(e["loss"] for e in record["log_history"] if "loss" in e) for record in (two, one)]
    assert first_loss[0] == pytest.approx(first_loss[1], rel=1e-5)
    assert_same_step(*(tmp_path / name / "final" / "model.safetensors" for name in ("two", "one", "initial")))


@pytest.mark.slow
def test_accelerate_launch_uses_the_config_mixed_precision(tmp_path):
    """`accelerate launch --config_file recipes/configs/ddp.yaml --num_processes 2` on the CPU (gloo):
    the run uses the config's bf16, the codebook is identical on both ranks, and the final folder
    loads with AutoModel."""
    data = write_scans(tmp_path / "data")
    split = manifest(tmp_path / "split", {f"unknown/s{i}": "train" if i < 3 else "validation" for i in range(4)})
    launcher = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ROOT / "recipes" / "configs" / "ddp.yaml"),
        "--num_processes",
        "2",
        "--main_process_port",
        "29533",
    ]
    record = run_recipe(launcher, tmp_path / "run", "--data_dir", str(data), "--tr", "2.0", "--split_manifest", str(split),
                        "--max_steps", "2", "--per_device_train_batch_size", "2", "--save_strategy", "no")  # fmt: skip
    assert record["mixed_precision"] == "bf16" and record["num_processes"] == 2
    assert len(set(record["codebook_sha256_per_process"])) == 1
    model = AutoModel.from_pretrained(tmp_path / "run" / "final")
    assert model.encode(torch.randn(2, 6, 16)).shape == (2, 24)


def test_corpus_split_reaches_stage1_and_no_test_subject_is_trained_on(tmp_path):
    """Build the descriptor corpus, train Stage 1 on it (its folder as the text dataset is enough):
    the training windows come from its train subjects only, validation from its validation
    subjects, and no window of a test subject is ever read."""
    from modeling_fmrilm.descriptors.corpus import build_corpus
    from modeling_fmrilm.descriptors.reference import DescriptorSettings
    from modeling_fmrilm.splits import read_manifest

    scans = [
        FmriScan(
            np.cumsum(np.random.default_rng(i).standard_normal((16, 120)), axis=1).astype(np.float32) + 100,
            2.0,
            f"s{i}",
            dataset=d,
        )
        for i, d in enumerate(["a"] * 5 + ["b"] * 5)
    ]
    corpus = tmp_path / "corpus"
    labels = ["Visual"] * 6 + ["Motor"] * 5 + ["Default"] * 5
    build_corpus(
        scans,
        corpus,
        labels,
        "toy",
        DescriptorSettings(n_ica_components=4, density=0.2),
        fractions=(0.5, 0.2, 0.3),
        progress=False,
    )
    split = read_manifest(corpus)
    assert split.subjects("test") and split.subjects("validation")
    args, training_args = parse(
        [*TINY_MODEL, "--output_dir", str(tmp_path / "run"), "--text_dataset", str(corpus), "--num_train_epochs", "1",
         "--config_overrides", EXACT, "--num_codes", "8"]
    )  # fmt: skip
    validated = []
    original = FmriFeatureExtractor.validate

    def recording(self, fmri, tr=None):
        validated.append(f"{fmri.dataset}/{fmri.subject}")
        return original(self, fmri, tr)

    FmriFeatureExtractor.validate = recording
    try:
        result = train_stage1(args, training_args, scans=scans)
    finally:
        FmriFeatureExtractor.validate = original
    assert set(result.trainer.train_dataset.subject_keys) == set(split.subjects("train"))
    assert set(result.trainer.eval_dataset.subject_keys) == set(split.subjects("validation"))
    assert set(validated) == set(split.subjects("train")) | set(
        split.subjects("validation")
    )  # the scans the store read
    assert not WindowStore.open(tmp_path / "run" / "window_store").record["windows"]["test"]
    record = json.loads((tmp_path / "run" / "final" / "training_record.json").read_text())
    assert record["split"]["subjects"] == split.to_json()["subjects"]
