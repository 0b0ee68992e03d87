"""The task registry: what is asked about a scan, which label words answer it, which label column it reads.

A [`Task`] is either a **classification** (one label word per class, e.g. `" Male"`/`" Female"`)
or a **regression**, read out two ways by the evaluation: binned into `" lower"`/`" mean"`/
`" higher"` with bin edges fitted on the training subjects only ([`ScoreBins`]), and by a ridge
probe on the language model's pooled hidden states. Label words start with a space, as the answer
follows `### Answer:`; a word that the text tokenizer splits into several tokens is scored as one
whole continuation.

Labels come from a label table (`labels.py`) in a canonical vocabulary: column `sex` holds
`"male"`/`"female"` whatever the source's coding, `diagnosis` holds `"control"`, `"adhd"`,
`"autism"`, `"cn"`, `"ad"`, ... A classification task maps those canonical values to class indices
(`values`); a value it does not know is reported by name, never guessed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import FmriInputError

KINDS = ("classification", "regression")
BIN_WORDS = (" lower", " mean", " higher")
"""Label words of a binned regression target (bins fitted on the training subjects)."""


@dataclass(frozen=True)
class Task:
    """One question about a scan and how it is answered.

    Attributes:
        name: registry key.
        kind: `"classification"` or `"regression"`.
        question: the paraphrase pool asked (a key of `prompts.QUESTIONS`).
        column: the canonical label column the task reads (`None` for tasks whose targets are
            computed, e.g. the descriptor questions).
        label_words: one word per class (classification); `BIN_WORDS` for a regression.
        values: canonical label value -> class index (classification only).
        fields: format fields of the question and statement (`score`, `topic`, network names, ...).
        paraphrases: how many of its pool's paraphrases are asked, the first ones (`None`: all;
            1: one fixed question), in training and evaluation alike.
    """

    name: str
    kind: str
    question: str
    column: str | None
    label_words: tuple[str, ...]
    values: Mapping[str, int] | None = None
    fields: Mapping[str, str] = field(default_factory=dict)
    paraphrases: int | None = None

    def __post_init__(self) -> None:
        if self.paraphrases is not None and self.paraphrases < 1:
            raise FmriInputError(f"task {self.name!r}: paraphrases expected None or >= 1, found {self.paraphrases}")
        if self.kind not in KINDS:
            raise FmriInputError(f"task {self.name!r}: kind expected one of {KINDS}, found {self.kind!r}")
        if len(self.label_words) < 2 or len(set(self.label_words)) != len(self.label_words):
            raise FmriInputError(
                f"task {self.name!r}: expected at least two distinct label words, found {self.label_words}"
            )
        if self.kind == "classification":
            indices = sorted(set((self.values or {}).values()))
            if indices != list(range(len(self.label_words))):
                raise FmriInputError(
                    f"task {self.name!r}: values must map onto every class index 0..{len(self.label_words) - 1}, "
                    f"found {dict(self.values or {})}"
                )
        elif self.values is not None:
            raise FmriInputError(f"task {self.name!r}: a regression takes no value map, found {dict(self.values)}")

    @property
    def n_classes(self) -> int:
        return len(self.label_words)

    @property
    def options(self) -> str:
        """The label words as a phrase: `"Male or Female"`, `"lower, mean or higher"`."""
        words = [word.strip() for word in self.label_words]
        return ", ".join(words[:-1]) + " or " + words[-1]

    def format_fields(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The question/statement fields: the task's own, `options`, then `extra` (per-question fields)."""
        return {"options": self.options, **self.fields, **(extra or {})}

    def encode(self, value: object) -> int | float | None:
        """The target of one canonical label value: a class index, a float, or `None` when unknown.

        Missing values (`None`, NaN, empty) must be filtered by the caller; this only decides.
        """
        if self.kind == "regression":
            try:
                number = float(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return None
            return number if np.isfinite(number) else None
        return (self.values or {}).get(str(value).strip().lower())

    def with_fields(self, name: str, **fields: str) -> Task:
        """A copy under another name with more fields (e.g. one descriptor question per network pair)."""
        return Task(
            name, self.kind, self.question, self.column, self.label_words, self.values, {**self.fields, **fields}
        )


@dataclass(frozen=True)
class ScoreBins:
    """Bin edges of a continuous score, fitted on the training subjects only (tertiles by default).

    `transform` gives the bin index (0 `" lower"`, 1 `" mean"`, 2 `" higher"`); `centers` are the
    training targets' mean per bin, the value a binned prediction stands for (MAE, Pearson r).
    """

    edges: tuple[float, ...]
    centers: tuple[float, ...]

    @classmethod
    def fit(cls, train_targets: Sequence[float], n_bins: int = len(BIN_WORDS)) -> ScoreBins:
        """Quantile edges of `train_targets` (`n_bins - 1` inner edges) and each bin's training mean.

        Raises:
            FmriInputError: a non-finite target, or too few distinct training values to fill every bin.
        """
        y = np.asarray(train_targets, dtype=np.float64)
        if not np.isfinite(y).all():
            raise FmriInputError(
                f"bins: expected finite training targets, found {int((~np.isfinite(y)).sum())} non-finite"
            )
        edges = np.quantile(y, np.arange(1, n_bins) / n_bins)
        index = np.searchsorted(edges, y, side="left")
        counts = np.bincount(index, minlength=n_bins)
        if (counts == 0).any():
            raise FmriInputError(
                f"bins: {len(y)} training targets with {len(np.unique(y))} distinct values leave bins {np.flatnonzero(counts == 0).tolist()} "
                f"empty (edges {edges.round(4).tolist()}); expected at least {n_bins} distinct values"
            )
        centers = np.bincount(index, weights=y, minlength=n_bins) / counts
        return cls(tuple(float(e) for e in edges), tuple(float(c) for c in centers))

    def transform(self, targets: Sequence[float]) -> np.ndarray:
        """Bin index of each target: `edges[i-1] < y <= edges[i]` is bin i (right-closed intervals)."""
        return np.searchsorted(np.asarray(self.edges), np.asarray(targets, dtype=np.float64), side="left")

    def expected_value(self, probabilities: np.ndarray) -> np.ndarray:
        """The score a probability over the bins stands for: `probabilities @ centers`."""
        return np.asarray(probabilities, dtype=np.float64) @ np.asarray(self.centers)


SEX_VALUES = {"male": 0, "female": 1}

TASKS: dict[str, Task] = {}


def register_task(task: Task, overwrite: bool = False) -> Task:
    """Add `task` to the registry under `task.name`.

    Raises:
        FmriInputError: the name is taken (unless `overwrite`).
    """
    if task.name in TASKS and not overwrite:
        raise FmriInputError(f"task {task.name!r}: already registered; pass overwrite=True to replace it")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The registered task `name`.

    Raises:
        FmriInputError: no such task (the registered names are listed).
    """
    if name not in TASKS:
        raise FmriInputError(f"task: expected one of {sorted(TASKS)}, found {name!r}")
    return TASKS[name]


def label_vocabulary() -> tuple[str, ...]:
    """Every registered task's label words (leading space included), in registry order, each once."""
    return tuple(dict.fromkeys(word for task in TASKS.values() for word in task.label_words))


for _task in (
    Task("sex", "classification", "sex", "sex", (" Male", " Female"), SEX_VALUES, {"topic": "the participant's sex"}),
    Task("adhd", "classification", "diagnosis", "diagnosis", (" Control", " ADHD"), {"control": 0, "adhd": 1},
         {"condition": "ADHD", "topic": "the diagnostic group"}),
    Task("autism", "classification", "diagnosis", "diagnosis", (" Control", " Autism"), {"control": 0, "autism": 1},
         {"condition": "autism", "topic": "the diagnostic group"}),
    Task("alzheimer", "classification", "diagnosis", "diagnosis", (" CN", " AD"), {"cn": 0, "ad": 1},
         {"condition": "Alzheimer's disease", "topic": "the diagnostic group"}),
    Task("hcp_age_band", "classification", "age_band", "age_band", (" 22-25", " 26-30", " 31-35", " 36+"),
         {"22-25": 0, "26-30": 1, "31-35": 2, "36+": 3}, {"topic": "the participant's age band"}),
    Task("age", "regression", "score", "age", BIN_WORDS, None, {"score": "age", "topic": "the participant's age"}),
    Task("fluid_intelligence", "regression", "score", "fluid_intelligence", BIN_WORDS, None,
         {"score": "fluid intelligence score", "topic": "the participant's fluid intelligence"}),
    Task("cohort", "classification", "cohort", "dataset", (" HCP", " GW"), {"hcp": 0, "gw": 1},
         {"topic": "the cohort the scan comes from"}),
    Task("network_pair", "classification", "network_pair", None, (" lower", " typical", " higher"),
         {"lower": 0, "typical": 1, "higher": 2}, {"topic": "the coupling between two networks"}),
    Task("synthetic_group", "classification", "diagnosis", "group", (" Control", " Patient"), {"control": 0, "patient": 1},
         {"condition": "the patient condition", "topic": "the diagnostic group"}),
    Task("synthetic_score", "regression", "score", "score", BIN_WORDS, None,
         {"score": "symptom score", "topic": "the participant's symptom score"}),
    Task("synthetic_dynamics", "classification", "dynamics", "dynamics", (" typical", " slow"), {"typical": 0, "slow": 1},
         {"condition": "slowed dynamics", "topic": "the signal dynamics"}),
):  # fmt: skip
    register_task(_task)


__all__ = [
    "BIN_WORDS",
    "KINDS",
    "SEX_VALUES",
    "TASKS",
    "ScoreBins",
    "Task",
    "get_task",
    "label_vocabulary",
    "register_task",
]
