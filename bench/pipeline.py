"""The bench cohort and its Stage 1 -> 2 -> 3 runs, for `bench/instruct.py` (and, through Stage 2, `bench/lm_quality.py`).

The 12 embedded scans give Stage 3 six training subjects per task, too few to learn a label from.
So the bench trains every stage on the embedded scans plus a synthetic cohort drawn on their FC
structure (`modeling_fmrilm.tasks.synthetic`: each subject with its own temporal autocorrelation, a
group effect on one network pair's coupling, a score tied to another's), all described by one
descriptor corpus (z-scores within each dataset), on the corpus's seeded subject split; Stage 3's
descriptor questions are asked of all of them, not only of the embedded scans. Each seed
draws other synthetic subjects and another split, so each seed holds out different subjects; test
subjects are never read by any stage.

Every stage's `final` folder is kept in `workdir/seed{N}/` beside the settings that made it and is
reused when they match (the settings, not the code: delete the folder after changing the package), so
an interrupted bench resumes at the stage it stopped in.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from modeling_fmrilm.descriptors.corpus import build_corpus
from modeling_fmrilm.descriptors.reference import DescriptorSettings
from modeling_fmrilm.io import FmriScan, aal2_table, load_embedded
from modeling_fmrilm.tasks.synthetic import SyntheticSettings, make_synthetic_cohort

WORKDIR = Path("outputs/bench_pipeline")


@dataclass(frozen=True)
class PipelineSettings:
    """What one seed's pipeline trains (a changed field retrains the stages after it)."""

    seed: int = 0
    synthetic_subjects: int = 1000  # with the 12 embedded scans and the 0.6 training fraction, ~600 training subjects: a reader of FC-row tokens got 0.53-0.56 from 160 and 0.88 from 500
    synthetic_timepoints: int = (
        128  # two 64-frame windows (TR 2 s) per scan: the model reads one, the FC baselines both
    )
    group_effect: float = 0.3  # the smallest of 0.2/0.3/0.4/0.5 at which the FC of the window the model reads meets the target's criterion (see bench/instruct.py)
    score_effect: float = 0.2
    dynamics_effect: float = 1.0  # synthetic_dynamics: a Sensorimotor slow-noise variance equal to the signal's, coupling equal between its groups
    # at most so many epochs: every stage keeps its epoch with the lowest validation loss (`quiet_run`).
    # Set by the 2-core machine's time, not by convergence: with the three seeds training in parallel
    # (`python bench/pipeline.py --seed N`), one Stage 1 epoch on ~600 training subjects took 12 min
    # per seed; Stage 1's 150 steps an epoch pass its k-means warm-up (100 steps)
    stage1_epochs: int = 1
    stage2_epochs: int = 2
    stage2_lm_kind: str = "qwen3"  # the demo's small LM shape
    stage2_window_stride: int = 64  # one window per 64 frames: the cohort is large enough without overlap
    # Stage 3 starts by rescaling the connectivity projector (Stage3Arguments.calibrate_connectivity):
    # Stage 2 had left its rows at 8x the norm of the LM's embedding rows (seed 0: 1.75 against 0.22),
    # and Stage 3 on the group question alone (LoRA, the head trained, 10 epochs) stayed at chance
    # (test balanced accuracy 0.555); rescaled, the same run read it (0.757; AUC 0.861), the gain
    # appearing from its 5th epoch. So Stage 3 has 8 epochs (879 steps each) and trains the head.
    stage3_epochs: int = 8
    # Stages 2 and 3: every training sequence's code tokens replaced by <fmri_pad> over the first half
    # of the steps (FmriLMConfig.code_dropout): without it the Stage 3 recipe stayed at chance on what
    # only the connectivity tokens carry; with it bench/streams.py read it on two of three seeds
    code_dropout: float = 1.0
    code_dropout_fraction: float = 0.5
    # Stage 3 with the LM head trained whole beside LoRA (--train_lm_head), as in the seed-0 runs above
    # (with the answer words one token each, training.language_model.train_bpe_tokenizer's whole_words)
    stage3_train_lm_head: bool = True
    # Stage 3 with LoRA (r8, the bench's default) or full fine-tuning (--stage3_full_finetune): on the
    # Stage 3 recipe with a group and a score question mixed (bench/mixture.py's language-model rows),
    # LoRA read the group far less well than full fine-tuning of the same model for the same steps
    stage3_use_lora: bool = True

    def synthetic(self) -> SyntheticSettings:
        """The synthetic cohort of this seed (the one Stage 3's synthetic tasks and the evaluation build)."""
        return SyntheticSettings(
            n_subjects=self.synthetic_subjects, n_timepoints=self.synthetic_timepoints, group_effect=self.group_effect,
            score_effect=self.score_effect, dynamics_effect=self.dynamics_effect, seed=self.seed,
        )  # fmt: skip


def bench_scans(settings: PipelineSettings) -> list[FmriScan]:
    """The embedded scans and the seed's synthetic cohort (the same scans Stage 3's `synthetic` task builds)."""
    return [*load_embedded(), *make_synthetic_cohort(settings.synthetic()).scans]


def _cached(folder: Path, key: dict[str, Any]) -> bool:
    """Whether `folder/final` holds a finished run made with `key`; otherwise clear `folder`."""
    stamp = folder / "bench_settings.json"
    if (folder / "final" / "config.json").is_file() and stamp.is_file() and json.loads(stamp.read_text()) == key:
        return True
    shutil.rmtree(folder, ignore_errors=True)
    return False


def _stamp(folder: Path, key: dict[str, Any]) -> None:
    (folder / "bench_settings.json").write_text(json.dumps(key))


def quiet_run(arguments_class: type, folder: Path, epochs: int, seed: int) -> Any:
    """A stage's `TrainingArguments` for a bench run: no bars, no integrations, at most `epochs`
    epochs, evaluated on the validation subjects after each one, and the epoch with the lowest
    validation loss kept (Trainer's `load_best_model_at_end`; one checkpoint per epoch, the best
    and the last kept), so the number of epochs is chosen on validation subjects, never on test ones."""
    return arguments_class(
        output_dir=str(folder), num_train_epochs=epochs, seed=seed, eval_strategy="epoch", save_strategy="epoch", save_total_limit=1,
        load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False,
        disable_tqdm=True, log_level="warning", report_to="none",
    )  # fmt: skip


def corpus(settings: PipelineSettings, scans: list[FmriScan], workdir: Path = WORKDIR) -> Path:
    """The descriptor corpus of `scans`, split 0.6/0.2/0.2 by the seed."""
    folder = workdir / f"seed{settings.seed}" / "corpus"
    key = {
        "synthetic": [settings.synthetic_subjects, settings.synthetic_timepoints],
        "effects": [settings.group_effect, settings.score_effect, settings.dynamics_effect],
    }
    stamp = folder.parent / "corpus_settings.json"
    if (folder / "README.md").is_file() and stamp.is_file() and json.loads(stamp.read_text()) == key:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    build_corpus(
        scans, folder, aal2_table().systems, scans[0].atlas, DescriptorSettings(seed=settings.seed),
        fractions=(0.6, 0.2, 0.2), progress=False, command="bench/pipeline.py",
    )  # fmt: skip
    stamp.write_text(json.dumps(key))
    return folder


def stage1(settings: PipelineSettings, scans: list[FmriScan], corpus_dir: Path, workdir: Path = WORKDIR) -> Path:
    """The small Stage 1 tokenizer (the demo's config) on the corpus's training subjects."""
    from modeling_fmrilm.training.stage1 import Stage1Arguments, Stage1TrainingArguments, train_stage1

    folder = workdir / f"seed{settings.seed}" / "stage1"
    key = {**asdict(settings), "stage": 1}
    for name in (
        "stage2_epochs",
        "stage2_lm_kind",
        "stage2_window_stride",
        "stage3_epochs",
        "stage3_train_lm_head",
        "stage3_use_lora",
        "code_dropout",
        "code_dropout_fraction",
    ):
        key.pop(name)
    if not _cached(folder, key):
        args = Stage1Arguments(
            text_dataset=str(corpus_dir), window_stride=64, config_overrides=json.dumps({"contrastive_weight": 0.1})
        )
        training_args = quiet_run(Stage1TrainingArguments, folder, settings.stage1_epochs, settings.seed)
        train_stage1(args, training_args, scans, console_logs=False)
        _stamp(folder, key)
    return folder / "final"


def stage2(
    settings: PipelineSettings, scans: list[FmriScan], corpus_dir: Path, stage1_dir: Path, workdir: Path = WORKDIR
) -> Path:
    """The small Stage 2 LM (the demo's config) on the corpus's training subjects."""
    from modeling_fmrilm.training.stage2 import Stage2Arguments, Stage2TrainingArguments, train_stage2

    folder = workdir / f"seed{settings.seed}" / "stage2"
    key = {**asdict(settings), "stage": 2}
    for name in ("stage3_epochs", "stage3_train_lm_head", "stage3_use_lora"):
        key.pop(name)
    if not _cached(folder, key):
        args = Stage2Arguments(
            fmri_tokenizer=str(stage1_dir), corpus=str(corpus_dir), small_lm_kind=settings.stage2_lm_kind, window_stride=settings.stage2_window_stride,
            code_dropout=settings.code_dropout, code_dropout_fraction=settings.code_dropout_fraction,
        )  # fmt: skip
        training_args = quiet_run(Stage2TrainingArguments, folder, settings.stage2_epochs, settings.seed)
        train_stage2(args, training_args, scans, console_logs=False)
        _stamp(folder, key)
    return folder / "final"


def stage3(settings: PipelineSettings, corpus_dir: Path, stage2_dir: Path, workdir: Path = WORKDIR) -> Path:
    """LoRA instruction tuning on the cohort, descriptor and synthetic tasks (no evaluation: the bench runs it)."""
    from modeling_fmrilm.training.stage3 import Stage3Arguments, Stage3TrainingArguments, train_stage3

    folder = workdir / f"seed{settings.seed}" / "stage3"
    tasks = stage3_task_options(settings, corpus_dir)
    key = {**asdict(settings), "stage": 3, "tasks": tasks}
    if not _cached(folder, key):
        args = Stage3Arguments(
            model=str(stage2_dir),
            **tasks,
            evaluate=False,
            code_dropout=settings.code_dropout,
            code_dropout_fraction=settings.code_dropout_fraction,
            train_lm_head=settings.stage3_train_lm_head,
            use_lora=settings.stage3_use_lora,
        )
        training_args = quiet_run(Stage3TrainingArguments, folder, settings.stage3_epochs, settings.seed)
        train_stage3(args, training_args, console_logs=False)
        _stamp(folder, key)
    return folder / "final"


def stage3_task_options(settings: PipelineSettings, corpus_dir: Path) -> dict[str, Any]:
    """The task flags shared by Stage 3 training and the evaluation (so both build the same items):
    the cohort, descriptor and synthetic tasks, the descriptor questions asked of every scan the
    corpus describes (the embedded scans and the synthetic cohort)."""
    return {
        "corpus": str(corpus_dir),
        "tasks": ["cohort", "descriptors", "synthetic"],
        "descriptor_scans": "all",
        "synthetic_subjects": settings.synthetic_subjects,
        "synthetic_timepoints": settings.synthetic_timepoints,
        "group_effect": settings.group_effect,
        "score_effect": settings.score_effect,
        "dynamics_effect": settings.dynamics_effect,
        "synthetic_seed": settings.seed,
    }


def run_pipeline(settings: PipelineSettings, through: int = 3, workdir: Path = WORKDIR) -> dict[str, Path]:
    """Corpus, Stage 1, Stage 2 and (with `through=3`) Stage 3 of one seed; returns their folders
    and prints how long each took (a reused one takes a second)."""

    def timed(name: str, build: Any, *arguments: Any) -> Path:
        start = time.perf_counter()
        folder = build(*arguments)
        print(f"seed {settings.seed}: {name} ready in {time.perf_counter() - start:.0f} s", flush=True)
        return folder

    scans = bench_scans(settings)
    folders = {"corpus": timed("descriptor corpus", corpus, settings, scans, workdir)}
    folders["stage1"] = timed("Stage 1", stage1, settings, scans, folders["corpus"], workdir)
    folders["stage2"] = timed("Stage 2", stage2, settings, scans, folders["corpus"], folders["stage1"], workdir)
    if through >= 3:
        folders["stage3"] = timed("Stage 3", stage3, settings, folders["corpus"], folders["stage2"], workdir)
    return folders


def main() -> None:
    """`python bench/pipeline.py --seed N`: train one seed's stages (so seeds can train in parallel
    processes; `bench/instruct.py` then finds them ready and only evaluates)."""
    import argparse

    parser = argparse.ArgumentParser(prog="bench/pipeline.py", description=main.__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--synthetic_subjects", type=int, default=PipelineSettings.synthetic_subjects)
    parser.add_argument(
        "--stage3_full_finetune", action="store_true", help="Stage 3 by full fine-tuning instead of LoRA"
    )
    parser.add_argument("--workdir", default=str(WORKDIR))
    options = parser.parse_args()
    start = time.perf_counter()
    settings = PipelineSettings(
        seed=options.seed,
        synthetic_subjects=options.synthetic_subjects,
        stage3_use_lora=not options.stage3_full_finetune,
    )
    folders = run_pipeline(settings, workdir=Path(options.workdir))
    print(
        f"seed {options.seed}: corpus, Stage 1, 2, 3 ready in {time.perf_counter() - start:.0f} s ({folders['stage3']})",
        flush=True,
    )


if __name__ == "__main__":
    main()
