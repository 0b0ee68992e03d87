"""Processor of fMRI-LM: the feature extractor for scans + the text tokenizer, with `<fmri>` expansion.

Remote-code rule (README, "Layout"): this file imports only numpy, torch, transformers and sibling
modules, so that `save_pretrained` can copy it into a Hub repository. Reading scan files needs
`modeling_fmrilm.io` (nibabel, scipy, h5py …): it is imported only when a path is given, and only
where the package is installed.

Every `<fmri>` marker in a prompt stands for one scan and becomes
`<fmri>` + N × `<fmri_pad>` + M × `<fmri_fc>` + `</fmri>` with `N = tokens_per_window * windows_per_scan`
and `M = connectivity_tokens_per_window * windows_per_scan` (0 for a codes-only model); the scans'
first `windows_per_scan` windows go to `fmri_values`, in marker order; the model writes their code
tokens into the `<fmri_pad>` positions and their projected connectivity rows (one per ROI) into the
`<fmri_fc>` positions.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature, ProcessorMixin

from .configuration_fmrilm import FMRI_END_TOKEN, FMRI_FC_TOKEN, FMRI_PAD_TOKEN, FMRI_START_TOKEN
from .errors import FmriInputError
from .feature_extraction_fmrilm import per_scan_trs

FMRI_TOKEN_PATTERN = re.compile(r"<fmri_\d{5}>|<fmri>|</fmri>|<fmri_pad>|<fmri_fc>")
"""Every fMRI token string: the code tokens and the specials."""

FMRI_TOKEN_FAMILY = re.compile(r"</?\s*fmri[^<>]*>", re.IGNORECASE)
"""Every string of the fMRI token family, in any case: `<fmri>`, `</fmri>`, `<fmri_pad>`, `<fmri_fc>`,
the code tokens `<fmri_NNNNN>` and any other `<fmri…>` tag (reserved for the fMRI tokens)."""


def check_no_fmri_tokens(text: str, name: str, allow_markers: bool = True) -> None:
    """Refuse fMRI token strings in text about to be tokenized: only the processor's expansion of an
    `<fmri>` marker writes fMRI tokens, so text cannot smuggle code ids into a prompt.

    Args:
        text: the text.
        name: how the error names it (`text[0]`, `question`).
        allow_markers: exact `<fmri>` markers are allowed (a prompt given to the processor, one marker
            per scan). `fmrilm ask` and the app pass `False` for the user's question: it is plain text,
            and the code places the scan's marker.

    Raises:
        FmriInputError: naming the first such string and where it is.
    """
    for match in FMRI_TOKEN_FAMILY.finditer(text):
        if not (allow_markers and match.group() == FMRI_START_TOKEN):
            raise FmriInputError(
                f"{name}: expected plain text, found the fMRI token string {match.group()!r} at character {match.start()}; "
                f"fMRI tokens come only from the processor's expansion of {FMRI_START_TOKEN}"
                + (" markers, one per scan" if allow_markers else ", which fmrilm places for the scan")
            )


DEFAULT_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{- '### Question: ' -}}"
    "{%- elif message['role'] == 'assistant' -%}{{- '### Answer: ' -}}{%- endif -%}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'fmri' -%}{{- '<fmri>' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- if message['role'] == 'assistant' and eos_token is defined -%}{{- eos_token -}}{%- endif -%}"
    "{{- '\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '### Answer:' -}}{%- endif -%}"
)
"""The paper's prompt layout (`### Question: …` / `### Answer:`); a `{"type": "fmri"}` part becomes `<fmri>`."""


class FmriProcessor(ProcessorMixin):
    r"""Turns prompts and scans into the inputs of [`FmriLMForCausalLM`].

    Args:
        feature_extractor ([`FmriFeatureExtractor`]): validation, TR resampling, windows, normalisation.
        tokenizer (`PreTrainedTokenizerBase`): the text tokenizer with the fMRI tokens added
            ([`FmriLMForCausalLM.from_parts`] adds them).
        tokens_per_window (`int`): codes per window (`num_rois * window_length // patch_length` of
            the fMRI tokenizer, for the feature extractor's window length).
        windows_per_scan (`int`, defaults to 1): windows of each scan the model reads.
        connectivity_tokens_per_window (`int`, defaults to 0): `<fmri_fc>` placeholders per window
            (the number of ROIs for a model that reads the connectivity stream, else 0).
        chat_template (`str`, *optional*): Jinja chat template; defaults to `DEFAULT_CHAT_TEMPLATE`.

    Calling it with `text` and `fmri` returns a `BatchFeature` with `input_ids`, `attention_mask`
    and `fmri_values` `(n_scans * windows_per_scan, n_rois, window_length)`.
    """

    def __init__(
        self,
        feature_extractor: Any = None,
        tokenizer: Any = None,
        tokens_per_window: int | None = None,
        windows_per_scan: int = 1,
        connectivity_tokens_per_window: int = 0,
        chat_template: str | None = None,
    ) -> None:
        for name, value in {"tokens_per_window": tokens_per_window, "windows_per_scan": windows_per_scan}.items():
            if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                raise FmriInputError(f"FmriProcessor.{name}: expected a positive integer, found {value!r}")
        value = connectivity_tokens_per_window
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            raise FmriInputError(
                f"FmriProcessor.connectivity_tokens_per_window: expected a non-negative integer, found {value!r}"
            )
        self.tokens_per_window = tokens_per_window
        self.windows_per_scan = windows_per_scan
        self.connectivity_tokens_per_window = connectivity_tokens_per_window
        super().__init__(feature_extractor, tokenizer, chat_template=chat_template or DEFAULT_CHAT_TEMPLATE)
        added = tokenizer.get_added_vocab()
        required = (FMRI_START_TOKEN, FMRI_END_TOKEN, FMRI_PAD_TOKEN) + (
            (FMRI_FC_TOKEN,) if connectivity_tokens_per_window else ()
        )
        missing = [token for token in required if token not in added]
        if missing:
            raise FmriInputError(
                f"tokenizer: expected the added tokens {missing}, found none; build the processor with "
                "FmriLMForCausalLM.from_parts, which adds the fMRI tokens"
            )
        self.fmri_pad_token_id = added[FMRI_PAD_TOKEN]
        self.fmri_fc_token_id = added.get(FMRI_FC_TOKEN)
        self.fmri_token_ids = frozenset(index for token, index in added.items() if FMRI_TOKEN_PATTERN.fullmatch(token))

    @property
    def pad_token_id(self) -> int | None:
        """The id batches are padded with: the text tokenizer's pad token, or its end-of-text token
        where it has none (GPT-2's and many base LMs' tokenizers)."""
        tokenizer = self.tokenizer
        return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @property
    def placeholders_per_scan(self) -> int:
        """`<fmri_pad>` tokens that one `<fmri>` marker expands to: `tokens_per_window * windows_per_scan`."""
        return self.tokens_per_window * self.windows_per_scan

    @property
    def connectivity_placeholders_per_scan(self) -> int:
        """`<fmri_fc>` tokens that one `<fmri>` marker expands to: `connectivity_tokens_per_window * windows_per_scan`."""
        return self.connectivity_tokens_per_window * self.windows_per_scan

    def expand_fmri_markers(self, prompt: str) -> str:
        """`prompt` with each `<fmri>` replaced by `<fmri>` + N × `<fmri_pad>` + M × `<fmri_fc>` + `</fmri>`."""
        expansion = (
            FMRI_START_TOKEN
            + FMRI_PAD_TOKEN * self.placeholders_per_scan
            + FMRI_FC_TOKEN * self.connectivity_placeholders_per_scan
            + FMRI_END_TOKEN
        )
        return prompt.replace(FMRI_START_TOKEN, expansion)

    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        fmri: Any = None,
        tr: float | Sequence[float | None] | None = None,
        images: Any = None,
        videos: Any = None,
        audio: Any = None,
        return_tensors: str | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Tokenize prompts with one `<fmri>` marker per scan and preprocess the scans.

        Args:
            text: a prompt or a list of prompts (a batch).
            fmri: the scans, in marker order across the batch: one scan, a list of scans, or a list
                with one list of scans per prompt. A scan is an array `(n_rois, n_timepoints)`, an
                `FmriScan`-like object with `.data` and `.tr`, or a file path (read with
                `modeling_fmrilm.io.read_array_file`, which needs the fmrilm package). A stacked
                array `(n_scans, n_rois, n_timepoints)` is a list of scans.
            tr: seconds between frames: one for all scans or one per scan (`None` entries take the
                scan's own `.tr`).
            images, videos, audio: not supported (they exist for `apply_chat_template`).
            return_tensors: `"pt"`, `"np"` or `None` (lists).
            **kwargs: passed to the text tokenizer (`padding` defaults to `True`, so batches are
                padded; `padding_side`, `truncation`, `max_length`, ...).

        Returns:
            `BatchFeature` with `input_ids`, `attention_mask` and, when scans are given,
            `fmri_values` `(n_scans * windows_per_scan, n_rois, window_length)` float32.

        Raises:
            FmriInputError: fMRI token strings other than `<fmri>` in the text (`check_no_fmri_tokens`),
                the number of `<fmri>` markers and of scans differ (both counts named),
                a scan with fewer than `windows_per_scan` windows (the scan named), truncation that
                cut placeholders, or any input the feature extractor rejects.
        """
        for name, value in {"images": images, "videos": videos, "audio": audio}.items():
            if value is not None:
                raise FmriInputError(f"{name}: FmriProcessor takes text and fmri only, found {type(value).__name__}")
        if text is None:
            raise FmriInputError(
                f"text: expected a prompt or a list of prompts with one {FMRI_START_TOKEN} per scan, found None"
            )
        prompts = [text] if isinstance(text, str) else list(text)
        for i, prompt in enumerate(prompts):
            check_no_fmri_tokens(prompt, f"text[{i}]")
        markers = [prompt.count(FMRI_START_TOKEN) for prompt in prompts]
        scans = self._flatten_scans(fmri, markers)
        if sum(markers) != len(scans):
            raise FmriInputError(
                f"text/fmri: found {sum(markers)} {FMRI_START_TOKEN} marker(s) in the text and {len(scans)} scan(s) "
                f"in fmri; expected one scan per marker"
            )
        kwargs.setdefault("padding", True)
        data = dict(self.tokenizer([self.expand_fmri_markers(prompt) for prompt in prompts], **kwargs))
        expected = {FMRI_PAD_TOKEN: (self.fmri_pad_token_id, self.placeholders_per_scan)}
        if self.connectivity_placeholders_per_scan:
            expected[FMRI_FC_TOKEN] = (self.fmri_fc_token_id, self.connectivity_placeholders_per_scan)
        for i, (ids, n_markers) in enumerate(zip(data["input_ids"], markers, strict=True)):
            for token, (token_id, per_scan) in expected.items():
                found = sum(1 for value in ids if value == token_id)
                if found != n_markers * per_scan:
                    raise FmriInputError(
                        f"text[{i}]: expected {n_markers * per_scan} {token} tokens for "
                        f"{n_markers} scan(s) after tokenization, found {found} (did truncation cut a scan?)"
                    )
        if scans:
            data["fmri_values"] = self._scan_windows(scans, tr)
        return BatchFeature(data, tensor_type=return_tensors)

    @staticmethod
    def _flatten_scans(fmri: Any, markers: list[int]) -> list[Any]:
        """The scans of `fmri` as a flat list in marker order (see `__call__`), per-prompt counts checked."""
        if fmri is None:
            return []
        if isinstance(fmri, (np.ndarray, torch.Tensor)) and fmri.ndim == 3:
            return list(fmri)
        if not isinstance(fmri, (list, tuple)):
            return [fmri]
        if fmri and all(isinstance(item, (list, tuple)) for item in fmri):
            if len(fmri) != len(markers):
                raise FmriInputError(
                    f"fmri: expected one list of scans per prompt ({len(markers)} prompts), found {len(fmri)} lists"
                )
            for i, (scans, count) in enumerate(zip(fmri, markers, strict=True)):
                if len(scans) != count:
                    raise FmriInputError(
                        f"fmri[{i}]: found {count} {FMRI_START_TOKEN} marker(s) in text[{i}] and {len(scans)} scan(s); "
                        "expected one scan per marker"
                    )
            return [scan for scans in fmri for scan in scans]
        return list(fmri)

    def _scan_windows(self, scans: list[Any], tr: float | Sequence[float | None] | None) -> np.ndarray:
        """First `windows_per_scan` windows of each scan, `(n_scans * windows_per_scan, n_rois, window_length)`."""
        trs = per_scan_trs(tr, len(scans))
        scans = [
            self._read_scan(scan, scan_tr) if isinstance(scan, (str, os.PathLike)) else scan
            for scan, scan_tr in zip(scans, trs, strict=True)
        ]
        features = self.feature_extractor(scans, tr=trs)
        wanted = self.windows_per_scan
        keep = features["window_index"] < wanted
        counts = np.bincount(features["scan_index"][keep], minlength=len(scans))
        for i in np.flatnonzero(counts < wanted):
            name = getattr(scans[i], "name", None) or f"fmri[{i}]"
            raise FmriInputError(
                f"{name}: expected at least windows_per_scan={wanted} windows of {self.feature_extractor.window_length} "
                f"frames at TR {self.feature_extractor.target_tr} s, found {counts[i]}"
            )
        return features["fmri_values"][keep]

    def _read_scan(self, path: str | os.PathLike, tr: float | None) -> Any:
        """Read a scan file with `modeling_fmrilm.io` (only where the fmrilm package is installed)."""
        try:
            from modeling_fmrilm.io import read_array_file
        except ImportError as error:
            raise FmriInputError(
                f"{path}: reading scan files needs the fmrilm package (modeling_fmrilm.io), which is not importable "
                f"here ({error}); pass the array (n_rois, n_timepoints) instead"
            ) from error
        return read_array_file(path, tr=tr, num_rois=self.feature_extractor.num_rois)

    def _multimodal_inputs_from_conversations(
        self,
        conversations: list[list[dict[str, Any]]],
        audio_loading_params: dict,
        load_audio_from_video: bool = False,
    ) -> tuple[list, list, list, dict[str, Any]]:
        """As `ProcessorMixin`'s, plus the scans of `{"type": "fmri", "fmri": <scan or path>, "tr": …}` parts.

        Parts without `"fmri"` (or `"path"`) contribute only the marker; their scans can then come
        in `processor_kwargs={"fmri": …, "tr": …}`.
        """
        images, videos, audios, extra = super()._multimodal_inputs_from_conversations(
            conversations, audio_loading_params, load_audio_from_video
        )
        parts = [
            part
            for conversation in conversations
            for message in conversation
            if isinstance(message.get("content"), list)
            for part in message["content"]
            if part.get("type") == "fmri" and ("fmri" in part or "path" in part)
        ]
        if parts:
            extra = {**extra, "fmri": [part.get("fmri", part.get("path")) for part in parts]}
            if any("tr" in part for part in parts):
                extra["tr"] = [part.get("tr") for part in parts]
        return images, videos, audios, extra

    def _without_fmri_tokens(self, token_ids: Any) -> list[int]:
        return [token for token in _as_list(token_ids) if token not in self.fmri_token_ids]

    def batch_decode(self, sequences: Any, keep_fmri_tokens: bool = False, **kwargs: Any) -> list[str]:
        """Decode a batch of token ids; fMRI tokens (codes, `<fmri>`, `</fmri>`, `<fmri_pad>`) are
        dropped unless `keep_fmri_tokens=True` (they are special tokens, so `skip_special_tokens=True`
        drops them as well)."""
        if not keep_fmri_tokens:
            sequences = [self._without_fmri_tokens(sequence) for sequence in _as_list(sequences)]
        return self.tokenizer.batch_decode(sequences, **kwargs)

    def decode(self, token_ids: Any, keep_fmri_tokens: bool = False, **kwargs: Any) -> str:
        """Decode one sequence of token ids; see `batch_decode`."""
        if not keep_fmri_tokens:
            token_ids = self._without_fmri_tokens(token_ids)
        return self.tokenizer.decode(token_ids, **kwargs)


def _as_list(values: Any) -> list:
    return values.tolist() if hasattr(values, "tolist") else list(values)


__all__ = ["DEFAULT_CHAT_TEMPLATE", "FMRI_TOKEN_FAMILY", "FMRI_TOKEN_PATTERN", "FmriProcessor", "check_no_fmri_tokens"]
