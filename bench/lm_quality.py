"""Stage 2 quality on the embedded data, over seeds (used by `bench/lm.py`; runnable alone).

One descriptor corpus and one small Stage 1 tokenizer (the demo's, on the corpus's subject split),
then a small Stage 2 run per seed. On the TEST subjects of the split (never seen by either stage):

- **F2F**: next-window code accuracy (the model's argmax for each code of window t+1 given window t
  and the codes of window t+1 before it, as Trainer's `f2f_accuracy`) against two baselines that
  see window t only: copy the current window's code of each ROI, and the most frequent code of
  each ROI in the training windows;
- **F2T**: mean loss of each scan's description given its own fMRI tokens against the same
  description given another test subject's tokens: a model that reads the scan has a gap.

Run: `.venv/bin/python bench/lm_quality.py [--seeds 0 1 2] [--stage2_epochs 8]`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from modeling_fmrilm.descriptors.corpus import demo_corpus
from modeling_fmrilm.io import load_embedded
from modeling_fmrilm.training.objectives import IGNORE_INDEX
from modeling_fmrilm.training.stage1 import demo_stage1
from modeling_fmrilm.training.stage2 import ExampleBuilder, Stage2Arguments, Stage2TrainingArguments, encode_windows, train_stage2

MIN_F2T_GAP = 0.01


@torch.no_grad()
def target_losses_and_hits(model: torch.nn.Module, examples: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Per example: mean loss over its labelled tokens, and the fraction of them predicted right (argmax)."""
    losses, hits = [], []
    for example in examples:
        ids = torch.tensor([example["input_ids"]])
        labels = torch.tensor(example["labels"][1:])
        logits = model(input_ids=ids).logits[0, :-1].float()
        mask = labels != IGNORE_INDEX
        losses.append(float(F.cross_entropy(logits[mask], labels[mask])))
        hits.append(float((logits[mask].argmax(-1) == labels[mask]).float().mean()))
    return np.array(losses), np.array(hits)


def run_seed(seed: int, folder: Path, corpus: Path, stage1: Path, scans: list, epochs: int) -> dict[str, float]:
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
    train_codes = encode_windows(model.fmri_tokenizer, extractor, scans, split.subjects("train"), folder / "cache")
    test_codes = encode_windows(model.fmri_tokenizer, extractor, scans, test, folder / "cache").to_dict()
    builder = ExampleBuilder(model.config, processor.tokenizer, args.description_prompt, args.max_t2t_length)

    # F2F on consecutive test windows, against the two baselines
    by_start = {(k, s): i for i, (k, s) in enumerate(zip(test_codes["text_key"], test_codes["window_start"]))}
    pairs = [(i, by_start[(k, s + extractor.window_length)]) for i, (k, s) in enumerate(zip(test_codes["text_key"], test_codes["window_start"])) if (k, s + extractor.window_length) in by_start]
    codes = np.array(test_codes["codes"])
    f2f = [builder.f2f(codes[i], codes[j], "test") for i, j in pairs]
    _, model_hits = target_losses_and_hits(model, f2f)
    copy = np.mean([(codes[i] == codes[j]).mean() for i, j in pairs])
    train_matrix = np.array(train_codes["codes"])
    frequent = np.array([np.bincount(column, minlength=model.config.num_codes).argmax() for column in train_matrix.T])
    majority = np.mean([(codes[j] == frequent).mean() for _, j in pairs])

    # F2T: own tokens against another test subject's tokens
    texts = result.data.texts
    subjects = test_codes["subject_key"]
    own, other = [], []
    for i, key in enumerate(test_codes["text_key"]):
        j = next((i + m) % len(subjects) for m in range(1, len(subjects)) if subjects[(i + m) % len(subjects)] != subjects[i])
        own.append(builder.f2t(codes[i], texts[key], key))
        other.append(builder.f2t(codes[j], texts[key], key))
    own_loss, _ = target_losses_and_hits(model, own)
    other_loss, _ = target_losses_and_hits(model, other)
    return {
        "seed": seed,
        "f2f_model": float(model_hits.mean()),
        "f2f_copy": float(copy),
        "f2f_frequent": float(majority),
        "f2t_own": float(own_loss.mean()),
        "f2t_other": float(other_loss.mean()),
        "test_subjects": len(test),
        "pairs": len(pairs),
    }


def stage2_quality(seeds: list[int], stage1_epochs: int, stage2_epochs: int) -> list[dict[str, float]]:
    scans = load_embedded()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-lm-") as name:
        folder = Path(name)
        demo_corpus(scans, folder / "corpus")
        stage1 = demo_stage1(folder, folder / "corpus", num_epochs=stage1_epochs).final_dir
        for seed in seeds:
            rows.append(run_seed(seed, folder, folder / "corpus", stage1, scans, stage2_epochs))
            row = rows[-1]
            print(
                f"seed {seed}: F2F next-window code accuracy {row['f2f_model']:.3f} vs copy {row['f2f_copy']:.3f}, most frequent "
                f"{row['f2f_frequent']:.3f} ({row['pairs']} window pairs of {row['test_subjects']} test subjects); F2T description "
                f"loss own tokens {row['f2t_own']:.3f} vs another subject's {row['f2t_other']:.3f}",
                flush=True,
            )
    return rows


def print_targets(rows: list[dict[str, float]]) -> None:
    def mean_std(key: str) -> str:
        values = np.array([row[key] for row in rows])
        return f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.3f}"

    f2f_ok = all(row["f2f_model"] > max(row["f2f_copy"], row["f2f_frequent"]) for row in rows)
    # a gap that the model's floating point could produce by itself is no gap: 0.01 nats at least
    f2t_ok = all(row["f2t_other"] - row["f2t_own"] > MIN_F2T_GAP for row in rows)
    print(
        f"TARGET f2f_accuracy: model {mean_std('f2f_model')} vs copy {mean_std('f2f_copy')}, most frequent "
        f"{mean_std('f2f_frequent')} over {len(rows)} seeds (above both on every seed) {'PASS' if f2f_ok else 'FAIL'}"
    )
    print(
        f"TARGET f2t_reads_the_scan: description loss own tokens {mean_std('f2t_own')} vs another subject's "
        f"{mean_std('f2t_other')} (lower with its own by > {MIN_F2T_GAP} nats on every seed) {'PASS' if f2t_ok else 'FAIL'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--stage1_epochs", type=int, default=25)
    parser.add_argument("--stage2_epochs", type=int, default=8)
    options = parser.parse_args()
    print_targets(stage2_quality(options.seeds, options.stage1_epochs, options.stage2_epochs))


if __name__ == "__main__":
    main()
