"""Which subjects the evaluation trains on, tests on and shows as examples.

- [`stratified_split`]: a seeded train/test split by subject, or by family where families are
  known (a family never straddles the split), stratified by label (by score quantile for a
  regression): `round(test_fraction * n)` subjects (families) go to test, shared among the strata
  in proportion to their sizes. scikit-learn's `StratifiedGroupKFold` stratifies groups too but gives folds,
  not a split of a chosen size, and fails on strata with a single member (common in a small
  cohort); this allocation keeps both.
- [`fixed_split`]: the train/test subjects of the one subject split of the pipeline
  (`modeling_fmrilm.splits`, the manifest a model was trained on); validation subjects are never
  used here (they pick checkpoints), so every figure is on test subjects.
- [`select_shots`]: label-balanced in-context examples, drawn from the training subjects only and
  never from the evaluated subject or its family.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import FmriInputError
from ..splits import SubjectSplit

N_SCORE_STRATA = 3


class TooFewExamples(FmriInputError):
    """Fewer eligible training subjects than in-context examples asked for."""


def strata_of(targets: np.ndarray, regression: bool, n_strata: int = N_SCORE_STRATA) -> np.ndarray:
    """Stratum of each subject: its class, or (regression) its score's rank quantile."""
    targets = np.asarray(targets)
    if not regression:
        return targets.astype(np.int64)
    ranks = np.argsort(np.argsort(targets, kind="stable"), kind="stable")
    return ranks * n_strata // len(targets)


def stratified_split(
    strata: Sequence[int], test_fraction: float, seed: int, groups: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded `(train, test)` index arrays, stratified, by group when `groups` are given.

    A group's stratum is its most frequent member stratum. `round(test_fraction * n_groups)` groups
    (at least one) go to test, shared among the strata in proportion to their sizes (largest
    remainders, ties broken at random); within a stratum they are drawn at random. The generator
    is seeded by `seed`.

    Raises:
        FmriInputError: `test_fraction` outside (0, 1), or fewer than two groups.
    """
    strata = np.asarray(strata, dtype=np.int64)
    if not 0 < test_fraction < 1:
        raise FmriInputError(f"test_fraction: expected a number in (0, 1), found {test_fraction}")
    group_ids = np.asarray(groups if groups is not None else np.arange(len(strata)).astype(str))
    names, member_group = np.unique(group_ids, return_inverse=True)
    if len(names) < 2:
        raise FmriInputError(f"split: expected at least two subjects (families), found {len(names)}")
    counts = np.zeros((len(names), strata.max() + 1), dtype=np.int64)
    np.add.at(counts, (member_group, strata), 1)
    group_stratum = counts.argmax(axis=1)
    rng = np.random.default_rng(seed)
    strata_present, sizes = np.unique(group_stratum, return_counts=True)
    # largest remainders: the strata's quotas add up to exactly round(test_fraction * n_groups)
    quotas = test_fraction * sizes
    counts = np.floor(quotas).astype(np.int64)
    remainder = max(1, int(round(test_fraction * len(names)))) - counts.sum()
    order = np.lexsort((rng.random(len(sizes)), -(quotas - counts)))
    counts[order[: max(remainder, 0)]] += 1
    test_groups: list[int] = []
    for stratum, count in zip(strata_present, counts, strict=True):
        members = rng.permutation(np.flatnonzero(group_stratum == stratum))
        test_groups.extend(members[:count].tolist())
    in_test = np.isin(member_group, test_groups)
    return np.flatnonzero(~in_test), np.flatnonzero(in_test)


def fixed_split(subject_keys: Sequence[str], split: SubjectSplit) -> tuple[np.ndarray, np.ndarray]:
    """`(train, test)` indices of `subject_keys` under the pipeline's subject split (validation left out).

    Raises:
        FmriInputError: no training or no test subject among `subject_keys`.
    """
    assigned = np.asarray([split.of(key) for key in subject_keys])
    train, test = np.flatnonzero(assigned == "train"), np.flatnonzero(assigned == "test")
    if not len(train) or not len(test):
        raise FmriInputError(
            f"subject split ({split.source or 'seeded hash'}): {len(train)} training and {len(test)} test subjects among "
            f"{len(subject_keys)}; expected both"
        )
    return train, test


def select_shots(
    candidates: np.ndarray,
    labels: np.ndarray,
    k: int,
    rng: np.random.Generator,
    exclude_groups: Sequence[str] = (),
    groups: Sequence[str] | None = None,
) -> np.ndarray:
    """`k` label-balanced in-context examples among the training indices `candidates`.

    Classes are visited in a shuffled order, round robin, each giving one randomly drawn subject
    per turn until `k` are chosen (a class that runs out is skipped); the examples are then
    shuffled, so their order carries no label pattern.

    Args:
        candidates: training indices (never test subjects).
        labels: label (class or bin) of every index.
        exclude_groups: families/subjects that must not appear (the evaluated subject's).
        groups: family/subject id of every index (default: the index itself, as text).

    Raises:
        TooFewExamples: fewer than `k` eligible training subjects.
    """
    group_of = np.asarray(groups if groups is not None else np.arange(len(labels)).astype(str))
    eligible = candidates[~np.isin(group_of[candidates], list(exclude_groups))]
    if len(eligible) < k:
        raise TooFewExamples(f"shots: expected at least k={k} eligible training subjects, found {len(eligible)}")
    pools = {
        int(c): list(rng.permutation(eligible[labels[eligible] == c]))
        for c in rng.permutation(np.unique(labels[eligible]))
    }
    chosen: list[int] = []
    while len(chosen) < k:
        for pool in pools.values():
            if pool and len(chosen) < k:
                chosen.append(int(pool.pop()))
    return rng.permutation(np.asarray(chosen, dtype=np.int64))


__all__ = ["TooFewExamples", "fixed_split", "select_shots", "strata_of", "stratified_split"]
