"""Nothing lost: a run killed with SIGKILL mid-epoch and started again with `--resume_from_checkpoint
latest` ends with the weights of an uninterrupted run; a truncated or corrupt checkpoint is named."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from modeling_fmrilm import FmriInputError
from modeling_fmrilm.splits import SubjectSplit, write_manifest
from modeling_fmrilm.training.common import check_checkpoint, last_complete_checkpoint, resolve_resume
from tests.support import ROOT

STEPS = 60


def recipe_command(data: Path, split: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, str(ROOT / "recipes" / "stage1_tokenizer.py"), "--data_dir", str(data), "--tr", "2.0",
        "--split_manifest", str(split), "--output_dir", str(output_dir), "--window_length", "16", "--window_stride", "4",
        "--patch_length", "4", "--hidden_size", "16", "--num_hidden_layers", "1", "--num_decoder_layers", "1",
        "--num_attention_heads", "2", "--num_codes", "8", "--code_dim", "8", "--per_device_train_batch_size", "2",
        "--max_steps", str(STEPS), "--save_strategy", "steps", "--save_steps", "5", "--save_total_limit", "2",
        "--eval_strategy", "no", "--logging_steps", "5", "--warmup_steps", "0", "--disable_tqdm", "true",
        "--config_overrides", '{"domain_hidden_size": 8, "hidden_dropout_prob": 0.1}', *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kill")
    data = folder / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        np.save(data / f"sub-s{i}_bold.npy", np.cumsum(rng.standard_normal((6, 48)), axis=1).astype(np.float32))
    write_manifest(folder / "split", SubjectSplit({f"unknown/s{i}": "train" for i in range(3)}))
    return data, folder / "split"


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_ends_with_the_uninterrupted_weights(tmp_path, inputs):
    data, split = inputs
    # 3 subjects x 9 windows / batch 2 = 14 steps an epoch: the kill lands inside an epoch
    uninterrupted = tmp_path / "uninterrupted"
    subprocess.run(recipe_command(data, split, uninterrupted), env=ENV, check=True, capture_output=True, timeout=300)

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        recipe_command(data, split, killed), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while last_complete_checkpoint(killed) is None or int(last_complete_checkpoint(killed).rsplit("-", 1)[1]) < 20:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint within the time limit"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL and not (killed / "final").exists()
    reached = int(last_complete_checkpoint(killed).rsplit("-", 1)[1])
    assert 20 <= reached < STEPS and reached % 14  # mid-epoch

    subprocess.run(
        recipe_command(data, split, killed, "--resume_from_checkpoint", "latest"),
        env=ENV,
        check=True,
        capture_output=True,
        timeout=300,
    )
    expected = load_file(uninterrupted / "final" / "model.safetensors")
    found = load_file(killed / "final" / "model.safetensors")
    assert expected.keys() == found.keys()
    for name in expected:
        torch.testing.assert_close(found[name], expected[name], rtol=0, atol=0, msg=name)


def test_truncated_or_corrupt_checkpoint_files_are_named(tmp_path, inputs):
    data, split = inputs
    run = tmp_path / "run"
    command = recipe_command(data, split, run)
    command[command.index("--max_steps") + 1] = "5"
    subprocess.run(command, env=ENV, check=True, capture_output=True, timeout=300)
    checkpoint = run / "checkpoint-5"
    check_checkpoint(checkpoint)  # whole: no error

    for name, damage in [("model.safetensors", 0.5), ("optimizer.pt", 0.5), ("trainer_state.json", None)]:
        broken = tmp_path / f"broken-{name}"
        shutil.copytree(checkpoint, broken)
        path = broken / name
        content = path.read_bytes()
        path.write_bytes(content[: int(len(content) * damage)] if damage else b'{"global_step": ')
        with pytest.raises(FmriInputError, match=f"{path}"):
            resolve_resume(str(broken), str(run))
    # a folder whose last save was interrupted is skipped by "latest"
    (run / "checkpoint-9").mkdir()
    assert resolve_resume("latest", str(run)) == str(checkpoint)
