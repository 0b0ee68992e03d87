"""Continuous embeddings of fMRI windows from the Stage 1 tokenizer's encoder, one per ROI.

What the Brainmarks plugin (`brainmarks/models/fmrilm.py`) returns and what the embedding probe of
`fmrilm evaluate` (`tasks/embedding_probe.py`) fits on. The features are the encoder's unit
vectors before quantisation (`FmriTokenizerModel.embed`, `(batch, num_rois * n_patches, code_dim)`,
ROI-major); a ROI's embedding is the mean over its patches.
"""

from __future__ import annotations

import os
import warnings

import torch
from transformers import AutoConfig
from transformers.utils import logging as transformers_logging

from .configuration_fmrilm import FmriLMConfig, FmriTokenizerConfig
from .errors import FmriInputError
from .feature_extraction_fmrilm import FmriFeatureExtractor
from .modeling_fmri_tokenizer import FmriTokenizerModel

RANDOM_CONFIG = {
    "window_length": 160,
    "patch_length": 40,
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_decoder_layers": 1,
    "num_attention_heads": 2,
    "num_codes": 64,
    "code_dim": 16,
}
"""The small tokenizer built when no checkpoint is given (random weights; 4 patches per ROI)."""


def roi_embeddings(tokenizer: FmriTokenizerModel, fmri_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token and per-ROI embeddings of normalised windows `(batch, num_rois, n_frames)`.

    Returns:
        `(tokens, rois)`: the encoder's unit vectors before quantisation `(batch, num_rois *
        n_patches, code_dim)` (ROI-major), and their mean over each ROI's patches `(batch,
        num_rois, code_dim)`.
    """
    tokens = tokenizer.embed(fmri_values)
    batch, num_rois = fmri_values.shape[:2]
    return tokens, tokens.reshape(batch, num_rois, -1, tokens.shape[-1]).mean(dim=2)


def load_encoder(
    checkpoint: str | os.PathLike | None, num_rois: int, require_lm: bool = False
) -> tuple[FmriTokenizerModel, FmriFeatureExtractor]:
    """The Stage 1 tokenizer (eval mode) of `checkpoint` and the feature extractor saved with it.

    Args:
        checkpoint: a folder or Hub id of a Stage 1 tokenizer (`FmriTokenizerModel` or
            `FmriTokenizerForPreTraining`) or of an `FmriLMForCausalLM`, whose frozen
            `fmri_tokenizer` is read (the language model's weights are not loaded). `None`: a small
            tokenizer of `num_rois` ROIs with random weights (`RANDOM_CONFIG`), with a warning.
        num_rois: ROIs the tokenizer must read.
        require_lm: accept only an fMRI-LM checkpoint.

    Returns:
        `(tokenizer, feature_extractor)`; the extractor is the one saved in `checkpoint`
        (`preprocessor_config.json`), else the tokenizer's window with the extractor's defaults.

    Raises:
        FmriInputError: a checkpoint of another model type (a Stage 1 one with `require_lm`), or one
            whose tokenizer reads another ROI count.
    """
    if checkpoint is None:
        warnings.warn(
            f"no fmrilm checkpoint given: a small tokenizer with random weights is used ({RANDOM_CONFIG}); "
            "its embeddings mean nothing. Pass a checkpoint (Brainmarks: model_kwargs.checkpoint=<folder or Hub id>, "
            "or the environment variable FMRILM_BRAINMARKS_MODEL)",
            stacklevel=2,
        )
        torch.manual_seed(0)
        tokenizer = FmriTokenizerModel(FmriTokenizerConfig(num_rois=num_rois, **RANDOM_CONFIG)).eval()
        return tokenizer, FmriFeatureExtractor(num_rois=num_rois, window_length=tokenizer.config.window_length)
    config = AutoConfig.from_pretrained(checkpoint)
    accepted = (FmriLMConfig,) if require_lm else (FmriLMConfig, FmriTokenizerConfig)
    if not isinstance(config, accepted):
        expected = " or ".join(f"model_type {kind.model_type!r}" for kind in accepted)
        raise FmriInputError(f"checkpoint {checkpoint}: expected {expected}, found model_type {config.model_type!r}")
    tokenizer_config = config.fmri_tokenizer_config if isinstance(config, FmriLMConfig) else config
    if tokenizer_config.num_rois != num_rois:
        raise FmriInputError(
            f"checkpoint {checkpoint}: expected a tokenizer of {num_rois} ROIs, found num_rois={tokenizer_config.num_rois}"
        )
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # an fMRI-LM's language-model weights are reported as unexpected keys
    try:
        # FmriTokenizerModel's base_model_prefix is `fmri_tokenizer`: an fMRI-LM's `fmri_tokenizer.*` weights load into it
        tokenizer = FmriTokenizerModel.from_pretrained(checkpoint, config=tokenizer_config).eval()
    finally:
        transformers_logging.set_verbosity(verbosity)
    try:
        extractor = FmriFeatureExtractor.from_pretrained(checkpoint)
    except OSError:  # no preprocessor_config.json
        extractor = FmriFeatureExtractor(num_rois=num_rois, window_length=tokenizer_config.window_length)
    return tokenizer, extractor


__all__ = ["RANDOM_CONFIG", "load_encoder", "roi_embeddings"]
