"""Stage 2/3 of fMRI-LM: a causal language model that reads and writes fMRI tokens.

Remote-code rule (README, "Layout"): this file imports only torch, transformers and sibling modules,
so that `save_pretrained` can copy it into a Hub repository and `trust_remote_code=True` loads it
where `modeling_fmrilm` is not installed.

[`FmriLMForCausalLM`] wraps any causal LM (`language_model`) and the frozen Stage 1 tokenizer
(`fmri_tokenizer`). The text vocabulary holds one token per fMRI code plus `<fmri>`, `</fmri>` and
`<fmri_pad>`; the processor writes `<fmri>` + N × `<fmri_pad>` + `</fmri>` for every scan, and
`forward` encodes the scan's windows into codes and writes their token ids into the `<fmri_pad>`
positions. After that the input is ordinary token ids, so the language model, its KV cache,
`generate`, peft and `Trainer` run unchanged, and training can skip the encoder entirely by
writing pre-computed code tokens into `input_ids` (same logits).

A model whose config reads the `connectivity` stream also gets, per window, one `<fmri_fc>`
placeholder per ROI after the code placeholders. `forward` computes each window's functional
connectivity from `fmri_values` ([`connectivity_rows`]) or takes it pre-computed
(`fmri_connectivity`), maps every ROI's row through `connectivity_projector` (LLaVA's
`multi_modal_projector` pattern: Linear -> GELU -> Linear) into the LM's embedding space, and writes
the projected rows into the input embeddings at the `<fmri_fc>` positions. Why a second stream: a
code token holds one ROI's time course, so the coupling between two ROIs is a second-order function
of two tokens, which the transformers we can train do not learn to compute; a token holding the
ROI's row of the FC matrix makes coupling first order, and a small reader then matches a logistic
model on the FC (`bench/readout.py`, README).
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationMixin, PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils import torch_compilable_check

from .configuration_fmrilm import (
    FMRI_END_TOKEN,
    FMRI_FC_TOKEN,
    FMRI_PAD_TOKEN,
    FMRI_START_TOKEN,
    FmriLMConfig,
    fmri_code_tokens,
)
from .errors import FmriInputError
from .feature_extraction_fmrilm import FmriFeatureExtractor
from .modeling_fmri_tokenizer import FmriTokenizerModel, SafetensorsOnly
from .processing_fmrilm import FmriProcessor

CODE_PROJECTION_SEED = 0
"""Seed of the fixed random orthogonal map from `code_dim` to the LM's hidden size (see `code_embeddings`)."""


def code_embeddings(codebook: torch.Tensor, hidden_size: int, seed: int = CODE_PROJECTION_SEED) -> torch.Tensor:
    """Unit-norm embedding directions `(num_codes, hidden_size)` for the code vectors `codebook` `(num_codes, code_dim)`.

    When `code_dim == hidden_size` the directions are the code vectors themselves (the tokenizer was
    trained in the LM's width). Otherwise they go through a fixed random orthogonal
    map drawn from `seed`: with `code_dim < hidden_size` it embeds the codebook isometrically (all
    angles between codes are kept); with `code_dim > hidden_size` it projects onto a random
    `hidden_size`-dimensional subspace (angles are kept only approximately). The map is not learned:
    it only has to keep the codes' geometry so that training starts from distinguishable rows.
    """
    codebook = codebook.detach().float()
    code_dim = codebook.shape[1]
    if code_dim != hidden_size:
        generator = torch.Generator().manual_seed(seed)
        gaussian = torch.randn(max(code_dim, hidden_size), min(code_dim, hidden_size), generator=generator)
        orthonormal_columns, _ = torch.linalg.qr(gaussian)
        projection = orthonormal_columns.T if code_dim < hidden_size else orthonormal_columns
        codebook = codebook @ projection.to(codebook.device)
    return F.normalize(codebook, dim=-1)


FISHER_Z_CLIP = 1.0 - 1e-4
"""|r| is clipped here before `arctanh`, so Fisher's z stays finite (|z| <= 4.95)."""

IGNORE_INDEX = -100


def connectivity_rows(fmri_values: torch.Tensor, fisher_z: bool = False) -> torch.Tensor:
    """Each window's functional connectivity, the rows of the connectivity stream.

    Args:
        fmri_values (`torch.Tensor` of shape `(..., num_rois, n_frames)`): windows (any leading dims).
        fisher_z: Fisher's z (`arctanh r`, |r| clipped at `FISHER_Z_CLIP`) instead of Pearson's r.

    Returns:
        `torch.FloatTensor` of shape `(..., num_rois, num_rois)`: Pearson's r between every pair of
        ROIs over the window's frames (`numpy.corrcoef` of each window), symmetric. The diagonal is
        set to 0: a ROI's correlation with itself is 1 for every scan and carries nothing (and its z
        would be infinite). A ROI constant over the window has no defined correlation; its row and
        column are 0 (no coupling) rather than NaN. The values are rounded to float16 precision
        (returned as float32): the connectivity stream is defined at that precision, which is what
        the pre-computed training column stores (error <= 4.9e-4 in r, far below the sampling error
        of a correlation over a window, about 1/sqrt(n_frames)), so the online and the pre-computed
        paths give the model identical inputs.
    """
    values = fmri_values.float()
    centred = values - values.mean(dim=-1, keepdim=True)
    norms = torch.linalg.vector_norm(centred, dim=-1, keepdim=True)
    unit = torch.where(
        norms > 0, centred / norms.clamp_min(torch.finfo(torch.float32).tiny), torch.zeros_like(centred)
    )
    correlation = (unit @ unit.transpose(-1, -2)).clamp(-1.0, 1.0)
    if fisher_z:
        correlation = torch.atanh(correlation.clamp(-FISHER_Z_CLIP, FISHER_Z_CLIP))
    off_diagonal = 1.0 - torch.eye(correlation.shape[-1], dtype=correlation.dtype, device=correlation.device)
    return (correlation * off_diagonal).to(torch.float16).to(torch.float32)


class FmriConnectivityProjector(nn.Module):
    """Maps a ROI's connectivity row `(num_rois,)` to one input embedding `(hidden_size,)`:
    `Linear(num_rois, projector_hidden_size) -> GELU -> Linear(projector_hidden_size, hidden_size)`."""

    def __init__(self, num_rois: int, hidden_size: int, projector_hidden_size: int | None = None) -> None:
        super().__init__()
        width = projector_hidden_size or hidden_size
        self.linear_1 = nn.Linear(num_rois, width)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(width, hidden_size)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(rows)))


class FmriLMPreTrainedModel(SafetensorsOnly, PreTrainedModel):
    config: FmriLMConfig
    config_class = FmriLMConfig
    main_input_name = "input_ids"
    input_modalities = ("fmri", "text")
    supports_gradient_checkpointing = True
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # Codes are discrete: the tokenizer always encodes in float32 so that a bf16/fp16 model gives
    # the same codes as the float32 `datasets.map` pass that pre-computes them.
    _keep_in_fp32_modules_strict = ["fmri_tokenizer"]


class FmriLMForCausalLM(FmriLMPreTrainedModel, GenerationMixin):
    r"""Any causal language model with fMRI tokens in its vocabulary.

    Holds `language_model` (any `AutoModelForCausalLM`; its head is the one shared head over the
    unified vocabulary) and `fmri_tokenizer`, the Stage 1 [`FmriTokenizerModel`], frozen: always in
    eval mode (`train()` leaves it there) with `requires_grad=False`, and run in float32 without
    autocast. Build one from trained parts with [`FmriLMForCausalLM.from_parts`]; load one with
    `AutoModelForCausalLM.from_pretrained` (or `AutoModel`).

    Args:
        config ([`FmriLMConfig`]): the composite configuration.
        language_model (`PreTrainedModel`, *optional*): a built causal LM to hold instead of
            `AutoModelForCausalLM.from_config(config.text_config)`; `config.text_config` becomes
            its config.
        fmri_tokenizer ([`FmriTokenizerModel`], *optional*): a built tokenizer to hold instead of
            a fresh one from `config.fmri_tokenizer_config`; that sub-config becomes its config.

    Example:

    ```python
    >>> model, processor = FmriLMForCausalLM.from_parts("outputs/stage1/final", "Qwen/Qwen3-0.6B")
    >>> inputs = processor(text="<fmri> Describe this scan:", fmri=scan, tr=0.72, return_tensors="pt")
    >>> processor.batch_decode(model.generate(**inputs, max_new_tokens=40))
    ```
    """

    # The embedding tie lives inside `language_model` (its own `_tied_weights_keys`, gathered with
    # the `language_model.` prefix by `post_init`, and re-read by `tie_weights` and peft); the
    # wrapper adds no tie of its own. A dict, as transformers 5 and peft expect.
    _tied_weights_keys: dict[str, str] = {}

    def __init__(
        self,
        config: FmriLMConfig,
        language_model: PreTrainedModel | None = None,
        fmri_tokenizer: FmriTokenizerModel | None = None,
    ) -> None:
        super().__init__(config)
        if language_model is None:
            language_model = AutoModelForCausalLM.from_config(config.text_config)
        if fmri_tokenizer is None:
            fmri_tokenizer = FmriTokenizerModel(config.fmri_tokenizer_config)
        config.text_config = language_model.config
        config.fmri_tokenizer_config = fmri_tokenizer.config
        self.language_model = language_model
        self.fmri_tokenizer = fmri_tokenizer
        if config.reads_connectivity:
            self.connectivity_projector = FmriConnectivityProjector(
                fmri_tokenizer.config.num_rois,
                language_model.get_input_embeddings().weight.shape[1],
                config.projector_hidden_size,
            )
        self.post_init()
        self.freeze_fmri_tokenizer()

    def freeze_fmri_tokenizer(self) -> None:
        """Eval mode and `requires_grad=False` for every parameter of `fmri_tokenizer` (done on build and load)."""
        self.fmri_tokenizer.requires_grad_(False)
        self.fmri_tokenizer.eval()

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        """`PreTrainedModel.from_pretrained`, then the fMRI tokenizer is frozen again.

        Loading replaces the parameters built in `__init__` with new ones that require gradients;
        a frozen part that requires them would enter the optimizer and trip DDP's unused-parameter check.
        """
        loaded = super().from_pretrained(*args, **kwargs)
        (loaded[0] if isinstance(loaded, tuple) else loaded).freeze_fmri_tokenizer()
        return loaded

    def train(self, mode: bool = True) -> FmriLMForCausalLM:
        """Set train/eval mode on the language model; the frozen fMRI tokenizer stays in eval mode."""
        super().train(mode)
        self.fmri_tokenizer.eval()
        return self

    # -- embeddings: all delegated to the language model ------------------------------------

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module | None:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    def get_decoder(self) -> nn.Module:
        return self.language_model.get_decoder()

    def resize_token_embeddings(
        self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None, mean_resizing: bool = True
    ) -> nn.Embedding:
        """Resize the language model's embeddings (and its head, tied or not) to `new_num_tokens` rows.

        Raises:
            FmriInputError: `new_num_tokens` would drop fMRI token rows.
        """
        config = self.config
        highest = max(config.code_token_ids.stop - 1, *config.special_token_ids.values())
        if new_num_tokens is not None and new_num_tokens <= highest:
            raise FmriInputError(
                f"new_num_tokens: expected more than {highest} rows (the highest fMRI token id), found {new_num_tokens}"
            )
        embeddings = self.language_model.resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        config.text_config = self.language_model.config
        return embeddings

    # -- fMRI -> token ids ---------------------------------------------------------------------

    @torch.no_grad()
    def fmri_to_token_ids(self, fmri_values: torch.Tensor) -> torch.LongTensor:
        """Token ids of the codes of windows `fmri_values`.

        Args:
            fmri_values (`torch.FloatTensor` of shape `(n_windows, num_rois, n_frames)` or
                `(batch, n_windows, num_rois, n_frames)`): normalised windows (the processor's
                `fmri_values`); a 4-D batch is read in row-major order.

        Returns:
            `torch.LongTensor` of shape `(n_windows, tokens_per_window)` (`batch * n_windows` rows
            for a 4-D input): `code + first_code_token_id`. This is the pass that training runs once
            over a dataset (`datasets.map`) so that Stage 2 trains on token ids alone.
        """
        if isinstance(fmri_values, torch.Tensor) and fmri_values.ndim == 4:
            fmri_values = fmri_values.flatten(0, 1)
        tokenizer = self.fmri_tokenizer
        with torch.autocast(device_type=tokenizer.device.type, enabled=False):
            codes = tokenizer.encode(fmri_values.to(device=tokenizer.device, dtype=tokenizer.dtype))
        return codes + self.config.first_code_token_id

    def fmri_connectivity(self, fmri_values: torch.Tensor) -> torch.FloatTensor:
        """The connectivity rows of windows `fmri_values` `(..., num_rois, n_frames)`:
        `(..., num_rois, num_rois)` ([`connectivity_rows`] with the config's Fisher z choice). This is
        the pass training runs once over a dataset, beside the codes."""
        return connectivity_rows(fmri_values, self.config.connectivity_fisher_z)

    def embed_with_connectivity(
        self, input_ids: torch.LongTensor, fmri_connectivity: torch.Tensor
    ) -> torch.FloatTensor:
        """The LM's input embeddings of `input_ids`, with the `<fmri_fc>` positions replaced by the
        projected connectivity rows.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch, seq_len)`): with the code tokens written.
            fmri_connectivity (`torch.Tensor` of shape `(n_windows, num_rois, num_rois)` or
                `(batch, n_windows, num_rois, num_rois)`): the rows of every window in the batch, in
                the order of the `<fmri_fc>` placeholders (row-major: batch, then position); each
                window fills `num_rois` placeholders, its rows in ROI order.

        Raises:
            FmriInputError: the number of `<fmri_fc>` placeholders differs from the number of rows.
        """
        embedding = self.get_input_embeddings()
        inputs_embeds = embedding(input_ids)
        rows = fmri_connectivity.reshape(-1, fmri_connectivity.shape[-1])
        placeholders = input_ids == self.config.fmri_fc_token_id
        n_placeholders = placeholders.sum()
        num_rois = self.config.fmri_tokenizer_config.num_rois
        if fmri_connectivity.shape[-2:] != (num_rois, num_rois):
            raise FmriInputError(
                f"fmri_connectivity: expected windows of shape (..., {num_rois}, {num_rois}) (num_rois x num_rois), "
                f"found {tuple(fmri_connectivity.shape)}"
            )
        torch_compilable_check(
            n_placeholders == rows.shape[0],
            lambda: (
                f"fmri_connectivity: the {FMRI_FC_TOKEN} placeholders in input_ids and the connectivity rows do not match: "
                f"placeholders {int(n_placeholders)}, rows {rows.shape[0]} ({rows.shape[0] // num_rois} windows x "
                f"{num_rois} ROIs); run the text through FmriProcessor with one scan per {FMRI_START_TOKEN}"
            ),
            error_type=FmriInputError,
        )
        projector = self.connectivity_projector
        projected = projector(rows.to(device=inputs_embeds.device, dtype=projector.linear_1.weight.dtype))
        return inputs_embeds.masked_scatter(placeholders[..., None], projected.to(inputs_embeds.dtype))

    @contextlib.contextmanager
    def blank_stream(self, stream: str, embeddings: torch.Tensor) -> Iterator[None]:
        """Within the block, the positions of one fMRI stream get fixed embeddings instead of the scan's.

        Used by the evaluation to tell where an answer comes from: with `embeddings` the stream's
        mean embedding per position over training scans, a scan's answer no longer depends on that
        stream, so what is left is read from the other stream (or from neither).

        Args:
            stream: `"codes"` (every code-token position) or `"connectivity"` (every `<fmri_fc>` position).
            embeddings (`torch.Tensor` of shape `(positions_per_scan, hidden_size)`): the embedding of
                each of the stream's positions in one scan's block, repeated for every scan.

        Raises:
            FmriInputError: a stream the model does not read.
        """
        if stream not in self.config.fmri_streams:
            raise FmriInputError(
                f"stream: expected one of the model's streams {self.config.fmri_streams}, found {stream!r}"
            )
        self.stream_blanks = {stream: embeddings}
        try:
            yield
        finally:
            self.stream_blanks = {}

    stream_blanks: dict[str, torch.Tensor] = {}
    """The streams blanked by [`blank_stream`] (empty outside it)."""

    def stream_positions(self, input_ids: torch.LongTensor, stream: str) -> torch.BoolTensor:
        """Where `input_ids` holds the tokens of `stream`: code tokens, or `<fmri_fc>` placeholders."""
        config = self.config
        if stream == "codes":
            return (input_ids >= config.first_code_token_id) & (input_ids < config.code_token_ids.stop)
        return input_ids == config.fmri_fc_token_id

    def embed_with_blanks(
        self, input_ids: torch.LongTensor, fmri_connectivity: torch.Tensor | None
    ) -> torch.FloatTensor:
        """Input embeddings with the connectivity rows written (unless blanked) and each blanked
        stream's positions holding its fixed embeddings (see [`blank_stream`])."""
        blanks = self.stream_blanks
        if "connectivity" not in blanks and fmri_connectivity is not None:
            inputs_embeds = self.embed_with_connectivity(input_ids, fmri_connectivity)
        else:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        for stream, embeddings in blanks.items():
            positions = self.stream_positions(input_ids, stream)
            count = int(positions.sum())
            if count % embeddings.shape[0]:
                raise FmriInputError(
                    f"blank_stream({stream!r}): {count} positions of the stream in input_ids, not a multiple of the "
                    f"{embeddings.shape[0]} positions of one scan"
                )
            tiled = embeddings.to(inputs_embeds.dtype).repeat(count // embeddings.shape[0], 1)
            inputs_embeds = inputs_embeds.masked_scatter(positions[..., None], tiled.to(inputs_embeds.device))
        return inputs_embeds

    def drop_code_stream(self, input_ids: torch.LongTensor) -> torch.LongTensor:
        """`input_ids` with, in each sequence drawn with probability `config.code_dropout`, every code
        token replaced by `<fmri_pad>` (the training-time stream dropout of [`FmriLMConfig`]; labels
        are left as they are)."""
        dropped = torch.rand(input_ids.shape[0], device=input_ids.device) < self.config.code_dropout
        positions = self.stream_positions(input_ids, "codes") & dropped[:, None]
        return input_ids.masked_fill(positions, self.config.fmri_pad_token_id)

    def insert_fmri_tokens(self, input_ids: torch.LongTensor, fmri_values: torch.Tensor) -> torch.LongTensor:
        """`input_ids` with the code tokens of `fmri_values` written into the `<fmri_pad>` positions.

        Placeholders are filled in row-major order (batch, then position), windows in the order of
        `fmri_values`, each window's tokens in the tokenizer's order (ROI-major).

        Raises:
            FmriInputError: the number of `<fmri_pad>` placeholders differs from the number of codes.
        """
        token_ids = self.fmri_to_token_ids(fmri_values).to(input_ids.device)
        placeholders = input_ids == self.config.fmri_pad_token_id
        n_placeholders = placeholders.sum()
        torch_compilable_check(
            n_placeholders == token_ids.numel(),
            lambda: (
                f"fmri_values: the {FMRI_PAD_TOKEN} placeholders in input_ids and the fMRI codes do not match: "
                f"placeholders {int(n_placeholders)}, codes {token_ids.numel()} ({token_ids.shape[0]} windows x "
                f"{token_ids.shape[1]} tokens); run the text through FmriProcessor with one scan per {FMRI_START_TOKEN}"
            ),
            error_type=FmriInputError,
        )
        return input_ids.masked_scatter(placeholders, token_ids)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        fmri_values: torch.FloatTensor | None = None,
        fmri_connectivity: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        cache: Any | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        r"""Write the fMRI code tokens (and the projected connectivity rows) into the placeholders, then run the language model.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch, seq_len)`): token ids from
                [`FmriProcessor`], with `<fmri_pad>` placeholders where `fmri_values` go (or with
                the code tokens already written, and `fmri_values=None`).
            attention_mask (`torch.Tensor` of shape `(batch, seq_len)`, *optional*).
            fmri_values (`torch.FloatTensor` of shape `(n_scans * windows_per_scan, num_rois, n_frames)`, *optional*):
                the processor's windows, in the order of the `<fmri>` markers; also accepted as
                `(batch, n_windows, num_rois, n_frames)` (what a collator stacking examples gives).
            fmri_connectivity (`torch.FloatTensor` of shape `(n_windows, num_rois, num_rois)`, *optional*):
                pre-computed connectivity rows ([`fmri_connectivity`]) of the windows whose
                `<fmri_fc>` placeholders `input_ids` holds, in placeholder order (row-major: batch,
                then position); default, when `fmri_values` is given: computed from it. Only for a
                model that reads the connectivity stream.
            labels (`torch.LongTensor` of shape `(batch, seq_len)`, *optional*): unshifted labels as
                for any causal LM; positions holding `<fmri_pad>` get the same code tokens as
                `input_ids`, so `labels=input_ids` means the same with and without pre-computed codes;
                positions holding `<fmri_fc>` are ignored (a continuous token is never a target).
            cache (`Cache`, *optional*): the KV cache, passed to the language model and returned by it.
            inputs_embeds (`torch.FloatTensor` of shape `(batch, seq_len, hidden_size)`, *optional*):
                instead of `input_ids` (then `fmri_values` must be `None`: the codes must already be
                embedded).
            position_ids (`torch.LongTensor` of shape `(batch, seq_len)`, *optional*).
            **kwargs: passed to the language model (`use_cache`, `logits_to_keep`, ...).

        Returns:
            The language model's output (`CausalLMOutputWithPast` or the LM's own subclass):
            `loss`, `logits` `(batch, seq_len, vocab_size)`, `cache`, ...
        """
        config = self.config
        if (fmri_values is not None or fmri_connectivity is not None) and input_ids is None:
            raise FmriInputError(
                "fmri_values/fmri_connectivity: given with inputs_embeds; pass input_ids with the fMRI placeholders instead"
            )
        if fmri_connectivity is not None and not config.reads_connectivity:
            raise FmriInputError(
                f"fmri_connectivity: given, but this model reads the streams {config.fmri_streams} (no connectivity tokens)"
            )
        if fmri_values is not None:
            input_ids = self.insert_fmri_tokens(input_ids, fmri_values)
            if labels is not None:
                labels = torch.where(labels == config.fmri_pad_token_id, input_ids, labels)
            if config.reads_connectivity and fmri_connectivity is None:
                fmri_connectivity = self.fmri_connectivity(fmri_values)
        if config.reads_connectivity and input_ids is not None and labels is not None:
            labels = labels.masked_fill(labels == config.fmri_fc_token_id, IGNORE_INDEX)
        if self.training and config.code_dropout > 0 and input_ids is not None:
            input_ids = self.drop_code_stream(input_ids)
        if input_ids is not None and self.stream_blanks:
            inputs_embeds, input_ids = self.embed_with_blanks(input_ids, fmri_connectivity), None
        elif config.reads_connectivity and input_ids is not None:
            if fmri_connectivity is not None:
                inputs_embeds, input_ids = self.embed_with_connectivity(input_ids, fmri_connectivity), None
            else:
                torch_compilable_check(
                    ~(input_ids == config.fmri_fc_token_id).any(),
                    lambda: (
                        f"input_ids: {FMRI_FC_TOKEN} placeholders without fmri_values or fmri_connectivity to fill them; "
                        "pass the processor's fmri_values (or pre-computed fmri_connectivity)"
                    ),
                    error_type=FmriInputError,
                )
        return self.language_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            labels=labels,
            **kwargs,
        )

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        fmri_values: torch.FloatTensor | None = None,
        fmri_connectivity: torch.FloatTensor | None = None,
        is_first_iteration: bool | None = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """As for any causal LM; `fmri_values` and `fmri_connectivity` go only to the first step when the cache is on.

        With the cache, later steps feed only the new tokens (no placeholders left); without it,
        every step feeds the whole sequence, placeholders included, so every step gets them.
        """
        model_inputs = super().prepare_inputs_for_generation(
            input_ids, is_first_iteration=is_first_iteration, **kwargs
        )
        if is_first_iteration or not kwargs.get("use_cache", True):
            model_inputs["fmri_values"] = fmri_values
            model_inputs["fmri_connectivity"] = fmri_connectivity
        return model_inputs

    # -- building from trained parts ------------------------------------------------------------

    @classmethod
    def from_parts(
        cls,
        tokenizer: str | os.PathLike | FmriTokenizerModel,
        language_model: str | os.PathLike | PreTrainedModel,
        text_tokenizer: str | os.PathLike | PreTrainedTokenizerBase | None = None,
        feature_extractor: FmriFeatureExtractor | None = None,
        windows_per_scan: int = 1,
        fmri_streams: tuple[str, ...] = ("codes", "connectivity"),
        connectivity_fisher_z: bool = False,
        **language_model_kwargs: Any,
    ) -> tuple[FmriLMForCausalLM, FmriProcessor]:
        """Join a trained Stage 1 tokenizer and a causal LM into a model and its processor.

        The text tokenizer gains the added special tokens `<fmri_00000>` … (one per code, in code
        order, contiguous ids) and `<fmri>`, `</fmri>`, `<fmri_pad>` (and `<fmri_fc>` with the
        connectivity stream; in place; and a pad token = its eos token when it has none, so that
        batches can be padded). The LM's embeddings grow to cover them. Each code's input-embedding row starts from its codebook vector
        ([`code_embeddings`]: the vector itself when `code_dim` equals the LM's hidden size, else a
        fixed seeded random orthogonal projection), the three specials from fixed seeded random
        directions, all scaled to the mean L2 norm of the LM's existing rows. A head tied to the
        embeddings stays tied; an untied head gets the same directions scaled to its own rows' mean
        norm (and the mean of its bias, if any). With the connectivity stream, the projector's output
        layer is scaled so that projected rows start at the code rows' norm
        ([`calibrate_connectivity_projector`], here on the connectivity of white-noise windows; Stage 2
        calibrates it again on its training windows).

        Args:
            tokenizer: a trained Stage 1 folder (the model and, when saved, its feature extractor)
                or an [`FmriTokenizerModel`].
            language_model: a causal LM folder or Hub id (loaded with
                `AutoModelForCausalLM.from_pretrained(language_model, **language_model_kwargs)`) or
                a built one.
            text_tokenizer: a folder, Hub id or tokenizer; default: the one saved with
                `language_model` (its folder or id, or the built model's `name_or_path`).
            feature_extractor: the scans' preprocessing; default: the one saved in the Stage 1
                folder, else `FmriFeatureExtractor(num_rois=..., window_length=...)` from the
                tokenizer's config with the paper's other defaults.
            windows_per_scan: windows of each scan the model reads (the paper: 1).
            fmri_streams: what the model reads of a window (`FmriLMConfig.fmri_streams`): the code
                tokens, and by default one connectivity token per ROI too.
            connectivity_fisher_z: connectivity rows in Fisher's z instead of Pearson's r.

        Returns:
            `(model, processor)`: the [`FmriLMForCausalLM`] in eval mode and its [`FmriProcessor`].

        Raises:
            FmriInputError: no text tokenizer can be found, the feature extractor's windows do not
                fit the tokenizer, or the added code tokens do not get contiguous ids.
        """
        fmri_tokenizer = (
            tokenizer if isinstance(tokenizer, FmriTokenizerModel) else FmriTokenizerModel.from_pretrained(tokenizer)
        )
        if feature_extractor is None:
            feature_extractor = _saved_feature_extractor(tokenizer, fmri_tokenizer)
        tokens_per_window = _tokens_per_window(fmri_tokenizer, feature_extractor)
        if not isinstance(language_model, PreTrainedModel):
            language_model = AutoModelForCausalLM.from_pretrained(
                language_model, **{"use_safetensors": True, **language_model_kwargs}
            )
        text_tokenizer = _text_tokenizer(text_tokenizer, language_model)

        existing_rows = min(len(text_tokenizer), language_model.get_input_embeddings().weight.shape[0])
        num_codes = fmri_tokenizer.config.num_codes
        code_tokens = fmri_code_tokens(num_codes)
        specials = [FMRI_START_TOKEN, FMRI_END_TOKEN, FMRI_PAD_TOKEN] + (
            [FMRI_FC_TOKEN] if "connectivity" in fmri_streams else []
        )
        text_tokenizer.add_tokens(code_tokens + specials, special_tokens=True)
        code_ids = text_tokenizer.convert_tokens_to_ids(code_tokens)
        if code_ids != list(range(code_ids[0], code_ids[0] + num_codes)):
            raise FmriInputError(
                f"text_tokenizer: expected the {num_codes} code tokens <fmri_00000>… to get contiguous ids, found "
                f"ids {code_ids[:3]}…{code_ids[-3:]}; use a tokenizer without tokens of that form"
            )
        special_ids = text_tokenizer.convert_tokens_to_ids(specials)
        if text_tokenizer.pad_token is None and text_tokenizer.eos_token is not None:
            text_tokenizer.pad_token = text_tokenizer.eos_token
        if len(text_tokenizer) > language_model.get_input_embeddings().weight.shape[0]:
            language_model.resize_token_embeddings(len(text_tokenizer), mean_resizing=False)

        config = FmriLMConfig(
            # The sub-configs are the parts' own; without this the new config would reset the
            # LM config's attention implementation (it is set recursively on sub-configs).
            attn_implementation=language_model.config._attn_implementation,
            fmri_tokenizer_config=fmri_tokenizer.config,
            text_config=language_model.config,
            first_code_token_id=code_ids[0],
            fmri_start_token_id=special_ids[0],
            fmri_end_token_id=special_ids[1],
            fmri_pad_token_id=special_ids[2],
            fmri_fc_token_id=special_ids[3] if len(special_ids) > 3 else None,
            fmri_streams=tuple(fmri_streams),
            connectivity_fisher_z=connectivity_fisher_z,
            windows_per_scan=windows_per_scan,
        )
        model = cls(config, language_model=language_model, fmri_tokenizer=fmri_tokenizer)
        model.generation_config = copy.deepcopy(language_model.generation_config)
        model.initialize_fmri_rows(existing_rows)
        if config.reads_connectivity:
            generator = torch.Generator().manual_seed(CODE_PROJECTION_SEED + 2)
            noise = torch.randn(
                8, fmri_tokenizer.config.num_rois, feature_extractor.window_length, generator=generator
            )
            model.calibrate_connectivity_projector(model.fmri_connectivity(noise))
        model.eval()
        processor = FmriProcessor(
            feature_extractor=feature_extractor,
            tokenizer=text_tokenizer,
            tokens_per_window=tokens_per_window,
            windows_per_scan=windows_per_scan,
            connectivity_tokens_per_window=config.connectivity_tokens_per_window,
        )
        return model, processor

    @torch.no_grad()
    def reset_connectivity_projector(self) -> None:
        """Draw the connectivity projector's weights afresh (`nn.Linear`'s own initialisation, from
        torch's global seed), as they were before any training; call
        [`calibrate_connectivity_projector`] after it to set their scale."""
        if not self.config.reads_connectivity:
            raise ValueError(f"fmri_streams={self.config.fmri_streams}: this model has no connectivity projector")
        self.connectivity_projector.linear_1.reset_parameters()
        self.connectivity_projector.linear_2.reset_parameters()

    @torch.no_grad()
    def calibrate_connectivity_projector(self, fmri_connectivity: torch.Tensor) -> float:
        """Scale the projector's output layer so that the projected rows of `fmri_connectivity`
        `(..., num_rois, num_rois)` have, on average, the L2 norm of the code tokens' input-embedding
        rows (which start at the LM's mean row norm), as the code rows are scaled when added.

        Returns:
            The factor the output layer was multiplied by.
        """
        projector = self.connectivity_projector
        weight = projector.linear_2.weight
        rows = fmri_connectivity.reshape(-1, fmri_connectivity.shape[-1]).to(device=weight.device, dtype=weight.dtype)
        current = projector(rows).float().norm(dim=-1).mean()
        code_rows = self.get_input_embeddings().weight[list(self.config.code_token_ids)]
        factor = float(code_rows.float().norm(dim=-1).mean() / current.clamp_min(1e-12))
        projector.linear_2.weight.mul_(factor)
        projector.linear_2.bias.mul_(factor)
        return factor

    @torch.no_grad()
    def initialize_fmri_rows(self, existing_rows: int) -> None:
        """Set the embedding (and untied head) rows of the fMRI tokens; see [`from_parts`].

        Args:
            existing_rows: the LM's rows before the fMRI tokens were added (`[0, existing_rows)`):
                the reference for the norm (and the head's bias).
        """
        config = self.config
        code_ids = torch.tensor(config.code_token_ids)
        special_ids = torch.tensor(list(config.special_token_ids.values()))
        hidden_size = self.get_input_embeddings().weight.shape[1]
        generator = torch.Generator().manual_seed(CODE_PROJECTION_SEED + 1)
        directions = torch.cat(
            [
                code_embeddings(self.fmri_tokenizer.quantizer.codebook.weight, hidden_size),
                F.normalize(torch.randn(len(special_ids), hidden_size, generator=generator), dim=-1),
            ]
        )
        rows = torch.cat([code_ids, special_ids])
        embedding = self.get_input_embeddings().weight
        head = self.get_output_embeddings()
        targets = [embedding] if head is None or head.weight is embedding else [embedding, head.weight]
        for weight in targets:
            scale = weight[:existing_rows].float().norm(dim=-1).mean()
            weight[rows.to(weight.device)] = (directions * scale).to(device=weight.device, dtype=weight.dtype)
        if head is not None and head.weight is not embedding and getattr(head, "bias", None) is not None:
            head.bias[rows.to(head.bias.device)] = head.bias[:existing_rows].mean()


def _saved_feature_extractor(source: Any, fmri_tokenizer: FmriTokenizerModel) -> FmriFeatureExtractor:
    """The feature extractor saved in the Stage 1 folder `source`, else one built from the tokenizer's config."""
    if isinstance(source, (str, os.PathLike)) and os.path.isfile(os.path.join(source, "preprocessor_config.json")):
        return FmriFeatureExtractor.from_pretrained(source)
    config = fmri_tokenizer.config
    return FmriFeatureExtractor(num_rois=config.num_rois, window_length=config.window_length)


def _tokens_per_window(fmri_tokenizer: FmriTokenizerModel, feature_extractor: FmriFeatureExtractor) -> int:
    """Codes per window of `feature_extractor`, after checking that its windows fit the tokenizer."""
    config = fmri_tokenizer.config
    length = feature_extractor.window_length
    if length % config.patch_length or length > config.window_length:
        raise FmriInputError(
            f"feature_extractor.window_length: expected a multiple of the tokenizer's patch_length="
            f"{config.patch_length} of at most its window_length={config.window_length}, found {length}"
        )
    if feature_extractor.num_rois not in (None, config.num_rois):
        raise FmriInputError(
            f"feature_extractor.num_rois: expected the tokenizer's num_rois={config.num_rois}, found {feature_extractor.num_rois}"
        )
    return config.num_rois * (length // config.patch_length)


def _text_tokenizer(text_tokenizer: Any, language_model: PreTrainedModel) -> PreTrainedTokenizerBase:
    """`text_tokenizer` as a tokenizer: given, loaded from a folder/id, or the one saved with `language_model`."""
    if isinstance(text_tokenizer, PreTrainedTokenizerBase):
        return text_tokenizer
    source = text_tokenizer if text_tokenizer is not None else language_model.name_or_path
    if not source:
        raise FmriInputError(
            "text_tokenizer: not given, and the language model was built in memory (no name_or_path to load "
            "its tokenizer from); pass text_tokenizer=<folder, Hub id or tokenizer>"
        )
    return AutoTokenizer.from_pretrained(source)


__all__ = [
    "FmriConnectivityProjector",
    "FmriLMForCausalLM",
    "FmriLMPreTrainedModel",
    "code_embeddings",
    "connectivity_rows",
]
