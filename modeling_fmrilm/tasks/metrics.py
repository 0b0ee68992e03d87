"""Metrics of the evaluation, computed by scikit-learn (never fetched from the Hub), and their summary over seeds.

Classification: accuracy, balanced accuracy and ROC AUC from the predicted probabilities (one
vs rest, macro, for more than two classes). With hard predictions (one-hot probabilities, the
paper's constrained generation) the binary ROC AUC equals the balanced accuracy. Regression: MAE
and Pearson r, plus the accuracies of the bins (" lower"/" mean"/" higher", edges fitted on the
training subjects) so a binned readout and a continuous one share a column. A metric that is not
defined for a test set (ROC AUC with one class present, Pearson r of a constant prediction) is
`None` with the reason in `undefined`, never NaN and never a made-up number.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.feature_selection import r_regression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, mean_absolute_error, roc_auc_score

from ..errors import FmriInputError
from .registry import ScoreBins, Task

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "roc_auc")
REGRESSION_METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "mae", "pearson_r")


def _roc_auc(y_true: np.ndarray, probabilities: np.ndarray, n_classes: int, undefined: dict[str, str]) -> float | None:
    present = np.unique(y_true)
    if len(present) < 2:
        undefined["roc_auc"] = f"one class in the test set ({present.tolist()})"
        return None
    if n_classes == 2:
        return float(roc_auc_score(y_true, probabilities[:, 1]))
    if len(present) < n_classes:
        undefined["roc_auc"] = (
            f"classes {sorted(set(range(n_classes)) - set(present.tolist()))} absent from the test set"
        )
        return None
    return float(
        roc_auc_score(y_true, probabilities, multi_class="ovr", average="macro", labels=list(range(n_classes)))
    )


def _constant(values: np.ndarray) -> bool:
    """Constant up to rounding (a ridge shrunk to its intercept predicts the mean plus ~1e-16 noise)."""
    return bool(np.std(values) <= 1e-9 * max(1.0, float(np.abs(values).max())))


def _pearson(y_true: np.ndarray, values: np.ndarray, undefined: dict[str, str]) -> float | None:
    if _constant(values) or _constant(y_true):
        undefined["pearson_r"] = "constant prediction" if _constant(values) else "constant targets"
        return None
    # centred here, not inside r_regression, whose `sum(x²) - n·mean²` cancels for near-constant predictions
    centred = values - values.mean()
    return float(r_regression(centred[:, None], y_true - y_true.mean(), center=False)[0])


def score_predictions(
    task: Task,
    y_true: Sequence[float],
    probabilities: np.ndarray | None = None,
    values: np.ndarray | None = None,
    bins: ScoreBins | None = None,
) -> dict[str, Any]:
    """The metrics of one set of test predictions.

    Args:
        task: what was predicted.
        y_true: class indices (classification) or scores (regression).
        probabilities: `(n, n_classes)` (or `(n, n_bins)` for a binned regression readout).
        values: continuous predictions (regression; default: the bins' expected value of `probabilities`).
        bins: the bins fitted on the training subjects (regression).

    Returns:
        `{metric: float | None, ..., "undefined": {metric: reason}}`.
    """
    y_true = np.asarray(y_true)
    undefined: dict[str, str] = {}
    result: dict[str, Any] = {}
    if task.kind == "classification":
        if probabilities is None:
            raise FmriInputError(
                f"task {task.name!r}: classification metrics need probabilities (n, {task.n_classes})"
            )
        labels = y_true.astype(np.int64)
    else:
        if bins is None:
            raise FmriInputError(
                f"task {task.name!r}: regression metrics need the bins fitted on the training subjects"
            )
        if values is None and probabilities is None:
            raise FmriInputError(f"task {task.name!r}: regression metrics need values or bin probabilities")
        labels = bins.transform(y_true)
        values = bins.expected_value(probabilities) if values is None else np.asarray(values, dtype=np.float64)
    predicted = probabilities.argmax(axis=1) if probabilities is not None else bins.transform(values)  # type: ignore[union-attr]
    result["accuracy"] = float(accuracy_score(labels, predicted))
    with (
        warnings.catch_warnings()
    ):  # with few test subjects a class may be absent from the test set or the predictions
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        warnings.filterwarnings("ignore", message="A single label was found")
        result["balanced_accuracy"] = float(balanced_accuracy_score(labels, predicted))
    if probabilities is not None:
        result["roc_auc"] = _roc_auc(labels, np.asarray(probabilities, dtype=np.float64), task.n_classes, undefined)
    else:
        result["roc_auc"] = None
        undefined["roc_auc"] = "no probabilities (continuous prediction)"
    if task.kind == "regression":
        y = y_true.astype(np.float64)
        result["mae"] = float(mean_absolute_error(y, values))
        result["pearson_r"] = _pearson(y, values, undefined)  # type: ignore[arg-type]
    result["undefined"] = undefined
    return result


def summarize(runs: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Mean ± sample std (ddof 1) of each metric over runs (seeds or re-splits).

    Returns:
        `{metric: {"mean", "std", "n", "undefined"}}`: `n` runs where it was defined, `undefined`
        the count where it was not (`mean`/`std` are `None` when it never was; `std` is `None` for one run).
    """
    summary = {}
    for name in names:
        values = np.asarray([run[name] for run in runs if run.get(name) is not None], dtype=np.float64)
        summary[name] = {
            "mean": float(values.mean()) if values.size else None,
            "std": float(values.std(ddof=1)) if values.size > 1 else None,
            "n": int(values.size),
            "undefined": len(runs) - int(values.size),
        }
    return summary


def format_summary(entry: Mapping[str, Any], digits: int = 3) -> str:
    """`0.712 ± 0.034` (`0.712` for one run, `n/a` when never defined, `(n=2)` when undefined in some runs)."""
    if entry["mean"] is None:
        return "n/a"
    text = (
        f"{entry['mean']:.{digits}f}"
        if entry["std"] is None
        else f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}"
    )
    return text + (f" (n={entry['n']})" if entry["undefined"] else "")


__all__ = ["CLASSIFICATION_METRICS", "REGRESSION_METRICS", "format_summary", "score_predictions", "summarize"]
