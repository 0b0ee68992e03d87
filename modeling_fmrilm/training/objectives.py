"""Token-level objectives on a causal LM, shared by Stage 2 (F2T, F2F, T2T) and Stage 3 (one per task).

Each example carries `input_ids`, `labels` (-100 where no loss is taken), the index of its
`objective` and, for a model that reads the connectivity stream, `fmri_windows`: the rows (in the
collator's connectivity table) of the windows whose `<fmri_fc>` placeholders it holds, in order. The loss is `Σ_o weight_o × (loss summed over objective o's target tokens) / (those
tokens in the batch of every process)`, times the number of processes since DDP averages
gradients: a run on N processes takes the step of one process on the N-fold batch. Each
objective's loss and its next-token accuracy on the target tokens go to the training and
evaluation logs (`{name}_loss`, `{name}_accuracy`), and so do the same two on the first token of
each run of target tokens alone (`{name}_first_token_loss`, `{name}_first_token_accuracy`): a
Stage 3 answer is its label word and EOS, so for a one-token label the first figure is the label's
own (the averages over both tokens halve a chance-level label loss, since the EOS is learned early).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .common import SumLoggingTrainer

IGNORE_INDEX = -100


class WindowConnectivity:
    """Connectivity rows of windows by their row in a `datasets.Dataset` with a `connectivity`
    column (the Stage 2 codes table): `table[[i, j]]` is an array `(2, num_rois, num_rois)`, read
    from the memory-mapped Arrow file, never the whole column."""

    def __init__(self, table: Any, column: str = "connectivity") -> None:
        self.column = column
        self.table = table.select_columns([column]).with_format("numpy")

    def __getitem__(self, rows: Sequence[int]) -> Any:
        return self.table[list(rows)][self.column]


@dataclass
class ObjectiveCollator:
    """Pads examples on the right to the longest in the batch: `input_ids` (pad id), `labels`
    (-100) and `objective` per sequence; with `connectivity` (an array, or a
    [`WindowConnectivity`], indexed by a list of window rows), also `fmri_connectivity`: the rows of
    every example's `fmri_windows`, in batch order `(n_windows, num_rois, num_rois)`.

    No `attention_mask` by default (`attention_mask=True` adds it): in a causal LM a token attends
    only to earlier positions, so with right padding no real token ever sees a pad, and positions
    count from 0 either way; the pads' own outputs carry no label. Without a mask, SDPA runs its
    causal kernel instead of the masked one, which halves the attention time of the bench's
    ~940-token Stage 2 sequences on a CPU (`tests/training/test_training_stage2.py` checks the batch's loss
    is that of its sequences run one by one, unpadded)."""

    pad_token_id: int
    connectivity: Any = None
    attention_mask: bool = False

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(item["input_ids"]) for item in items)
        input_ids = torch.full((len(items), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(items), length), IGNORE_INDEX, dtype=torch.long)
        for row, item in enumerate(items):
            n = len(item["input_ids"])
            input_ids[row, :n] = torch.as_tensor(item["input_ids"])
            labels[row, :n] = torch.as_tensor(item["labels"])
        objective = torch.as_tensor([item["objective"] for item in items], dtype=torch.long)
        batch = {"input_ids": input_ids, "labels": labels, "objective": objective}
        if self.attention_mask:
            lengths = torch.as_tensor([len(item["input_ids"]) for item in items])
            batch["attention_mask"] = (torch.arange(length)[None] < lengths[:, None]).long()
        windows = [window for item in items for window in item.get("fmri_windows") or []]
        if self.connectivity is not None and windows:
            batch["fmri_connectivity"] = torch.as_tensor(np.asarray(self.connectivity[windows]))
        return batch


class ObjectiveTrainer(SumLoggingTrainer):
    """Trainer for a causal LM on weighted token-level objectives (see the module docstring)."""

    def __init__(self, *args: Any, objectives: Mapping[str, float], **kwargs: Any) -> None:
        self.objective_names = list(objectives)
        self.objective_weights = torch.tensor([float(objectives[name]) for name in self.objective_names])
        n = len(self.objective_names)
        self.sum_sizes = {
            "loss_sum": n,
            "tokens": n,
            "correct": n,
            "first_loss_sum": n,
            "firsts": n,
            "first_correct": n,
        }
        super().__init__(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels, objective = inputs["labels"], inputs["objective"]
        outputs = model(**{k: v for k, v in inputs.items() if k not in ("labels", "objective")})
        targets = labels[:, 1:]
        mask = targets != IGNORE_INDEX
        sequence = mask.nonzero()[:, 0]  # the sequence of each target token, in order
        picked = outputs.logits[:, :-1][mask].float()  # only the target positions' logits: (n_targets, vocab)
        wanted = targets[mask]
        token_loss = F.cross_entropy(picked, wanted, reduction="none")
        # the objective of each target token, one-hot: (n_objectives, n_targets)
        rows = (
            objective[sequence][None] == torch.arange(len(self.objective_names), device=objective.device)[:, None]
        ).to(token_loss.dtype)
        totals = rows @ token_loss  # loss summed over each objective's target tokens
        tokens = rows.sum(1)
        hits = (picked.argmax(-1) == wanted).to(rows.dtype)
        correct = rows @ hits
        # the first token of each run of targets (an answer's first token), per target token
        follows_target = torch.cat([mask.new_zeros(mask.shape[0], 1), mask[:, :-1]], dim=1)
        first_rows = rows * (mask & ~follows_target)[mask].to(rows.dtype)
        processes = self.accelerator.num_processes
        global_tokens = self.accelerator.reduce(tokens.detach(), reduction="sum") if processes > 1 else tokens
        weights = self.objective_weights.to(totals.device)
        loss = processes * (weights * totals / global_tokens.clamp_min(1)).sum()
        self.sums["train" if model.training else "eval"].add(
            loss_sum=totals,
            tokens=tokens,
            correct=correct,
            first_loss_sum=first_rows @ token_loss,
            firsts=first_rows.sum(1),
            first_correct=first_rows @ hits,
        )
        return (loss, outputs) if return_outputs else loss

    def summarize(self, sums: dict[str, torch.Tensor], prefix: str) -> dict[str, float]:
        logs = {}
        for index, name in enumerate(self.objective_names):
            tokens = float(sums["tokens"][index])
            if tokens > 0:
                logs[f"{prefix}{name}_loss"] = float(sums["loss_sum"][index]) / tokens
                logs[f"{prefix}{name}_accuracy"] = float(sums["correct"][index]) / tokens
            firsts = float(sums["firsts"][index])
            if firsts > 0:
                logs[f"{prefix}{name}_first_token_loss"] = float(sums["first_loss_sum"][index]) / firsts
                logs[f"{prefix}{name}_first_token_accuracy"] = float(sums["first_correct"][index]) / firsts
        return logs


__all__ = ["IGNORE_INDEX", "ObjectiveCollator", "ObjectiveTrainer", "WindowConnectivity"]
