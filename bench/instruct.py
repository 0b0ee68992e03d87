"""Stage 3 quality: the fMRI-language model against chance and the connectivity baselines, on test subjects.

The evaluation harness (this file's part; the Stage 1 -> 2 -> 3 training goes in front): given a
model folder (an `FmriLMForCausalLM` saved with its processor), or none for the baselines alone,
it runs the offline tasks with `modeling_fmrilm.tasks.evaluate`:

- the synthetic cohort (200 subjects on the embedded data's FC structure, a group effect on
  Frontal-Parietal coupling and a score tied to Occipital-Temporal coupling): `synthetic_group`,
  `synthetic_score`;
- the embedded scans: their cohort (HCP or gw) and descriptor questions (is a network pair's
  coupling lower, typical or higher than the cohort's, from the descriptor corpus's z-scores; the
  `--max_pairs` pairs whose answers are most evenly spread);

over >= 3 seeds, zero- and k-shot, beside the majority, Brainmarks-FC and tangent-FC baselines on
the same splits (and over `--n_resplits` random re-splits), and prints the table. A model trained
on the pipeline's subject split is scored on that split's test subjects (its
`training_record.json`), never on the subjects it was trained or validated on.

Targets (balanced accuracy of the zero-shot, single-question, log-likelihood row, fixed in
advance): the model beats chance on the synthetic group label and on every descriptor question by
more than twice its seed std. Where a connectivity baseline is ahead of a model row, a NOTE line
says by how much. Ends with one TARGET line per target and exits 0 either way.

Run: `.venv/bin/python bench/instruct.py [--model DIR] [--output_dir DIR] [--seeds 0 1 2] [--n_resplits 100]`
(every flag of `fmrilm evaluate`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from modeling_fmrilm.tasks.evaluate import EvaluationReport, build_parser, run_evaluation

TARGET_ROW = ("fmrilm loglik", 0, "single")


def target_lines(report: EvaluationReport) -> list[str]:
    """A TARGET line per target task (model above chance by more than 2 seed std) and a NOTE line
    for every model row a connectivity baseline is ahead of."""
    lines = []
    targets = [r for r in report.rows if r.method == "majority" and (r.task == "synthetic_group" or r.task.startswith("network_pair:"))]
    for baseline in targets:
        name, chance = f"beats_chance_{baseline.task}", 1.0 / baseline.n_classes
        rows = [r for r in report.rows if r.key == (baseline.task, *TARGET_ROW)]
        if not rows or rows[0].skipped:
            reason = rows[0].skipped if rows else "no model given, baselines only"
            lines.append(f"TARGET {name}: not run ({reason}) (target > chance {chance:.3f} + 2 std) FAIL")
            continue
        summary = rows[0].summary()["balanced_accuracy"]
        margin, spread = summary["mean"] - chance, 2 * (summary["std"] or 0.0)
        verdict = "PASS" if margin > spread and summary["n"] >= 3 else "FAIL"
        lines.append(
            f"TARGET {name}: balanced accuracy {summary['mean']:.3f} ± {summary['std'] or 0.0:.3f} ({summary['n']} seeds), "
            f"chance {chance:.3f} (target margin {margin:+.3f} > 2 std {spread:.3f}) {verdict}"
        )
    for row in report.rows:
        delta = report.delta_vs_fc(row) if row.is_model and not row.skipped else None
        if delta is not None and delta < 0:
            lines.append(f"NOTE {row.task}, {row.method} k={row.shots} {row.paradigm}: a connectivity baseline is ahead by {-delta:.3f}")
    return lines


def main(argv: Sequence[str] | None = None) -> EvaluationReport:
    parser = build_parser()
    parser.prog, parser.description = "bench/instruct.py", __doc__.splitlines()[0]
    parser.set_defaults(output_dir="outputs/bench_instruct")
    args = parser.parse_args(argv)
    if len(args.seeds) < 3:
        parser.error(f"--seeds: the bench reports mean ± std over at least 3 seeds, found {args.seeds}")
    start = time.perf_counter()
    report = run_evaluation(args)
    print(f"harness finished in {time.perf_counter() - start:.0f} s")
    for line in target_lines(report):
        print(line)
    return report


if __name__ == "__main__":
    main()
