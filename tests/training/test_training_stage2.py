"""Stage 2 on transformers.Trainer: objective examples, the weighted loss, cached codes, a tiny run
end to end, and two processes against one on the doubled batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoProcessor

from modeling_fmrilm import FmriInputError
from modeling_fmrilm.io import FmriScan
from modeling_fmrilm.splits import SubjectSplit, write_manifest
from modeling_fmrilm.training.common import parse_arguments, store_windows
from modeling_fmrilm.training.objectives import IGNORE_INDEX, ObjectiveCollator, ObjectiveTrainer
from modeling_fmrilm.training.stage2 import (
    ExampleBuilder,
    Stage2Arguments,
    Stage2TrainingArguments,
    encode_windows,
    train_stage2,
)
from modeling_fmrilm.window_store import WindowStore, build_window_store
from tests.support import ROOT, tiny_lm
from tests.support.equivalence import SGD_STEP, assert_same_step


def test_examples_put_labels_on_their_targets_only(tiny_gpt2):
    model, processor = tiny_gpt2
    config = model.config
    builder = ExampleBuilder(config, processor.tokenizer, "\nDescription:", max_t2t_length=8)
    codes = [i % model.config.num_codes for i in range(tiny_lm.TOKENS_PER_WINDOW)]
    connectivity = [config.fmri_fc_token_id] * tiny_lm.NUM_ROIS  # one connectivity token per ROI, after the codes
    scan_tokens = [
        config.fmri_start_token_id,
        *(config.first_code_token_id + c for c in codes),
        *connectivity,
        config.fmri_end_token_id,
    ]

    f2t = builder.f2t(codes, "Global efficiency is slightly elevated.", "toy/s0", window=4)
    assert f2t["fmri_windows"] == [4]
    description = processor.tokenizer(" Global efficiency is slightly elevated.", add_special_tokens=False)[
        "input_ids"
    ]
    assert f2t["input_ids"][: len(scan_tokens)] == scan_tokens and f2t["objective"] == 0
    labelled = [label for label in f2t["labels"] if label != IGNORE_INDEX]
    assert labelled == description + [processor.tokenizer.eos_token_id] == f2t["input_ids"][-len(labelled) :]

    following = [(c + 5) % 12 for c in codes]
    f2f = builder.f2f(codes, following, "toy/s0", windows=(4, 5))
    labelled = [label for label in f2f["labels"] if label != IGNORE_INDEX]
    assert labelled == [config.first_code_token_id + c for c in following] and f2f["objective"] == 1
    assert len(f2f["input_ids"]) == 2 * len(scan_tokens) and f2f["fmri_windows"] == [4, 5]
    # the labels sit on the next window's codes, never on its connectivity placeholders
    targets = [i for i, label in enumerate(f2f["labels"]) if label != IGNORE_INDEX]
    assert targets == list(range(len(scan_tokens) + 1, len(scan_tokens) + 1 + len(codes)))

    text = " ".join(tiny_lm.SENTENCES[:2])
    pieces = builder.t2t(text)
    ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"] + [processor.tokenizer.eos_token_id]
    assert [token for piece in pieces for token in piece["input_ids"]] == ids
    assert all(len(p["input_ids"]) <= 8 and p["labels"] == p["input_ids"] and p["objective"] == 2 for p in pieces)

    builder.max_positions = 20
    with pytest.raises(FmriInputError, match="F2T example of toy/s0: .* more than the language model's 20 positions"):
        builder.f2t(codes, "a description", "toy/s0")


def test_collator_pads_and_weighted_loss_matches_a_hand_computation(tiny_gpt2, tmp_path):
    model, processor = tiny_gpt2
    builder = ExampleBuilder(model.config, processor.tokenizer, "\nDescription:", max_t2t_length=64)
    codes = [i % model.config.num_codes for i in range(tiny_lm.TOKENS_PER_WINDOW)]
    examples = [
        builder.f2t(codes, "lower coupling", "a", window=2),
        builder.f2f(codes, codes[::-1], "a", windows=(0, 1)),
        builder.t2t(tiny_lm.SENTENCES[0])[0],
    ]
    pad = processor.tokenizer.pad_token_id
    table = (
        model.fmri_connectivity(
            torch.randn(3, tiny_lm.NUM_ROIS, tiny_lm.WINDOW_LENGTH, generator=torch.Generator().manual_seed(0))
        )
        .half()
        .numpy()
    )
    batch = ObjectiveCollator(pad, table)(examples)
    assert batch["fmri_connectivity"].shape == (
        3,
        tiny_lm.NUM_ROIS,
        tiny_lm.NUM_ROIS,
    )  # windows 2, then 0 and 1, in batch order
    assert torch.equal(batch["fmri_connectivity"], torch.as_tensor(table[[2, 0, 1]]))
    longest = max(len(e["input_ids"]) for e in examples)
    assert batch["input_ids"].shape == (3, longest) and batch["objective"].tolist() == [0, 1, 2]
    assert (
        "attention_mask" not in batch
    )  # right padding under a causal mask: the loss below is that of the unpadded sequences
    mask = ObjectiveCollator(pad, table, attention_mask=True)(examples)["attention_mask"]
    assert mask.sum(1).tolist() == [len(e["input_ids"]) for e in examples] and mask[:, 0].all()
    assert (batch["labels"][mask == 0] == IGNORE_INDEX).all()

    args = Stage2TrainingArguments(output_dir=str(tmp_path), eval_strategy="no")
    trainer = ObjectiveTrainer(
        model=model, args=args, data_collator=ObjectiveCollator(pad), objectives={"f2t": 1.0, "f2f": 0.1, "t2t": 0.5}
    )
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
        expected = 0.0
        first_losses, first_hits = [], []
        for example, weight in zip(examples, (1.0, 0.1, 0.5), strict=True):
            ids = torch.tensor([example["input_ids"]])
            rows = (
                {"fmri_connectivity": torch.as_tensor(table[example["fmri_windows"]])}
                if example["fmri_windows"]
                else {}
            )
            logits = model(input_ids=ids, **rows).logits[0, :-1]
            labels = torch.tensor(example["labels"][1:])
            expected += weight * F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
            # the first token of each run of targets (a Stage 3 answer's label word), found by a loop
            targeted = [label != IGNORE_INDEX for label in labels.tolist()]
            starts = [i for i, t in enumerate(targeted) if t and (i == 0 or not targeted[i - 1])]
            first_losses.append(F.cross_entropy(logits[starts], labels[starts]).item())
            first_hits.append((logits[starts].argmax(-1) == labels[starts]).float().mean().item())
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    logs = trainer.summarize(trainer.sums["eval"].reduce(trainer.accelerator), "")  # the model is in eval mode
    kinds = ("loss", "accuracy", "first_token_loss", "first_token_accuracy")
    assert set(logs) == {f"{name}_{kind}" for name in ("f2t", "f2f", "t2t") for kind in kinds}
    assert all(0 <= logs[f"{name}_accuracy"] <= 1 for name in ("f2t", "f2f", "t2t"))
    for name, first_loss, first_hit in zip(("f2t", "f2f", "t2t"), first_losses, first_hits, strict=True):
        assert logs[f"{name}_first_token_loss"] == pytest.approx(first_loss, rel=1e-4)
        assert logs[f"{name}_first_token_accuracy"] == pytest.approx(first_hit)
        assert logs[f"{name}_first_token_loss"] != pytest.approx(logs[f"{name}_loss"], rel=1e-3)

    # An evaluation's sums reach its log under the prefix it was asked for, one set per evaluation set.
    import datasets

    evaluator = ObjectiveTrainer(
        model=model,
        args=args,
        data_collator=ObjectiveCollator(pad, table),
        objectives={"f2t": 1.0, "f2f": 0.1, "t2t": 0.5},
    )
    metrics = evaluator.evaluate(datasets.Dataset.from_list(examples), metric_key_prefix="test")
    expected_keys = {f"test_{name}_{kind}" for name in ("f2t", "f2f", "t2t") for kind in ("loss", "accuracy")}
    assert expected_keys <= set(metrics) and expected_keys <= set(evaluator.state.log_history[-1])
    assert not any(key.startswith("eval_") for key in metrics)
    both = evaluator.evaluate(
        {"a": datasets.Dataset.from_list(examples), "b": datasets.Dataset.from_list(examples[:1])}
    )
    assert {"eval_a_f2t_loss", "eval_a_t2t_loss", "eval_b_f2t_loss"} <= set(both) and "eval_b_t2t_loss" not in both
    # the f2t objective is the first example's alone, in both sets
    assert both["eval_b_f2t_loss"] == pytest.approx(metrics["test_f2t_loss"], rel=1e-5)


def synthetic_scans(n_subjects: int, n_frames: int = 40) -> list[FmriScan]:
    return [
        FmriScan(data=tiny_lm.scan(i, n_frames), tr=2.0, subject=f"s{i}", dataset="toy") for i in range(n_subjects)
    ]


def test_codes_are_encoded_once_and_cached(tiny_gpt2, tmp_path, monkeypatch):
    model, processor = tiny_gpt2
    scans = synthetic_scans(3)
    split = SubjectSplit({"toy/s0": "train", "toy/s1": "test", "toy/s2": "validation"})
    build_window_store(scans, tmp_path / "store", processor.feature_extractor, split_manifest=split, progress=False)
    windows = store_windows(
        WindowStore.open(tmp_path / "store"), ["train", "validation"], processor.feature_extractor.stride
    )
    codes = encode_windows(model.fmri_tokenizer, windows, "store 1", tmp_path / "cache")
    assert codes.column_names == ["subject_key", "text_key", "scan", "window_start", "codes"]
    assert list(codes["subject_key"]) == ["toy/s0", "toy/s0", "toy/s2", "toy/s2"] and list(codes["window_start"]) == [
        0,
        16,
        0,
        16,
    ]
    expected = processor.feature_extractor([scans[0], scans[2]], return_tensors="pt")["fmri_values"]
    torch.testing.assert_close(model.fmri_tokenizer.encode(expected), torch.tensor(list(codes["codes"])))

    def refuse(*args, **kwargs):
        raise AssertionError("encoded again instead of reading the cache")

    monkeypatch.setattr(model.fmri_tokenizer, "encode", refuse)
    again = encode_windows(model.fmri_tokenizer, windows, "store 1", tmp_path / "cache")
    assert list(again["codes"]) == list(codes["codes"])


def write_inputs(folder: Path, n_subjects: int = 6) -> dict[str, Path]:
    """A Stage 1 folder, an LM folder, a corpus folder with splits.json, and .npy scans."""
    from datasets import Dataset

    stage1 = folder / "stage1"
    tiny_lm.fmri_tokenizer().save_pretrained(stage1)
    tiny_lm.feature_extractor().save_pretrained(stage1)
    lm = folder / "lm"
    text_tokenizer = tiny_lm.text_tokenizer()
    language_model = tiny_lm.language_model("gpt2", len(text_tokenizer))
    language_model.config.update(
        {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
    )  # runs comparable step for step
    language_model.save_pretrained(lm)
    text_tokenizer.save_pretrained(lm)
    corpus = folder / "corpus"
    (corpus / "data").mkdir(parents=True)
    subjects = [f"s{i}" for i in range(n_subjects)]
    texts = [tiny_lm.SENTENCES[i % len(tiny_lm.SENTENCES)] for i in range(n_subjects)]
    Dataset.from_dict({"dataset": ["unknown"] * n_subjects, "subject": subjects, "text": texts}).to_parquet(
        corpus / "data" / "train-00000.parquet"
    )
    roles = ["train"] * (n_subjects - 2) + ["validation", "test"]
    write_manifest(corpus, SubjectSplit({f"unknown/{s}": role for s, role in zip(subjects, roles, strict=True)}))
    data = folder / "scans"
    data.mkdir()
    for i, subject in enumerate(subjects):
        np.save(data / f"sub-{subject}_bold.npy", tiny_lm.scan(i, 40))
    return {"stage1": stage1, "lm": lm, "corpus": corpus, "data": data}


def stage2_argv(inputs: dict[str, Path], output_dir: Path, *extra: str) -> list[str]:
    return [
        "--fmri_tokenizer", str(inputs["stage1"]), "--base_model", str(inputs["lm"]), "--corpus", str(inputs["corpus"]),
        "--data_dir", str(inputs["data"]), "--tr", "2.0", "--output_dir", str(output_dir), "--disable_tqdm", "true",
        "--warmup_steps", "0", *extra,
    ]  # fmt: skip


def test_tiny_run_end_to_end(tmp_path):
    """Trains on the train subjects only, logs each objective, and the final folder loads with the Auto classes."""
    inputs = write_inputs(tmp_path)
    args, training_args = parse_arguments(
        (Stage2Arguments, Stage2TrainingArguments), stage2_argv(inputs, tmp_path / "run", "--num_train_epochs", "3")
    )
    result = train_stage2(args, training_args)
    assert set(result.data.codes["subject_key"]) == {
        f"unknown/s{i}" for i in range(5)
    }  # the test subject s5 is never read
    train_logs = [entry for entry in result.history if "f2t_loss" in entry]
    assert len(train_logs) == 3 and train_logs[-1]["loss"] < train_logs[0]["loss"]
    assert {"eval_f2t_loss", "eval_f2f_loss", "eval_t2t_loss", "eval_f2f_accuracy"} <= set(result.history[-2])

    final = tmp_path / "run" / "final"
    model = AutoModelForCausalLM.from_pretrained(final).eval()
    processor = AutoProcessor.from_pretrained(final)
    batch = processor(text=["<fmri>\nDescription:"], fmri=[tiny_lm.scan(9, 40)], tr=2.0, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, result.model(**batch).logits)
    record = json.loads((final / "training_record.json").read_text())
    assert record["split"]["subjects"]["unknown/s5"] == "test" and record["examples"]["train"] > 0


def test_stage2_from_a_window_store_at_a_finer_stride_equals_stage2_from_the_scans(tmp_path):
    """A store made by `fmrilm preprocess` every 8 frames (test subject included) gives Stage 2's
    windows every 16 frames: the same codes, examples and, after two steps, the same weights as the
    run that reads the scans; a store with other preprocessing than the Stage 1 tokenizer's is refused."""
    from safetensors.torch import load_file

    from modeling_fmrilm.cli import main as cli_main

    inputs = write_inputs(tmp_path)
    store = tmp_path / "store"
    cli_main(["preprocess", str(inputs["data"]), "--tr", "2", "--window-length", "16", "--window-stride", "8",
              "--target-tr", "2", "--split-manifest", str(inputs["corpus"]), "--output-dir", str(store)])  # fmt: skip
    assert WindowStore.open(store).record["windows"]["test"] == 4  # s5's windows are in the store, and never read

    def without_data_dir(argv: list[str]) -> list[str]:
        at = argv.index("--data_dir")
        return argv[:at] + argv[at + 2 :]

    runs = {}
    for name, source in (("scans", []), ("store", ["--window_store", str(store)])):
        argv = stage2_argv(inputs, tmp_path / name, "--max_steps", "2", "--save_strategy", "no", *source)
        argv = without_data_dir(argv) if source else argv
        runs[name] = train_stage2(
            *parse_arguments((Stage2Arguments, Stage2TrainingArguments), argv), console_logs=False
        )
    from_scans, from_store = runs["scans"], runs["store"]
    assert set(from_store.data.codes["subject_key"]) == {f"unknown/s{i}" for i in range(5)}
    assert list(from_store.data.codes["window_start"]) == list(from_scans.data.codes["window_start"]) == [0, 16] * 5
    assert list(from_store.data.codes["codes"]) == list(from_scans.data.codes["codes"])
    assert from_store.data.train.to_list() == from_scans.data.train.to_list()
    weights = [load_file(tmp_path / name / "final" / "model.safetensors") for name in ("scans", "store")]
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], rtol=0, atol=0, msg=key)
    other = tmp_path / "other_store"
    cli_main(["preprocess", str(inputs["data"]), "--tr", "2", "--window-length", "12", "--output-dir", str(other)])
    argv = stage2_argv(inputs, tmp_path / "refused", "--window_store", str(other))
    with pytest.raises(FmriInputError, match="--window_store and --data_dir: expected one"):
        train_stage2(*parse_arguments((Stage2Arguments, Stage2TrainingArguments), argv))
    with pytest.raises(FmriInputError, match=r"window_length 12 \(asked for 16\)"):
        train_stage2(*parse_arguments((Stage2Arguments, Stage2TrainingArguments), without_data_dir(argv)))


def test_code_dropout_applies_to_its_fraction_of_the_steps_and_is_off_in_the_saved_config(tmp_path):
    from transformers import TrainerCallback

    class Seen(TrainerCallback):
        rates: list[float] = []

        def on_step_begin(self, args, state, control, model=None, **kwargs):
            self.rates.append(model.config.code_dropout)

    inputs = write_inputs(tmp_path)
    argv = stage2_argv(
        inputs,
        tmp_path / "run",
        "--max_steps",
        "4",
        "--code_dropout",
        "1.0",
        "--code_dropout_fraction",
        "0.5",
        "--save_strategy",
        "no",
    )
    args, training_args = parse_arguments((Stage2Arguments, Stage2TrainingArguments), argv)
    result = train_stage2(args, training_args, callbacks=[Seen()])
    assert Seen.rates == [1.0, 1.0, 0.0, 0.0]
    assert json.loads((tmp_path / "run" / "final" / "config.json").read_text())["code_dropout"] == 0.0
    assert result.model.config.code_dropout == 0.0


def test_code_dropout_asked_of_a_codes_only_model_names_the_streams():
    from modeling_fmrilm.training.common import CodeDropoutArguments, code_dropout_callbacks

    model, _ = tiny_lm.build("gpt2", fmri_streams=("codes",))
    with pytest.raises(FmriInputError, match=r"code_dropout: 0.5 asked of a model that reads only \('codes',\)"):
        code_dropout_callbacks(CodeDropoutArguments(code_dropout=0.5), model.config)
    with pytest.raises(FmriInputError, match=r"code_dropout_fraction: expected a number in \[0, 1\]"):
        CodeDropoutArguments(code_dropout_fraction=2.0)


def run_recipe(launcher: list[str], output_dir: Path, argv: list[str]) -> dict:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "ACCELERATE_USE_CPU": "true",
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [*launcher, str(ROOT / "recipes" / "stage2_align.py"), *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((output_dir / "final" / "training_record.json").read_text())


@pytest.mark.slow
def test_two_processes_match_one_process_on_the_doubled_batch(tmp_path):
    """torchrun with 2 gloo processes, 2 sequences each, takes the SGD step of 1 process on 4 (tests/support/equivalence.py)."""
    inputs = write_inputs(tmp_path)
    common = ["--max_steps", "1", "--logging_steps", "1", "--save_strategy", "no", "--eval_strategy", "no", *SGD_STEP]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541"]
    two = run_recipe(
        torchrun,
        tmp_path / "two",
        stage2_argv(inputs, tmp_path / "two", *common, "--per_device_train_batch_size", "2"),
    )
    one = run_recipe(
        [sys.executable],
        tmp_path / "one",
        stage2_argv(inputs, tmp_path / "one", *common, "--per_device_train_batch_size", "4"),
    )
    run_recipe(
        [sys.executable],
        tmp_path / "initial",
        stage2_argv(inputs, tmp_path / "initial", *common, "--learning_rate", "0"),
    )
    assert two["num_processes"] == 2 and one["num_processes"] == 1
    first_loss = [next(e["loss"] for e in record["log_history"] if "loss" in e) for record in (two, one)]
    assert first_loss[0] == pytest.approx(first_loss[1], rel=1e-5)
    assert_same_step(*(tmp_path / name / "final" / "model.safetensors" for name in ("two", "one", "initial")))
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "two" / "final")
    assert model.config.model_type == "fmrilm"


def test_a_run_without_the_earlier_stages_is_refused_with_the_lines_that_make_them(tmp_path):
    """Stage 2 never builds its corpus or trains Stage 1 itself: each missing flag is named, with its command."""
    scans = [FmriScan(data=tiny_lm.scan(i), tr=2.0, subject=f"s{i}") for i in range(2)]
    with pytest.raises(FmriInputError) as refused:
        train_stage2(Stage2Arguments(), Stage2TrainingArguments(output_dir=str(tmp_path / "out")), scans)
    message = str(refused.value)
    assert message.startswith("--corpus, --fmri_tokenizer: expected a descriptor corpus")
    assert "datasets_scripts/build_descriptor_corpus.py" in message and "recipes/stage1_tokenizer.py" in message
    with pytest.raises(FmriInputError, match=r"^--fmri_tokenizer: expected"):
        train_stage2(
            Stage2Arguments(corpus=str(tmp_path)), Stage2TrainingArguments(output_dir=str(tmp_path / "o")), scans
        )
    assert (
        not (tmp_path / "out" / "descriptor_corpus").exists() and not (tmp_path / "out" / "stage1_tokenizer").exists()
    )
