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


def save_stage1_folder(path, num_rois: int = 450) -> FmriTokenizerModel:
    """A small random Stage 1 tokenizer (4 patches of 8 frames) and its feature extractor (TR 1.5 s,
    32-frame window) saved in `path`, as Stage 1 saves them."""
    from modeling_fmrilm import FmriFeatureExtractor
    from modeling_fmrilm.embeddings import RANDOM_CONFIG

    torch.manual_seed(1)
    tokenizer = FmriTokenizerModel(
        FmriTokenizerConfig(num_rois=num_rois, **{**RANDOM_CONFIG, "window_length": 32, "patch_length": 8})
    ).eval()
    tokenizer.save_pretrained(path)
    FmriFeatureExtractor(num_rois=num_rois, window_length=32, target_tr=1.5).save_pretrained(path)
    return tokenizer
