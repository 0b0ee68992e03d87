"""Stage 3 on `transformers.Trainer`: multi-task instruction tuning of an `FmriLMForCausalLM`.

Every task (`modeling_fmrilm.tasks`: the embedded cohort, descriptor questions from the corpus,
the synthetic cohort, or a phenotype table) contributes, for each item of a training subject,
`prompts_per_item` prompts `{cohort line}{description}### Question: …\n### Answer:` with seeded
paraphrases, the scan's pre-computed code tokens in place of its `<fmri>` marker, and the label
word (a bin word for a regression, bins fitted on the training subjects) as the target. The tasks
are mixed with per-task weights (the objective weights of `training/objectives.py`, so each task's
loss and answer accuracy are logged). Full fine-tuning or LoRA through peft (`--use_lora`, r/α/
targets as flags, `trainable_token_indices` for the fMRI rows); the adapter is saved in
`output_dir/adapter` and the merged model, loadable with the Auto classes, in `output_dir/final`.
`train_stage3` returns the final model with its tasks' items and split; the evaluation harness
that scores it beside the connectivity baselines on the test subjects of that split runs above
this layer (`modeling_fmrilm.pipeline.instruct_and_evaluate`, which the recipe and the demo call).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import set_seed

from ..errors import FmriInputError
from ..splits import SubjectSplit, model_split
from ..tasks.data import TaskData, item_labels
from ..tasks.prompts import check_distinguishable
from ..tasks.settings import EvaluationSettings
from ..tasks.sources import TASK_SOURCES, TaskSources, build_tasks
from ..window_store import WindowStore
from .common import (
    CodeDropoutArguments,
    StageTrainingArguments,
    build_run_store,
    calibrate_on_training_windows,
    check_store_split,
    claims_output_dir,
    code_dropout_callbacks,
    open_checked_store,
    preprocessing_fields,
    resolve_resume,
    save_final,
    scan_store_key,
    scan_subject_key,
    store_windows,
)
from .objectives import IGNORE_INDEX, ObjectiveCollator, ObjectiveTrainer, WindowConnectivity


@dataclass
class Stage3Arguments(CodeDropoutArguments, TaskSources):
    """The model, the task mixture (`TaskSources`, the evaluation's flags), LoRA and the final evaluation of a Stage 3 run."""

    model: str | None = field(
        default=None,
        metadata={"help": "trained Stage 2 folder (recipes/stage2_align.py's output_dir/final); required"},
    )
    tasks: list[str] = field(
        default_factory=lambda: ["cohort", "descriptors"], metadata={"help": f"task sources, of {TASK_SOURCES}"}
    )
    task_weights: list[str] | None = field(
        default=None,
        metadata={
            "help": "loss weight per task: numbers in the order the tasks are built, or NAME=WEIGHT pairs (a task not "
            "named weighs 1, or the WEIGHT of *=WEIGHT); default 1 each"
        },
    )
    window_store: str | None = field(
        default=None,
        metadata={
            "help": "window store (folder or Hub dataset id, `fmrilm preprocess`) holding the training and validation task scans; default: one built from them into output_dir/window_store"
        },
    )
    prompts_per_item: int = field(default=2, metadata={"help": "paraphrased prompts per training item"})
    use_lora: bool = field(default=True, metadata={"help": "LoRA through peft (else full fine-tuning)"})
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "module name suffixes; default every linear projection of the LM but its head"}
    )
    train_fmri_rows: bool = field(
        default=True, metadata={"help": "with LoRA, also train the fMRI token rows (peft trainable_token_indices)"}
    )
    train_lm_head: bool = field(
        default=False,
        metadata={
            "help": "with LoRA, also train the LM's output head whole (peft modules_to_save): for a small LM whose head rows of the answer words are barely trained, which a frozen head keeps improbable"
        },
    )
    calibrate_connectivity: bool = field(
        default=True,
        metadata={
            "help": "rescale the connectivity projector's output to the code rows' mean norm on the training windows first (as Stage 2 does at its start): "
            "Stage 2 can leave the projected rows several times the norm of every text row, and Stage 3 then stayed at chance on what they carry (bench seed 0)"
        },
    )
    reset_connectivity_projector: bool = field(
        default=False,
        metadata={
            "help": "draw the connectivity projector afresh before calibrating it (needs --calibrate_connectivity): on the bench, "
            "Stage 3 from the Stage 2 model stayed at chance on the synthetic group with Stage 2's projector and read it with a fresh one (README)"
        },
    )
    evaluate: bool = field(
        default=True, metadata={"help": "run the harness (model vs baselines, test subjects) after training"}
    )
    eval_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    eval_shots: list[int] = field(default_factory=lambda: [0, 2])
    eval_scoring: list[str] = field(
        default_factory=lambda: ["loglik", "calibrated"],
        metadata={"help": "answer scorings: loglik, calibrated, constrained"},
    )
    eval_resplits: int = 100
    eval_blank_streams: bool = field(
        default=False, metadata={"help": "also score the model with each fMRI stream blanked (a model reading both)"}
    )

    def __post_init__(self) -> None:
        """Check the task sources and the evaluation flags when parsed (the harness's own validation), not after training."""
        CodeDropoutArguments.__post_init__(self)
        TaskSources.__post_init__(self)
        if self.reset_connectivity_projector and not self.calibrate_connectivity:
            raise FmriInputError(
                "--reset_connectivity_projector: expected --calibrate_connectivity true, which sets the fresh projector's scale; found false"
            )
        self.evaluation_settings()

    def evaluation_settings(self) -> EvaluationSettings:
        """The harness's settings of the `eval_*` flags (validated by it)."""
        return EvaluationSettings(
            seeds=tuple(self.eval_seeds),
            shots=tuple(self.eval_shots),
            scoring=tuple(self.eval_scoring),
            n_resplits=self.eval_resplits,
            blank_streams=self.eval_blank_streams,
        )


@dataclass
class Stage3TrainingArguments(StageTrainingArguments):
    """`TrainingArguments` with defaults for the small demo model (every Trainer flag still works)."""

    output_dir: str | None = field(
        default="outputs/stage3", metadata={"help": "checkpoints, adapter, final/ and the evaluation"}
    )
    num_train_epochs: float = field(default=3.0, metadata={"help": "training epochs"})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "prompts per process and step"})
    per_device_eval_batch_size: int = field(default=8, metadata={"help": "prompts per process in evaluation"})
    learning_rate: float = field(
        default=1e-3, metadata={"help": "peak AdamW learning rate (LoRA); lower it for full fine-tuning"}
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    warmup_steps: float = field(default=0.05, metadata={"help": "warm-up steps (or a fraction of all steps when < 1)"})


class CodeTable:
    """The code tokens of each training and validation scan of a window store (its first
    `windows_per_scan` windows at the model's stride, flattened), and for a model that reads the
    connectivity stream, those windows' connectivity rows (`connectivity`, a [`WindowConnectivity`]
    `(num_rois, num_rois)` float16 per window, the precision the stream is defined at;
    `windows(scan)` gives a scan's rows in it). One cached `encode_windows` pass over the
    memory-mapped store (`stage2.encode_windows`), as Stage 2's; scans are found by their store key
    (`scan_store_key`)."""

    def __init__(self, model: Any, store: WindowStore, stride: int, cache_dir: Path, batch_size: int = 64) -> None:
        from .stage2 import encode_windows

        per_scan = model.config.windows_per_scan
        self.location = store.location
        windows = store_windows(store, ["train", "validation"], stride)
        first = np.flatnonzero(np.asarray(windows.with_format("numpy")["window_start"]) < per_scan * stride)
        windows = windows.select(first, keep_in_memory=True)
        fisher_z = model.config.connectivity_fisher_z if model.config.reads_connectivity else None
        cache_key = (
            f"{store.record['sha256']}:train+validation:stride={stride}:first {per_scan} windows:rows={len(windows)}"
        )
        encoded = encode_windows(model.fmri_tokenizer, windows, cache_key, cache_dir, batch_size, fisher_z)
        rows: dict[str, list[int]] = {}
        for row, key in enumerate(encoded["scan"]):
            rows.setdefault(key, []).append(row)
        short = sorted(key for key, mine in rows.items() if len(mine) < per_scan)
        if short:
            raise FmriInputError(f"{short[:5]}: fewer windows than windows_per_scan={per_scan} ({len(short)} scan(s))")
        codes = encoded["codes"]
        self.codes = {key: [code for row in mine for code in codes[row]] for key, mine in rows.items()}
        self.rows = rows
        self.connectivity = WindowConnectivity(encoded) if fisher_z is not None else None

    def __getitem__(self, scan: Any) -> list[int]:
        key = scan_store_key(scan)
        if key not in self.codes:
            raise FmriInputError(
                f"{key}: not among the training and validation scans of the window store {self.location}; "
                "build the store from the task scans (fmrilm preprocess), or leave --window_store out"
            )
        return self.codes[key]

    def windows(self, scan: Any) -> list[int]:
        """The scan's rows in `connectivity` (empty for a codes-only model)."""
        return self.rows[scan_store_key(scan)] if self.connectivity is not None else []


def task_store(
    args: Stage3Arguments,
    training_args: Stage3TrainingArguments,
    extractor: Any,
    split: SubjectSplit,
    tasks: Sequence[Any],
) -> WindowStore:
    """The window store the task scans' windows are read from: `--window_store` (its preprocessing
    checked against the model's, its split against the model's), or one built from the training
    and validation subjects' task scans (each scan once, by store key) into `output_dir/window_store`."""
    if args.window_store is not None:
        store = open_checked_store(args.window_store, extractor, preprocessing_fields(extractor))
        check_store_split(
            store,
            split,
            f"the split of {args.model}",
            f"--split-manifest {args.model}/training_record.json's split (or its corpus)",
        )
        return store
    scans = {
        scan_store_key(scan): scan
        for data in tasks
        for scan in data.scans
        if split.of(scan_subject_key(scan)) in ("train", "validation")
    }
    return build_run_store(list(scans.values()), split, extractor, training_args)


def instruction_examples(
    tasks: Sequence[Any],
    split: SubjectSplit,
    which: str,
    codes: CodeTable,
    processor: Any,
    prompts_per_item: int,
    seed: int,
) -> list[dict[str, Any]]:
    """Prompt + answer token ids of every item of `which` split's subjects, one objective per task."""
    from ..tasks.prompts import ScanBlock, answer_text, question_text, render_token_ids
    from ..tasks.registry import ScoreBins

    tokenizer = processor.tokenizer
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    examples = []
    for objective, data in enumerate(tasks):
        roles = np.array([split.of(key) for key in data.subject_keys])
        train = np.flatnonzero(roles == "train")
        bins = ScoreBins.fit(data.targets[train]) if data.task.kind == "regression" else None
        labels = item_labels(data, bins)
        rng = np.random.default_rng([seed, objective])
        for i in np.flatnonzero(roles == which):
            answer = tokenizer(answer_text(data.task, int(labels[i])), add_special_tokens=False)["input_ids"] + eos
            for _ in range(prompts_per_item):
                block = ScanBlock([(question_text(data.task, rng), None)], data.cohort_line(i), data.description)
                context = render_token_ids(block.text(), [codes[data.scans[i]]], processor)
                examples.append({
                    "input_ids": context + answer, "labels": [IGNORE_INDEX] * len(context) + answer, "objective": objective,
                    "fmri_windows": codes.windows(data.scans[i]),
                })  # fmt: skip
    return examples


def task_loss_weights(entries: Sequence[str], names: Sequence[str]) -> list[float]:
    """Each task's loss weight from `--task_weights`: one number per task in `names`' order, or
    `NAME=WEIGHT` pairs where a task not named weighs 1 (or the weight of a `*=WEIGHT` entry); no
    entries, 1 each.

    Raises:
        FmriInputError: a count other than `len(names)`, a name not in `names`, a weight that is not a
            finite number >= 0, or numbers and pairs mixed.
    """

    def weight(text: str, entry: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not np.isfinite(value) or value < 0:
            raise FmriInputError(f"task_weights: {entry!r}: expected a finite weight >= 0")
        return value

    if not entries:
        return [1.0] * len(names)
    named = ["=" in entry for entry in entries]
    if not any(named):
        if len(entries) != len(names):
            raise FmriInputError(
                f"task_weights: expected {len(names)} weights (tasks {list(names)}), found {len(entries)}"
            )
        return [weight(entry, entry) for entry in entries]
    if not all(named):
        raise FmriInputError(f"task_weights: expected all numbers or all NAME=WEIGHT pairs, found {list(entries)}")
    pairs = {name: weight(value, entry) for entry in entries for name, value in [entry.split("=", 1)]}
    unknown = sorted(set(pairs) - {*names, "*"})
    if unknown:
        raise FmriInputError(f"task_weights: no task named {unknown}; the tasks are {list(names)}")
    default = pairs.get("*", 1.0)
    return [pairs.get(name, default) for name in names]


def lora_model(model: Any, args: Stage3Arguments) -> Any:
    """`model` wrapped by peft LoRA on the LM's projections (never the frozen fMRI tokenizer), with
    the fMRI token rows trainable when asked, and the connectivity projector (when the model has
    one) and, with `train_lm_head`, the LM's output head trained whole and saved with the adapter
    (`modules_to_save`)."""
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    linear = (torch.nn.Linear, Conv1D)
    head = model.language_model.get_output_embeddings()
    names = [
        name
        for name, module in model.named_modules()
        if name.startswith("language_model.") and isinstance(module, linear) and module is not head
        and (args.lora_target_modules is None or name.rsplit(".", 1)[-1] in args.lora_target_modules)
    ]  # fmt: skip
    if not names:
        raise FmriInputError(
            f"lora_target_modules: no linear projection of the language model matches {args.lora_target_modules}"
        )
    config = model.config
    fmri_rows = [*config.code_token_ids, *config.special_token_ids.values()]
    whole = ["connectivity_projector"] if config.reads_connectivity else []
    if args.train_lm_head:
        if config.tie_word_embeddings:
            raise FmriInputError(
                "train_lm_head: the language model's head is tied to its input embeddings; train it with full fine-tuning (--use_lora false)"
            )
        whole.append(next(name for name, module in model.named_modules() if module is head).rsplit(".", 1)[-1])
    peft_config = LoraConfig(
        modules_to_save=whole or None,
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=names,
        fan_in_fan_out=isinstance(model.get_submodule(names[0]), Conv1D),
        trainable_token_indices=fmri_rows if args.train_fmri_rows else None,
    )
    return get_peft_model(model, peft_config)


@dataclass
class Stage3Result:
    """What `train_stage3` returns: the merged model, its tasks' items and the subject split (what its evaluation scores)."""

    model: Any
    processor: Any
    trainer: ObjectiveTrainer
    final_dir: Path
    task_names: list[str]
    tasks: list[TaskData]
    split: SubjectSplit

    @property
    def history(self) -> list[dict[str, float]]:
        return self.trainer.state.log_history


@claims_output_dir
def train_stage3(
    args: Stage3Arguments,
    training_args: Stage3TrainingArguments,
    callbacks: Sequence[Any] = (),
    console_logs: bool = True,
) -> Stage3Result:
    """Instruction-tune the Stage 2 model on the task mixture (training subjects only; validation
    subjects for the loss; test subjects never), save adapter and merged model (evaluated by
    `pipeline.instruct_and_evaluate`)."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoProcessor

    if args.model is None:
        raise FmriInputError(
            "--model: expected a Stage 2 folder (python recipes/stage2_align.py --corpus CORPUS --fmri_tokenizer STAGE1/final "
            "--output_dir STAGE2, then STAGE2/final); fmrilm demo makes one for the embedded data"
        )
    set_seed(training_args.seed)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    processor = AutoProcessor.from_pretrained(args.model)
    split = model_split(args.model)
    if split is None:
        raise FmriInputError(
            f"{args.model}: expected the training_record.json with the subject split that Stage 2 writes"
        )
    tasks = build_tasks(args, training_args.output_dir)
    check_distinguishable([data.task for data in tasks])  # two sources asking one question with the same answers
    names = [data.task.name for data in tasks]
    weights = task_loss_weights(args.task_weights or [], names)
    store = task_store(args, training_args, processor.feature_extractor, split, tasks)
    # the other processes read the main process's cache
    with training_args.main_process_first(desc="encoding the task windows"):
        codes = CodeTable(model, store, processor.feature_extractor.stride, Path(training_args.output_dir) / "cache")

    def build(which: str) -> list[dict]:
        return instruction_examples(tasks, split, which, codes, processor, args.prompts_per_item, training_args.seed)

    train, validation = build("train"), build("validation")
    if not train:
        raise FmriInputError("tasks: no item of a training subject")
    if not validation:
        training_args.eval_strategy = "no"
    if args.reset_connectivity_projector:
        if codes.connectivity is None:
            raise FmriInputError(f"--reset_connectivity_projector: {args.model} reads no connectivity stream")
        model.reset_connectivity_projector()  # from the training seed (set_seed above)
    if args.calibrate_connectivity and codes.connectivity is not None:
        calibrate_on_training_windows(model, codes.connectivity, (example["fmri_windows"] for example in train))
    trainee = lora_model(model, args) if args.use_lora else model
    trainer = ObjectiveTrainer(
        model=trainee,
        args=training_args,
        train_dataset=datasets.Dataset.from_list(train),
        eval_dataset=datasets.Dataset.from_list(validation) if validation else None,
        data_collator=ObjectiveCollator(processor.pad_token_id, codes.connectivity),
        objectives=dict(zip(names, weights, strict=True)),
        callbacks=[*code_dropout_callbacks(args, model.config), *callbacks],
        console_logs=console_logs,
    )
    trainer.train(
        resume_from_checkpoint=resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    )
    record = {
        "stage": 3,
        "arguments": asdict(args),
        "tasks": dict(zip(names, weights, strict=True)),
        "mixed_precision": trainer.accelerator.mixed_precision,
        "num_processes": trainer.accelerator.num_processes,
        "split": split.to_json(),
        "examples": {"train": len(train), "validation": len(validation)},
        "log_history": trainer.state.log_history,
    }
    output_dir = Path(training_args.output_dir)
    if args.use_lora:
        save_final(trainer, output_dir / "adapter", [], record)
        trainer.model = trainer.model.merge_and_unload()
    final_dir = save_final(trainer, output_dir / "final", [processor.save_pretrained], record)
    return Stage3Result(trainer.model.eval(), processor, trainer, final_dir, names, tasks, split)


__all__ = [
    "TASK_SOURCES",
    "CodeTable",
    "Stage3Arguments",
    "Stage3Result",
    "Stage3TrainingArguments",
    "instruction_examples",
    "lora_model",
    "task_loss_weights",
    "task_store",
    "train_stage3",
]
