"""Does a model that reads both fMRI streams learn what only its connectivity tokens carry, and what does code dropout change?

`bench/readout.py` found a small reader of connectivity-row tokens at the FC baseline, while the
Stage 3 model, which gets those same tokens behind a window's code tokens, stayed at chance. This
script isolates that: the Stage 3 recipe (`FmriLMForCausalLM` with the bench's LM shape, LoRA +
the trainable projector and fMRI rows through `training.stage3.lora_model`, `ObjectiveTrainer`,
lr 1e-3, batch 8) on one question, the synthetic group (group effect 0.3, on one network pair's
coupling), over the first 64-frame window of each scan: 80 ROIs x 4 patches = 320 code tokens and
80 connectivity tokens. The Stage 1 tokenizer has random weights (its codebook set by k-means on
the cohort's windows), so its codes differ from subject to subject as trained ones do, and carry
no more of the group than the signal's own coupling leaves in them.

Two recipes, the same epochs and seed: without code dropout, and with `code_dropout` 1.0 over the
first half of the steps (every code token read as `<fmri_pad>`; `training.common.CodeDropoutSchedule`),
the setting `bench/pipeline.py` trains Stages 2 and 3 with. Both are scored on test subjects
never trained on, with their codes (as the model is used) and with the codes blanked (what is read
from the connectivity tokens alone); the Brainmarks-style logistic FC baseline on the same window
and subjects is printed beside them.

One departure from Stage 3's defaults: the LM's output head is trained beside LoRA (`train_lm_head`). Stage 3 starts from a
Stage 2 model whose head has been trained; this LM's head is random, and frozen it bounds the
logits, so that the answer loss stayed near log(vocabulary) (5.8 nats) and both recipes at chance
(the first run of seed 1). That was found on seed 1, so seed 1's figures after it are not
independent of the finding; seeds 2 and 3 are.

The recipe (10 epochs, code dropout over the first half) was chosen on cohort seed 0, so the default
seeds are 1, 2 and 3; the targets below were fixed before they ran:
- `code_dropout_reads_connectivity`: with code dropout, balanced accuracy with codes >= 0.75 (mean over seeds);
- `without_code_dropout_at_chance`: without it, balanced accuracy with codes <= 0.60 (mean over seeds).

Run: `.venv/bin/python bench/streams.py [--seeds 1 2 3] [--epochs 10]` (about 5 min per recipe and
seed on one core).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

from modeling_fmrilm import FmriLMForCausalLM, FmriTokenizerConfig, FmriTokenizerModel
from modeling_fmrilm.tasks.synthetic import SyntheticSettings, make_synthetic_cohort
from modeling_fmrilm.training.common import code_dropout_callbacks
from modeling_fmrilm.training.language_model import small_language_model_config, train_bpe_tokenizer
from modeling_fmrilm.training.objectives import IGNORE_INDEX, ObjectiveCollator, ObjectiveTrainer
from modeling_fmrilm.training.stage3 import Stage3Arguments, Stage3TrainingArguments, lora_model

N_SUBJECTS, N_TRAIN = 1000, 600  # the bench pipeline's cohort size and ~its training split
GROUP_EFFECT = 0.3
WINDOW, PATCH = 64, 16
QUESTION = "\n### Question: Is this participant a control or a patient?\n### Answer:"
ANSWERS = (" Control", " Patient")
RECIPES = {"without code dropout": 0.0, "code dropout 1.0, first half": 1.0}


def build_model(
    windows: torch.Tensor, seed: int, questions: Sequence[str] = (QUESTION,), answers: Sequence[str] = ANSWERS
) -> tuple[FmriLMForCausalLM, object]:
    """The bench's model shape: a random Stage 1 tokenizer (k-means codebook on `windows`) and the small
    Qwen3 LM, its text tokenizer trained on the `questions` and `answers` it will be asked (each answer one token)."""
    torch.manual_seed(seed)
    config = FmriTokenizerConfig(
        num_rois=windows.shape[1], window_length=WINDOW, patch_length=PATCH, hidden_size=64, num_hidden_layers=2, num_decoder_layers=1,
        num_attention_heads=4, num_codes=512, code_dim=64, domain_hidden_size=16,
    )  # fmt: skip
    tokenizer = FmriTokenizerModel(config)
    tokenizer(windows[:512])  # k-means initialisation of the codebook on the cohort's windows
    text_tokenizer = train_bpe_tokenizer([*questions, *answers] * 4, vocab_size=300, whole_words=answers)
    lm_config = small_language_model_config(
        "qwen3", len(text_tokenizer), hidden_size=64, num_layers=2, num_heads=4, max_positions=1024
    )
    from transformers import AutoModelForCausalLM

    language_model = AutoModelForCausalLM.from_config(lm_config)
    return FmriLMForCausalLM.from_parts(tokenizer.eval(), language_model, text_tokenizer=text_tokenizer)


def examples(
    model: FmriLMForCausalLM, processor: object, windows: torch.Tensor, labels: np.ndarray,
    question: str = QUESTION, answers: Sequence[str] = ANSWERS, objective: int = 0,
) -> tuple[list[dict], np.ndarray, list[int]]:  # fmt: skip
    """Prompt + answer ids per subject (codes written in, one window each; answer `answers[label]`),
    the connectivity table, the answers' token ids."""
    prompt = processor(text=["<fmri>" + question], fmri=[windows[0].numpy()], tr=2.0)["input_ids"][0]
    prompt = torch.as_tensor(prompt)
    with torch.no_grad():
        codes = torch.cat([model.fmri_to_token_ids(chunk) for chunk in windows.split(128)])
        connectivity = (
            torch.cat([model.fmri_connectivity(chunk) for chunk in windows.split(128)]).numpy().astype(np.float16)
        )
    answer_ids = [processor.tokenizer(text, add_special_tokens=False)["input_ids"][0] for text in answers]
    if len(set(answer_ids)) < len(answer_ids):
        raise ValueError(f"answers {answers}: their first tokens {answer_ids} are not distinct")
    placeholders = prompt == model.config.fmri_pad_token_id
    items = []
    for i, label in enumerate(labels):
        ids = prompt.clone()
        ids[placeholders] = codes[i]
        context = ids.tolist()
        items.append({
            "input_ids": context + [answer_ids[label]], "labels": [IGNORE_INDEX] * len(context) + [answer_ids[label]],
            "objective": objective, "fmri_windows": [i],
        })  # fmt: skip
    return items, connectivity, answer_ids


@torch.no_grad()
def answer_logits(
    model: torch.nn.Module, items: list[dict], collator: ObjectiveCollator, answer_ids: list[int], blank_codes: bool
) -> np.ndarray:
    """The answers' logits `(n_items, n_answers)` after each prompt (codes as given, or all read as `<fmri_pad>`)."""
    model.eval()
    config = model.config
    predictions = []
    for start in range(0, len(items), 64):
        batch = collator(
            [
                {**item, "input_ids": item["input_ids"][:-1], "labels": item["labels"][:-1]}
                for item in items[start : start + 64]
            ]
        )
        ids = batch["input_ids"]
        if blank_codes:
            ids = ids.masked_fill(
                (ids >= config.first_code_token_id) & (ids < config.code_token_ids.stop), config.fmri_pad_token_id
            )
        logits = model(input_ids=ids, fmri_connectivity=batch["fmri_connectivity"]).logits[:, -1, answer_ids]
        predictions.append(logits.float().numpy())
    return np.concatenate(predictions)


def fine_tune(
    model: FmriLMForCausalLM, items: list[dict], collator: ObjectiveCollator, objectives: dict[str, float], seed: int, epochs: int,
    code_dropout: float, use_lora: bool = True,
) -> torch.nn.Module:  # fmt: skip
    """The Stage 3 recipe on `items`: LoRA (`training.stage3.lora_model`, the LM head trained too) or
    full fine-tuning, `ObjectiveTrainer` at lr 1e-3 and batch 8, `code_dropout` over the first half
    of the steps; returns the trained module (the peft model under LoRA)."""
    # train_lm_head: Stage 3 starts from a Stage 2 model whose LM head was trained; this LM's head is
    # random, and frozen under LoRA it bounds the logits (the answer loss stayed at ~5.8 nats, near log(vocab))
    args = Stage3Arguments(
        model="unused",
        code_dropout=code_dropout,
        code_dropout_fraction=0.5,
        evaluate=False,
        train_lm_head=True,
        use_lora=use_lora,
    )
    trainee = lora_model(model, args) if use_lora else model
    with tempfile.TemporaryDirectory() as folder:
        training_args = Stage3TrainingArguments(
            output_dir=folder, num_train_epochs=epochs, per_device_train_batch_size=8, learning_rate=1e-3, seed=seed, save_strategy="no",
            eval_strategy="no", logging_steps=10**6, disable_tqdm=True, log_level="warning", report_to="none",
        )  # fmt: skip
        trainer = ObjectiveTrainer(
            model=trainee, args=training_args, train_dataset=items, data_collator=collator, objectives=objectives,
            callbacks=code_dropout_callbacks(args, model.config), console_logs=False,
        )  # fmt: skip
        trainer.train()
    return trainee


def run(seed: int, epochs: int) -> dict[str, float]:
    cohort = make_synthetic_cohort(
        SyntheticSettings(n_subjects=N_SUBJECTS, n_timepoints=WINDOW, group_effect=GROUP_EFFECT, seed=seed)
    )
    raw = np.stack([scan.data[:, :WINDOW] for scan in cohort.scans]).astype(np.float32)
    windows = torch.as_tensor((raw - raw.mean(-1, keepdims=True)) / raw.std(-1, keepdims=True))
    group = cohort.group
    upper = np.triu_indices(raw.shape[1], 1)
    fc = np.stack([np.corrcoef(w)[upper] for w in raw])
    logistic = LogisticRegression(C=0.1, max_iter=5000).fit(fc[:N_TRAIN], group[:N_TRAIN])
    scores = {"logistic FC": balanced_accuracy_score(group[N_TRAIN:], logistic.predict(fc[N_TRAIN:]))}
    for name, dropout in RECIPES.items():
        start = time.perf_counter()
        model, processor = build_model(windows, seed)
        items, connectivity, answer_ids = examples(model, processor, windows, group)
        model.calibrate_connectivity_projector(torch.as_tensor(connectivity[:N_TRAIN:4]).float())
        collator = ObjectiveCollator(processor.tokenizer.pad_token_id, connectivity)
        trainee = fine_tune(model, items[:N_TRAIN], collator, {"group": 1.0}, seed, epochs, dropout)
        test = items[N_TRAIN:]
        for blank in (False, True):
            predicted = answer_logits(trainee, test, collator, answer_ids, blank).argmax(-1)
            scores[f"{name}, codes {'blanked' if blank else 'read'}"] = balanced_accuracy_score(
                group[N_TRAIN:], predicted
            )
        print(f"seed {seed}, {name}: {time.perf_counter() - start:.0f} s", flush=True)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=10)
    options = parser.parse_args()
    table: dict[str, list[float]] = {}
    for seed in options.seeds:
        for name, score in run(seed, options.epochs).items():
            table.setdefault(name, []).append(score)
            print(f"seed {seed}: {name}: {score:.3f}", flush=True)
    print(
        f"\nBalanced accuracy on {N_SUBJECTS - N_TRAIN} test subjects per seed, {N_TRAIN} training subjects, group effect {GROUP_EFFECT}; chance 0.5"
    )
    print(
        "| reader | "
        + " | ".join(f"seed {s}" for s in options.seeds)
        + " | mean ± std |\n|---|"
        + "---|" * (len(options.seeds) + 1)
    )
    for name, scores in table.items():
        values = np.asarray(scores)
        spread = values.std(ddof=1) if len(values) > 1 else 0.0
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {values.mean():.3f} ± {spread:.3f} |")
    with_dropout = float(np.mean(table["code dropout 1.0, first half, codes read"]))
    without = float(np.mean(table["without code dropout, codes read"]))
    print(
        f"TARGET code_dropout_reads_connectivity: balanced accuracy {with_dropout:.3f} (target >= 0.75) {'PASS' if with_dropout >= 0.75 else 'FAIL'}"
    )
    print(
        f"TARGET without_code_dropout_at_chance: balanced accuracy {without:.3f} (target <= 0.60) {'PASS' if without <= 0.60 else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
