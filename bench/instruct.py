"""Stage 3 quality: the fMRI-language model against chance and the connectivity baselines, on test subjects.

For each seed (`bench/pipeline.py`): the embedded scans plus a synthetic cohort of 1000 subjects
drawn on their FC structure (a group effect on Frontal-Parietal coupling, a score tied to
Occipital-Temporal coupling, and a second group label, `synthetic_dynamics`, in the slow dynamics
of the Sensorimotor network with its coupling equal between groups; other subjects per seed), one
descriptor corpus and its seeded subject split (0.6/0.2/0.2: ~600 training and ~200 test subjects),
then Stage 1 (small tokenizer) -> Stage 2 (small LM reading both fMRI streams, the temporal codes and
one connectivity token per ROI) -> Stage 3 (LoRA on the cohort, descriptor and synthetic tasks), all
on CPU, each stage keeping its epoch with the lowest validation loss. Then the harness
(`modeling_fmrilm.tasks.evaluate`) scores that seed's model on that seed's test subjects, beside the
majority, Brainmarks-FC and tangent-FC baselines on the same subjects (and over `--n_resplits`
random re-splits), the Brainmarks protocol on the FC of the window the model reads and of its
decoded tokens, and on the model's Stage 1 embeddings (`fmrilm embeddings`, as Brainmarks scores a
model); the model rows are run again with each stream blanked (`connectivity blanked`: what the
codes alone give, the figures of a codes-only model; `codes blanked`). The seeds' runs are merged
into one table, mean ± std over seeds.

Tasks: `synthetic_group`, `synthetic_score`, `synthetic_dynamics`; the embedded scans' cohort (HCP
or gw); descriptor questions asked of the whole bench cohort (is a network pair's coupling lower,
typical or higher than the cohort's, from the corpus's z-scores; the `--max_pairs` most evenly
spread pairs).

Targets (balanced accuracy of the zero-shot, single-question, calibrated log-likelihood row, the
label prior the model carries fitted on training subjects and taken out of its answers; criteria
fixed before the run):
- `beats_chance_synthetic_group`, `beats_chance_descriptor_questions`: above chance by more than
  twice the seed std (for the descriptor questions, per seed the mean over its pairs);
- `synthetic_group_matches_window_fc`: within 0.05 of the Brainmarks protocol on the FC of the
  window the model reads;
- `synthetic_dynamics_beats_fc`: above both connectivity baselines by more than twice the seed std;
- `synthetic_group_blanked_at_chance`: with the connectivity stream blanked, within 0.05 of chance.
NOTE lines apply the beats-chance criterion to the reference rows (the plain log-likelihood row, the
blanked rows, the embedding probe, the connectivity baselines), so the table shows which of them meet
it; where a connectivity baseline is ahead of a model row, a NOTE line says by how much. FIGURE lines
give, per view (whole scan, the window(s) the model reads, its decoded tokens), the synthetic effects'
size over every subject (`effect_sizes`: no fit). The F2T gap on the description's connectivity words
is `bench/lm_quality.py`'s. Ends with one TARGET line per target and exits 0 either way.

Stage 3's loss weights (`--stage3_task_weights`, NAME=WEIGHT pairs; default 1 each).
`bench/mixture.py` found, on other cohorts (its seeds 200+s and 300+s), that a second question the
language model cannot yet answer makes it memorise its training subjects instead of reading their
coupling, and that weighting that question's loss 0.1 brought the group back in scratch runs. The
run with `--stage3_task_weights synthetic_group=1 "*=0.1"` carries this to the bench's mixture: the
group, the one question a Stage 3 language model has been shown to read when asked alone
(`bench/mixture.py`'s `LM alone, LoRA`), at weight 1, and every other question at 0.1. The weights
were chosen on `bench/mixture.py`'s cohorts and never on this bench's subjects, and the run is
judged by the targets above, fixed before its first run.

The group effect (`group_effect` = 0.3 in `bench/pipeline.py`'s settings) was set on the baselines alone, before any
model was trained with it (200-subject cohorts, seeds 0-5: 0.533 ± 0.058 at 0.2, not met; 0.737 ±
0.093 at 0.3, met, for the Brainmarks protocol on the FC of the window the model reads).

Training the three seeds in parallel processes (`python bench/pipeline.py --seed N`, one per seed)
before this script, which then finds the stages ready and only evaluates, is what fits the ~90
minutes on a 2-core machine.

Run: `.venv/bin/python bench/instruct.py [--seeds 0 1 2] [--shots 0 2] [--n_resplits 12] (default: zero-shot only)`; with
`--model DIR` it scores that trained model (every flag of `fmrilm evaluate`) instead of training.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from modeling_fmrilm.cli import evaluation_parser
from modeling_fmrilm.splits import model_split
from modeling_fmrilm.tasks.embedding_probe import EMBEDDING_PROBE
from modeling_fmrilm.tasks.evaluate import evaluate, run_evaluation
from modeling_fmrilm.tasks.report import METHOD_LABELS, EvaluationReport, merge_reports
from modeling_fmrilm.tasks.scoring import LabelScorer
from modeling_fmrilm.tasks.settings import EvaluationSettings
from modeling_fmrilm.tasks.sources import build_tasks
from modeling_fmrilm.tasks.synthetic import SyntheticCohort, make_synthetic_cohort
from pipeline import WORKDIR, add_settings_options, bench_pipeline, options_settings

SCORING = ("loglik", "calibrated")
# rows by `Row.key` less the task: (method, k, paradigm, over re-splits, stream blanked)
TARGET_ROW = ("fmrilm calibrated", 0, "single", False, None)
CODES_ONLY_ROW = ("fmrilm calibrated", 0, "single", False, "connectivity")
DYNAMICS_BLANKED_ROW = ("fmrilm calibrated", 0, "single", False, "codes")
WINDOW_FC_ROW = ("window_fc", None, None, False, None)
FC_ROWS = (("brainmarks_fc", None, None, False, None), ("tangent_fc", None, None, False, None))
REFERENCE_ROWS = (
    ("fmrilm loglik", 0, "single", False, None), CODES_ONLY_ROW, DYNAMICS_BLANKED_ROW, (EMBEDDING_PROBE, None, None, False, None),
    *((method, None, None, False, None) for method in ("brainmarks_fc", "tangent_fc", "window_fc", "token_fc")),
)  # fmt: skip
"""Rows the target's criterion is also applied to (NOTE lines): the uncalibrated model; the model
with its connectivity stream blanked (what a codes-only model reads: the figures before the
connectivity tokens) and with its codes blanked; the Brainmarks probe on its Stage 1 embeddings;
the connectivity baselines on the whole scans, on the window(s) the model reads and on its decoded
tokens, which say whether the criterion can be met at the bench's size at all."""
CODES_ONLY_BEFORE = {
    "synthetic_group": "0.47 ± 0.06 (ROC AUC 0.50)",
    "descriptor_questions": "0.31 ± 0.04 (chance 0.33)",
}
"""The codes-only model's calibrated zero-shot balanced accuracy before the connectivity stream
(this bench at commit 4750e9e: 200 synthetic subjects, 6 seeds), printed
beside today's figures; the connectivity-blanked rows are its like-for-like on today's cohort."""
WINDOW_FC_GAP = 0.05
"""synthetic_group: the model within this much of the Brainmarks protocol on the FC of the window it reads."""
CHANCE_TOLERANCE = 0.05
"""synthetic_group with the connectivity stream blanked: "back at chance" is a mean within this much of chance."""


def _balanced_accuracy(row) -> dict:
    return row.summary()["balanced_accuracy"]


def _criterion(values: list[float], chance: float) -> tuple[float, float, str]:
    """Mean, std and verdict: PASS when the mean is above `chance` by more than twice the std over at least 3 values."""
    mean, std = float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return mean, std, "PASS" if mean - chance > 2 * std and len(values) >= 3 else "FAIL"


def _target_line(name: str, values: list[float], chance: float, unit: str) -> str:
    mean, std, verdict = _criterion(values, chance)
    return (
        f"TARGET {name}: balanced accuracy {mean:.3f} ± {std:.3f} ({len(values)} {unit}), chance {chance:.3f} "
        f"(target margin {mean - chance:+.3f} > 2 std {2 * std:.3f}) {verdict}"
    )


def _reference_line(name: str, key: tuple, values: list[float], chance: float) -> str:
    mean, std, verdict = _criterion(values, chance)
    method = (
        METHOD_LABELS.get(key[0], key[0])
        + (f", {key[4]} blanked" if key[4] is not None else "")
        + (f" k={key[1]} {key[2]}" if key[1] is not None else "")
    )
    met = "met" if verdict == "PASS" else "not met"
    return f"NOTE {name}, the same criterion on {method}: {mean:.3f} ± {std:.3f} (margin {mean - chance:+.3f} > 2 std {2 * std:.3f}) {met}"


def _seed_values(report: EvaluationReport, task: str, key: tuple) -> list[float]:
    rows = [r for r in report.rows if r.key == (task, *key)]
    return (
        [run["balanced_accuracy"] for run in rows[0].runs if run.get("balanced_accuracy") is not None] if rows else []
    )


def _descriptor_values(seed_reports: Sequence[EvaluationReport], key: tuple) -> tuple[list[float], float | None]:
    """Per seed, the mean balanced accuracy of `key`'s row over that seed's descriptor pairs; and chance."""
    per_seed, chance = [], None
    for seed_report in seed_reports:
        pairs = [r for r in seed_report.rows if r.task.startswith("network_pair:") and r.key[1:] == key and r.runs]
        scores = [_balanced_accuracy(r)["mean"] for r in pairs if _balanced_accuracy(r)["mean"] is not None]
        if scores:
            per_seed.append(float(np.mean(scores)))
            chance = 1.0 / pairs[0].n_classes
    return per_seed, chance


def target_lines(report: EvaluationReport, seed_reports: Sequence[EvaluationReport] = ()) -> list[str]:
    """A TARGET line per target (the model above chance by more than 2 seed std), NOTE lines with the
    same criterion on the `REFERENCE_ROWS`, and a NOTE line for every model row a connectivity
    baseline is ahead of.

    The descriptor questions are one target when `seed_reports` (one report per trained seed) are
    given, as each seed's corpus picks its own most varied pairs: per seed, the mean balanced
    accuracy over its pairs; otherwise one target per pair (the same pairs for every seed)."""
    lines = []
    targets = [
        r
        for r in report.rows
        if r.method == "majority"
        and (r.task == "synthetic_group" or (not seed_reports and r.task.startswith("network_pair:")))
    ]
    for baseline in targets:
        name, chance = f"beats_chance_{baseline.task}", 1.0 / baseline.n_classes
        rows = [r for r in report.rows if r.key == (baseline.task, *TARGET_ROW)]
        if not rows or not rows[0].runs:
            reason = (rows[0].skipped if rows else None) or "no model given, baselines only"
            lines.append(f"TARGET {name}: not run ({reason}) (target > chance {chance:.3f} + 2 std) FAIL")
            continue
        lines.append(_target_line(name, _seed_values(report, baseline.task, TARGET_ROW), chance, "seeds"))
        lines += [
            _reference_line(name, key, values, chance)
            for key in REFERENCE_ROWS
            if (values := _seed_values(report, baseline.task, key))
        ]
    if seed_reports:
        name = "beats_chance_descriptor_questions"
        per_seed, chance = _descriptor_values(seed_reports, TARGET_ROW)
        if per_seed:
            lines.append(_target_line(name, per_seed, chance, "seeds, each the mean over its pairs"))
            for key in REFERENCE_ROWS:
                values, _ = _descriptor_values(seed_reports, key)
                if values:
                    lines.append(_reference_line(name, key, values, chance))
        else:
            lines.append(f"TARGET {name}: not run (no descriptor question scored) FAIL")
    lines += stream_target_lines(report)
    lines += [
        f"NOTE {task}, the codes-only model before the connectivity stream (200 synthetic subjects, 6 seeds): {figure}"
        for task, figure in CODES_ONLY_BEFORE.items()
    ]
    for row in report.rows:
        delta = report.delta_vs_fc(row) if row.is_model and row.runs else None
        if delta is not None and delta < 0:
            lines.append(
                f"NOTE {row.task}, {row.method} k={row.shots} {row.paradigm}: a connectivity baseline is ahead by {-delta:.3f}"
            )
    return lines


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def stream_target_lines(report: EvaluationReport) -> list[str]:
    """The targets of the two fMRI streams (criteria fixed before the bench ran them, issue 24):

    - `synthetic_group_matches_window_fc`: the model's mean within `WINDOW_FC_GAP` of the Brainmarks
      protocol on the FC of the window it reads (or above it);
    - `synthetic_dynamics_beats_fc`: on the dynamics label (coupling equal between its groups), the
      model above both connectivity baselines by more than twice its seed std;
    - `synthetic_group_blanked_at_chance`: with the connectivity stream blanked, the synthetic group
      within `CHANCE_TOLERANCE` of chance, so a gain is the stream's, not the cohort size's.

    The F2T gap on the description's connectivity words is `bench/lm_quality.py`'s target
    `f2t_connectivity_words_gap`, on the same seeds' Stage 2 models.
    """
    lines = []

    def values(task: str, key: tuple) -> list[float]:
        return _seed_values(report, task, key)

    model, window = values("synthetic_group", TARGET_ROW), values("synthetic_group", WINDOW_FC_ROW)
    name = "synthetic_group_matches_window_fc"
    if model and window:
        (m, ms), (w, ws) = _mean_std(model), _mean_std(window)
        verdict = "PASS" if m - w >= -WINDOW_FC_GAP and len(model) >= 3 else "FAIL"
        lines.append(
            f"TARGET {name}: balanced accuracy {m:.3f} ± {ms:.3f} vs the window's FC (Brainmarks protocol) {w:.3f} ± {ws:.3f} "
            f"({len(model)} seeds; gap {m - w:+.3f}, target >= {-WINDOW_FC_GAP:+.3f}) {verdict}"
        )
    else:
        lines.append(f"TARGET {name}: not run (no model or no window-FC row on synthetic_group) FAIL")

    name = "synthetic_dynamics_beats_fc"
    model = values("synthetic_dynamics", TARGET_ROW)
    baselines = {key[0]: values("synthetic_dynamics", key) for key in FC_ROWS}
    if model and all(baselines.values()):
        (m, ms), best = _mean_std(model), max(float(np.mean(v)) for v in baselines.values())
        verdict = "PASS" if m - best > 2 * ms and len(model) >= 3 else "FAIL"
        figures = ", ".join(
            f"{METHOD_LABELS.get(k, k)} {np.mean(v):.3f} ± {np.std(v, ddof=1) if len(v) > 1 else 0.0:.3f}"
            for k, v in baselines.items()
        )
        lines.append(
            f"TARGET {name}: balanced accuracy {m:.3f} ± {ms:.3f} ({len(model)} seeds) vs {figures} "
            f"(target margin over the better {m - best:+.3f} > 2 std {2 * ms:.3f}) {verdict}"
        )
        lines += [
            _reference_line(name, key, v, 0.5)
            for key in (CODES_ONLY_ROW, DYNAMICS_BLANKED_ROW)
            if (v := values("synthetic_dynamics", key))
        ]
    else:
        lines.append(f"TARGET {name}: not run (no model or baseline row on synthetic_dynamics) FAIL")

    name = "synthetic_group_blanked_at_chance"
    blanked = values("synthetic_group", CODES_ONLY_ROW)
    if blanked:
        m, ms = _mean_std(blanked)
        verdict = "PASS" if abs(m - 0.5) <= CHANCE_TOLERANCE and len(blanked) >= 3 else "FAIL"
        lines.append(
            f"TARGET {name}: balanced accuracy {m:.3f} ± {ms:.3f} ({len(blanked)} seeds) with the connectivity stream blanked, "
            f"chance 0.500 (target |{m - 0.5:+.3f}| <= {CHANCE_TOLERANCE:.3f}) {verdict}"
        )
    else:
        lines.append(
            f"TARGET {name}: not run (no connectivity-blanked row: a model reading both streams is needed) FAIL"
        )
    return lines


def effect_sizes(model, processor, cohort: SyntheticCohort) -> dict[str, tuple[float, float]]:
    """`SyntheticCohort.effect_sizes` (group d, score r) in the whole scans, the window(s) the model
    reads and those windows' codes decoded by its tokenizer, over every subject of the cohort.

    No model is fitted (so the training subjects count too): the figures say how much of each
    effect a view keeps, where the table's rows, fitted on the training subjects, are noisy. They are not
    a ceiling: a classifier over all the ROI pairs (the tangent-space baseline) can beat the mean
    pair FC they are computed on."""
    windows, decoded = LabelScorer(model, processor).model_views(cohort.scans)
    views = {"whole scan": None, "window(s) the model reads": windows, "its tokens, decoded": decoded}
    sizes = {view: cohort.effect_sizes(signals) for view, signals in views.items()}
    return sizes


def seed_report(seed: int, options: argparse.Namespace) -> tuple[EvaluationReport, dict[str, tuple[float, float]]]:
    """Train (or reuse) one seed's pipeline and score it on its own test subjects: its report and `effect_sizes`."""
    from transformers import AutoModelForCausalLM, AutoProcessor

    settings = options_settings(options, seed)
    start = time.perf_counter()
    folders = bench_pipeline(settings, workdir=Path(options.workdir))
    print(
        f"seed {seed}: corpus, Stage 1, 2, 3 ready in {time.perf_counter() - start:.0f} s ({folders['stage3']})",
        flush=True,
    )
    tasks = build_tasks(
        replace(settings.task_sources(folders["corpus"]), max_pairs=options.max_pairs), options.workdir
    )
    model = AutoModelForCausalLM.from_pretrained(folders["stage3"]).eval()
    processor = AutoProcessor.from_pretrained(folders["stage3"])
    resplits = -(-options.n_resplits // len(options.seeds))  # the baselines' re-splits, shared out over the seeds
    evaluation = EvaluationSettings(
        seeds=(seed,),
        shots=tuple(options.shots),
        scoring=SCORING,
        n_resplits=resplits,
        blank_streams=True,
        embedding_probe=True,
    )
    start = time.perf_counter()
    report = evaluate(tasks, model, processor, evaluation, model_split(folders["stage3"]), progress=False)
    print(f"seed {seed}: evaluated in {time.perf_counter() - start:.0f} s", flush=True)
    scores = ", ".join(
        f"{row.task} {row.summary()['balanced_accuracy']['mean']:.3f}"
        for row in report.rows
        if row.runs and row.key[1:] == TARGET_ROW and row.kind != "regression"
    )
    print(f"seed {seed}: zero-shot balanced accuracy on its test subjects: {scores}", flush=True)
    cohort = make_synthetic_cohort(settings.synthetic())
    sizes = effect_sizes(model, processor, cohort)
    print(
        f"seed {seed}: the synthetic effects over all {len(cohort.scans)} subjects, by what is read: "
        + "; ".join(f"{view}: group d {d:+.3f}, score r {r:+.3f}" for view, (d, r) in sizes.items()),
        flush=True,
    )
    return report, sizes


def trained_report(
    options: argparse.Namespace,
) -> tuple[EvaluationReport, list[EvaluationReport], list[dict[str, tuple[float, float]]]]:
    """`seed_report` for every seed, in `options.processes` processes: the merged report, the seeds'
    own reports, and each seed's `effect_sizes`."""
    if options.processes > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(options.processes, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(seed_report, options.seeds, [options] * len(options.seeds)))
    else:
        results = [seed_report(seed, options) for seed in options.seeds]
    reports = [report for report, _ in results]
    return merge_reports(reports), reports, [sizes for _, sizes in results]


def effect_lines(sizes: Sequence[dict[str, tuple[float, float]]]) -> list[str]:
    """A FIGURE line per view: the group d and the score r, mean ± std over the seeds."""
    lines = []
    for view in sizes[0]:
        d, r = (np.array([seed[view][i] for seed in sizes]) for i in (0, 1))
        lines.append(
            f"FIGURE synthetic_effect, {view}: group d {d.mean():+.3f} ± {d.std(ddof=1):.3f}, score r {r.mean():+.3f} ± {r.std(ddof=1):.3f}"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> EvaluationReport:
    parser = argparse.ArgumentParser(prog="bench/instruct.py", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="one trained pipeline per seed")
    parser.add_argument(
        "--shots",
        nargs="+",
        type=int,
        default=[0],
        help="in-context examples per prompt (the targets are zero-shot; 2 triples the prompts)",
    )
    parser.add_argument(
        "--n_resplits",
        type=int,
        default=12,
        help="baseline re-splits in all (shared out over the seeds; their rows judge no target). Each took ~2 min "
        "per seed on a 2-core machine with the seeds training beside it (the Brainmarks protocol's "
        "LogisticRegressionCV, 70%%; tangent space, 25%%), so 100 took most of the bench's time",
    )
    parser.add_argument("--max_pairs", type=int, default=3)
    add_settings_options(parser)
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="seeds trained and evaluated at once, one process each (one thread each is fastest on a 2-core machine)",
    )
    parser.add_argument(
        "--workdir", default=str(WORKDIR), help="each seed's corpus and stages (reused when their settings match)"
    )
    parser.add_argument("--output_dir", default="outputs/bench_instruct")
    parser.add_argument(
        "--model", default=None, help="score this trained model with `fmrilm evaluate`'s flags instead of training"
    )
    options, rest = parser.parse_known_args(argv)
    if len(options.seeds) < 3:
        parser.error(f"--seeds: the bench reports mean ± std over at least 3 seeds, found {options.seeds}")
    start = time.perf_counter()
    seed_reports: list[EvaluationReport] = []
    sizes: list[dict[str, tuple[float, float]]] = []
    if options.model is not None:
        shared = [
            "--model",
            options.model,
            "--output_dir",
            options.output_dir,
            "--n_resplits",
            str(options.n_resplits),
            "--max_pairs",
            str(options.max_pairs),
            "--blank_streams",
            "--embedding_probe",
        ]
        sources, arguments = evaluation_parser().parse_args_into_dataclasses(
            [
                *shared,
                "--seeds",
                *map(str, options.seeds),
                "--shots",
                *map(str, options.shots),
                "--scoring",
                *SCORING,
                *rest,
            ]
        )
        report, _, _ = run_evaluation(sources, arguments)
        print(report.to_markdown())
    else:
        if rest:
            parser.error(f"unrecognised arguments: {' '.join(rest)}")
        report, seed_reports, sizes = trained_report(options)
        report.save(options.output_dir)
        print(report.to_markdown())
    print(f"bench finished in {time.perf_counter() - start:.0f} s")
    for line in effect_lines(sizes) if sizes else []:
        print(line)
    for line in target_lines(report, seed_reports):
        print(line)
    return report


if __name__ == "__main__":
    main()
