"""What the model answers, for one task on one split: the prompts (zero- and k-shot, in the three
paradigms), the answer probabilities under each scoring (`loglik`, `calibrated` with the label
offsets fitted on training items, `constrained`), and the ridge probe on pooled hidden states.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from .data import TaskData
from .evaluation_splits import select_shots
from .prompts import Prompt, ScanBlock, answer_text, answer_texts, question_text
from .scoring import LabelScorer, softmax

CALIBRATION_PER_LABEL = 16
"""Training items per label (class or bin) asked each question to fit the `calibrated` scoring's label offsets."""


def _rng(seed: int, *parts: Any) -> np.random.Generator:
    return np.random.default_rng([seed, *(zlib.crc32(str(part).encode()) for part in parts)])


def build_prompts(
    data: TaskData,
    labels: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    k: int,
    seed: int,
    paradigm: str = "single",
) -> list[tuple[Prompt, np.ndarray]]:
    """The prompt of every test item and the indices of its in-context examples.

    The examples are `select_shots` of the training items (label-balanced, never the item's own
    subject or family); each block's question is a seeded paraphrase; the examples' answers are
    their true labels (bins for a regression).
    """
    rng = _rng(seed, data.task.name, k, paradigm)
    groups = data.split_groups
    prompts = []
    for i in test:
        shots = (
            select_shots(train, labels, k, rng, exclude_groups=[groups[i]], groups=groups)
            if k
            else np.empty(0, dtype=np.int64)
        )
        blocks = [
            ScanBlock(
                [(question_text(data.task, rng, paradigm=paradigm), answer_text(data.task, int(labels[j]), paradigm))],
                data.cohort_line(j),
                data.description,
            )
            for j in shots
        ]
        query = ScanBlock(
            [(question_text(data.task, rng, paradigm=paradigm), None)], data.cohort_line(i), data.description
        )
        prompts.append((Prompt(blocks, query, [data.scans[j] for j in shots] + [data.scans[i]]), shots))
    return prompts


def calibration_items(
    data: TaskData, labels: np.ndarray, train: np.ndarray, seed: int, k: int, paradigm: str
) -> np.ndarray:
    """The training items whose answers fit the `calibrated` offsets: up to `CALIBRATION_PER_LABEL` per label, seeded."""
    per_label = CALIBRATION_PER_LABEL * len(np.unique(labels[train]))
    return select_shots(
        train, labels, min(per_label, len(train)), _rng(seed, data.task.name, k, paradigm, "calibration")
    )


def label_offsets(log_probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """`(n_classes,)` label prior of the model: the mean log-probability of each answer, averaged
    over the items of each label first, so a label with more items weighs no more."""
    return np.mean([log_probabilities[labels == c].mean(axis=0) for c in np.unique(labels)], axis=0)


def _probabilities(
    scorer: LabelScorer,
    contexts: list[list[int]],
    answers: list[str],
    scoring: str,
    calibration_labels: np.ndarray | None = None,
) -> np.ndarray:
    """`(n_contexts, n_answers)` answer probabilities; with `calibrated`, the last
    `len(calibration_labels)` contexts are training items whose `label_offsets` every row loses."""
    if scoring == "constrained":
        return np.eye(len(answers))[scorer.constrained_choices(contexts, answers)]
    scores = scorer.loglikelihoods(contexts, answers)
    if scoring == "calibrated":
        reference = scores[len(scores) - len(calibration_labels) :]
        scores = scores - label_offsets(
            reference - np.logaddexp.reduce(reference, axis=1, keepdims=True), calibration_labels
        )
    return softmax(scores)


def model_predictions(
    scorer: LabelScorer,
    data: TaskData,
    labels: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    k: int,
    seed: int,
    paradigm: str,
    scoring: str,
    chat_template: bool = False,
) -> np.ndarray:
    """`(n_test, n_classes)` answer probabilities of the single or open paradigm (with `calibrated`,
    the `calibration_items` are asked too, after the test items, whose prompts stay those of `loglik`)."""
    reference = (
        calibration_items(data, labels, train, seed, k, paradigm)
        if scoring == "calibrated"
        else np.empty(0, dtype=np.int64)
    )
    prompts = build_prompts(data, labels, train, np.concatenate([test, reference]), k, seed, paradigm)
    contexts = [scorer.prompt_ids(prompt.text(scorer.processor, chat_template), prompt.scans) for prompt, _ in prompts]
    return _probabilities(scorer, contexts, answer_texts(data.task, paradigm), scoring, labels[reference])[: len(test)]


def multi_predictions(
    scorer: LabelScorer,
    group: Sequence[TaskData],
    labels: Sequence[np.ndarray],
    train: np.ndarray,
    test: np.ndarray,
    k: int,
    seed: int,
    scoring: str,
    chat_template: bool = False,
) -> list[np.ndarray]:
    """The `multi` paradigm: the tasks of `group` asked in turn about each test scan in one prompt.

    Examples answer every question with their true labels; the query's earlier questions carry
    the model's own answers (never the truth), so each answer sees only the scan, the examples
    and the model's previous answers. Returns one `(n_test, n_classes)` array per task. With
    `calibrated`, the first task's `calibration_items` run the same chain after the test items, and
    each question's offsets (hence the answers carried on) come from them.
    """
    first = group[0]
    rng = _rng(seed, "multi", *(d.task.name for d in group), k)
    groups = first.split_groups
    reference = (
        calibration_items(first, labels[0], train, seed, k, "multi")
        if scoring == "calibrated"
        else np.empty(0, dtype=np.int64)
    )
    n_test, test = len(test), np.concatenate([test, reference])
    shots_of, questions_of = [], []
    for i in test:
        shots = (
            select_shots(train, labels[0], k, rng, exclude_groups=[groups[i]], groups=groups)
            if k
            else np.empty(0, dtype=np.int64)
        )
        shots_of.append(shots)
        questions_of.append([[question_text(d.task, rng) for d in group] for _ in range(len(shots) + 1)])
    results, chosen = [], [[] for _ in test]
    for t, data in enumerate(group):
        contexts = []
        for row, i in enumerate(test):
            questions = questions_of[row]
            blocks = [
                ScanBlock(
                    [(questions[s][u], answer_text(d.task, int(labels[u][j]))) for u, d in enumerate(group)],
                    first.cohort_line(j),
                    first.description,
                )
                for s, j in enumerate(shots_of[row])
            ]
            turns = [(questions[-1][u], group[u].task.label_words[chosen[row][u]]) for u in range(t)] + [
                (questions[-1][t], None)
            ]
            prompt = Prompt(
                blocks,
                ScanBlock(turns, first.cohort_line(i), first.description),
                [first.scans[j] for j in shots_of[row]] + [first.scans[i]],
            )
            contexts.append(scorer.prompt_ids(prompt.text(scorer.processor, chat_template), prompt.scans))
        probabilities = _probabilities(scorer, contexts, answer_texts(data.task), scoring, labels[t][reference])
        for row in range(len(test)):
            chosen[row].append(int(probabilities[row].argmax()))
        results.append(probabilities[:n_test])
    return results


def probe_predictions(
    scorer: LabelScorer,
    data: TaskData,
    labels: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    seed: int,
    chat_template: bool = False,
) -> np.ndarray:
    """Ridge probe: zero-shot prompts of every item, pooled hidden states, `RidgeCV` fitted on the training items."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from .baselines import RIDGE_ALPHAS

    items = np.concatenate([train, test])
    prompts = build_prompts(data, labels, train, items, 0, seed)
    contexts = [scorer.prompt_ids(prompt.text(scorer.processor, chat_template), prompt.scans) for prompt, _ in prompts]
    features = scorer.pooled_hidden_states(contexts)
    probe = make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS)).fit(
        features[: len(train)], data.targets[train]
    )
    return probe.predict(features[len(train) :])


__all__ = [
    "CALIBRATION_PER_LABEL",
    "build_prompts",
    "calibration_items",
    "label_offsets",
    "model_predictions",
    "multi_predictions",
    "probe_predictions",
]
