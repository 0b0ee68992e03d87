"""The evaluation's table: one `Row` per method and task with every run, the `EvaluationReport`
(markdown and JSON, written atomically) and `merge_reports` (one report from several runs).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_text_atomically
from ..errors import FmriInputError
from .embedding_probe import EMBEDDING_PROBE
from .metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS, format_summary, summarize
from .settings import EvaluationSettings

PRIMARY = {"classification": "balanced_accuracy", "regression": "pearson_r"}
"""The metric of the `Δ vs FC` column (model minus the better connectivity baseline; higher is better)."""
TABLE_METRICS = REGRESSION_METRICS
"""The table's metric columns (a classification leaves MAE and r empty)."""

METHOD_LABELS = {
    "majority": "majority / mean",
    "brainmarks_fc": "FC, Brainmarks protocol",
    "tangent_fc": "FC, tangent space",
    "window_fc": "FC of the window(s) the model reads",
    "token_fc": "FC of the model's tokens, decoded",
    EMBEDDING_PROBE: "fmrilm embeddings, Brainmarks probe",
}


@dataclass
class Row:
    """One line of the table: a method on a task, with every run (seed or re-split) kept.

    `method` names the method alone (a baseline of `BASELINES`, a view probe, `fmrilm <scoring>`);
    `resplits` is set on a baseline row run over random re-splits (how many: its runs), `blanked`
    on a model row scored with that fMRI stream blanked.
    """

    task: str
    kind: str
    n_classes: int
    method: str
    shots: int | None = None
    paradigm: str | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    n_train: list[int] = field(default_factory=list)
    n_test: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None
    resplits: int | None = field(default=None, kw_only=True)
    blanked: str | None = field(default=None, kw_only=True)

    @property
    def key(self) -> tuple:
        """What tells rows apart (and merges runs of several reports into one row): the re-split rows
        by whether they are, not by how many."""
        return (self.task, self.method, self.shots, self.paradigm, self.resplits is not None, self.blanked)

    @property
    def label(self) -> str:
        """The method as the table names it: `METHOD_LABELS`, then the blanked stream or the re-splits."""
        label = METHOD_LABELS.get(self.method, self.method)
        if self.blanked is not None:
            label += f", {self.blanked} blanked"
        if self.resplits is not None:
            label += f" ({self.resplits} re-splits)"
        return label

    @property
    def is_model(self) -> bool:
        return self.method.startswith("fmrilm")

    def summary(self) -> dict[str, dict[str, Any]]:
        return summarize(self.runs, REGRESSION_METRICS if self.kind == "regression" else CLASSIFICATION_METRICS)

    def add(self, metrics: dict[str, Any], n_train: int, n_test: int, notes: Sequence[str] = ()) -> None:
        self.runs.append(metrics)
        self.n_train.append(n_train)
        self.n_test.append(n_test)
        self.notes.extend(note for note in notes if note not in self.notes)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.summary()}


@dataclass
class EvaluationReport:
    """Rows in task order (baselines, re-splits, model rows), the settings and what labels left out."""

    rows: list[Row]
    settings: EvaluationSettings
    split: str
    label_reports: list[dict[str, Any]] = field(default_factory=list)

    def row(
        self,
        task: str,
        method: str,
        shots: int | None = None,
        paradigm: str | None = None,
        resplits: bool = False,
        blanked: str | None = None,
    ) -> Row:
        """The row of `task` and `method` (and k, paradigm; its re-split row; its row with a stream blanked)."""
        return next(r for r in self.rows if r.key == (task, method, shots, paradigm, resplits, blanked))

    def delta_vs_fc(self, row: Row) -> float | None:
        """Model minus the better connectivity baseline (same splits) on the task's primary metric."""
        metric = PRIMARY[row.kind]
        model = row.summary()[metric]["mean"]
        baselines = [
            r.summary()[metric]["mean"]
            for r in self.rows
            if r.task == row.task and r.method in ("brainmarks_fc", "tangent_fc")
        ]
        baselines = [b for b in baselines if b is not None]
        if model is None or not baselines:
            return None
        return model - max(baselines)

    def to_markdown(self) -> str:
        header = ["task", "method", "k", "paradigm", "n train/test", *TABLE_METRICS, "Δ vs FC", "notes"]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in self.rows:
            if row.skipped and not row.runs:
                cells = ["—"] * len(TABLE_METRICS) + ["", f"not run: {row.skipped}"]
            else:
                summary = row.summary()
                cells = [format_summary(summary[m]) if m in summary else "" for m in TABLE_METRICS]
                delta = self.delta_vs_fc(row) if row.is_model else None
                notes = row.notes + ([f"stopped after {len(row.runs)} seed(s): {row.skipped}"] if row.skipped else [])
                cells += ["" if delta is None else f"{delta:+.3f}", "; ".join(notes)]
            sizes = f"{int(np.mean(row.n_train))}/{int(np.mean(row.n_test))}" if row.n_test else ""
            shots = "" if row.shots is None else str(row.shots)
            lines.append("| " + " | ".join([row.task, row.label, shots, row.paradigm or "", sizes, *cells]) + " |")
        runs = f"{len(self.settings.seeds)} seeds" + (
            f", baselines also over {self.settings.n_resplits} re-splits" if self.settings.n_resplits else ""
        )
        lines += [
            "",
            f"Mean ± std over {runs}; every figure on test subjects ({self.split}). Δ vs FC: model minus the better "
            "connectivity baseline on the same splits (balanced accuracy; Pearson r for regressions); negative means the baseline is ahead.",
        ]
        for report in self.label_reports:
            problems = {k: v for k, v in report.items() if k not in ("task", "source") and v}
            if problems:
                lines.append(f"Labels of {report['task']} ({report['source']}): left out {problems}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "settings": asdict(self.settings),
            "split": self.split,
            "rows": [row.to_json() for row in self.rows],
            "label_reports": self.label_reports,
        }

    def save(self, folder: str | Path, stem: str = "evaluation") -> tuple[Path, Path]:
        """Write `<stem>.md` and `<stem>.json`, each atomically (`write_text_atomically`)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for suffix, text in (
            (".md", self.to_markdown() + "\n"),
            (".json", json.dumps(self.to_json(), indent=1, default=_json_default)),
        ):
            path = folder / f"{stem}{suffix}"
            write_text_atomically(path, text)
            paths.append(path)
        return paths[0], paths[1]


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value).__name__)


def merge_reports(reports: Sequence[EvaluationReport]) -> EvaluationReport:
    """One report from several runs of `evaluate` on different splits (e.g. one trained pipeline per
    seed, each scored on its own test subjects): every row's runs concatenated, the union of the
    rows in order of first appearance (a task that only some runs have, such as a descriptor
    question picked per corpus, keeps only those runs), the seeds of all settings.

    Raises:
        FmriInputError: no report.
    """
    if not reports:
        raise FmriInputError("merge_reports: expected at least one report, found none")
    rows: dict[tuple, Row] = {}
    for report in reports:
        for row in report.rows:
            merged = rows.setdefault(
                row.key,
                Row(
                    row.task,
                    row.kind,
                    row.n_classes,
                    row.method,
                    row.shots,
                    row.paradigm,
                    resplits=row.resplits,
                    blanked=row.blanked,
                ),
            )
            for metrics, n_train, n_test in zip(row.runs, row.n_train, row.n_test, strict=True):
                merged.add(metrics, n_train, n_test, row.notes)
            merged.skipped = merged.skipped or row.skipped
    tasks = list(dict.fromkeys(key[0] for key in rows))
    ordered = sorted(rows.values(), key=lambda row: tasks.index(row.task))  # stable: each report's order within a task
    for merged in ordered:  # the re-split rows of 3 reports of 34 re-splits each hold 102 runs
        if merged.resplits is not None:
            merged.resplits = len(merged.runs)
    seeds = tuple(seed for report in reports for seed in report.settings.seeds)
    settings = replace(
        reports[0].settings, seeds=seeds, n_resplits=sum(report.settings.n_resplits for report in reports)
    )
    splits = sorted({report.split for report in reports})
    split = splits[0] if len(splits) == 1 else f"{len(reports)} subject splits, one per seed"
    labels = [entry for report in reports for entry in report.label_reports]
    return EvaluationReport(ordered, settings, split, labels)


__all__ = ["METHOD_LABELS", "PRIMARY", "TABLE_METRICS", "EvaluationReport", "Row", "merge_reports"]
