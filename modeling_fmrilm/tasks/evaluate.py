"""The evaluation engine (`fmrilm evaluate`): the model beside the majority and two connectivity baselines.

For every task and seed, one split by subject (by family where known) stratified by label, or
the pipeline's own subject split when a model was trained on it (its test subjects; validation
subjects, which pick checkpoints, are never scored). Tasks asked about the same scans (the cohort
and descriptor questions of the embedded data, or the descriptor questions of the embedded data
and the synthetic cohort with `--descriptor_scans all`; the synthetic group and score) share their
splits, stratified by the first task's labels: the `multi` paradigm asks them together, and the
tangent space is fitted once per split. On that split:

- **model rows** (when a model is given): zero-shot and k-shot prompts (k label-balanced
  in-context examples from the training subjects, never the evaluated subject or its family), in
  the paradigms asked for (`single`, `multi`, `open`), scored by comparing the candidate answers'
  log-likelihoods (`loglik`; ROC AUC from their softmax), by the same log-likelihoods less
  the label prior the model carries into the prompts (`calibrated`: each label's mean
  log-probability over label-balanced training items asked the same way, so a model that ranks
  the scans but always leans to one answer is not read as a constant guess), or by the paper's
  greedy generation constrained to the label tokens (`constrained`); `loglik` and `calibrated` by
  default (`fmrilm evaluate --scoring`, Stage 3's `--eval_scoring`); regressions read out through bins
  (edges fitted on the training subjects) and through a ridge probe on the pooled hidden states;
- **baseline rows** on the same split: majority/mean, the Brainmarks FC protocol and tangent-space
  FC (`baselines.py`), and the baselines again over `n_resplits` random stratified re-splits of
  the same test fraction;
- **view rows** (when a model is given, `view_probes`): the Brainmarks protocol on the FC of what
  the model reads, its windows (`window_fc`) and their codes decoded by its tokenizer
  (`token_fc`). Between the whole-scan FC row, these two and the model's own, a table shows where
  a scan's connectivity signal is lost: to the window, to quantisation, or in the language model.
- **embedding row** (`embedding_probe`, `--embedding_probe`): the Brainmarks protocol on the
  model's Stage 1 encoder embeddings, mean-pooled (`embedding_probe.py`), as Brainmarks scores a model.

Every figure is measured on test subjects and reported as mean ± std over seeds (or re-splits).
Output: a markdown table (`EvaluationReport.to_markdown`) and a JSON file with every run
(`EvaluationReport.save`); metrics come from scikit-learn, none from the Hub.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..configuration_fmrilm import FMRI_STREAMS
from ..errors import FmriInputError
from ..io import FmriScan
from ..splits import SubjectSplit, model_split, read_manifest
from .baselines import BASELINES, BaselineInputs, SplitFeatures, fit_predict
from .data import TaskData, item_labels
from .embedding_probe import EMBEDDING_PROBE, embedding_inputs
from .evaluation_splits import TooFewExamples, fixed_split, strata_of, stratified_split
from .metrics import score_predictions
from .predictions import (
    model_predictions,
    multi_predictions,
    probe_predictions,
)
from .prompts import PARADIGMS
from .registry import ScoreBins
from .report import EvaluationReport, Row
from .scoring import LabelScorer, PromptTooLong
from .settings import SCORING, EvaluationArguments, EvaluationSettings
from .sources import TaskSources, build_tasks

VIEW_PROBES = ("window_fc", "token_fc")
"""Rows of the Brainmarks protocol on what the model reads: its windows, and its tokens decoded."""


# -- the engine ---------------------------------------------------------------------------------


def _groups_by_subjects(tasks: Sequence[TaskData]) -> list[list[TaskData]]:
    """Tasks on the same items (same scans, same order) together: they share splits and the multi paradigm."""
    groups: dict[tuple, list[TaskData]] = {}
    for data in tasks:
        groups.setdefault((tuple(data.subject_keys), tuple(id(s) for s in data.scans)), []).append(data)
    return list(groups.values())


class _Rows:
    def __init__(self) -> None:
        self.rows: dict[tuple, Row] = {}

    def get(
        self,
        data: TaskData,
        method: str,
        shots: int | None = None,
        paradigm: str | None = None,
        resplits: int | None = None,
        blanked: str | None = None,
    ) -> Row:
        task = data.task
        row = Row(task.name, task.kind, task.n_classes, method, shots, paradigm, resplits=resplits, blanked=blanked)
        return self.rows.setdefault(row.key, row)


def _split(
    group: Sequence[TaskData], seed: int, settings: EvaluationSettings, split: SubjectSplit | None
) -> tuple[np.ndarray, np.ndarray]:
    """The seed's `(train, test)`: the fixed split's, or a stratified split by subject/family."""
    first = group[0]
    if split is not None:
        return fixed_split(first.subject_keys, split)
    strata = strata_of(first.targets, first.task.kind == "regression")
    return stratified_split(strata, settings.test_fraction, seed, first.split_groups)


def resplit(group: Sequence[TaskData], seed: int, n_train: int, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    """A random stratified split with (about, up to rounding per stratum) `n_train` training and
    `n_test` test items: the test part first, then the surplus training items left out (as a
    fixed split leaves its validation subjects out)."""
    first = group[0]
    strata = strata_of(first.targets, first.task.kind == "regression")
    groups = np.asarray(first.split_groups)
    train, test = stratified_split(strata, n_test / len(strata), seed, groups)
    surplus = len(train) - n_train
    if surplus > 0:
        kept, _ = stratified_split(strata[train], surplus / len(train), seed + 1, groups[train])
        train = train[kept]
    return train, test


def _baseline_runs(
    rows: _Rows,
    data: TaskData,
    features: SplitFeatures,
    seed: int,
    methods: dict[str, str] | None = None,
    resplits: int | None = None,
) -> None:
    """Fit each baseline on the split and add its test metrics to its row; `methods` maps row names
    to baselines (default: every baseline under its own name), `resplits` marks the re-split rows."""
    train, test = features.train, features.test
    bins = ScoreBins.fit(data.targets[train]) if data.task.kind == "regression" else None
    y = data.targets
    for row_name, name in (methods or {name: name for name in BASELINES}).items():
        output = fit_predict(name, data.task.kind, data.task.n_classes, y[train], features, seed)
        metrics = score_predictions(data.task, y[test], output.probabilities, output.values, bins)
        rows.get(data, row_name, resplits=resplits).add(metrics, len(train), len(test), output.notes)


def view_inputs(scorer: LabelScorer, scans: Sequence[FmriScan]) -> dict[str, BaselineInputs]:
    """The baselines' inputs of each `VIEW_PROBES` view of `scans` (`LabelScorer.model_views`), as TR 2 s scans."""
    views = scorer.model_views(scans)
    tr = float(scorer.processor.feature_extractor.target_tr)
    return {
        name: BaselineInputs(
            [
                FmriScan(signal, tr, scan.subject, scan.session, scan.dataset)
                for scan, signal in zip(scans, signals, strict=True)
            ]
        )
        for name, signals in zip(VIEW_PROBES, views, strict=True)
    }


def _model_runs(
    rows: _Rows,
    scorer: LabelScorer,
    group: Sequence[TaskData],
    train,
    test,
    seed: int,
    settings: EvaluationSettings,
    blanked: str | None = None,
) -> None:
    bins = [ScoreBins.fit(d.targets[train]) if d.task.kind == "regression" else None for d in group]
    labels = [item_labels(d, b) for d, b in zip(group, bins, strict=True)]
    for scoring in settings.scoring:
        method = f"fmrilm {scoring}"
        for k in settings.shots:
            for paradigm in settings.paradigms:
                if paradigm == "multi" and len(group) < 2:
                    continue
                step = settings.multi_questions if paradigm == "multi" else 1
                for offset in range(0, len(group), step):
                    chunk = list(group[offset : offset + step])
                    chunk_rows = [rows.get(d, method, k, paradigm, blanked=blanked) for d in chunk]
                    if any(r.skipped for r in chunk_rows):
                        continue
                    try:
                        if paradigm == "multi":
                            results = multi_predictions(
                                scorer,
                                chunk,
                                labels[offset : offset + len(chunk)],
                                train,
                                test,
                                k,
                                seed,
                                scoring,
                                settings.chat_template,
                            )
                        else:
                            results = [
                                model_predictions(
                                    scorer,
                                    chunk[0],
                                    labels[offset],
                                    train,
                                    test,
                                    k,
                                    seed,
                                    paradigm,
                                    scoring,
                                    settings.chat_template,
                                )
                            ]
                    except (PromptTooLong, TooFewExamples) as error:
                        for r in chunk_rows:
                            r.skipped = str(error)
                        continue
                    for u, (data, probabilities) in enumerate(zip(chunk, results, strict=True)):
                        metrics = score_predictions(
                            data.task, data.targets[test], probabilities, None, bins[offset + u]
                        )
                        chunk_rows[u].add(metrics, len(train), len(test))
    if settings.probe and blanked is None:
        for data, b, lab in zip(group, bins, labels, strict=True):
            if data.task.kind != "regression":
                continue
            row = rows.get(data, "fmrilm ridge probe", 0, "single")
            if row.skipped:
                continue
            try:
                values = probe_predictions(scorer, data, lab, train, test, seed, settings.chat_template)
            except PromptTooLong as error:
                row.skipped = str(error)
                continue
            row.add(score_predictions(data.task, data.targets[test], None, values, b), len(train), len(test))


def evaluate(
    tasks: Sequence[TaskData],
    model: Any = None,
    processor: Any = None,
    settings: EvaluationSettings | None = None,
    split: SubjectSplit | None = None,
    progress: bool = True,
) -> EvaluationReport:
    """Run the model (if given) and the baselines on every task (see the module docstring).

    Args:
        tasks: the tasks' items (`data.py` builders).
        model, processor: an `FmriLMForCausalLM` (or a peft model around one) and its processor;
            `None`: baselines only.
        settings: seeds, shots, paradigms, scoring, re-splits (`None`: `EvaluationSettings()`).
        split: the subject split the model was trained on (its manifest): its test subjects are
            scored, for every seed; `None`: a stratified split per seed.
    """
    settings = EvaluationSettings() if settings is None else settings
    if (model is None) != (processor is None):
        raise FmriInputError("model/processor: give both (model rows) or neither (baselines only)")
    if settings.embedding_probe and model is None:
        raise FmriInputError(
            "settings.embedding_probe: expected a model (its tokenizer gives the embeddings), found none"
        )
    scorer = LabelScorer(model, processor, settings.batch_size) if model is not None else None
    rows = _Rows()
    groups = _groups_by_subjects(tasks)
    steps = tqdm(total=len(groups) * len(settings.seeds), desc="evaluating", disable=not progress)
    for group in groups:
        first = group[0]
        inputs = BaselineInputs(first.scans)
        views = view_inputs(scorer, first.scans) if scorer is not None and settings.view_probes else {}
        if settings.embedding_probe:
            views[EMBEDDING_PROBE] = embedding_inputs(model, processor, first.scans, settings.batch_size)
        for seed in settings.seeds:
            train, test = _split(group, seed, settings, split)
            features = inputs.split(train, test)
            for data in group:
                _baseline_runs(rows, data, features, seed)
            for name, view in views.items():
                view_features = view.split(train, test)
                for data in group:
                    _baseline_runs(rows, data, view_features, seed, {name: "brainmarks_fc"})
            if scorer is not None:
                _model_runs(rows, scorer, group, train, test, seed, settings)
                streams = scorer.fmri_streams
                for stream in streams if settings.blank_streams and len(streams) > 1 else ():
                    with scorer.blanked(stream, [first.scans[i] for i in train]):
                        _model_runs(rows, scorer, group, train, test, seed, settings, blanked=stream)
            steps.update()
        if settings.n_resplits:
            # re-split seeds start at 10000 x (1 + the first seed): runs for other seeds (merge_reports) draw other re-splits
            first_resplit = 10_000 * (1 + settings.seeds[0])
            for r in tqdm(
                range(settings.n_resplits), desc=f"re-splits of {first.task.name}", disable=not progress, leave=False
            ):
                features = inputs.split(*resplit(group, first_resplit + r, len(train), len(test)))
                for data in group:
                    _baseline_runs(rows, data, features, first_resplit + r, resplits=settings.n_resplits)
    steps.close()
    ordered = sorted(rows.rows.values(), key=lambda row: _row_order(row, [d.task.name for d in tasks], settings))
    reports = [d.report.to_json() for d in tasks if d.report is not None]
    split_text = (
        f"the subject split of {split.source}"
        if split is not None and split.source
        else "the model's subject split"
        if split is not None
        else "stratified splits by subject, one per seed"
    )
    return EvaluationReport(ordered, settings, split_text, reports)


def _row_order(row: Row, task_names: list[str], settings: EvaluationSettings) -> tuple:
    """Task, then the baselines (same splits, then re-splits), then the model rows by scoring, k, paradigm."""
    if not row.is_model:
        methods = (*BASELINES, *VIEW_PROBES)
        return (task_names.index(row.task), 0, row.resplits is not None, methods.index(row.method), 0, 0)
    name = row.method.removeprefix("fmrilm ")
    scoring = SCORING.index(name) if name in SCORING else len(SCORING)
    blanked = FMRI_STREAMS.index(row.blanked) + 1 if row.blanked is not None else 0
    return (task_names.index(row.task), 1, blanked, scoring, row.shots or 0, PARADIGMS.index(row.paradigm or "single"))


def run_evaluation(sources: TaskSources, arguments: EvaluationArguments) -> tuple[EvaluationReport, Path, Path]:
    """`fmrilm evaluate` on parsed flags: the model of `arguments.model` (if any) beside the baselines
    on the tasks of `sources`, on the model's training split (or `arguments.split_manifest`); the
    report and the `evaluation.md`/`.json` it wrote into `arguments.output_dir`."""
    model = processor = None
    split = None
    if arguments.model is not None:
        from transformers import AutoModelForCausalLM, AutoProcessor

        import modeling_fmrilm  # noqa: F401  (registers the Auto classes)

        model = AutoModelForCausalLM.from_pretrained(arguments.model).eval()
        processor = AutoProcessor.from_pretrained(arguments.model)
        split = model_split(arguments.model)
    if arguments.split_manifest is not None:
        split = read_manifest(arguments.split_manifest)
    tasks = build_tasks(sources, arguments.output_dir)
    report = evaluate(tasks, model, processor, arguments.settings(), split)
    markdown, record = report.save(arguments.output_dir)
    return report, markdown, record


__all__ = ["VIEW_PROBES", "evaluate", "resplit", "run_evaluation", "view_inputs"]
