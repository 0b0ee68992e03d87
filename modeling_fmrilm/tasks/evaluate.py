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

import json
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..atomic import write_text_atomically
from ..configuration_fmrilm import FMRI_STREAMS
from ..errors import FmriInputError
from ..io import FmriScan
from ..splits import SubjectSplit, model_split, read_manifest
from .baselines import BASELINES, BaselineInputs, SplitFeatures, fit_predict
from .data import TaskData, item_labels
from .embedding_probe import EMBEDDING_PROBE, embedding_inputs
from .metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS, format_summary, score_predictions, summarize
from .prompts import PARADIGMS, Prompt, ScanBlock, answer_text, answer_texts, question_text
from .registry import ScoreBins
from .scoring import LabelScorer, PromptTooLong, softmax
from .settings import SCORING, EvaluationArguments, EvaluationSettings
from .sources import TaskSources, build_tasks
from .splitting import TooFewExamples, fixed_split, select_shots, strata_of, stratified_split

CALIBRATION_PER_LABEL = 16
"""Training items per label (class or bin) asked each question to fit the `calibrated` scoring's label offsets."""
PRIMARY = {"classification": "balanced_accuracy", "regression": "pearson_r"}
"""The metric of the `Δ vs FC` column (model minus the better connectivity baseline; higher is better)."""
TABLE_METRICS = REGRESSION_METRICS
"""The table's metric columns (a classification leaves MAE and r empty)."""
VIEW_PROBES = ("window_fc", "token_fc")
"""Rows of the Brainmarks protocol on what the model reads: its windows, and its tokens decoded."""
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


# -- prompts of one task on one split ------------------------------------------------------------


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


__all__ = [
    "EvaluationReport",
    "Row",
    "build_prompts",
    "calibration_items",
    "evaluate",
    "label_offsets",
    "merge_reports",
    "model_predictions",
    "multi_predictions",
    "probe_predictions",
    "resplit",
    "run_evaluation",
]
