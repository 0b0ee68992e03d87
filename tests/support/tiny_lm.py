"""Tiny offline parts for the Stage 2 tests: a byte-level BPE text tokenizer, GPT-2/Qwen3 LMs, an fMRI tokenizer.

Nothing is downloaded: the text tokenizer is trained by the `tokenizers` library on a few
sentences, the language models are built from configs with random weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from modeling_fmrilm import FmriFeatureExtractor, FmriLMForCausalLM, FmriTokenizerConfig, FmriTokenizerModel
from modeling_fmrilm.training.language_model import END_OF_TEXT, small_language_model_config, train_bpe_tokenizer

SENTENCES = [
    "Functional connectivity between the default mode and salience networks is markedly lower than the cohort.",
    "The first functional gradient spans from unimodal to transmodal regions.",
    "Global efficiency is slightly elevated (z = 1.3); modularity is within the typical range.",
    "### Question: Is this subject a control or ADHD? ### Answer: Control",
    "### Question: What is the sex of this subject? ### Answer: Female",
    "Amplitude of low-frequency fluctuations is higher in occipital regions.",
]
EOS = END_OF_TEXT
NUM_ROIS, WINDOW_LENGTH, PATCH_LENGTH = 6, 16, 4  # 6 ROIs x 4 patches = 24 codes per window
TOKENS_PER_WINDOW = NUM_ROIS * WINDOW_LENGTH // PATCH_LENGTH
LM_KINDS = ("gpt2", "qwen3")


def text_tokenizer(vocab_size: int = 320) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `SENTENCES`, with `<|endoftext|>` as eos (GPT-2 style)."""
    return train_bpe_tokenizer(SENTENCES, vocab_size)


def language_model(kind: str, vocab_size: int, seed: int = 0, tie: bool | None = None) -> torch.nn.Module:
    """A 2-layer GPT-2 (tied head) or Qwen3 (untied head, vocabulary padded to a multiple of 128 as Qwen pads it)."""
    torch.manual_seed(seed)
    padded = -(-vocab_size // 128) * 128 if kind == "qwen3" else vocab_size
    config = small_language_model_config(
        kind, padded, hidden_size=32, num_layers=2, num_heads=2 if kind == "gpt2" else 4, max_positions=256
    )
    if tie is not None:
        config.tie_word_embeddings = tie
    return AutoModelForCausalLM.from_config(config).eval()


def fmri_tokenizer(
    seed: int = 0,
    code_dim: int = 8,
    num_codes: int = 12,
    num_rois: int = NUM_ROIS,
    window_length: int = WINDOW_LENGTH,
    patch_length: int = PATCH_LENGTH,
) -> FmriTokenizerModel:
    """A tiny Stage 1 tokenizer whose codebook was initialised by k-means on random windows."""
    torch.manual_seed(seed)
    config = FmriTokenizerConfig(
        num_rois=num_rois,
        window_length=window_length,
        patch_length=patch_length,
        hidden_size=16,
        num_hidden_layers=1,
        num_decoder_layers=1,
        num_attention_heads=2,
        num_codes=num_codes,
        code_dim=code_dim,
        domain_hidden_size=8,
    )
    model = FmriTokenizerModel(config)
    model(torch.randn(8, num_rois, window_length))  # k-means initialisation + one EMA step
    return model.eval()


def feature_extractor(num_rois: int = NUM_ROIS, window_length: int = WINDOW_LENGTH) -> FmriFeatureExtractor:
    return FmriFeatureExtractor(num_rois=num_rois, window_length=window_length, target_tr=2.0)


def scan(seed: int, n_timepoints: int = 40) -> np.ndarray:
    """A random scan `(NUM_ROIS, n_timepoints)` (sampled at TR 2.0 s: 2 windows of 16 frames for 40 points)."""
    return np.random.default_rng(seed).standard_normal((NUM_ROIS, n_timepoints)).astype(np.float32)


def build(
    kind: str, seed: int = 0, windows_per_scan: int = 1, tie: bool | None = None, code_dim: int = 8,
    num_rois: int = NUM_ROIS, window_length: int = WINDOW_LENGTH, patch_length: int = PATCH_LENGTH,
    fmri_streams: tuple[str, ...] = ("codes", "connectivity"),
):  # fmt: skip
    """`(model, processor)` from `FmriLMForCausalLM.from_parts` with a tiny LM of `kind` (by default for
    `NUM_ROIS` ROIs and `WINDOW_LENGTH`-frame windows in patches of `PATCH_LENGTH`, reading both streams)."""
    tokenizer = text_tokenizer()
    lm = language_model(kind, len(tokenizer), seed=seed, tie=tie)
    return FmriLMForCausalLM.from_parts(
        fmri_tokenizer(
            seed, code_dim=code_dim, num_rois=num_rois, window_length=window_length, patch_length=patch_length
        ),
        lm,
        text_tokenizer=tokenizer,
        feature_extractor=feature_extractor(num_rois, window_length),
        windows_per_scan=windows_per_scan,
        fmri_streams=fmri_streams,
    )


def save_lm_folder(kind: str, folder: Path, seed: int = 0) -> Path:
    """A causal-LM folder as on the Hub: model + its text tokenizer."""
    tokenizer = text_tokenizer()
    language_model(kind, len(tokenizer), seed=seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
