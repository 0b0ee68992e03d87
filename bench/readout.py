"""Can a transformer trained from scratch read the synthetic group from tokens, with the bench's number of subjects?

`bench/instruct.py` finds its model at chance on the synthetic group while connectivity (FC)
baselines on the same subjects are well above it. This script asks where that comes from, with no
language model in the way. Per seed it draws two fresh synthetic cohorts (training subjects on seed
`200 + s`, 600 test subjects on seed `300 + s`; no stage was trained on either) and reads the group
label from the first 64-frame window of each scan, the window the model reads. Five readers are
fitted on the training subjects:

- `brainmarks_fc`: the Brainmarks protocol (`modeling_fmrilm.tasks.baselines`) on the window's FC;
- `pair_logistic`: the same protocol on the window's network-pair couplings (`network_pair_fc`,
  45 pairs of the AAL2 systems), one of which carries the effect;
- `pair_tokens`: a small Qwen3 classifier trained from scratch with `Trainer` on those same
  couplings as tokens (one token per pair, its coupling binned at the training subjects' quantiles
  into 16 bins, ids specific to the pair), so the label is a first-order function of one token;
- `code_tokens`: the same classifier on the window's Stage 1 codes (the seed's bench tokenizer from
  `bench/pipeline.py`, trained if it is not cached), 94 ROIs x 4 patches;
- `decoded_fc`: the Brainmarks protocol on the FC of those codes, decoded.

At three settings: the bench's (group effect 0.3, 160 training subjects: the size of a bench
seed's training split), ten times more subjects, and a strong effect. The classifier's recipe is
fixed in advance (8 epochs, lr 1e-3, batch 32, last epoch scored); nothing is chosen on the test
subjects. The figures are balanced accuracy and ROC AUC over the test subjects, mean ± std over
seeds. This script has no target of its own: it explains `bench/instruct.py`'s.

Run: `.venv/bin/python bench/readout.py [--seeds 0 1 2]`.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from transformers import AutoFeatureExtractor, Qwen3Config, Qwen3ForSequenceClassification, Trainer, TrainingArguments

from modeling_fmrilm.descriptors.connectivity import correlation, network_pair_fc
from modeling_fmrilm.io import FmriScan, aal2_table
from modeling_fmrilm.modeling_fmri_tokenizer import FmriTokenizerModel
from modeling_fmrilm.tasks.baselines import fit_predict, pearson_fc_features
from modeling_fmrilm.tasks.synthetic import SyntheticSettings, make_synthetic_cohort
from pipeline import bench_pipeline, bench_settings

SETTINGS = ((0.3, 160), (0.3, 2000), (1.0, 2000))  # (group effect, training subjects)
N_TEST = 600
N_BINS = 16
READERS = ("brainmarks_fc", "pair_logistic", "pair_tokens", "code_tokens", "decoded_fc")


@dataclass
class Windows:
    """One cohort's first windows, their codes and decoded codes, and group labels."""

    raw: np.ndarray  # (n, n_rois, window_length)
    codes: torch.LongTensor  # (n, n_tokens)
    decoded: np.ndarray  # (n, n_rois, window_length)
    group: np.ndarray  # (n,)


def draw(n_subjects: int, effect: float, seed: int, tokenizer: FmriTokenizerModel, feature_extractor) -> Windows:
    cohort = make_synthetic_cohort(
        SyntheticSettings(
            n_subjects=n_subjects, n_timepoints=feature_extractor.window_length, group_effect=effect, seed=seed
        )
    )
    raw = torch.as_tensor(feature_extractor(cohort.scans, return_tensors="np")["fmri_values"])
    with torch.no_grad():
        codes = torch.cat([tokenizer.encode(chunk) for chunk in raw.split(256)])
        decoded = torch.cat([tokenizer.decode(chunk) for chunk in codes.split(256)])
    return Windows(raw.numpy(), codes, decoded.numpy(), np.asarray(cohort.group))


def brainmarks(train_features: np.ndarray, test_features: np.ndarray, y_train: np.ndarray, seed: int) -> np.ndarray:
    """P(patient) of the Brainmarks protocol fitted on `train_features`."""

    class Features:  # the protocol's `SplitFeatures`, over given arrays
        test = test_features

        def __call__(self, name: str) -> tuple[np.ndarray, np.ndarray]:
            return train_features, test_features

    return fit_predict("brainmarks_fc", "classification", 2, y_train, Features(), seed).probabilities[:, 1]


def fc_features(windows: np.ndarray) -> np.ndarray:
    """The Brainmarks protocol's FC features (`pearson_fc_features`) of `(n, n_rois, window_length)` windows."""
    return pearson_fc_features([FmriScan(data=w, tr=2.0, subject=str(i)) for i, w in enumerate(windows)])


def pair_couplings(windows: np.ndarray) -> np.ndarray:
    """`(n, n_pairs)` mean FC between and within the AAL2 systems (pairs undefined for this atlas dropped)."""
    values = network_pair_fc(correlation(windows.astype(np.float64)), list(aal2_table().systems))
    return values[:, ~np.isnan(values).any(axis=0)]


class TokenDataset(torch.utils.data.Dataset):
    def __init__(self, ids: torch.LongTensor, labels: np.ndarray) -> None:
        self.ids, self.labels = ids, torch.as_tensor(labels).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def transformer(
    train_ids: torch.LongTensor,
    test_ids: torch.LongTensor,
    y_train: np.ndarray,
    vocab_size: int,
    seed: int,
    workdir: str,
) -> np.ndarray:
    """P(patient) of a small Qwen3 classifier trained from scratch on token ids (a last token, id `vocab_size`, is appended to read from)."""
    torch.manual_seed(seed)
    read = torch.full((1, 1), vocab_size)
    train_ids, test_ids = (torch.cat([ids, read.expand(len(ids), 1)], dim=1) for ids in (train_ids, test_ids))
    config = Qwen3Config(
        vocab_size=vocab_size + 2, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        head_dim=16, num_labels=2, pad_token_id=vocab_size + 1, max_position_embeddings=train_ids.shape[1],
    )  # fmt: skip
    args = TrainingArguments(
        output_dir=workdir, num_train_epochs=8, learning_rate=1e-3, per_device_train_batch_size=32, weight_decay=0.01, lr_scheduler_type="constant",
        seed=seed, save_strategy="no", disable_tqdm=True, log_level="warning", report_to="none",
    )  # fmt: skip
    trainer = Trainer(
        model=Qwen3ForSequenceClassification(config), args=args, train_dataset=TokenDataset(train_ids, y_train)
    )
    trainer.train()
    logits = trainer.predict(TokenDataset(test_ids, np.zeros(len(test_ids)))).predictions
    return torch.as_tensor(logits).softmax(-1)[:, 1].numpy()


def readers(train: Windows, test: Windows, num_codes: int, seed: int, workdir: str) -> dict[str, np.ndarray]:
    """Each reader's P(patient) on the test subjects."""
    y = train.group
    pairs_train, pairs_test = pair_couplings(train.raw), pair_couplings(test.raw)
    edges = np.quantile(
        pairs_train, np.linspace(0, 1, N_BINS + 1)[1:-1], axis=0
    )  # (N_BINS - 1, n_pairs), training subjects only
    offsets = np.arange(pairs_train.shape[1]) * N_BINS
    pair_ids = [
        torch.as_tensor(offsets + (values[None] > edges[:, None]).sum(0)) for values in (pairs_train, pairs_test)
    ]
    return {
        "brainmarks_fc": brainmarks(fc_features(train.raw), fc_features(test.raw), y, seed),
        "pair_logistic": brainmarks(pairs_train, pairs_test, y, seed),
        "pair_tokens": transformer(*pair_ids, y, N_BINS * len(offsets), seed, workdir),
        "code_tokens": transformer(train.codes, test.codes, y, num_codes, seed, workdir),
        "decoded_fc": brainmarks(fc_features(train.decoded), fc_features(test.decoded), y, seed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    results: dict[tuple, list[tuple[float, float]]] = {}
    for seed in args.seeds:
        folder = bench_pipeline(bench_settings(seed), through="stage1")["stage1"]
        tokenizer, feature_extractor = (
            FmriTokenizerModel.from_pretrained(folder).eval(),
            AutoFeatureExtractor.from_pretrained(folder),
        )
        for effect, n_train in SETTINGS:
            start = time.perf_counter()
            train = draw(n_train, effect, 200 + seed, tokenizer, feature_extractor)
            test = draw(N_TEST, effect, 300 + seed, tokenizer, feature_extractor)
            for name, probability in readers(
                train, test, tokenizer.config.num_codes, seed, f"outputs/bench_readout/seed{seed}"
            ).items():
                score = (
                    balanced_accuracy_score(test.group, probability > 0.5),
                    roc_auc_score(test.group, probability),
                )
                results.setdefault((effect, n_train, name), []).append(score)
            print(
                f"seed {seed}, effect {effect}, {n_train} training subjects: {time.perf_counter() - start:.0f} s",
                flush=True,
            )
    print(f"\n| group effect | training subjects | {' | '.join(READERS)} |\n|---|---|{'---|' * len(READERS)}")
    for effect, n_train in SETTINGS:
        cells = []
        for name in READERS:
            scores = np.asarray(results[(effect, n_train, name)])
            cells.append(
                f"{scores[:, 0].mean():.3f} ± {scores[:, 0].std(ddof=1) if len(scores) > 1 else 0.0:.3f} ({scores[:, 1].mean():.2f})"
            )
        print(f"| {effect} | {n_train} | {' | '.join(cells)} |")
    print(
        f"\nBalanced accuracy mean ± std over seeds {args.seeds} (ROC AUC), {N_TEST} test subjects per seed; chance 0.5."
    )


if __name__ == "__main__":
    main()
