"""Stage 2 on `transformers.Trainer`: a causal LM learns fMRI tokens beside text (`FmriLMForCausalLM`).

The Stage 1 tokenizer is frozen, so every window is encoded once by a `datasets.map` pass that
stores its codes as a column, and, for a model that reads the connectivity stream, the window's
connectivity rows `(num_rois, num_rois)` as a float16 column (the precision the stream is defined
at, `connectivity_rows`: half the bytes of float32, error <= 4.9e-4 in r); the pass is cached by
`datasets` in `output_dir/cache`, keyed by the windows, the tokenizer's weights and the
connectivity setting. Training then runs on token ids plus, per example, the row indices of its
windows in that table, whose connectivity the collator reads (memory-mapped Arrow). Three
objectives, built from the scans and the descriptor corpus on the one subject split and weighted by
the model config (`fc` below is one `<fmri_fc>` per ROI, only with the connectivity stream):

- **F2T** `<fmri> codes fc </fmri> {prompt} {description}<eos>`: loss on the description only;
- **F2F** `<fmri> codes(t) fc(t) </fmri> <fmri> codes(t+1) fc(t+1) </fmri>`: loss on the next
  window's codes (the window that starts where window t ends; its connectivity comes after its
  codes, so it never shows what is predicted);
- **T2T** plain text (a text dataset, by default the corpus's training descriptions): loss on all.

The loss (`training/objectives.py`) weights the objectives' token-mean losses, by the model
config's weights (the paper's 1.0 / 0.1 / 0.5), and logs each objective's loss and token accuracy
(`f2f_accuracy`: the next window's codes predicted right).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import set_seed

from ..errors import FmriInputError
from ..feature_extraction_fmrilm import FmriFeatureExtractor
from ..io import FmriScan
from ..splits import SubjectSplit, subject_of
from ..tasks.registry import label_vocabulary
from ..window_store import WindowStore
from .common import (
    CodeDropoutArguments,
    CohortArguments,
    StageTrainingArguments,
    calibrate_on_training_windows,
    claims_output_dir,
    code_dropout_callbacks,
    load_cohort,
    manifest_of,
    preprocessing_fields,
    resolve_resume,
    save_final,
    store_windows,
    training_store,
)
from .language_model import LANGUAGE_MODEL_KINDS, LanguageModelKind, build_small_language_model
from .objectives import IGNORE_INDEX, ObjectiveCollator, ObjectiveTrainer, WindowConnectivity
from .text_inputs import load_texts

OBJECTIVES = ("f2t", "f2f", "t2t")


@dataclass
class Stage2Arguments(CodeDropoutArguments, CohortArguments):
    """Inputs, objectives and the demo language model of a Stage 2 run (optimisation: `Stage2TrainingArguments`)."""

    fmri_tokenizer: str | None = field(
        default=None,
        metadata={"help": "trained Stage 1 folder (recipes/stage1_tokenizer.py's output_dir/final); required"},
    )
    corpus: str | None = field(
        default=None,
        metadata={
            "help": "descriptor corpus folder (F2T descriptions, splits.json; datasets_scripts/build_descriptor_corpus.py); required"
        },
    )
    base_model: str | None = field(
        default=None,
        metadata={
            "help": "causal LM folder or Hub id; default: a small LM built from its config with a BPE tokenizer trained on the corpus"
        },
    )
    text_tokenizer: str | None = field(
        default=None, metadata={"help": "text tokenizer folder or id; default: the base model's"}
    )
    small_lm_kind: LanguageModelKind = field(
        default="qwen3", metadata={"help": f"shape of the default LM: one of {LANGUAGE_MODEL_KINDS}"}
    )
    small_lm_hidden_size: int = 64
    small_lm_layers: int = 2
    small_lm_heads: int = 4
    small_lm_vocab_size: int = 2000
    window_stride: int | None = field(
        default=16,
        metadata={
            "help": "frames between the windows read for training (as Stage 1's default): F2T reads every window, F2F every "
            "window whose successor starts where it ends; None: the window length (each frame once)"
        },
    )
    text_column: str = field(default="text", metadata={"help": "description column of the corpus"})
    t2t_dataset: str | None = field(
        default=None,
        metadata={
            "help": "text dataset folder for T2T (the paper used OpenWebText); default: the corpus's training descriptions"
        },
    )
    t2t_column: str = "text"
    max_t2t_length: int = field(
        default=512, metadata={"help": "T2T texts are cut into pieces of at most this many tokens"}
    )
    description_prompt: str = field(
        default="\nDescription:", metadata={"help": "text between a scan's tokens and its description"}
    )
    f2t_loss_weight: float | None = field(default=None, metadata={"help": "default: the model config's (1.0)"})
    f2f_loss_weight: float | None = field(default=None, metadata={"help": "default: the model config's (0.1)"})
    t2t_loss_weight: float | None = field(default=None, metadata={"help": "default: the model config's (0.5)"})


@dataclass
class Stage2TrainingArguments(StageTrainingArguments):
    """`TrainingArguments` with defaults for the small demo LM (every Trainer flag still works)."""

    output_dir: str | None = field(default="outputs/stage2", metadata={"help": "checkpoints, logs and final/"})
    num_train_epochs: float = field(default=4.0, metadata={"help": "training epochs"})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "sequences per process and step"})
    per_device_eval_batch_size: int = field(default=8, metadata={"help": "sequences per process in evaluation"})
    learning_rate: float = field(
        default=2e-3, metadata={"help": "peak AdamW learning rate (lower it, e.g. 2e-5, for a pretrained LM)"}
    )
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    warmup_steps: float = field(default=0.05, metadata={"help": "warm-up steps (or a fraction of all steps when < 1)"})


@dataclass
class Stage2Data:
    """The token-id examples of a run and where they came from."""

    train: Any
    validation: Any
    codes: Any
    split: Any
    texts: dict[str, str]


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of a module's state (names and bytes): the tokenizer part of the code cache's key."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def encode_windows(
    fmri_tokenizer: torch.nn.Module,
    windows: Any,
    cache_key: str,
    cache_dir: Path,
    batch_size: int = 64,
    connectivity_fisher_z: bool | None = None,
):
    """The tokenizer's codes of window-store rows `windows` (`modeling_fmrilm.window_store`), as a
    `datasets.Dataset`.

    Columns: `subject_key`, `text_key`, `scan`, `window_start` (frame), `codes` (`num_tokens` ints), and
    with `connectivity_fisher_z` not None, `connectivity` (`(num_rois, num_rois)` float16, the
    window's `connectivity_rows` in Pearson's r, or Fisher's z when True). One batched
    `datasets.map` pass over the memory-mapped store (bounded memory whatever the cohort size),
    whose cache file is keyed by `cache_key` (which windows of which store), the tokenizer weights
    and the connectivity setting, so a second run (or a resumed one) reads it instead of encoding
    again.
    """
    from ..modeling_fmrilm import connectivity_rows

    if len(windows) == 0:
        raise FmriInputError("training and validation subjects: no window of theirs in the window store")
    kept = ("subject_key", "text_key", "scan", "window_start")
    key = hashlib.sha256(cache_key.encode())
    key.update(f"columns={kept}".encode())
    key.update(weights_digest(fmri_tokenizer).encode())
    key.update(f"connectivity_fisher_z={connectivity_fisher_z}".encode())
    cache_dir.mkdir(parents=True, exist_ok=True)
    device = next(fmri_tokenizer.parameters()).device

    @torch.no_grad()
    def encode(batch: dict[str, list]) -> dict[str, Any]:
        fmri_values = torch.as_tensor(np.asarray(batch["fmri_values"], dtype=np.float32), device=device)
        columns: dict[str, Any] = {"codes": fmri_tokenizer.encode(fmri_values).cpu().tolist()}
        if connectivity_fisher_z is not None:
            columns["connectivity"] = (
                connectivity_rows(fmri_values, connectivity_fisher_z).cpu().numpy().astype(np.float16)
            )
        return columns

    return (
        windows.with_format("numpy", columns=["fmri_values"], output_all_columns=True)
        .map(
            encode,
            batched=True,
            batch_size=batch_size,
            remove_columns=[name for name in windows.column_names if name not in kept],
            cache_file_name=str(cache_dir / f"codes-{key.hexdigest()[:24]}.arrow"),
            desc="encoding windows",
        )
        .with_format(None)
    )


class ExampleBuilder:
    """Token-id examples of the three objectives for one model config and text tokenizer."""

    def __init__(self, config: Any, tokenizer: Any, prompt: str, max_t2t_length: int) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        self.eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        self.max_t2t_length = max_t2t_length
        self.max_positions = config.max_positions

    def scan_tokens(self, codes: Sequence[int]) -> list[int]:
        """`<fmri>` + the code tokens (+ one `<fmri_fc>` per ROI with the connectivity stream) + `</fmri>`."""
        config = self.config
        first = config.first_code_token_id
        connectivity = [config.fmri_fc_token_id] * config.connectivity_tokens_per_window
        return [config.fmri_start_token_id, *(first + int(c) for c in codes), *connectivity, config.fmri_end_token_id]

    def _checked(self, example: dict[str, Any], what: str) -> dict[str, Any]:
        if self.max_positions is not None and len(example["input_ids"]) > self.max_positions:
            raise FmriInputError(
                f"{what}: {len(example['input_ids'])} tokens, more than the language model's {self.max_positions} positions; "
                "use a model with more positions or shorter windows"
            )
        return example

    def f2t(self, codes: Sequence[int], description: str, name: str, window: int | None = None) -> dict[str, Any]:
        """Describe the window `codes` (row `window` of the codes table, whose connectivity fills its `<fmri_fc>`)."""
        context = self.scan_tokens(codes) + self.prompt_ids
        target = self.tokenizer(" " + description.strip(), add_special_tokens=False)["input_ids"] + self.eos
        example = {
            "input_ids": context + target, "labels": [IGNORE_INDEX] * len(context) + target, "objective": 0,
            "fmri_windows": [] if window is None else [window],
        }  # fmt: skip
        return self._checked(example, f"F2T example of {name}")

    def f2f(
        self, codes: Sequence[int], next_codes: Sequence[int], name: str, windows: tuple[int, int] | None = None
    ) -> dict[str, Any]:
        """Predict the codes of the next window `next_codes` after the window `codes` (rows `windows` of the codes table)."""
        context, following = self.scan_tokens(codes), self.scan_tokens(next_codes)
        connectivity = self.config.connectivity_tokens_per_window
        targets = following[1 : 1 + len(next_codes)]
        labels = [IGNORE_INDEX] * (len(context) + 1) + targets + [IGNORE_INDEX] * (connectivity + 1)
        example = {
            "input_ids": context + following,
            "labels": labels,
            "objective": 1,
            "fmri_windows": list(windows or []),
        }
        return self._checked(example, f"F2F example of {name}")

    def t2t(self, text: str) -> list[dict[str, Any]]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] + self.eos
        pieces = [ids[start : start + self.max_t2t_length] for start in range(0, len(ids), self.max_t2t_length)]
        return [
            {"input_ids": piece, "labels": list(piece), "objective": 2, "fmri_windows": []}
            for piece in pieces
            if len(piece) > 1
        ]

    def scan_examples(
        self, codes_table: Any, texts: dict[str, str], window_length: int, subjects: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """F2T for every window and F2F for every window whose successor (starting where it ends)
        exists, of the windows of `subjects` (default all); each example names its windows by their
        row in `codes_table`."""
        rows = codes_table.select_columns(["subject_key", "text_key", "window_start", "codes"]).to_dict()
        wanted = None if subjects is None else set(subjects)
        by_start = {
            (key, start): i for i, (key, start) in enumerate(zip(rows["text_key"], rows["window_start"], strict=True))
        }
        examples = []
        for i, (subject, key, start, codes) in enumerate(
            zip(rows["subject_key"], rows["text_key"], rows["window_start"], rows["codes"], strict=True)
        ):
            if wanted is not None and subject not in wanted:
                continue
            name = f"{key} window at frame {start}"
            examples.append(self.f2t(codes, texts[key], name, window=i))
            following = by_start.get((key, start + window_length))
            if following is not None:
                examples.append(self.f2f(codes, rows["codes"][following], name, windows=(i, following)))
        return examples


def texts_of(texts: dict[str, str], split: SubjectSplit, name: str) -> list[str]:
    """The texts (in key order) of the scans whose subject is in split `name`."""
    return [text for key, text in sorted(texts.items()) if split.of(subject_of(key)) == name]


def t2t_texts(args: Stage2Arguments, corpus_texts: dict[str, str], split: SubjectSplit) -> list[str]:
    """Texts of the T2T objective: the `t2t_dataset`'s train split, or the corpus's training descriptions."""
    if args.t2t_dataset is None:
        return texts_of(corpus_texts, split, "train")
    import datasets

    loaded = datasets.load_dataset(args.t2t_dataset)
    split = loaded["train"] if "train" in loaded else next(iter(loaded.values()))
    if args.t2t_column not in split.column_names:
        raise FmriInputError(f"{args.t2t_dataset}: expected a {args.t2t_column!r} column, found {split.column_names}")
    return [text for text in split[args.t2t_column] if text]


def check_prerequisites(args: Stage2Arguments) -> None:
    """Refuse a run without the earlier stages' outputs, saying how to make them (a stage never trains its prerequisites)."""
    missing = [
        flag for flag, value in (("--corpus", args.corpus), ("--fmri_tokenizer", args.fmri_tokenizer)) if value is None
    ]
    if missing:
        raise FmriInputError(
            f"{', '.join(missing)}: expected a descriptor corpus (python datasets_scripts/build_descriptor_corpus.py --output-dir CORPUS) "
            "and a Stage 1 folder (python recipes/stage1_tokenizer.py --text_dataset CORPUS --output_dir STAGE1, then STAGE1/final); "
            "fmrilm demo makes both for the embedded data"
        )


def build_stage2_data(
    args: Stage2Arguments, model: Any, processor: Any, store: WindowStore, texts: dict[str, str], cache_dir: Path
) -> Stage2Data:
    """The cached window codes and the training/validation examples of the store's split's subjects."""
    import datasets

    split = store.split
    train_subjects, validation_subjects = split.subjects("train"), split.subjects("validation")
    window_length = processor.feature_extractor.window_length
    stride = args.window_stride or window_length
    windows = store_windows(store, ["train", "validation"], stride)
    seen = set(windows["text_key"])
    missing = sorted(seen - set(texts))
    if missing:
        raise FmriInputError(
            f"{args.corpus}: no {args.text_column!r} for scans {missing[:10]} ({len(missing)} of {len(seen)})"
        )
    builder = ExampleBuilder(model.config, processor.tokenizer, args.description_prompt, args.max_t2t_length)
    fisher_z = model.config.connectivity_fisher_z if model.config.reads_connectivity else None
    cache_key = f"{store.record['sha256']}:train+validation:stride={stride}:rows={len(windows)}"
    codes = encode_windows(model.fmri_tokenizer, windows, cache_key, cache_dir, connectivity_fisher_z=fisher_z)
    train = builder.scan_examples(codes, texts, window_length, train_subjects)
    for text in t2t_texts(args, texts, split):
        train.extend(builder.t2t(text))
    validation = []
    if validation_subjects:
        validation = builder.scan_examples(codes, texts, window_length, validation_subjects)
        validation += [example for text in texts_of(texts, split, "validation") for example in builder.t2t(text)]
    return Stage2Data(
        datasets.Dataset.from_list(train),
        datasets.Dataset.from_list(validation) if validation else None,
        codes,
        split,
        texts,
    )


def load_parts(args: Stage2Arguments, training_args: Stage2TrainingArguments, texts_for_bpe: Sequence[str]):
    """`FmriLMForCausalLM.from_parts` on the Stage 1 folder and the base (or a newly built small) LM."""
    from ..modeling_fmrilm import FmriLMForCausalLM

    base_model = args.base_model
    if base_model is None:
        base_model = str(Path(training_args.output_dir) / "language_model")
        with training_args.main_process_first(desc="building the small language model"):
            if not (Path(base_model) / "config.json").is_file():
                build_small_language_model(
                    texts_for_bpe, base_model, args.small_lm_kind, args.small_lm_vocab_size, args.small_lm_hidden_size,
                    args.small_lm_layers, args.small_lm_heads, seed=training_args.seed, whole_words=label_vocabulary(),
                )  # fmt: skip
    model, processor = FmriLMForCausalLM.from_parts(args.fmri_tokenizer, base_model, args.text_tokenizer)
    for name in ("f2t_loss_weight", "f2f_loss_weight", "t2t_loss_weight"):
        if getattr(args, name) is not None:
            setattr(model.config, name, float(getattr(args, name)))
    return model, processor


@dataclass
class Stage2Result:
    """What `train_stage2` returns."""

    model: Any
    processor: Any
    data: Stage2Data
    trainer: ObjectiveTrainer
    final_dir: Path

    @property
    def history(self) -> list[dict[str, float]]:
        return self.trainer.state.log_history


@claims_output_dir
def train_stage2(
    args: Stage2Arguments,
    training_args: Stage2TrainingArguments,
    scans: Sequence[FmriScan] | None = None,
    callbacks: Sequence[Any] = (),
    console_logs: bool = True,
) -> Stage2Result:
    """Train the fMRI-language model on the training subjects (validation subjects evaluated, test
    subjects never read) and save `output_dir/final` (model + processor) atomically."""
    if args.window_store is None:
        scans = list(scans) if scans is not None else load_cohort(args.data_dir, args.tr, args.key, args.cohorts)
    check_prerequisites(args)
    set_seed(training_args.seed)
    extractor = FmriFeatureExtractor.from_pretrained(
        args.fmri_tokenizer
    )  # Stage 1's preprocessing, at this stage's stride
    extractor.window_stride = args.window_stride or extractor.window_length
    store = training_store(
        args,
        training_args,
        extractor,
        args.split_manifest or manifest_of(args.corpus),
        scans,
        preprocessing_fields(extractor),
    )
    split = store.split
    texts = load_texts(args.corpus, args.text_column)
    model, processor = load_parts(args, training_args, texts_of(texts, split, "train"))
    with training_args.main_process_first(desc="encoding the windows"):  # the others read the main process's cache
        data = build_stage2_data(args, model, processor, store, texts, Path(training_args.output_dir) / "cache")
    if data.validation is None:
        training_args.eval_strategy = "no"
    config = model.config
    connectivity = WindowConnectivity(data.codes) if config.reads_connectivity else None
    if connectivity is not None:
        calibrate_on_training_windows(model, connectivity, data.train["fmri_windows"])
    trainer = ObjectiveTrainer(
        model=model,
        objectives={"f2t": config.f2t_loss_weight, "f2f": config.f2f_loss_weight, "t2t": config.t2t_loss_weight},
        args=training_args,
        train_dataset=data.train,
        eval_dataset=data.validation,
        data_collator=ObjectiveCollator(processor.pad_token_id, connectivity),
        callbacks=[*code_dropout_callbacks(args, config), *callbacks],
        console_logs=console_logs,
    )
    trainer.train(
        resume_from_checkpoint=resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    )
    record = {
        "stage": 2,
        "arguments": asdict(args),
        "mixed_precision": trainer.accelerator.mixed_precision,
        "num_processes": trainer.accelerator.num_processes,
        "split": data.split.to_json(),
        "examples": {"train": len(data.train), "validation": 0 if data.validation is None else len(data.validation)},
        "log_history": trainer.state.log_history,
    }
    final_dir = save_final(trainer, Path(training_args.output_dir) / "final", [processor.save_pretrained], record)
    return Stage2Result(trainer.model.eval(), processor, data, trainer, final_dir)


@torch.no_grad()
def describe_scan(
    model: Any, processor: Any, scan: FmriScan, prompt: str = "\nDescription:", max_new_tokens: int = 160
) -> str:
    """Greedy description of one scan by a Stage 2 model: the processor expands `<fmri>` and the LM continues the prompt."""
    batch = processor(text=[f"<fmri>{prompt}"], fmri=[scan], return_tensors="pt").to(model.device)
    generated = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.batch_decode(generated[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)[0].strip()


__all__ = [
    "OBJECTIVES",
    "ExampleBuilder",
    "Stage2Arguments",
    "Stage2Result",
    "Stage2TrainingArguments",
    "describe_scan",
    "encode_windows",
    "train_stage2",
]
