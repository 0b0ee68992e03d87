"""Writers that cannot destroy: one writer per output folder (the lock names the holder), a finished
`final/` replaced only on request, shards flushed and a corrupt one rebuilt, resume checked before
Trainer reads it, and safetensors-only loading (no pickle in `final/`)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import load_dataset
from safetensors.torch import load_file

from modeling_fmrilm import FmriInputError, FmriLMForCausalLM, FmriTokenizerModel
from modeling_fmrilm.descriptors import corpus
from modeling_fmrilm.descriptors.corpus import build_corpus
from modeling_fmrilm.locking import LOCK_NAME, folder_lock
from modeling_fmrilm.training.common import check_checkpoint, last_complete_checkpoint
from modeling_fmrilm.training.stage1 import train_stage1
from tests.support import ROOT, tiny_lm
from tests.support.command_line import run
from tests.support.corpus_scans import FRACTIONS, LABELS, SETTINGS, folder_files, make_scans, scan_folder
from tests.support.stage1_runs import EXACT, TINY_MODEL, manifest, synthetic_scans, tiny_run

ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def wait_for(condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# -- (1) one writer per folder ---------------------------------------------------------------


HELD_BUILD = """
import sys, time
from pathlib import Path
from modeling_fmrilm import cli
from modeling_fmrilm.descriptors import corpus
real, go = corpus.shard_features, Path(sys.argv[1])
def held(items, reference):  # the build holds its lock until the test says go
    while not go.exists():
        time.sleep(0.05)
    return real(items, reference)
corpus.shard_features = held
cli.main(sys.argv[2:])
"""


def test_a_second_build_of_the_same_folder_fails_in_one_line_and_the_first_one_finishes(tmp_path):
    scans, table = scan_folder(tmp_path)
    out = tmp_path / "corpus"
    argv = ["build-corpus", "--scans", str(scans), "--tr", "2.0", "--atlas-table", str(table), "--output-dir", str(out),
            "--n-ica-components", "4", "--density", "0.2", "--seed", "4", "--shard-size", "3",
            "--fractions", *map(str, FRACTIONS)]  # fmt: skip
    inputs = snapshot(scans) | {"atlas.tsv": table.read_bytes()}
    first = subprocess.Popen(
        [sys.executable, "-c", HELD_BUILD, str(tmp_path / "go"), *argv],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: (out / LOCK_NAME).is_file() and (out / LOCK_NAME).read_text().strip(), "the first build's lock"
        )
        assert (
            out / LOCK_NAME
        ).read_text().strip() == f"a corpus build (pid {first.pid} on host {socket.gethostname()})"
        second = subprocess.run(
            [sys.executable, "-m", "modeling_fmrilm.cli", *argv], env=ENV, capture_output=True, text=True, timeout=120
        )
        assert second.returncode == 2 and second.stdout == ""
        assert len(second.stderr.splitlines()) == 1 and "Traceback" not in second.stderr
        assert second.stderr.startswith(
            f"fmrilm build-corpus: error: {out}: expected no other writer, found a corpus build (pid {first.pid} on host "
            f"{socket.gethostname()}) writing there (lock {out / LOCK_NAME}); wait for it to end or choose another folder"
        )
        assert first.poll() is None  # the refused build touched nothing of the running one
    finally:
        (tmp_path / "go").touch()
        stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-3000:]
    data = load_dataset(str(out))
    assert set(data) == {"train", "validation", "test"} and sum(len(split) for split in data.values()) == 8
    assert not (out / ".build").exists() and not (out / LOCK_NAME).exists()
    assert snapshot(scans) | {"atlas.tsv": table.read_bytes()} == inputs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas.tsv", "corpus", "go", "scans"]


HOLDER = """
import sys
from modeling_fmrilm.locking import folder_lock
with folder_lock(sys.argv[1], "a test's holder"):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_a_stage_or_demo_refuses_a_folder_another_process_holds_and_the_lock_goes_with_its_holder(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)], env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        split = manifest(tmp_path / "split", {"toy/s0": "train", "toy/s1": "train"})
        with pytest.raises(
            FmriInputError,
            match=re.escape(f"found a test's holder (pid {holder.pid} on host {socket.gethostname()}) writing there"),
        ):
            train_stage1(*tiny_run(out, split), scans=synthetic_scans(2))
        status, _, stderr = run(["demo", "--output-dir", str(out)], capsys)
        assert status == 2 and len(stderr.splitlines()) == 1 and f"found a test's holder (pid {holder.pid}" in stderr
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written beside the holder's lock
    finally:
        holder.communicate("\n", timeout=60)
    assert holder.returncode == 0 and not out.joinpath(LOCK_NAME).exists()
    with folder_lock(out, "a training run"):  # free again; and a process may take its own lock twice
        with folder_lock(out, "a corpus build"):
            assert (
                out.joinpath(LOCK_NAME).read_text()
                == f"a training run (pid {os.getpid()} on host {socket.gethostname()})\n"
            )
        assert out.joinpath(LOCK_NAME).exists()
    assert not out.joinpath(LOCK_NAME).exists()


# -- (3) a finished final/ is replaced only on request; (5) no pickle in it; (6) resume checked ------------


def recipe_flags(out: Path, split: Path, data: Path) -> list[str]:
    """`fmrilm train stage1` flags of a tiny run: 2 training scans, 3 steps an epoch, 2 epochs, a checkpoint each."""
    return [*TINY_MODEL, "--output_dir", str(out), "--split_manifest", str(split), "--config_overrides", EXACT,
            "--per_device_train_batch_size", "4", "--num_train_epochs", "2", "--data_dir", str(data), "--tr", "2.0"]  # fmt: skip


@pytest.fixture
def finished(tmp_path, capsys):
    """A finished tiny Stage 1 run (checkpoints and final/), its split and its data on disk."""
    data = tmp_path / "data"
    data.mkdir()
    for scan in synthetic_scans(3):
        np.save(data / f"sub-{scan.subject}_bold.npy", scan.data)
    split = manifest(tmp_path / "split", {"unknown/s0": "train", "unknown/s1": "train", "unknown/s2": "validation"})
    out = tmp_path / "run"
    assert run(["train", "stage1", *recipe_flags(out, split, data)], capsys)[0] == 0
    return out, split, data


def test_a_finished_final_is_replaced_only_with_overwrite_final_or_by_a_resume(finished, capsys):
    out, split, data = finished
    final, checkpoint = out / "final", Path(last_complete_checkpoint(out))
    assert checkpoint.name == "checkpoint-6" and (checkpoint / "training_args.bin").is_file()  # a resume reads it
    assert "training_args.bin" not in os.listdir(final)  # no pickle in the model folder
    assert json.loads((final / "training_args.json").read_text())["output_dir"] == str(out)
    before = snapshot(out)
    recipe = ["train", "stage1", *recipe_flags(out, split, data)]
    status, _, stderr = run(recipe, capsys)
    assert status == 2 and len(stderr.splitlines()) == 1 and "Traceback" not in stderr
    assert stderr.startswith(
        f"fmrilm train: error: {final}: expected no finished model in the output folder, found one; pass --overwrite_final"
    )
    assert snapshot(out) == before  # refused before training: nothing written
    status, _, stderr = run([*recipe, "--resume_from_checkpoint", "latest"], capsys)
    assert status == 0, stderr  # resuming was asked for: from checkpoint-6, the end, to the same weights
    assert load_file(final / "model.safetensors").keys() == load_file(checkpoint / "model.safetensors").keys()
    status, _, stderr = run([*recipe, "--overwrite_final", "--num_train_epochs", "1"], capsys)
    assert status == 0, stderr
    assert (
        json.loads((final / "training_record.json").read_text())["log_history"][-1]["step"] == 3
    )  # the new, shorter run


def test_resume_from_a_checkpoint_without_weights_is_one_line_before_any_data_is_read(finished, capsys):
    out, split, data = finished
    bare = out.parent / "bare" / "checkpoint-6"
    bare.mkdir(parents=True)
    (bare / "trainer_state.json").write_bytes((out / "checkpoint-6" / "trainer_state.json").read_bytes())
    expected = f"{bare}: expected a Trainer checkpoint with its model weights (model.safetensors or "
    with pytest.raises(FmriInputError, match=re.escape(expected) + r".*found only \['trainer_state.json'\]"):
        check_checkpoint(bare)
    absent = data.parent / "no_data"
    status, _, stderr = run(
        ["train", "stage1", *recipe_flags(bare.parent, split, absent), "--resume_from_checkpoint", str(bare)], capsys
    )
    assert status == 2 and len(stderr.splitlines()) == 1 and "Traceback" not in stderr
    assert (
        expected in stderr and "found only ['trainer_state.json']" in stderr
    )  # not a word about the absent data folder
    assert sorted(p.name for p in bare.parent.iterdir()) == ["checkpoint-6"]


# -- (4) a truncated shard is named, moved aside and rebuilt -----------------------------------------


def test_a_truncated_shard_is_named_moved_aside_and_rebuilt_to_the_uninterrupted_corpus(tmp_path):
    scans = make_scans()
    options = dict(fractions=FRACTIONS, shard_size=3, progress=False, command="build")
    build_corpus(scans, tmp_path / "one", LABELS, "toy", SETTINGS, **options)
    out = tmp_path / "crashed"
    corpus.prepare(scans, out, LABELS, "toy", SETTINGS, FRACTIONS, shard_size=3, progress=False)
    corpus.build_shards(scans, out, progress=False)
    shard = out / ".build" / "raw" / "shard-00001.npz"
    whole = shard.read_bytes()
    shard.write_bytes(whole[: len(whole) // 2])  # what a crash before the data reached the disk leaves
    corrupt = (
        re.escape(f"{shard}: truncated or corrupt shard (BadZipFile")
        + ".*moved to shard-00001.npz.corrupt, computed again"
    )
    with pytest.warns(UserWarning, match=corrupt), pytest.raises(FmriInputError, match=r"1 missing \(\[1\]\)"):
        corpus.merge(out, "build", progress=False)
    assert (shard.parent / "shard-00001.npz.corrupt").read_bytes() == whole[: len(whole) // 2]
    shard.with_name("shard-00001.npz.corrupt").rename(shard)  # corrupt again, for the whole build's rerun
    with pytest.warns(UserWarning, match="shard-00001.npz: truncated or corrupt shard"):
        summary = build_corpus(scans, out, LABELS, "toy", SETTINGS, **options)
    assert summary.reused_shards == 2  # shards 0 and 2 kept, shard 1 computed again
    assert folder_files(out) == folder_files(tmp_path / "one")


# -- (5) safetensors only -------------------------------------------------------------------------


def test_a_model_folder_without_safetensors_is_refused_with_how_to_convert(tmp_path, capsys):
    model, processor = tiny_lm.build("gpt2")
    folder = tmp_path / "pickled"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    convert = f"M.from_pretrained('{folder}', use_safetensors=False).save_pretrained('{folder}')"
    with pytest.raises(
        FmriInputError,
        match=re.escape(f"{folder}: expected safetensors weights (model.safetensors), found ['pytorch_model.bin']"),
    ):
        FmriLMForCausalLM.from_pretrained(folder)
    np.save(tmp_path / "scan.npy", tiny_lm.scan(1))
    status, stdout, stderr = run(
        ["ask", "--model", str(folder), "--scan", str(tmp_path / "scan.npy"), "--tr", "2", "q"], capsys
    )
    assert status == 2 and stdout == "" and len(stderr.splitlines()) == 1
    assert (
        "fmrilm reads no pickled weights" in stderr
        and "from modeling_fmrilm import FmriLMForCausalLM as M; " + convert in stderr
    )
    FmriLMForCausalLM.from_pretrained(folder, use_safetensors=False).save_pretrained(
        folder
    )  # the conversion the message gives
    converted = FmriLMForCausalLM.from_pretrained(folder)
    for name, tensor in converted.state_dict().items():
        torch.testing.assert_close(tensor, model.state_dict()[name], rtol=0, atol=0, msg=name)

    tokenizer = tmp_path / "tokenizer"
    tiny_lm.fmri_tokenizer().save_pretrained(tokenizer)
    (tokenizer / "model.safetensors").rename(tokenizer / "pytorch_model.bin")
    with pytest.raises(FmriInputError, match="from modeling_fmrilm import FmriTokenizerModel as M"):
        FmriTokenizerModel.from_pretrained(tokenizer)
