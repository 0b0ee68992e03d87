"""What an evaluation runs: `EvaluationSettings` (the engine's) and `EvaluationArguments` (the flags of `fmrilm evaluate`).

Kept apart from the engine (`evaluate.py`) so that Stage 3 can check its evaluation flags when
they are parsed without importing the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from ..errors import FmriInputError
from .prompts import PARADIGMS, Paradigm

Scoring = Literal["loglik", "calibrated", "constrained"]
SCORING = get_args(Scoring)
"""Answer scorings: log-likelihood of the candidates, the same less the label prior, the paper's constrained generation."""


@dataclass
class EvaluationSettings:
    """What the evaluation runs.

    Attributes:
        seeds: one split (unless fixed), paraphrase draw and shot draw per seed.
        shots: k of the k-shot prompts (0 = zero-shot).
        paradigms: of `prompts.PARADIGMS`.
        scoring: of `SCORING`.
        chat_template: render prompts with the processor's chat template instead of the paper's layout.
        test_fraction: test share of the stratified splits (ignored with a fixed split).
        n_resplits: random re-splits for the baselines (0 to skip).
        probe: ridge probe on pooled hidden states for regressions.
        view_probes: the `VIEW_PROBES` rows (Brainmarks FC of the model's windows and of its decoded tokens).
        embedding_probe: the row of the Brainmarks probe on the model's Stage 1 embeddings (`embedding_probe.py`).
        blank_streams: for a model that reads both fMRI streams, the model rows again with each
            stream blanked (`fmrilm <scoring>, <stream> blanked`: its positions fed the stream's mean
            embedding over the training subjects' scans), so the table says whether an answer was
            read from coupling, from dynamics, or from neither.
        multi_questions: questions per prompt in the `multi` paradigm.
        batch_size: sequences per forward pass.
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    shots: tuple[int, ...] = (0, 2, 4, 10)
    paradigms: tuple[Paradigm, ...] = ("single",)
    scoring: tuple[Scoring, ...] = ("loglik", "calibrated")
    chat_template: bool = False
    test_fraction: float = 0.25
    n_resplits: int = 100
    probe: bool = True
    view_probes: bool = True
    embedding_probe: bool = False
    blank_streams: bool = False
    multi_questions: int = 3
    batch_size: int = 8

    def __post_init__(self) -> None:
        unknown = [p for p in self.paradigms if p not in PARADIGMS] + [s for s in self.scoring if s not in SCORING]
        if unknown or not self.seeds or any(k < 0 for k in self.shots):
            raise FmriInputError(
                f"evaluation settings: expected paradigms in {PARADIGMS}, scoring in {SCORING}, at least one seed and k >= 0; "
                f"found {unknown or (self.seeds, self.shots)}"
            )


@dataclass
class EvaluationArguments:
    """The flags of `fmrilm evaluate` besides its task sources (`sources.TaskSources`), parsed by
    `HfArgumentParser`; `settings()` gives the engine's `EvaluationSettings` (validated on parsing)."""

    model: str | None = field(
        default=None, metadata={"help": "FmriLMForCausalLM folder (model + processor); none: baselines only"}
    )
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "one split per seed"})
    shots: list[int] = field(default_factory=lambda: [0, 2, 4, 10], metadata={"help": "k of the k-shot prompts"})
    paradigms: list[str] = field(default_factory=lambda: ["single"], metadata={"help": f"of {PARADIGMS}"})
    scoring: list[str] = field(
        default_factory=lambda: ["loglik", "calibrated"],
        metadata={
            "help": "answer scorings (rows): loglik, calibrated (label prior from training subjects taken out), constrained (the paper's)"
        },
    )
    chat_template: bool = field(default=False, metadata={"help": "render prompts with the processor's chat template"})
    test_fraction: float = field(default=0.25, metadata={"help": "test share of the stratified splits"})
    n_resplits: int = field(default=100, metadata={"help": "random re-splits for the baselines (0 to skip)"})
    blank_streams: bool = field(
        default=False,
        metadata={
            "help": "for a model reading both fMRI streams, the model rows again with each stream blanked (fed its mean embedding)"
        },
    )
    embedding_probe: bool = field(
        default=False,
        metadata={"help": "add the row of the Brainmarks probe on the model's Stage 1 embeddings, mean-pooled"},
    )
    split_manifest: str | None = field(
        default=None, metadata={"help": "splits.json (or a folder with one); default: the model's training split"}
    )
    output_dir: str = field(default="outputs/evaluation", metadata={"help": "evaluation.md and evaluation.json"})

    def __post_init__(self) -> None:
        self.settings()

    def settings(self) -> EvaluationSettings:
        return EvaluationSettings(
            seeds=tuple(self.seeds),
            shots=tuple(self.shots),
            paradigms=tuple(self.paradigms),
            scoring=tuple(self.scoring),
            chat_template=self.chat_template,
            test_fraction=self.test_fraction,
            n_resplits=self.n_resplits,
            embedding_probe=self.embedding_probe,
            blank_streams=self.blank_streams,
        )


__all__ = ["SCORING", "EvaluationArguments", "EvaluationSettings", "Scoring"]
