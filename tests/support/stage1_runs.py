"""The flags and inputs of tiny Stage 1 runs: a tiny tokenizer, a deterministic codebook, random-walk scans, a split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from modeling_fmrilm.io import FmriScan
from modeling_fmrilm.splits import SubjectSplit, write_manifest
from modeling_fmrilm.training.common import parse_arguments
from modeling_fmrilm.training.stage1 import Stage1Arguments, Stage1TrainingArguments

TINY_MODEL = [
    "--window_length", "16", "--window_stride", "8", "--patch_length", "4", "--hidden_size", "16",
    "--num_hidden_layers", "1", "--num_decoder_layers", "1", "--num_attention_heads", "2",
    "--num_codes", "8", "--code_dim", "8", "--warmup_steps", "0", "--disable_tqdm", "true",
]  # fmt: skip
# Deterministic codebook for step-by-step comparisons: no k-means start, no random restarts.
EXACT = json.dumps({"domain_hidden_size": 8, "kmeans_init": False, "dead_code_min_usage": 0.0})


def synthetic_scans(
    n_subjects: int = 4, n_rois: int = 6, n_frames: int = 48, seed: int = 0, dataset: str = "toy"
) -> list[FmriScan]:
    rng = np.random.default_rng(seed)
    return [
        FmriScan(
            data=np.cumsum(rng.standard_normal((n_rois, n_frames)), axis=1).astype(np.float32),
            tr=2.0,
            subject=f"s{i}",
            dataset=dataset,
        )
        for i in range(n_subjects)
    ]


def manifest(folder: Path, assignment: dict[str, str]) -> Path:
    write_manifest(folder, SubjectSplit(assignment))
    return folder


def parse(argv: list[str]) -> tuple[Stage1Arguments, Stage1TrainingArguments]:
    return parse_arguments((Stage1Arguments, Stage1TrainingArguments), argv)


def tiny_run(output_dir: Path, split_folder: Path, *extra: str) -> tuple[Stage1Arguments, Stage1TrainingArguments]:
    return parse(
        [*TINY_MODEL, "--output_dir", str(output_dir), "--split_manifest", str(split_folder),
         "--config_overrides", EXACT, "--per_device_train_batch_size", "4", "--num_train_epochs", "2", *extra]
    )  # fmt: skip
