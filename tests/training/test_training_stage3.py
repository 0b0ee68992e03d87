"""Stage 3 on transformers.Trainer: instruction examples, LoRA on the LM only, a tiny run whose loss
falls, adapter save/reload/merge with identical logits, the harness after training, two processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoProcessor

from modeling_fmrilm import (
    FmriFeatureExtractor,
    FmriInputError,
    FmriLMForCausalLM,
    FmriTokenizerConfig,
    FmriTokenizerModel,
)
from modeling_fmrilm.io import load_embedded
from modeling_fmrilm.pipeline import instruct_and_evaluate
from modeling_fmrilm.splits import model_split, split_subjects
from modeling_fmrilm.tasks.data import cohort_task_data
from modeling_fmrilm.tasks.sources import build_tasks
from modeling_fmrilm.training.common import parse_arguments
from modeling_fmrilm.training.objectives import IGNORE_INDEX
from modeling_fmrilm.training.stage3 import (
    CodeTable,
    Stage3Arguments,
    Stage3TrainingArguments,
    instruction_examples,
    lora_model,
    task_loss_weights,
    train_stage3,
)
from modeling_fmrilm.window_store import WindowStore, build_window_store
from tests.support import ROOT, tiny_lm
from tests.support.equivalence import SGD_STEP, assert_same_step


@pytest.fixture(scope="module")
def stage2_folder(tmp_path_factory):
    """A tiny Stage 2 model on the embedded data's 94 ROIs (16-frame windows, one token per ROI), with
    the training record of its subject split, as Stage 2 writes it."""
    folder = tmp_path_factory.mktemp("stage2") / "final"
    torch.manual_seed(0)
    config = FmriTokenizerConfig(
        num_rois=94, window_length=16, patch_length=16, hidden_size=16, num_hidden_layers=1, num_decoder_layers=1,
        num_attention_heads=2, num_codes=16, code_dim=8, kmeans_init=False,
    )  # fmt: skip
    text_tokenizer = tiny_lm.text_tokenizer()
    language_model = tiny_lm.language_model("gpt2", len(text_tokenizer))
    language_model.config.n_positions = 512
    language_model = type(language_model)(language_model.config)
    language_model.config.update({"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0})
    model, processor = FmriLMForCausalLM.from_parts(
        FmriTokenizerModel(config).eval(),
        language_model,
        text_tokenizer,
        feature_extractor=FmriFeatureExtractor(num_rois=94, window_length=16),
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    keys = sorted({f"{s.dataset}/{s.subject}" for s in load_embedded()})
    split = split_subjects(keys, (0.6, 0.2, 0.2), seed=0)
    (folder / "training_record.json").write_text(json.dumps({"stage": 2, "split": split.to_json()}))
    return folder


def code_table(model, processor, scans, split, folder: Path) -> CodeTable:
    """The CodeTable of a window store of `scans` (split as `split` says) built in `folder`."""
    build_window_store(scans, folder / "store", processor.feature_extractor, split_manifest=split, progress=False)
    return CodeTable(model, WindowStore.open(folder / "store"), processor.feature_extractor.stride, folder / "cache")


def test_instruction_examples_label_the_answer_of_training_subjects_only(stage2_folder, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(stage2_folder)
    processor = AutoProcessor.from_pretrained(stage2_folder)
    data = cohort_task_data(load_embedded())
    keys = sorted(set(data.subject_keys))
    split = split_subjects(keys, (0.6, 0.2, 0.2), seed=0)
    codes = code_table(model, processor, data.scans, split, tmp_path)
    examples = instruction_examples([data], split, "train", codes, processor, prompts_per_item=2, seed=0)
    train_items = [i for i, key in enumerate(data.subject_keys) if split.of(key) == "train"]
    assert len(examples) == 2 * len(train_items)
    words = {
        processor.tokenizer.decode([t for t in e["labels"] if t != IGNORE_INDEX], skip_special_tokens=True)
        for e in examples
    }
    assert words <= {word for word in data.task.label_words}
    first = examples[0]
    start = model.config.fmri_start_token_id
    assert first["input_ids"].count(start) == 1 and first["objective"] == 0
    position = first["input_ids"].index(start)
    scan_codes = first["input_ids"][position + 1 : position + 1 + 94]
    assert [c - model.config.first_code_token_id for c in scan_codes] == codes[data.scans[train_items[0]]]


def test_code_table_holds_the_tokenizer_codes_and_connectivity_of_the_training_and_validation_scans(
    stage2_folder, tmp_path
):
    model = AutoModelForCausalLM.from_pretrained(stage2_folder).eval()
    processor = AutoProcessor.from_pretrained(stage2_folder)
    scans = load_embedded()
    split = split_subjects(sorted({f"{s.dataset}/{s.subject}" for s in scans}), (0.6, 0.2, 0.2), seed=0)
    codes = code_table(model, processor, scans, split, tmp_path)
    seen = [scan for scan in scans if split.of(f"{scan.dataset}/{scan.subject}") != "test"]
    test_scan = next(scan for scan in scans if split.of(f"{scan.dataset}/{scan.subject}") == "test")
    first = torch.stack(
        [torch.as_tensor(processor.feature_extractor(scan)["fmri_values"][0]) for scan in seen]
    )  # each scan's first window
    with torch.no_grad():
        expected_codes = model.fmri_tokenizer.encode(first)
        expected_rows = model.fmri_connectivity(first).numpy().astype("float16")
    assert model.config.reads_connectivity and model.config.windows_per_scan == 1
    # another batch composition may round a distance differently and flip a near tie: allow 1% of codes
    agreement = (torch.as_tensor([codes[scan] for scan in seen]) == expected_codes).float().mean()
    assert agreement >= 0.99
    rows = codes.connectivity[[codes.windows(scan)[0] for scan in seen]]
    assert rows.shape == (len(seen), 94, 94)
    np.testing.assert_allclose(rows.astype("float32"), expected_rows.astype("float32"), atol=2e-3)
    with pytest.raises(
        FmriInputError,
        match=rf"{test_scan.dataset}/{test_scan.subject}.*not among the training and validation scans of the window store",
    ):
        codes[test_scan]


def test_lora_wraps_the_language_model_only(stage2_folder):
    model = AutoModelForCausalLM.from_pretrained(stage2_folder)
    peft_model = lora_model(model, Stage3Arguments(lora_r=2, lora_alpha=4))
    trainable = [name for name, p in peft_model.named_parameters() if p.requires_grad]
    assert any("lora_A" in name for name in trainable) and any("trainable_tokens" in name for name in trainable)
    assert not any("fmri_tokenizer" in name for name in trainable)
    # besides LoRA, only the connectivity projector trains (whole, saved with the adapter)
    assert all("language_model" in name or "connectivity_projector.modules_to_save" in name for name in trainable)
    assert any("connectivity_projector" in name for name in trainable)


def test_train_lm_head_trains_the_output_head_whole_and_the_saved_adapter_holds_it(stage2_folder, tmp_path):
    with pytest.raises(
        FmriInputError, match="train_lm_head: the language model's head is tied"
    ):  # the fixture's GPT-2
        lora_model(AutoModelForCausalLM.from_pretrained(stage2_folder), Stage3Arguments(train_lm_head=True))
    model, _ = tiny_lm.build("qwen3")
    model.save_pretrained(tmp_path / "base")
    head = model.language_model.get_output_embeddings().weight.detach().clone()
    peft_model = lora_model(model, Stage3Arguments(lora_r=2, lora_alpha=4, train_lm_head=True))
    trainable = [name for name, p in peft_model.named_parameters() if p.requires_grad]
    assert any("lm_head.modules_to_save" in name for name in trainable)
    assert not any("fmri_tokenizer" in name for name in trainable)
    with torch.no_grad():
        peft_model.base_model.model.language_model.get_output_embeddings().modules_to_save["default"].weight.add_(1.0)
    peft_model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tmp_path / "base"), tmp_path / "adapter"
    ).merge_and_unload()
    torch.testing.assert_close(reloaded.language_model.get_output_embeddings().weight, head + 1.0)


def test_task_weights_are_numbers_in_task_order_or_named_pairs_and_a_bad_entry_is_refused_by_name():
    names = ["cohort", "synthetic_group", "synthetic_score"]
    assert task_loss_weights([], names) == [1.0, 1.0, 1.0]
    assert task_loss_weights(["1", "2", "0.5"], names) == [1.0, 2.0, 0.5]
    assert task_loss_weights(["synthetic_score=0.1"], names) == [1.0, 1.0, 0.1]
    assert task_loss_weights(["synthetic_group=1", "*=0.1"], names) == [0.1, 1.0, 0.1]
    refusals = {
        ("1", "2"): r"expected 3 weights \(tasks \['cohort', 'synthetic_group', 'synthetic_score'\]\), found 2",
        ("synthetic_grup=1",): r"no task named \['synthetic_grup'\]; the tasks are \['cohort'",
        ("1", "synthetic_group=1", "2"): "all numbers or all NAME=WEIGHT pairs",
        ("cohort=-1",): r"'cohort=-1': expected a finite weight >= 0",
        ("cohort=high",): r"'cohort=high': expected a finite weight >= 0",
        ("1", "nan", "1"): r"'nan': expected a finite weight >= 0",
    }
    for entries, message in refusals.items():
        with pytest.raises(FmriInputError, match=message):
            task_loss_weights(list(entries), names)


def test_task_sources_check_the_descriptor_scans_and_pass_them_to_the_harness(tmp_path):
    with pytest.raises(FmriInputError, match=r"--model: expected a Stage 2 folder \(python recipes/stage2_align.py"):
        train_stage3(
            Stage3Arguments(), Stage3TrainingArguments(output_dir=str(tmp_path / "no_model"))
        )  # never trains Stage 2
    with pytest.raises(
        FmriInputError, match=r"descriptor_scans: expected one of \('embedded', 'all'\), found 'every'"
    ):
        Stage3Arguments(descriptor_scans="every")
    args, _ = parse_arguments(
        (Stage3Arguments, Stage3TrainingArguments),
        ["--tasks", "descriptors", "--descriptor_scans", "all", "--output_dir", str(tmp_path)],
    )
    assert args.descriptor_scans == "all"
    with pytest.raises(
        FmriInputError, match="--descriptor_scans all: expected --corpus"
    ):  # the harness's check: the option reached it
        build_tasks(args, str(tmp_path))
    with pytest.raises(
        FmriInputError, match=r"scoring in \('loglik', 'calibrated', 'constrained'\).*found \['logprob'\]"
    ):
        parse_arguments(
            (Stage3Arguments, Stage3TrainingArguments), ["--eval_scoring", "logprob", "--output_dir", str(tmp_path)]
        )


def stage3_argv(folder: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--model", str(folder), "--tasks", "cohort", "synthetic", "--synthetic_subjects", "24", "--prompts_per_item", "1",
        "--output_dir", str(output_dir), "--disable_tqdm", "true", "--warmup_steps", "0", *extra,
    ]  # fmt: skip


def test_tiny_run_loss_falls_adapter_reloads_and_harness_reports(stage2_folder, tmp_path):
    args, training_args = parse_arguments(
        (Stage3Arguments, Stage3TrainingArguments),
        stage3_argv(
            stage2_folder,
            tmp_path,
            "--num_train_epochs",
            "3",
            "--eval_seeds",
            "0",
            "--eval_shots",
            "0",
            "--eval_resplits",
            "2",
            "--task_weights",
            "synthetic_score=0.5",
        ),
    )
    result, report = instruct_and_evaluate(args, training_args)
    assert result.task_names == ["cohort", "synthetic_group", "synthetic_score"]
    record = json.loads((tmp_path / "final" / "training_record.json").read_text())
    assert record["tasks"] == {"cohort": 1.0, "synthetic_group": 1.0, "synthetic_score": 0.5}
    losses = [entry["loss"] for entry in result.history if "cohort_loss" in entry]
    assert len(losses) == 3 and losses[-1] < losses[0]

    base = AutoModelForCausalLM.from_pretrained(stage2_folder).eval()
    adapted = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    final = AutoModelForCausalLM.from_pretrained(tmp_path / "final").eval()
    processor = AutoProcessor.from_pretrained(tmp_path / "final")
    scan = load_embedded(("gw",))[0]
    batch = processor(
        text=["<fmri>\n### Question: Which cohort is this scan from?\n### Answer:"], fmri=[scan], return_tensors="pt"
    )
    with torch.no_grad():
        torch.testing.assert_close(final(**batch).logits, adapted(**batch).logits, rtol=1e-4, atol=1e-4)
        untuned = AutoModelForCausalLM.from_pretrained(stage2_folder).eval()
        assert not torch.allclose(final(**batch).logits, untuned(**batch).logits)

    methods = {row.method for row in report.rows if row.task == "cohort"}
    assert {"fmrilm loglik", "fmrilm calibrated"} <= methods and {"majority", "brainmarks_fc", "tangent_fc"} <= {
        m.split(" (")[0] for m in methods
    }
    assert (tmp_path / "evaluation" / "evaluation.json").is_file()


def test_stage3_from_a_given_window_store_equals_one_building_its_own_and_a_mismatched_store_is_refused(
    stage2_folder, tmp_path
):
    scans = load_embedded()
    extractor = AutoProcessor.from_pretrained(stage2_folder).feature_extractor
    split = model_split(stage2_folder)
    build_window_store(
        scans, tmp_path / "store", extractor, split_manifest=split, progress=False
    )  # every split, as `fmrilm preprocess` writes
    argv = ["--model", str(stage2_folder), "--tasks", "cohort", "--prompts_per_item", "1", "--max_steps", "3", "--evaluate", "false",
            "--save_strategy", "no", "--eval_strategy", "no", "--warmup_steps", "0", "--disable_tqdm", "true"]  # fmt: skip
    finals = {}
    for name, extra in {"own": [], "given": ["--window_store", str(tmp_path / "store")]}.items():
        args, training_args = parse_arguments(
            (Stage3Arguments, Stage3TrainingArguments), [*argv, *extra, "--output_dir", str(tmp_path / name)]
        )
        finals[name] = train_stage3(args, training_args, console_logs=False).model.state_dict()
    assert (tmp_path / "own" / "window_store" / "window_store.json").is_file() and not (
        tmp_path / "given" / "window_store"
    ).exists()
    for key, value in finals["own"].items():
        torch.testing.assert_close(finals["given"][key], value, rtol=1e-5, atol=1e-6, msg=key)

    other = FmriFeatureExtractor(num_rois=94, window_length=32)
    build_window_store(scans, tmp_path / "store32", other, split_manifest=split, progress=False)
    resplit = split_subjects(sorted(split.assignment), (0.6, 0.2, 0.2), seed=5)
    build_window_store(scans, tmp_path / "resplit", extractor, split_manifest=resplit, progress=False)
    for store, message in {
        "store32": r"made with window_length 32 \(asked for 16\)",
        "resplit": r"its subject split differs from the split of .*stage2",
    }.items():
        args, training_args = parse_arguments(
            (Stage3Arguments, Stage3TrainingArguments),
            [*argv, "--window_store", str(tmp_path / store), "--output_dir", str(tmp_path / f"run_{store}")],
        )
        with pytest.raises(FmriInputError, match=message):
            train_stage3(args, training_args, console_logs=False)


def test_stage3_rescales_a_loud_connectivity_projector_to_the_code_rows_norm_unless_told_not_to(
    stage2_folder, tmp_path
):
    loud = tmp_path / "loud"
    model = AutoModelForCausalLM.from_pretrained(stage2_folder)
    with torch.no_grad():  # as Stage 2 left the bench's projector: its rows at 8x the norm of the embedding rows
        model.connectivity_projector.linear_2.weight.mul_(8.0)
        model.connectivity_projector.linear_2.bias.mul_(8.0)
    model.save_pretrained(loud)
    AutoProcessor.from_pretrained(stage2_folder).save_pretrained(loud)
    (loud / "training_record.json").write_bytes((stage2_folder / "training_record.json").read_bytes())
    argv = ["--model", str(loud), "--tasks", "cohort", "--prompts_per_item", "1", "--max_steps", "1", "--learning_rate", "0", "--evaluate", "false",
            "--save_strategy", "no", "--eval_strategy", "no", "--disable_tqdm", "true"]  # fmt: skip
    scans = [scan for scan in load_embedded() if model_split(loud).of(f"{scan.dataset}/{scan.subject}") == "train"]
    windows = torch.as_tensor(
        AutoProcessor.from_pretrained(loud).feature_extractor(scans, return_tensors="pt")["fmri_values"]
    )
    ratios, first_layers = {}, {}
    runs = {"true": ["--calibrate_connectivity", "true"], "false": ["--calibrate_connectivity", "false"],
            "reset": ["--reset_connectivity_projector", "true"]}  # fmt: skip
    for name, flags in runs.items():
        args, training_args = parse_arguments(
            (Stage3Arguments, Stage3TrainingArguments), [*argv, *flags, "--output_dir", str(tmp_path / name)]
        )
        final = train_stage3(args, training_args, console_logs=False).model
        with torch.no_grad():
            projected = final.connectivity_projector(final.fmri_connectivity(windows)).norm(dim=-1).mean()
            code_rows = final.get_input_embeddings().weight[list(final.config.code_token_ids)].norm(dim=-1).mean()
        ratios[name] = float(projected / code_rows)
        first_layers[name] = final.connectivity_projector.linear_1.weight.detach().clone()
    assert ratios["true"] == pytest.approx(1.0, rel=0.1) and ratios["false"] > 4
    # learning rate 0: the calibrated run keeps Stage 2's first layer; the reset one draws a new one
    # (nn.Linear's uniform initialisation, within 1/sqrt(fan_in)) and still starts at the code rows' norm
    stage2_layer = model.connectivity_projector.linear_1.weight.detach()
    torch.testing.assert_close(first_layers["true"], stage2_layer)
    assert not torch.allclose(first_layers["reset"], stage2_layer, atol=1e-3)
    assert first_layers["reset"].abs().max() <= first_layers["reset"].shape[1] ** -0.5
    assert ratios["reset"] == pytest.approx(1.0, rel=0.1)
    with pytest.raises(FmriInputError, match="--reset_connectivity_projector: expected --calibrate_connectivity true"):
        parse_arguments(
            (Stage3Arguments, Stage3TrainingArguments),
            [*argv, *runs["reset"], "--calibrate_connectivity", "false", "--output_dir", str(tmp_path / "refused")],
        )


@pytest.mark.slow
def test_two_processes_match_one_process_on_the_doubled_batch(stage2_folder, tmp_path):
    common = ["--max_steps", "1", "--logging_steps", "1", "--save_strategy", "no", "--eval_strategy", "no", "--evaluate", "false",
              "--lora_dropout", "0", *SGD_STEP]  # fmt: skip
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "ACCELERATE_USE_CPU": "true",
        "PYTHONPATH": str(ROOT),
    }
    recipe = str(ROOT / "recipes" / "stage3_instruct.py")
    runs = {
        "two": [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29551",
            recipe,
            "--per_device_train_batch_size",
            "2",
        ],
        "one": [sys.executable, recipe, "--per_device_train_batch_size", "4"],
        "initial": [sys.executable, recipe, "--per_device_train_batch_size", "4"],
    }
    records = {}
    for name, command in runs.items():
        step = ["--learning_rate", "0"] if name == "initial" else []
        done = subprocess.run(
            [*command, *stage3_argv(stage2_folder, tmp_path / name, *common, *step)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        records[name] = json.loads((tmp_path / name / "final" / "training_record.json").read_text())
    assert records["two"]["num_processes"] == 2 and records["one"]["num_processes"] == 1
    first_loss = [next(e["loss"] for e in records[name]["log_history"] if "loss" in e) for name in ("two", "one")]
    assert first_loss[0] == pytest.approx(first_loss[1], rel=1e-5)
    assert_same_step(
        *(tmp_path / name / "adapter" / "adapter_model.safetensors" for name in ("two", "one", "initial"))
    )
