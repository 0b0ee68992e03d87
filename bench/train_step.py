"""Where a Stage 2 training step's time goes, on one CPU thread, on the bench's own sequences.

`bench/pipeline.py` builds a small seed (40 synthetic subjects + the embedded scans, a 1-epoch
Stage 1); Stage 2 is set up on it as the bench trains it (both fMRI streams, the demo's small
Qwen3-shaped LM), and batches of 8 of its training examples (F2T, F2F, T2T, ~940 tokens each
with a window's 376 code tokens and 94 connectivity tokens) are timed, best of `--repeats`:

- `bare LM`: the language model alone, forward + backward on `inputs_embeds` of the batch's shape,
  causal, no padding mask, loss over every position: the floor a step cannot go below;
- `fmrilm forward + backward`: the model on the collated batch (ids embedded, connectivity rows
  projected and scattered), loss and backward as `ObjectiveTrainer.compute_loss` takes them;
  once with the padding mask (the collator before this bench) and once without (today's);
- `Trainer step`: `Trainer.training_step` plus the optimiser step, as Trainer runs them.

Stage 3's steps are the same `ObjectiveTrainer` on shorter sequences (one question, one window),
so the same split holds for them. Prints FIGURE lines (ms per step, and the masked/unmasked ratio)
and exits 0; no target is set: the figures say where the time goes.

Run: `.venv/bin/python bench/train_step.py [--repeats 5] [--batches 4]`
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

from modeling_fmrilm.training.objectives import ObjectiveCollator
from modeling_fmrilm.training.stage2 import Stage2Arguments, Stage2TrainingArguments, train_stage2
from pipeline import bench_pipeline, bench_settings

WORKDIR = Path("outputs/bench_train_step")


def best_seconds(step: Callable[[], None], repeats: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/train_step.py", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--batches", type=int, default=4, help="batches of 8 examples timed (each its own figure, then the mean)"
    )
    options = parser.parse_args()
    torch.set_num_threads(1)
    settings = bench_settings(0, synthetic_subjects=40, stage1_epochs=1)
    scans = settings.scans()
    folders = bench_pipeline(settings, "stage1", WORKDIR)
    corpus_dir, stage1_dir = folders["corpus"], folders["stage1"]
    args = Stage2Arguments(
        fmri_tokenizer=str(stage1_dir), corpus=str(corpus_dir), small_lm_kind=settings.stage2_lm_kind, window_stride=64
    )
    training_args = Stage2TrainingArguments(
        output_dir=str(WORKDIR / "stage2"),
        max_steps=1,
        save_strategy="no",
        eval_strategy="no",
        disable_tqdm=True,
        report_to="none",
        overwrite_final=True,
    )
    trainer = train_stage2(args, training_args, scans, console_logs=False).trainer
    model = trainer.model.train()
    collator: ObjectiveCollator = trainer.data_collator
    masked = ObjectiveCollator(collator.pad_token_id, collator.connectivity, attention_mask=True)
    examples = trainer.train_dataset.shuffle(seed=0)
    figures: dict[str, list[float]] = {}
    for b in range(options.batches):
        items = [examples[i] for i in range(8 * b, 8 * b + 8)]
        batch, masked_batch = collator(items), masked(items)
        embeds = torch.randn(*batch["input_ids"].shape, model.config.text_config.hidden_size)
        lm = model.language_model

        def bare(lm: torch.nn.Module = lm, embeds: torch.Tensor = embeds) -> None:
            lm(inputs_embeds=embeds).logits.float().logsumexp(-1).mean().backward()

        def fmrilm(inputs: dict) -> Callable[[], None]:
            return lambda: trainer.compute_loss(model, dict(inputs)).backward()

        def trainer_step(batch: dict = batch) -> None:
            trainer.training_step(model, dict(batch))
            trainer.optimizer.step()
            trainer.optimizer.zero_grad()

        for name, step in (
            ("bare LM", bare), ("fmrilm forward + backward, padding mask", fmrilm(masked_batch)),
            ("fmrilm forward + backward, no mask", fmrilm(batch)), ("Trainer step", trainer_step),
        ):  # fmt: skip
            figures.setdefault(name, []).append(1000 * best_seconds(step, options.repeats))
            model.zero_grad(set_to_none=True)
        print(
            f"batch {b}: {tuple(batch['input_ids'].shape)} tokens, "
            + ", ".join(f"{k} {v[-1]:.0f} ms" for k, v in figures.items()),
            flush=True,
        )
    means = {name: sum(values) / len(values) for name, values in figures.items()}
    for name, value in means.items():
        print(
            f"FIGURE stage2_step, {name}: {value:.0f} ms per batch of 8 (mean of {options.batches} batches, best of {options.repeats} each, 1 thread)"
        )
    print(
        f"FIGURE stage2_step, padding mask / no mask: {means['fmrilm forward + backward, padding mask'] / means['fmrilm forward + backward, no mask']:.2f}x"
    )
    print(f"FIGURE stage2_step, Trainer step / bare LM: {means['Trainer step'] / means['bare LM']:.2f}x")


if __name__ == "__main__":
    main()
