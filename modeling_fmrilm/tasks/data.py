"""Evaluation items of a task: scans with their targets, subject keys, families and prompt context.

Builders for every label source and for the offline tasks:

- [`task_data_from_table`]: a registered task read from a [`LabelTable`] and joined to scans;
- [`cohort_task_data`]: (offline) the cohort of each embedded scan, HCP or gw, from its `dataset`;
- [`descriptor_task_data`]: (offline) one question per named network pair: is its coupling
  `" lower"`, `" typical"` or `" higher"` than the cohort's, from the descriptor corpus's
  `z_network_pair_fc` (z < -1, -1 <= z <= 1, z > 1: the corpus's severity bands,
  with the mild and marked bands merged);
- [`synthetic_task_data`]: the synthetic cohort's group and score.

An item is one scan; the split unit is its `dataset/subject` key (or its family), so several scans
of one subject always fall on the same side.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FmriInputError
from ..io import FmriScan
from ..splits import subject_key
from .labels import LabelReport, LabelTable, task_targets
from .prompts import COHORT_LINE
from .registry import ScoreBins, Task, get_task
from .synthetic import SyntheticCohort

PAIR_BANDS = ("lower", "typical", "higher")


@dataclass
class TaskData:
    """The items of one task.

    Attributes:
        task: the question asked (with its per-question fields, e.g. the network pair).
        scans: one scan per item.
        targets: class index or score per item.
        subject_keys: `dataset/subject` per item (the unit of splitting).
        families: family id per item (splits keep a family together), or `None`.
        cohort_lines: the prompt's cohort line per item (`""` to leave it out: it would give the
            answer away for the cohort task).
        description: the prompt's description line (task level, e.g. the study population).
        report: what joining labels to scans left out, by name.
    """

    task: Task
    scans: list[FmriScan]
    targets: np.ndarray
    subject_keys: list[str]
    families: list[str] | None = None
    cohort_lines: list[str] | None = None
    description: str = ""
    report: LabelReport | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.scans)
        lengths = {"targets": len(self.targets), "subject_keys": len(self.subject_keys)}
        lengths.update(
            {
                name: len(value)
                for name, value in (("families", self.families), ("cohort_lines", self.cohort_lines))
                if value is not None
            }
        )
        wrong = {name: length for name, length in lengths.items() if length != n}
        if wrong:
            raise FmriInputError(f"task {self.task.name!r}: expected {n} entries (one per scan), found {wrong}")
        if not n:
            raise FmriInputError(f"task {self.task.name!r}: no item (no scan with a usable label)")

    @property
    def split_groups(self) -> list[str]:
        """What a split keeps together: the family when known, else the subject."""
        return list(self.families) if self.families is not None else list(self.subject_keys)

    def cohort_line(self, index: int) -> str:
        return self.cohort_lines[index] if self.cohort_lines is not None else ""


def _cohort_lines(scans: Sequence[FmriScan]) -> list[str]:
    return [COHORT_LINE.format(dataset=scan.dataset) for scan in scans]


def task_data_from_table(
    task: Task | str,
    table: LabelTable,
    scans: Sequence[FmriScan],
    strict: bool = True,
    cohort_line: bool = True,
    description: str = "",
) -> TaskData:
    """The items of a registered task: scans matched to `table` by `scan.subject`.

    Raises:
        FmriInputError: (`strict`) a scan without label row, a missing label or an unknown value
            (all named; see `labels.task_targets`).
    """
    task = get_task(task) if isinstance(task, str) else task
    kept, targets, report = task_targets(task, table, [scan.subject for scan in scans], strict)
    chosen = [scans[i] for i in kept]
    families = None
    if table.families is not None:
        families = [table.families.get(scan.subject) or subject_key(scan.dataset, scan.subject) for scan in chosen]
    return TaskData(
        task,
        chosen,
        targets,
        [subject_key(scan.dataset, scan.subject) for scan in chosen],
        families,
        _cohort_lines(chosen) if cohort_line else None,
        description,
        report,
    )


def cohort_task_data(scans: Sequence[FmriScan]) -> TaskData:
    """Which cohort (`hcp` or `gw`) each embedded scan comes from; no cohort line in the prompt.

    Raises:
        FmriInputError: a scan of another data set (named).
    """
    task = get_task("cohort")
    targets = [task.encode(scan.dataset) for scan in scans]
    unknown = [scan.name for scan, target in zip(scans, targets, strict=True) if target is None]
    if unknown:
        raise FmriInputError(
            f"cohort task: expected scans of {sorted(task.values or {})}, found other data sets for {unknown}"
        )
    return TaskData(
        task, list(scans), np.asarray(targets, dtype=np.int64), [subject_key(s.dataset, s.subject) for s in scans]
    )


def _corpus_records(folder: Path) -> list[dict]:
    import pyarrow.parquet as pq

    files = sorted((folder / "data").glob("*/*.parquet"))
    if not files:
        raise FmriInputError(
            f"{folder}: expected a descriptor corpus (data/<config>/<split>-*.parquet), found no parquet file"
        )
    columns = ["subject", "dataset", "session", "z_network_pair_fc"]
    return [row for path in files for row in pq.read_table(path, columns=columns).to_pylist()]


def network_pairs(corpus: str | Path) -> list[tuple[str, str]]:
    """The corpus's network pairs `(A, B)`, in the order of its `z_network_pair_fc` lists (the
    upper triangle of its networks, within-network pairs included, as `network_pair_names` orders them)."""
    path = Path(corpus) / "cohort_reference.json"
    if not path.is_file():
        raise FmriInputError(
            f"{path}: expected the corpus's cohort reference (it names the networks), found no such file"
        )
    networks = json.loads(path.read_text())["networks"]
    rows, cols = np.triu_indices(len(networks))
    return [(networks[i], networks[j]) for i, j in zip(rows, cols, strict=True)]


def pair_band(z: np.ndarray) -> np.ndarray:
    """0 lower (z < -1), 1 typical (-1 <= z <= 1), 2 higher (z > 1): the corpus's bands merged to three."""
    return np.where(z < -1, 0, np.where(z > 1, 2, 1))


def descriptor_task_data(
    corpus: str | Path, scans: Sequence[FmriScan], pairs: Sequence[str] | None = None
) -> list[TaskData]:
    """One network-pair question per pair, on the scans the corpus describes.

    Args:
        corpus: a descriptor corpus folder (`modeling_fmrilm.descriptors.build_corpus`).
        scans: the scans (matched by dataset, subject and session).
        pairs: `"A-B"` names; default: every pair whose z-score is defined for every scan.

    Raises:
        FmriInputError: a scan the corpus does not describe, an unknown pair, or a named pair
            with an undefined z-score (a single-region network has no within-network pair).
    """
    corpus = Path(corpus)
    pair_fields = network_pairs(corpus)
    names = [f"{a}-{b}" for a, b in pair_fields]
    records = {(r["dataset"], r["subject"], r["session"]): r for r in _corpus_records(corpus)}
    missing = [scan.name for scan in scans if (scan.dataset, scan.subject, scan.session) not in records]
    if missing:
        raise FmriInputError(
            f"{corpus}: no descriptor record for scans {missing[:10]} ({len(missing)} of {len(scans)})"
        )
    z = np.asarray([records[(s.dataset, s.subject, s.session)]["z_network_pair_fc"] for s in scans], dtype=np.float64)
    defined = np.isfinite(z).all(axis=0)
    if pairs is None:
        chosen = [i for i in range(len(names)) if defined[i]]
    else:
        unknown = [p for p in pairs if p not in names]
        if unknown:
            raise FmriInputError(f"pairs: expected names among {names}, found {unknown}")
        chosen = [names.index(p) for p in pairs]
        undefined = [names[i] for i in chosen if not defined[i]]
        if undefined:
            raise FmriInputError(f"pairs: z-score undefined (NaN) for some scans for {undefined}")
    base = get_task("network_pair")
    keys = [subject_key(s.dataset, s.subject) for s in scans]
    lines = _cohort_lines(scans)
    tasks = []
    for i in chosen:
        a, b = pair_fields[i]
        task = base.with_fields(f"network_pair:{names[i]}", a=a, b=b)
        tasks.append(TaskData(task, list(scans), pair_band(z[:, i]), keys, None, lines))
    return tasks


def most_varied(tasks: Sequence[TaskData], n: int) -> list[TaskData]:
    """The `n` tasks whose labels are most evenly spread over their items (highest label entropy;
    ties keep the given order): questions whose answer is nearly always the same say little."""

    def entropy(data: TaskData) -> float:
        counts = np.bincount(data.targets.astype(np.int64))
        p = counts[counts > 0] / counts.sum()
        return float(-(p * np.log(p)).sum())

    order = sorted(range(len(tasks)), key=lambda i: -entropy(tasks[i]))
    return [tasks[i] for i in sorted(order[:n])]


def synthetic_task_data(cohort: SyntheticCohort) -> list[TaskData]:
    """The synthetic cohort's `synthetic_group` and `synthetic_score` tasks, and `synthetic_dynamics`
    when its effect is on (a label the scans do not carry is no task)."""
    table = cohort.label_table()
    names = ("synthetic_group", "synthetic_score") + (
        ("synthetic_dynamics",) if cohort.settings.dynamics_effect > 0 else ()
    )
    return [task_data_from_table(name, table, cohort.scans, cohort_line=False) for name in names]


def item_labels(data: TaskData, bins: ScoreBins | None) -> np.ndarray:
    """Class of every item: its class index, or (regression) its bin under the training bins."""
    return bins.transform(data.targets) if bins is not None else data.targets.astype(np.int64)


__all__ = [
    "PAIR_BANDS",
    "TaskData",
    "cohort_task_data",
    "descriptor_task_data",
    "item_labels",
    "most_varied",
    "network_pairs",
    "pair_band",
    "synthetic_task_data",
    "task_data_from_table",
]
