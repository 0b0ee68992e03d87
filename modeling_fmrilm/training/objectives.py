"""Token-level objectives on a causal LM, shared by Stage 2 (F2T, F2F, T2T) and Stage 3 (one per task).

Each example carries `input_ids`, `labels` (-100 where no loss is taken) and the index of its
`objective`. The loss is `Σ_o weight_o × (loss summed over objective o's target tokens) / (those
tokens in the batch of every process)`, times the number of processes since DDP averages
gradients: a run on N processes takes the step of one process on the N-fold batch. Each
objective's loss and its next-token accuracy on the target tokens go to the training and
evaluation logs (`{name}_loss`, `{name}_accuracy`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .common import SumLoggingTrainer

IGNORE_INDEX = -100


@dataclass
class ObjectiveCollator:
    """Pads examples to the longest in the batch: `input_ids` (pad id), `labels` (-100),
    `attention_mask`, and `objective` per sequence."""

    pad_token_id: int

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(item["input_ids"]) for item in items)
        input_ids = torch.full((len(items), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(items), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(items), length), dtype=torch.long)
        for row, item in enumerate(items):
            n = len(item["input_ids"])
            input_ids[row, :n] = torch.as_tensor(item["input_ids"])
            labels[row, :n] = torch.as_tensor(item["labels"])
            attention_mask[row, :n] = 1
        objective = torch.as_tensor([item["objective"] for item in items], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "objective": objective}


class ObjectiveTrainer(SumLoggingTrainer):
    """Trainer for a causal LM on weighted token-level objectives (see the module docstring)."""

    def __init__(self, *args: Any, objectives: Mapping[str, float], **kwargs: Any) -> None:
        self.objective_names = list(objectives)
        self.objective_weights = torch.tensor([float(objectives[name]) for name in self.objective_names])
        n = len(self.objective_names)
        self.sum_sizes = {"loss_sum": n, "tokens": n, "correct": n}
        super().__init__(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels, objective = inputs["labels"], inputs["objective"]
        outputs = model(**{k: v for k, v in inputs.items() if k not in ("labels", "objective")})
        logits = outputs.logits[:, :-1].float()
        targets = labels[:, 1:]
        mask = targets != IGNORE_INDEX
        token_loss = F.cross_entropy(logits.transpose(1, 2), targets.clamp_min(0), reduction="none") * mask
        correct = (logits.argmax(-1) == targets) & mask
        rows = torch.stack([objective == index for index in range(len(self.objective_names))]).to(token_loss.dtype)
        totals = rows @ token_loss.sum(1)  # loss summed over each objective's target tokens
        tokens = rows @ mask.sum(1).to(token_loss.dtype)
        processes = self.accelerator.num_processes
        global_tokens = self.accelerator.reduce(tokens.detach(), reduction="sum") if processes > 1 else tokens
        weights = self.objective_weights.to(totals.device)
        loss = processes * (weights * totals / global_tokens.clamp_min(1)).sum()
        self.sums["train" if model.training else "eval"].add(loss_sum=totals, tokens=tokens, correct=rows @ correct.sum(1).to(rows.dtype))
        return (loss, outputs) if return_outputs else loss

    def summarize(self, sums: dict[str, torch.Tensor], prefix: str) -> dict[str, float]:
        logs = {}
        for index, name in enumerate(self.objective_names):
            tokens = float(sums["tokens"][index])
            if tokens > 0:
                logs[f"{prefix}{name}_loss"] = float(sums["loss_sum"][index]) / tokens
                logs[f"{prefix}{name}_accuracy"] = float(sums["correct"][index]) / tokens
        return logs


__all__ = ["IGNORE_INDEX", "ObjectiveCollator", "ObjectiveTrainer"]
