"""Answers scored by an `FmriLMForCausalLM`: label-word log-likelihoods, constrained generation, pooled hidden states.

Every scan is encoded once ([`LabelScorer.scan_codes`]: the processor's windows, the model's
frozen tokenizer, and for a model that reads the connectivity stream, the windows' connectivity
rows) and prompts are rendered straight into token ids with the codes in place
(`prompts.render_token_ids`; a [`PromptIds`] remembers its scans, whose connectivity rows go with
it to the model), so a k-shot prompt costs no re-encoding (the same logits as the `fmri_values` path).

- [`LabelScorer.loglikelihoods`]: `log p(answer | prompt)` of every candidate answer, summed over
  the answer's tokens, so a label word of several tokens is scored as one whole continuation.
  Batches are left-padded with explicit position ids (each sequence sees exactly the positions it
  would see alone), and only the last positions' logits are computed (`logits_to_keep`).
- [`LabelScorer.constrained_choices`]: the paper's evaluation, greedy `generate` restricted to the
  label tokens (a prefix tree of the answers' token ids, end of sequence once an answer is complete).
- [`LabelScorer.pooled_hidden_states`]: the last layer's hidden states averaged over the prompt,
  the features of the ridge probe.
- [`LabelScorer.model_views`]: what the model reads of a scan, as signals: the processor's windows,
  and their codes decoded by the frozen tokenizer (the evaluation's connectivity probes on them
  show where a scan's signal is lost).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ..configuration_fmrilm import FMRI_START_TOKEN
from ..errors import FmriInputError
from ..io import FmriScan
from .prompts import render_token_ids


class PromptTooLong(FmriInputError):
    """A prompt (with its answer) exceeds the language model's positions."""


class PromptIds(list):
    """A rendered prompt's token ids (a list of ints) and `scans`, the scans whose `<fmri>` markers
    it fills, in order (their connectivity rows fill its `<fmri_fc>` placeholders)."""

    def __init__(self, ids: Sequence[int], scans: Sequence[Any] = ()) -> None:
        super().__init__(ids)
        self.scans = tuple(scans)

    @property
    def key(self) -> tuple:
        """What identifies the model's input: the ids and the scans (by identity)."""
        return tuple(self), tuple(id(scan) for scan in self.scans)


class LabelScorer:
    """Scores candidate answers of prompts with a causal LM that reads fMRI tokens.

    Args:
        model: an `FmriLMForCausalLM` (or a peft model wrapping one), used in eval mode.
        processor: its `FmriProcessor`.
        batch_size: sequences per forward pass.
    """

    def __init__(self, model: Any, processor: Any, batch_size: int = 8) -> None:
        self.model = model.eval()
        self.processor = processor
        self.batch_size = batch_size
        self.max_positions = model.config.max_positions
        tokenizer = processor.tokenizer
        self.pad_token_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
        self._codes: dict[int, tuple[FmriScan, list[int]]] = {}
        self._windows: dict[int, np.ndarray] = {}
        self._connectivity: dict[int, torch.Tensor] = {}
        self._loglikelihoods: dict[
            tuple, np.ndarray
        ] = {}  # (context, answers, blanked) -> scores: scorings that ask the same prompts run them once
        self.blanked_stream: str | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _base_model(self) -> Any:
        """The `FmriLMForCausalLM` itself (under a peft wrapper too)."""
        model = self.model
        while not hasattr(model, "fmri_to_token_ids") and hasattr(model, "get_base_model"):
            model = model.get_base_model()
        return model

    @torch.no_grad()
    def encode_scans(self, scans: Sequence[FmriScan]) -> None:
        """Encode the scans not yet encoded (the processor's windows -> the frozen tokenizer's codes)."""
        todo = list({id(scan): scan for scan in scans if id(scan) not in self._codes}.values())
        base = self._base_model()
        first = base.config.first_code_token_id
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            inputs = self.processor(
                text=[FMRI_START_TOKEN] * len(chunk),
                fmri=[s.data for s in chunk],
                tr=[s.tr for s in chunk],
                return_tensors="pt",
            )
            codes = (base.fmri_to_token_ids(inputs["fmri_values"]) - first).reshape(len(chunk), -1).cpu().tolist()
            windows = (
                inputs["fmri_values"].reshape(len(chunk), -1, *inputs["fmri_values"].shape[1:]).float().cpu().numpy()
            )
            for scan, scan_codes, scan_windows in zip(chunk, codes, windows, strict=True):
                self._codes[id(scan)] = (scan, scan_codes)
                self._windows[id(scan)] = scan_windows
                if base.config.reads_connectivity:
                    self._connectivity[id(scan)] = base.fmri_connectivity(torch.as_tensor(scan_windows))

    def scan_codes(self, scan: FmriScan) -> list[int]:
        """The codes of a scan's first `windows_per_scan` windows, flattened (encoded once, then cached)."""
        self.encode_scans([scan])
        return self._codes[id(scan)][1]

    @torch.no_grad()
    def model_views(self, scans: Sequence[FmriScan]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """What the model reads of each scan, `(n_rois, windows_per_scan * n_frames)` float64 each: the
        processor's windows joined in time, and the frozen tokenizer's decoding of their codes."""
        self.encode_scans(scans)
        tokenizer = self._base_model().fmri_tokenizer
        stacked = np.stack(
            [self._windows[id(scan)] for scan in scans]
        )  # (n_scans, windows_per_scan, n_rois, n_frames)
        codes = torch.as_tensor([self._codes[id(scan)][1] for scan in scans], device=self.device).reshape(
            stacked.shape[0] * stacked.shape[1], -1
        )
        signals = (
            torch.cat([tokenizer.decode(chunk).float().cpu() for chunk in codes.split(self.batch_size)])
            .numpy()
            .reshape(stacked.shape[:2] + (stacked.shape[2], -1))
        )

        def joined(
            array: np.ndarray,
        ) -> list[np.ndarray]:  # windows of each scan joined in time: (n_rois, windows * n_frames)
            return list(array.transpose(0, 2, 1, 3).reshape(array.shape[0], array.shape[2], -1).astype(np.float64))

        return joined(stacked), joined(signals)

    def prompt_ids(self, text: str, scans: Sequence[FmriScan]) -> PromptIds:
        """Token ids of a prompt whose `<fmri>` markers stand for `scans` (in order)."""
        self.encode_scans(scans)
        return PromptIds(render_token_ids(text, [self._codes[id(scan)][1] for scan in scans], self.processor), scans)

    def connectivity_of(self, contexts: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """`{"fmri_connectivity": rows}` for a batch of contexts (each [`PromptIds`]'s scans in
        order), or `{}` for a codes-only model or a batch without scans."""
        if not self._base_model().config.reads_connectivity:
            return {}
        scans = [scan for context in contexts for scan in getattr(context, "scans", ())]
        self.encode_scans(scans)
        rows = [self._connectivity[id(scan)] for scan in scans]
        return {"fmri_connectivity": torch.cat(rows).to(self.device)} if rows else {}

    @property
    def fmri_streams(self) -> tuple[str, ...]:
        """The fMRI streams the model reads (`FmriLMConfig.fmri_streams`)."""
        return tuple(self._base_model().config.fmri_streams)

    @torch.no_grad()
    def stream_mean_embeddings(self, stream: str, scans: Sequence[FmriScan]) -> torch.Tensor:
        """`(positions_per_scan, hidden_size)`: the mean over `scans` of the input embedding at each
        position of `stream` in a scan's block (the code tokens' rows, or the projected connectivity rows)."""
        base = self._base_model()
        self.encode_scans(scans)
        if stream == "codes":
            first = base.config.first_code_token_id
            ids = torch.as_tensor([self._codes[id(scan)][1] for scan in scans], device=self.device) + first
            return base.get_input_embeddings()(ids).float().mean(dim=0)
        rows = torch.stack([self._connectivity[id(scan)] for scan in scans]).to(self.device)  # (scans, windows, R, R)
        projector = base.connectivity_projector
        projected = projector(rows.flatten(1, 2).to(projector.linear_1.weight.dtype))
        return projected.float().mean(dim=0)

    @contextlib.contextmanager
    def blanked(self, stream: str, scans: Sequence[FmriScan]) -> Iterator[None]:
        """Within the block, the model reads `stream` as its mean embedding over `scans` (training
        scans) at every position (`FmriLMForCausalLM.blank_stream`); scores are kept apart from the
        unblanked ones."""
        with self._base_model().blank_stream(stream, self.stream_mean_embeddings(stream, scans)):
            self.blanked_stream = stream
            try:
                yield
            finally:
                self.blanked_stream = None

    def answer_ids(self, answers: Sequence[str]) -> list[list[int]]:
        """Token ids of each answer continuation (no special tokens added).

        Raises:
            FmriInputError: an answer that tokenizes to nothing.
        """
        ids = [self.processor.tokenizer(answer, add_special_tokens=False)["input_ids"] for answer in answers]
        empty = [answer for answer, tokens in zip(answers, ids, strict=True) if not tokens]
        if empty:
            raise FmriInputError(f"answers: {empty} tokenize to no token")
        return ids

    def check_length(self, context: Sequence[int], longest_answer: int, what: str = "prompt") -> None:
        """Raise [`PromptTooLong`] when the context and its longest answer exceed the model's positions."""
        if self.max_positions is not None and len(context) + longest_answer > self.max_positions:
            raise PromptTooLong(
                f"{what}: {len(context)} prompt tokens + {longest_answer} answer tokens exceed the language model's "
                f"{self.max_positions} positions"
            )

    def _left_padded(self, sequences: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        length = max(len(s) for s in sequences)
        input_ids = torch.full((len(sequences), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            input_ids[row, length - len(sequence) :] = torch.as_tensor(sequence, dtype=torch.long)
            attention_mask[row, length - len(sequence) :] = 1
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp_min(0)
        device = self.device
        return {
            "input_ids": input_ids.to(device),
            "attention_mask": attention_mask.to(device),
            "position_ids": position_ids.to(device),
        }

    @torch.no_grad()
    def loglikelihoods(self, contexts: Sequence[Sequence[int]], answers: Sequence[str]) -> np.ndarray:
        """`(n_contexts, n_answers)` summed log-probabilities of each answer after each context
        (each context's scores kept, so a prompt asked again, by another scoring, is not run again).

        Raises:
            PromptTooLong: a context with its longest answer exceeds the model's positions.
        """
        answer_ids = self.answer_ids(answers)
        longest = max(len(a) for a in answer_ids)
        for i, context in enumerate(contexts):
            self.check_length(context, longest, f"prompt {i}")
        keys = [
            (PromptIds(context, getattr(context, "scans", ())).key, tuple(answers), self.blanked_stream)
            for context in contexts
        ]
        todo = [i for i, key in enumerate(keys) if key not in self._loglikelihoods]
        pairs = [(i, j) for i in todo for j in range(len(answer_ids))]
        scores = np.zeros((len(contexts), len(answer_ids)))
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start : start + self.batch_size]
            sequences = [list(contexts[i]) + answer_ids[j] for i, j in chunk]
            keep = max(len(answer_ids[j]) for _, j in chunk) + 1
            connectivity = self.connectivity_of([contexts[i] for i, _ in chunk])
            logits = self.model(**self._left_padded(sequences), **connectivity, logits_to_keep=keep).logits.float()
            log_probs = torch.log_softmax(logits[:, :-1], dim=-1)  # position p predicts the token at p + 1
            for row, (i, j) in enumerate(chunk):
                tokens = torch.as_tensor(answer_ids[j], device=log_probs.device)
                predicted = log_probs[row, keep - 1 - len(tokens) :]
                scores[i, j] = float(predicted.gather(1, tokens[:, None]).sum())
        for i in todo:
            self._loglikelihoods[keys[i]] = scores[i].copy()
        return np.stack([self._loglikelihoods[key] for key in keys])

    @torch.no_grad()
    def constrained_choices(self, contexts: Sequence[Sequence[int]], answers: Sequence[str]) -> np.ndarray:
        """Index of the answer greedy generation picks when only answer tokens are allowed (the paper's scoring).

        At each step the allowed tokens are those that continue some answer's token ids; once
        the generated ids form a complete answer, end-of-sequence is allowed too (and is the only
        choice when no longer answer continues it).

        Raises:
            FmriInputError: the text tokenizer has no end-of-sequence token.
        """
        eos = self.processor.tokenizer.eos_token_id
        if eos is None:
            raise FmriInputError("constrained scoring: the text tokenizer has no eos token to end an answer with")
        answer_ids = self.answer_ids(answers)
        longest = max(len(a) for a in answer_ids)
        choices = np.zeros(len(contexts), dtype=np.int64)
        for i, context in enumerate(contexts):
            self.check_length(context, longest, f"prompt {i}")
            start = len(context)

            def allowed(batch_id: int, input_ids: torch.Tensor, start: int = start) -> list[int]:
                prefix = input_ids[start:].tolist()
                following = {a[len(prefix)] for a in answer_ids if len(a) > len(prefix) and a[: len(prefix)] == prefix}
                if prefix in answer_ids or not following:
                    following.add(eos)
                return sorted(following)

            inputs = self._left_padded([context])
            output = self.model.generate(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                **self.connectivity_of([context]),
                max_new_tokens=longest,
                do_sample=False,
                num_beams=1,
                prefix_allowed_tokens_fn=allowed,
                eos_token_id=eos,
                pad_token_id=self.pad_token_id,
            )
            generated = output[0, start:].tolist()
            generated = generated[: generated.index(eos)] if eos in generated else generated
            choices[i] = answer_ids.index(generated)
        return choices

    @torch.no_grad()
    def pooled_hidden_states(self, contexts: Sequence[Sequence[int]]) -> np.ndarray:
        """`(n_contexts, hidden_size)`: the last layer's hidden states averaged over each prompt's tokens."""
        pooled = []
        for start in range(0, len(contexts), self.batch_size):
            chunk = contexts[start : start + self.batch_size]
            for i, context in enumerate(chunk):
                self.check_length(context, 0, f"prompt {start + i}")
            inputs = self._left_padded(chunk)
            hidden = (
                self.model(**inputs, **self.connectivity_of(chunk), output_hidden_states=True, logits_to_keep=1)
                .hidden_states[-1]
                .float()
            )
            mask = inputs["attention_mask"][:, :, None].to(hidden.dtype)
            pooled.append(((hidden * mask).sum(dim=1) / mask.sum(dim=1)).cpu().numpy())
        return np.concatenate(pooled)


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax of log-likelihoods: the probability of each answer among the candidates."""
    shifted = scores - scores.max(axis=1, keepdims=True)
    weights = np.exp(shifted)
    return weights / weights.sum(axis=1, keepdims=True)


__all__ = ["LabelScorer", "PromptIds", "PromptTooLong", "softmax"]
