"""Which tasks a run asks: one argument set for `fmrilm evaluate`, Stage 3 and the bench.

`TaskSources` names the offline task sources (the embedded cohort, descriptor questions from a
corpus, the synthetic cohort) and their settings; `HfArgumentParser` reads it like every other
argument set (`Stage3Arguments` extends it, `fmrilm evaluate` parses it beside its own flags), and
`build_tasks` turns it into the `TaskData` every consumer scores or trains on, so Stage 3 and the
evaluation of its model build the same items from the same flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, get_args

from ..errors import FmriInputError
from .data import TaskData

TaskSource = Literal["cohort", "descriptors", "synthetic"]
TASK_SOURCES = get_args(TaskSource)
"""The offline task sources: the embedded cohort question, descriptor questions, the synthetic cohort's tasks."""
DescriptorScans = Literal["embedded", "all"]
DESCRIPTOR_SCANS = get_args(DescriptorScans)
"""Whom the descriptor questions are asked of: the embedded scans, or the synthetic cohort's too."""


@dataclass
class TaskSources:
    """The task sources of a run and their settings (flags of `fmrilm evaluate` and Stage 3).

    A plain (not frozen) dataclass because `Stage3Arguments` extends it and `HfArgumentParser`
    fills both; validated on construction.

    Raises:
        FmriInputError: an unknown source or `descriptor_scans` value, or a non-positive count.
    """

    tasks: list[str] = field(
        default_factory=lambda: list(TASK_SOURCES), metadata={"help": f"task sources, of {TASK_SOURCES}"}
    )
    corpus: str | None = field(
        default=None,
        metadata={
            "help": "descriptor corpus folder (descriptor questions, splits.json); default for the evaluation: the demo corpus, built into OUTPUT_DIR/descriptor_corpus"
        },
    )
    pairs: list[str] | None = field(
        default=None,
        metadata={"help": "network pairs 'A-B' of the descriptor questions; default the --max_pairs most varied"},
    )
    max_pairs: int = field(default=3, metadata={"help": "descriptor questions when --pairs is not given"})
    descriptor_scans: DescriptorScans = field(
        default="embedded",
        metadata={
            "help": "scans the descriptor questions are asked of: 'embedded', or 'all': the synthetic cohort too (the corpus must describe it, as the bench's does)"
        },
    )
    synthetic_subjects: int = field(default=200, metadata={"help": "subjects of the synthetic cohort"})
    synthetic_timepoints: int = field(default=320, metadata={"help": "frames per synthetic scan (TR 2 s)"})
    group_effect: float = field(default=0.2, metadata={"help": "synthetic_group's coupling effect"})
    score_effect: float = field(default=0.2, metadata={"help": "synthetic_score's coupling effect"})
    dynamics_effect: float = field(
        default=0.0,
        metadata={
            "help": "variance of the slow-dynamics noise of the synthetic_dynamics task (0: no such task); FC is equal between its groups"
        },
    )
    synthetic_seed: int = field(default=0, metadata={"help": "seed of the synthetic cohort"})
    question_paraphrases: int | None = field(
        default=None,
        metadata={
            "help": "ask each question in only the first N of its paraphrases (1: one fixed question), in training and "
            "evaluation; default all. A small LM trained from scratch learnt the synthetic group from one question and "
            "not from the paraphrases in the same steps (README)"
        },
    )

    def __post_init__(self) -> None:
        unknown = sorted(set(self.tasks) - set(TASK_SOURCES))
        if unknown or not self.tasks:
            raise FmriInputError(f"tasks: expected names from {TASK_SOURCES}, found {unknown or self.tasks}")
        if self.descriptor_scans not in DESCRIPTOR_SCANS:
            raise FmriInputError(
                f"descriptor_scans: expected one of {DESCRIPTOR_SCANS}, found {self.descriptor_scans!r}"
            )
        if self.max_pairs < 1 or self.synthetic_subjects < 1 or self.synthetic_timepoints < 1:
            raise FmriInputError(
                "max_pairs, synthetic_subjects, synthetic_timepoints: expected positive counts, found "
                f"{self.max_pairs}, {self.synthetic_subjects}, {self.synthetic_timepoints}"
            )
        if self.question_paraphrases is not None and self.question_paraphrases < 1:
            raise FmriInputError(f"question_paraphrases: expected a positive count, found {self.question_paraphrases}")


def build_tasks(sources: TaskSources, output_dir: str | Path) -> list[TaskData]:
    """The `TaskData` of every source in `sources.tasks`: the embedded cohort, descriptor questions, the synthetic cohort.

    The descriptor questions are asked of the embedded scans or, with `descriptor_scans="all"`, of
    the synthetic cohort's scans too: the same cohort (built once, even without the `synthetic`
    source) whose scans the synthetic tasks ask about, so each synthetic subject has the same key in
    both and a subject split puts it on the same side. That needs a `corpus` describing the
    cohort, as the bench's does (the demo corpus, built into `output_dir/descriptor_corpus` when
    no corpus is given, describes only the embedded scans).

    Raises:
        FmriInputError: `descriptor_scans="all"` without a corpus, or a scan the corpus does not describe.
    """
    from ..io import load_embedded
    from .data import cohort_task_data, descriptor_task_data, most_varied, synthetic_task_data
    from .synthetic import SyntheticSettings, make_synthetic_cohort

    asks_cohort = "descriptors" in sources.tasks and sources.descriptor_scans == "all"
    if asks_cohort and sources.corpus is None:
        raise FmriInputError(
            "--descriptor_scans all: expected --corpus, a descriptor corpus that describes the synthetic cohort too (as the bench's does); "
            "found none (the default demo corpus describes only the embedded scans)"
        )
    tasks: list[TaskData] = []
    embedded = load_embedded() if {"cohort", "descriptors"} & set(sources.tasks) else []
    cohort = None
    if "synthetic" in sources.tasks or asks_cohort:
        settings = SyntheticSettings(
            n_subjects=sources.synthetic_subjects,
            n_timepoints=sources.synthetic_timepoints,
            group_effect=sources.group_effect,
            score_effect=sources.score_effect,
            dynamics_effect=sources.dynamics_effect,
            seed=sources.synthetic_seed,
        )
        cohort = make_synthetic_cohort(settings)
    if "cohort" in sources.tasks:
        tasks.append(cohort_task_data(embedded))
    if "descriptors" in sources.tasks:
        corpus = sources.corpus
        if corpus is None:
            from ..descriptors.corpus import demo_corpus

            corpus = str(Path(output_dir) / "descriptor_corpus")
            if not (Path(corpus) / "README.md").is_file():
                demo_corpus(embedded, corpus)
        pairs = descriptor_task_data(corpus, [*embedded, *cohort.scans] if asks_cohort else embedded, sources.pairs)
        tasks.extend(pairs if sources.pairs else most_varied(pairs, sources.max_pairs))
    if "synthetic" in sources.tasks:
        tasks.extend(synthetic_task_data(cohort))
    if sources.question_paraphrases is not None:
        tasks = [replace(data, task=replace(data.task, paraphrases=sources.question_paraphrases)) for data in tasks]
    return tasks


__all__ = ["DESCRIPTOR_SCANS", "TASK_SOURCES", "DescriptorScans", "TaskSource", "TaskSources", "build_tasks"]
