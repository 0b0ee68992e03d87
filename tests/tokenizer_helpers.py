"""Tiny tokenizer configs, models and windows shared by the tokenizer tests (imported, not collected)."""

from __future__ import annotations

import torch

from modeling_fmrilm import FmriTokenizerConfig, FmriTokenizerForPreTraining, FmriTokenizerModel

TINY = dict(
    num_rois=6,
    window_length=16,
    patch_length=4,
    hidden_size=16,
    num_hidden_layers=1,
    num_decoder_layers=1,
    num_attention_heads=2,
    num_codes=12,
    code_dim=8,
    domain_hidden_size=8,
)


def tiny_config(**overrides) -> FmriTokenizerConfig:
    return FmriTokenizerConfig(**{**TINY, **overrides})


def tiny_model(seed: int = 0, **overrides) -> FmriTokenizerModel:
    torch.manual_seed(seed)
    return FmriTokenizerModel(tiny_config(**overrides))


def tiny_pretraining(seed: int = 0, **overrides) -> FmriTokenizerForPreTraining:
    torch.manual_seed(seed)
    return FmriTokenizerForPreTraining(tiny_config(**overrides))


def windows(batch: int = 4, seed: int = 1, length: int = 16) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, TINY["num_rois"], length, generator=generator)


def unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)
