"""Stage 2 quality over seeds (used by `bench/lm.py`; runnable alone).

**Embedded data** (the 12 scans): one descriptor corpus and one small Stage 1 tokenizer (the demo's,
on the corpus's subject split), then a small Stage 2 run per seed. On the TEST subjects (never seen
by either stage):

- **F2F**: next-window code accuracy (the model's argmax for each code of window t+1 given window t
  and the codes of window t+1 before it, as Trainer's `f2f_accuracy`) against two baselines that
  see window t only: copy the current window's code of each ROI, and the most frequent code of
  each ROI in the training windows;
- **F2T**: the description loss gap (below), reported: 3 test subjects after 6 training subjects
  cannot carry a target (the model fingerprints its 6 training subjects, whose descriptions it
  nearly learns by heart, and the per-subject gaps of 3 subjects are too few to tell from noise).

**Bench cohort** (`bench/pipeline.py` through Stage 2: the embedded scans plus 200 synthetic
subjects drawn on their FC structure, each with its own temporal autocorrelation; other subjects
and another split per seed, 35-51 test subjects): the **F2T** target. For each test subject, the
loss of its description given its own window's tokens is compared with the same description given
the tokens of other test subjects (every other one, or `max_others` drawn at random): the gap
`loss(other's tokens) - loss(own tokens)`, averaged per subject. A model that ignores the fMRI
tokens has no gap; one that reads them has a positive one. Target: the mean gap is positive on
every seed, and over the seeds' test subjects together it is more than two standard errors above
zero (a one-sample t over subjects > 2).

Run: `.venv/bin/python bench/lm_quality.py [--seeds 0 1 2] [--stage2_epochs 8]`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from modeling_fmrilm.descriptors.corpus import demo_corpus
from modeling_fmrilm.descriptors.text import OPENINGS
from modeling_fmrilm.io import load_embedded
from modeling_fmrilm.pipeline import PipelineSettings, run_stage1
from modeling_fmrilm.training.objectives import IGNORE_INDEX, WindowConnectivity
from modeling_fmrilm.training.stage2 import (
    ExampleBuilder,
    Stage2Arguments,
    Stage2TrainingArguments,
    encode_windows,
    train_stage2,
)

MIN_POOLED_T = 2.0
MIN_CONNECTIVITY_T = 3.0  # issue 24: the connectivity section's gap, t over the pooled test subjects


@torch.no_grad()
def target_token_losses(
    model: torch.nn.Module, example: dict, connectivity: WindowConnectivity | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The loss of each labelled token of `example`, and whether the model's argmax was right; the
    connectivity rows of its `fmri_windows` come from `connectivity` (the codes table)."""
    ids = torch.tensor([example["input_ids"]])
    labels = torch.tensor(example["labels"][1:])
    rows = (
        {"fmri_connectivity": torch.as_tensor(connectivity[example["fmri_windows"]])}
        if connectivity is not None and example["fmri_windows"]
        else {}
    )
    logits = model(input_ids=ids, **rows).logits[0, :-1].float()
    mask = labels != IGNORE_INDEX
    losses = F.cross_entropy(logits[mask], labels[mask], reduction="none")
    return losses.numpy(), (logits[mask].argmax(-1) == labels[mask]).numpy()


def target_losses_and_hits(
    model: torch.nn.Module, examples: list[dict], connectivity: WindowConnectivity | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per example: mean loss over its labelled tokens, and the fraction of them predicted right (argmax)."""
    results = [target_token_losses(model, example, connectivity) for example in examples]
    return np.array([losses.mean() for losses, _ in results]), np.array([hits.mean() for _, hits in results])


def connectivity_span(description: str) -> tuple[int, int]:
    """Where the description's connectivity section is (its opening, the network-pair bands and their
    z values), as characters `[start, end)`: from the connectivity opening to the next section's."""
    starts = [description.find(opening) for opening in OPENINGS["connectivity"] if opening in description]
    if not starts:
        raise ValueError(
            f"expected a connectivity section ({OPENINGS['connectivity']}) in the description, found {description[:80]!r}"
        )
    start = min(starts)
    later = [
        i
        for section, openings in OPENINGS.items()
        if section != "connectivity"
        for opening in openings
        if (i := description.find(opening, start)) > start
    ]
    return start, min(later, default=len(description))


def connectivity_tokens(tokenizer: Any, description: str) -> np.ndarray:
    """Which of an F2T example's labelled tokens (`ExampleBuilder.f2t`: the description, then the
    end-of-text token) overlap the description's connectivity section."""
    text = " " + description.strip()  # as `ExampleBuilder.f2t` tokenizes it
    start, end = connectivity_span(text)
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return np.array(
        [first < end and last > start for first, last in offsets] + [False]
    )  # tokens overlapping it (a token may carry the space before)


def f2t_subject_gaps(
    model: torch.nn.Module,
    builder: ExampleBuilder,
    codes: Any,
    texts: dict[str, str],
    max_others: int | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Per test subject (sorted keys): the mean over its windows and the other subjects compared of
    loss(its description | the other subject's tokens) - loss(its description | its own tokens),
    over the whole description (`"all"`) and over its connectivity section's tokens only
    (`"connectivity"`: the network-pair bands and z values, which the connectivity stream carries),
    both from the same forward pass.

    `codes` is the codes table of the test windows (`subject_key`, `text_key`, `codes`, and
    `connectivity` for a model reading that stream); the other subject's window is its window at the
    same position (cycled), codes and connectivity rows both. Every other subject is compared, or
    `max_others` of them drawn at random (seeded)."""
    rng = np.random.default_rng(seed)
    connectivity = WindowConnectivity(codes) if "connectivity" in codes.column_names else None
    keys, text_keys, window_codes = codes["subject_key"], codes["text_key"], codes["codes"]
    windows: dict[str, list[int]] = {}
    for index, subject in enumerate(keys):
        windows.setdefault(subject, []).append(index)
    subjects = sorted(windows)
    gaps: dict[str, list[float]] = {"all": [], "connectivity": []}
    for subject in subjects:
        others = [other for other in subjects if other != subject]
        if max_others is not None and len(others) > max_others:
            others = list(rng.choice(others, max_others, replace=False))
        differences: dict[str, list[float]] = {"all": [], "connectivity": []}
        for position, index in enumerate(windows[subject]):
            key = text_keys[index]
            section = connectivity_tokens(builder.tokenizer, texts[key])
            own, _ = target_token_losses(
                model, builder.f2t(window_codes[index], texts[key], key, window=index), connectivity
            )
            for other in others:
                row = windows[other][position % len(windows[other])]
                swapped, _ = target_token_losses(
                    model, builder.f2t(window_codes[row], texts[key], key, window=row), connectivity
                )
                differences["all"].append(float(swapped.mean() - own.mean()))
                differences["connectivity"].append(float(swapped[section].mean() - own[section].mean()))
        for view, values in differences.items():
            gaps[view].append(float(np.mean(values)))
    return {view: np.array(values) for view, values in gaps.items()}


def run_seed(seed: int, folder: Path, corpus: Path, stage1: Path, scans: list, epochs: int) -> dict[str, float]:
    """One Stage 2 run on the embedded data: F2F against its baselines and the F2T gaps, on the test subjects."""
    args = Stage2Arguments(fmri_tokenizer=str(stage1), corpus=str(corpus))
    training_args = Stage2TrainingArguments(
        output_dir=str(folder / f"stage2-seed{seed}"), seed=seed, num_train_epochs=epochs, save_strategy="no",
        disable_tqdm=True, log_level="warning", report_to="none",
    )  # fmt: skip
    result = train_stage2(args, training_args, scans, console_logs=False)
    model, processor, split = result.model.eval(), result.processor, result.data.split
    extractor = processor.feature_extractor
    extractor.window_stride = extractor.window_length
    test = split.subjects("test")
    fisher_z = model.config.connectivity_fisher_z if model.config.reads_connectivity else None
    train_codes = encode_windows(model.fmri_tokenizer, extractor, scans, split.subjects("train"), folder / "cache")
    test_table = encode_windows(
        model.fmri_tokenizer, extractor, scans, test, folder / "cache", connectivity_fisher_z=fisher_z
    )
    test_codes = test_table.select_columns(["text_key", "window_start", "codes"]).to_dict()
    builder = ExampleBuilder(model.config, processor.tokenizer, args.description_prompt, args.max_t2t_length)

    # F2F on consecutive test windows, against the two baselines
    by_start = {
        (k, s): i for i, (k, s) in enumerate(zip(test_codes["text_key"], test_codes["window_start"], strict=True))
    }
    pairs = [
        (i, by_start[(k, s + extractor.window_length)])
        for i, (k, s) in enumerate(zip(test_codes["text_key"], test_codes["window_start"], strict=True))
        if (k, s + extractor.window_length) in by_start
    ]
    codes = np.array(test_codes["codes"])
    f2f = [builder.f2f(codes[i], codes[j], "test", windows=(i, j)) for i, j in pairs]
    _, model_hits = target_losses_and_hits(
        model, f2f, WindowConnectivity(test_table) if fisher_z is not None else None
    )
    copy = np.mean([(codes[i] == codes[j]).mean() for i, j in pairs])
    train_matrix = np.array(train_codes["codes"])
    frequent = np.array([np.bincount(column, minlength=model.config.num_codes).argmax() for column in train_matrix.T])
    majority = np.mean([(codes[j] == frequent).mean() for _, j in pairs])
    gaps = f2t_subject_gaps(model, builder, test_table, result.data.texts)
    return {
        "seed": seed,
        "f2f_model": float(model_hits.mean()),
        "f2f_copy": float(copy),
        "f2f_frequent": float(majority),
        "f2t_gaps": gaps["all"].tolist(),
        "f2t_connectivity_gaps": gaps["connectivity"].tolist(),
        "test_subjects": len(test),
        "pairs": len(pairs),
    }


def cohort_seed(seed: int, max_others: int) -> dict[str, float]:
    """The F2T gaps of the bench cohort's Stage 2 model of `seed` (trained, or reused, by `bench/pipeline.py`)."""
    from modeling_fmrilm import FmriLMForCausalLM, FmriProcessor
    from modeling_fmrilm.training.text_inputs import load_texts
    from pipeline import bench_pipeline, bench_settings

    settings = bench_settings(seed)
    folders = bench_pipeline(settings, through="stage2")
    model = FmriLMForCausalLM.from_pretrained(folders["stage2"]).eval()
    processor = FmriProcessor.from_pretrained(folders["stage2"])
    split = json.loads((folders["corpus"] / "splits.json").read_text())["subjects"]
    test = sorted(key for key, name in split.items() if name == "test")
    extractor = processor.feature_extractor
    extractor.window_stride = extractor.window_length
    fisher_z = model.config.connectivity_fisher_z if model.config.reads_connectivity else None
    codes = encode_windows(
        model.fmri_tokenizer,
        extractor,
        settings.scans(),
        test,
        folders["stage2"].parent / "cache",
        connectivity_fisher_z=fisher_z,
    )
    args = Stage2Arguments()
    builder = ExampleBuilder(model.config, processor.tokenizer, args.description_prompt, args.max_t2t_length)
    gaps = f2t_subject_gaps(model, builder, codes, load_texts(folders["corpus"], args.text_column), max_others, seed)
    return {
        "seed": seed,
        "f2t_gaps": gaps["all"].tolist(),
        "f2t_connectivity_gaps": gaps["connectivity"].tolist(),
        "test_subjects": len(test),
    }


def gap_summary(gaps: list[float]) -> str:
    values = np.asarray(gaps)
    sem = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return f"{values.mean():+.4f} ± {sem:.4f} (SEM over {len(values)} test subjects, {np.mean(values > 0):.0%} of them positive)"


def stage2_quality(
    seeds: list[int], stage1_epochs: int, stage2_epochs: int, max_others: int = 8, embedded: bool = True
) -> tuple[list[dict], list[dict]]:
    """The embedded-data runs (unless `embedded` is false) and the bench cohort's, one row per seed each."""
    scans = load_embedded()
    rows = []
    seeds_embedded = seeds if embedded else []
    with tempfile.TemporaryDirectory(prefix="bench-lm-") as name:
        folder = Path(name)
        if seeds_embedded:
            demo_corpus(scans, folder / "corpus")
            stage1 = run_stage1(
                PipelineSettings(stage1_epochs=stage1_epochs), scans, folder / "corpus", folder / "stage1_tokenizer"
            ).final_dir
        for seed in seeds_embedded:
            rows.append(run_seed(seed, folder, folder / "corpus", stage1, scans, stage2_epochs))
            row = rows[-1]
            print(
                f"embedded, seed {seed}: F2F next-window code accuracy {row['f2f_model']:.3f} vs copy {row['f2f_copy']:.3f}, most frequent "
                f"{row['f2f_frequent']:.3f} ({row['pairs']} window pairs of {row['test_subjects']} test subjects); F2T description "
                f"loss gap, another subject's tokens minus its own: {gap_summary(row['f2t_gaps'])}",
                flush=True,
            )
    cohort = []
    for seed in seeds:
        cohort.append(cohort_seed(seed, max_others))
        print(
            f"bench cohort, seed {seed}: F2T description loss gap, another subject's tokens minus its own: {gap_summary(cohort[-1]['f2t_gaps'])}; "
            f"on the connectivity section's tokens: {gap_summary(cohort[-1]['f2t_connectivity_gaps'])}",
            flush=True,
        )
    return rows, cohort


def print_targets(rows: list[dict], cohort: list[dict]) -> None:
    def mean_std(key: str) -> str:
        values = np.array([row[key] for row in rows])
        return f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.3f}"

    if not rows:
        print("TARGET f2f_accuracy: not run (--cohort_only) FAIL")
    else:
        print_embedded_targets(rows, mean_std)
    print(gap_target("f2t_reads_the_scan", "description loss", cohort, "f2t_gaps", MIN_POOLED_T))
    print(
        gap_target(
            "f2t_connectivity_words_gap",
            "loss of the description's connectivity section",
            cohort,
            "f2t_connectivity_gaps",
            MIN_CONNECTIVITY_T,
        )
    )


def print_embedded_targets(rows: list[dict], mean_std: Any) -> None:
    f2f_ok = all(row["f2f_model"] > max(row["f2f_copy"], row["f2f_frequent"]) for row in rows)
    print(
        f"TARGET f2f_accuracy: model {mean_std('f2f_model')} vs copy {mean_std('f2f_copy')}, most frequent "
        f"{mean_std('f2f_frequent')} over {len(rows)} seeds (above both on every seed) {'PASS' if f2f_ok else 'FAIL'}"
    )
    embedded = ", ".join(f"{np.mean(row['f2t_gaps']):+.4f}" for row in rows)
    print(
        f"FIGURE f2t_gap_embedded: mean gap per seed {embedded} nats per description token (3 test subjects: reported, no target)"
    )


def gap_target(name: str, what: str, cohort: list[dict], key: str, min_t: float) -> str:
    """The TARGET line of a bench-cohort F2T gap: positive on every seed, pooled t over subjects above `min_t`."""
    means = [float(np.mean(row[key])) for row in cohort]
    pooled = np.concatenate([row[key] for row in cohort])
    t = pooled.mean() / (pooled.std(ddof=1) / np.sqrt(len(pooled)))
    ok = all(mean > 0 for mean in means) and t > min_t
    return (
        f"TARGET {name}: bench cohort {what}, another subject's tokens minus its own, per seed "
        f"{', '.join(f'{mean:+.4f}' for mean in means)} nats per token; over the {len(pooled)} test subjects of {len(cohort)} seeds "
        f"{pooled.mean():+.4f}, t = {t:.1f} (target > 0 on every seed and t > {min_t:.0f}) {'PASS' if ok else 'FAIL'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--stage1_epochs", type=int, default=25)
    parser.add_argument("--stage2_epochs", type=int, default=8)
    parser.add_argument(
        "--max_others", type=int, default=8, help="other test subjects each bench-cohort subject is compared with"
    )
    parser.add_argument(
        "--cohort_only",
        action="store_true",
        help="only the bench cohort's F2T gaps (its Stage 2 models, trained or reused by bench/pipeline.py)",
    )
    options = parser.parse_args()
    print_targets(
        *stage2_quality(
            options.seeds,
            options.stage1_epochs,
            options.stage2_epochs,
            options.max_others,
            embedded=not options.cohort_only,
        )
    )


if __name__ == "__main__":
    main()
