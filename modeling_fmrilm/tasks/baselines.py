"""The baselines every model row is reported beside, fitted on the same training subjects.

- `majority` / mean: the training split's class frequencies (every test subject gets them) or its
  mean score.
- `brainmarks_fc`, the Brainmarks protocol, so the numbers sit beside that benchmark's: Pearson FC,
  upper triangle without the diagonal, no Fisher z; `StandardScaler` + `LogisticRegressionCV`
  (10 Cs, 5 stratified shuffle splits of 20%, selected on balanced accuracy); ridge (`RidgeCV`,
  efficient leave-one-out over a log grid of alphas, after the same scaler) for continuous targets.
- `tangent_fc`: tangent-space FC from nilearn's `ConnectivityMeasure(kind="tangent")` (Ledoit-Wolf
  covariances; the geometric mean fitted on the split's training items only, once per split and
  shared by the tasks of that split) + `LogisticRegressionCV` with 5-fold stratified inner
  cross-validation, or `RidgeCV`.

A training split too small for the inner cross-validation (a class with fewer training subjects
than folds) gets as many folds as it allows; with a class of a single training subject the C is
fixed to 1 (no selection possible) and with one class only the prediction is that class. Each
case is returned as a note, which the evaluation prints beside the row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, RidgeCV
from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from ..descriptors.connectivity import correlation
from ..io import FmriScan

BASELINES = ("majority", "brainmarks_fc", "tangent_fc")
N_CS = 10
N_INNER_SPLITS = 5
RIDGE_ALPHAS = np.logspace(-3, 5, 17)
MAX_ITER = 5000


@dataclass
class BaselineOutput:
    """Test predictions of one baseline: `probabilities` (classification) or `values` (regression), and notes."""

    probabilities: np.ndarray | None
    values: np.ndarray | None
    notes: list[str]


def pearson_fc_features(scans: Sequence[FmriScan]) -> np.ndarray:
    """Upper triangle (diagonal excluded) of each scan's Pearson correlation, no Fisher z: `(n, R(R-1)/2)`.

    Scans of equal length are computed together (batched, `descriptors.connectivity.correlation`).
    """
    n_rois = scans[0].n_rois
    rows, cols = np.triu_indices(n_rois, k=1)
    features = np.zeros((len(scans), len(rows)))
    lengths = np.asarray([scan.n_timepoints for scan in scans])
    for length in np.unique(lengths):
        members = np.flatnonzero(lengths == length)
        features[members] = correlation(np.stack([scans[i].data for i in members]))[:, rows, cols]
    return features


class BaselineInputs:
    """The baselines' inputs for every item: Pearson FC features and time-major series `(n_timepoints, n_rois)`
    (nilearn's layout, transposed here at the boundary)."""

    def __init__(self, scans: Sequence[FmriScan]) -> None:
        self.fc = pearson_fc_features(scans)
        self.series = [np.asarray(scan.data, dtype=np.float64).T for scan in scans]

    def split(self, train: np.ndarray, test: np.ndarray) -> SplitFeatures:
        return SplitFeatures(self, train, test)


class SplitFeatures:
    """Each baseline's training and test features on one split; the tangent space is fitted once on
    the split's training items (nilearn `ConnectivityMeasure`) and shared by every task of the split."""

    def __init__(self, inputs: BaselineInputs, train: np.ndarray, test: np.ndarray) -> None:
        self.inputs, self.train, self.test = inputs, train, test
        self._tangent: tuple[np.ndarray, np.ndarray] | None = None

    def __call__(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name == "brainmarks_fc":
            return self.inputs.fc[self.train], self.inputs.fc[self.test]
        if name == "tangent_fc":
            if self._tangent is None:
                from nilearn.connectome import ConnectivityMeasure

                measure = ConnectivityMeasure(kind="tangent", vectorize=True, discard_diagonal=True)
                train_features = measure.fit_transform([self.inputs.series[i] for i in self.train])
                self._tangent = (train_features, measure.transform([self.inputs.series[i] for i in self.test]))
            return self._tangent
        raise ValueError(f"baseline features: expected brainmarks_fc or tangent_fc, found {name!r}")


def _classifier(y: np.ndarray, seed: int, protocol: str, notes: list[str]) -> Any:
    """`LogisticRegressionCV` with the protocol's inner splits, sized down (with a note) for small training splits."""
    counts = np.bincount(y)
    present = counts[counts > 0]
    smallest = int(present.min())
    if smallest < 2:
        notes.append(f"{protocol}: a class has {smallest} training subject; C fixed to 1 (no inner cross-validation)")
        return LogisticRegression(C=1.0, max_iter=MAX_ITER)
    if protocol == "brainmarks_fc":
        test_size = max(int(np.ceil(0.2 * len(y))), len(present))
        if test_size > int(np.ceil(0.2 * len(y))):
            notes.append(f"{protocol}: inner test splits of {test_size} subjects (one per class at least), not 20%")
        cv: Any = StratifiedShuffleSplit(n_splits=N_INNER_SPLITS, test_size=test_size, random_state=seed)
    else:
        folds = min(N_INNER_SPLITS, smallest)
        if folds < N_INNER_SPLITS:
            notes.append(f"{protocol}: {folds} inner folds (the smallest class has {smallest} training subjects)")
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return LogisticRegressionCV(
        Cs=N_CS, l1_ratios=(0.0,), cv=cv, scoring="balanced_accuracy", max_iter=MAX_ITER, use_legacy_attributes=False
    )


def fit_predict(
    name: str, kind: str, n_classes: int, y_train: np.ndarray, features: SplitFeatures, seed: int
) -> BaselineOutput:
    """Fit baseline `name` on a split's training items and predict its test items.

    Args:
        name: one of `BASELINES`.
        kind: the task's kind (`classification` or `regression`).
        n_classes: classes of a classification.
        y_train: training targets (class indices or scores), in `features.train` order.
        features: the split's features (`BaselineInputs.split`).
        seed: seeds the inner cross-validation splits.
    """
    notes: list[str] = []
    n_test = len(features.test)
    if name not in BASELINES:
        raise ValueError(f"baseline: expected one of {BASELINES}, found {name!r}")
    if name == "majority":
        if kind == "regression":
            return BaselineOutput(None, np.full(n_test, float(np.mean(y_train))), notes)
        frequencies = np.bincount(y_train, minlength=n_classes) / len(y_train)
        return BaselineOutput(np.tile(frequencies, (n_test, 1)), None, notes)
    if kind == "classification" and len(np.unique(y_train)) < 2:
        notes.append(f"{name}: one class in the training split; it is predicted for every test subject")
        return BaselineOutput(
            np.tile(np.bincount(y_train, minlength=n_classes) / len(y_train), (n_test, 1)), None, notes
        )
    head = RidgeCV(alphas=RIDGE_ALPHAS) if kind == "regression" else _classifier(y_train, seed, name, notes)
    # Brainmarks standardises the FC features; the tangent vectors enter the model as they are
    estimator = make_pipeline(StandardScaler(), head) if name == "brainmarks_fc" else head
    x_train, x_test = features(name)
    # One BLAS thread: these fits are small, and BLAS threads beside torch's OpenMP threads in the
    # same process oversubscribe the cores (a re-split took minutes instead of seconds on 2 cores).
    with threadpool_limits(limits=1, user_api="blas"):
        estimator.fit(x_train, y_train)
    if kind == "regression":
        return BaselineOutput(None, np.asarray(estimator.predict(x_test), dtype=np.float64), notes)
    classes = estimator[-1].classes_ if name == "brainmarks_fc" else estimator.classes_
    probabilities = np.zeros((n_test, n_classes))
    probabilities[:, classes] = estimator.predict_proba(x_test)
    return BaselineOutput(probabilities, None, notes)


__all__ = ["BASELINES", "BaselineInputs", "BaselineOutput", "SplitFeatures", "fit_predict", "pearson_fc_features"]
