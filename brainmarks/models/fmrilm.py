"""Brainmarks plugin: fmrilm as a Brainmarks model (`python -m brainmarks.main_logistic fmrilm reg <dataset>`).

Brainmarks (MedARC, arXiv 2510.13768) finds model plugins in the `brainmarks.models` namespace
package of any installed distribution; fmrilm ships this module. Two names are registered, with the
same readout and different checkpoints:

- `fmrilm_tokenizer`: a Stage 1 tokenizer folder or Hub id (or an fMRI-LM's, whose tokenizer is read);
- `fmrilm`: an fMRI-LM (`FmriLMForCausalLM`) folder or Hub id; another checkpoint is refused, so a
  row named `fmrilm` is always the tokenizer a trained fMRI-LM holds, read with the preprocessing
  saved with that model's processor.

The checkpoint comes from the constructor keyword `checkpoint` (Brainmarks:
`--overrides model_kwargs.checkpoint=DIR`) or the environment variable `FMRILM_BRAINMARKS_MODEL`.
Without either, a small tokenizer with random weights is built (with a warning), so that Brainmarks'
own `python -m brainmarks.models.test_models fmrilm` runs offline.

Readout: `reg` `[B, 450, D]` is one embedding per ROI, the Stage 1 encoder's unit vectors before
quantisation (`FmriTokenizerModel.embed`) averaged over that ROI's patches; `cls` `[B, 1, D]` their
mean; `patch` `[B, 450 * n_patches, D]` the per-token vectors (`modeling_fmrilm/embeddings.py`).
Why the tokenizer's encoder and not the language model's hidden states at the fMRI tokens: the
language model reads only the discrete codes, so its states carry no more of a scan than the codes
do, and its attention is causal, so the state at ROI `r`'s token has seen only ROIs `0..r` (the
first ROI's state is a function of its own code alone): per-ROI states would not be comparable
across ROIs. The encoder's continuous features are what the codes are quantised from, and every
token there attends to every ROI.

Preprocessing (`FmrilmTransform`), as the model reads a scan: the sample's `bold` `(T, 450)`,
z-scored per ROI by Brainmarks, is un-normalised with its `mean` and `std`; the checkpoint's feature
extractor then resamples it from the sample's `tr` to its `target_tr` (anti-aliased, unless the
checkpoint was made with linear resampling; `modeling_fmrilm/feature_extraction_fmrilm.py`),
robust-z-scores each ROI and cuts the first window. (With robust normalisation the windows do not
depend on the un-normalising: the resampler has unit gain at 0 Hz and a per-ROI median and IQR
absorb a positive per-ROI scale and offset. An extractor saved with `normalization="none"` reads the
values themselves.) A sample shorter than one window after resampling is stretched to it
(`pad_strategy="interpolate"`, the default, as the fMRI-LM paper does, with a warning) or refused
with `FmriInputError` (`pad_strategy=None`; Brainmarks: `--overrides model_kwargs.pad_strategy=null`).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import torch
from brainmarks.models.base import Embeddings
from brainmarks.models.registry import register_model
from torch import Tensor, nn

from modeling_fmrilm.embeddings import load_encoder, roi_embeddings
from modeling_fmrilm.errors import FmriInputError
from modeling_fmrilm.feature_extraction_fmrilm import PAD_STRATEGIES, FmriFeatureExtractor, resampled_length
from modeling_fmrilm.modeling_fmri_tokenizer import FmriTokenizerModel

SPACE = "schaefer400_tians3"
"""Brainmarks' Schaefer-400 + Tian-S3 space, the fMRI-LM paper's 450-ROI atlas."""
NUM_ROIS = 450
CHECKPOINT_ENV = "FMRILM_BRAINMARKS_MODEL"


def unnormalise(sample: dict[str, Any]) -> np.ndarray:
    """The sample's BOLD before Brainmarks' per-ROI z-score, ROI-major: `(bold * std + mean).T`, `(450, T)` float32."""
    bold = torch.as_tensor(sample["bold"], dtype=torch.float32)
    series = bold * torch.as_tensor(sample["std"], dtype=torch.float32) + torch.as_tensor(
        sample["mean"], dtype=torch.float32
    )
    return series.T.contiguous().numpy()


class FmrilmTransform:
    """A Brainmarks sample -> `fmri_values` `(450, window_length)`: the first window the model reads.

    Args:
        feature_extractor: the checkpoint's preprocessing (resampling, normalisation, window).
        pad_strategy: a sample shorter than one window after resampling: `"interpolate"` stretches
            it to the window (warning once), `None` raises `FmriInputError`.

    The other keys of the sample (the target among them) are kept; `bold` is replaced by `fmri_values`.
    """

    def __init__(self, feature_extractor: FmriFeatureExtractor, pad_strategy: str | None = "interpolate") -> None:
        if pad_strategy not in PAD_STRATEGIES:
            raise FmriInputError(f"pad_strategy: expected one of {PAD_STRATEGIES}, found {pad_strategy!r}")
        settings = {**feature_extractor.to_dict(), "pad_strategy": pad_strategy, "max_windows_per_scan": 1}
        self.feature_extractor = FmriFeatureExtractor.from_dict(settings)
        self.stretched = 0
        """Samples stretched to one window so far."""

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        series = unnormalise(sample)
        tr = float(sample["tr"])
        extractor = self.feature_extractor
        if (
            extractor.pad_strategy is not None
            and resampled_length(series.shape[1], tr, extractor.target_tr) < extractor.window_length
        ):
            self.stretched += 1
            warnings.warn(
                f"fmrilm: a sample shorter than one window ({extractor.window_length} frames at TR {extractor.target_tr} s) "
                f"was stretched to it (pad_strategy={extractor.pad_strategy!r}); pad_strategy=None refuses such samples",
                stacklevel=2,
            )
        window = extractor(series, tr=tr, return_tensors="pt")["fmri_values"][0]
        return {**{key: value for key, value in sample.items() if key != "bold"}, "fmri_values": window}


class FmrilmWrapper(nn.Module):
    """The Stage 1 encoder's embeddings of a batch of `FmrilmTransform` windows (see the module docstring)."""

    __space__: str = SPACE

    def __init__(self, tokenizer: FmriTokenizerModel) -> None:
        super().__init__()
        self.tokenizer = tokenizer.eval().requires_grad_(False)

    def forward(self, batch: dict[str, Tensor]) -> Embeddings:
        tokens, rois = roi_embeddings(self.tokenizer, batch["fmri_values"])
        return Embeddings(cls_embeds=rois.mean(dim=1, keepdim=True), reg_embeds=rois, patch_embeds=tokens)


def build(
    checkpoint: str | os.PathLike | None, pad_strategy: str | None, require_lm: bool
) -> tuple[FmrilmTransform, FmrilmWrapper]:
    """Transform and wrapper of `checkpoint`, else of `$FMRILM_BRAINMARKS_MODEL`; neither: random weights."""
    source = checkpoint or os.environ.get(CHECKPOINT_ENV) or None
    tokenizer, extractor = load_encoder(source, NUM_ROIS, require_lm=require_lm)
    return FmrilmTransform(extractor, pad_strategy), FmrilmWrapper(tokenizer)


@register_model
def fmrilm_tokenizer(
    checkpoint: str | os.PathLike | None = None, pad_strategy: str | None = "interpolate"
) -> tuple[FmrilmTransform, FmrilmWrapper]:
    """A Stage 1 tokenizer's (or an fMRI-LM's tokenizer's) encoder embeddings; see the module docstring."""
    return build(checkpoint, pad_strategy, require_lm=False)


@register_model
def fmrilm(
    checkpoint: str | os.PathLike | None = None, pad_strategy: str | None = "interpolate"
) -> tuple[FmrilmTransform, FmrilmWrapper]:
    """An fMRI-LM's tokenizer's encoder embeddings; a Stage 1 checkpoint is refused (`FmriInputError`:
    use `fmrilm_tokenizer`). See the module docstring."""
    return build(checkpoint, pad_strategy, require_lm=True)
