"""The Brainmarks probe on fmrilm's embeddings: the row "fmrilm embeddings, Brainmarks probe" of `fmrilm evaluate`.

A scan's embedding is what the Brainmarks plugin (`brainmarks/models/fmrilm.py`) gives Brainmarks'
linear probe: the windows the model reads (its processor's), the Stage 1 encoder's per-ROI
embeddings of them (`modeling_fmrilm/embeddings.py`), mean-pooled over ROIs (and over the scan's
windows when the model reads several) as Brainmarks' `main_logistic` averages `cls` or `reg` over
their sequence axis. The probe is the Brainmarks protocol of `baselines.py` (`fit_predict` with
`brainmarks_fc`: `StandardScaler` + `LogisticRegressionCV` selected on balanced accuracy, `RidgeCV`
for continuous targets) fitted on these embeddings instead of the FC, on the same splits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..configuration_fmrilm import FMRI_START_TOKEN
from ..embeddings import roi_embeddings
from ..io import FmriScan
from .baselines import BaselineInputs

EMBEDDING_PROBE = "fmrilm embeddings"
"""The row's method name (`evaluate.METHOD_LABELS` prints it as "fmrilm embeddings, Brainmarks probe")."""


@torch.no_grad()
def scan_embeddings(model: Any, processor: Any, scans: Sequence[FmriScan], batch_size: int = 8) -> np.ndarray:
    """`(n_scans, code_dim)` float64: each scan's encoder embeddings averaged over ROIs and the windows the model reads.

    Args:
        model: an `FmriLMForCausalLM` (or a peft model around one); its frozen `fmri_tokenizer` is read.
        processor: its `FmriProcessor`, which cuts the windows.
        scans: the scans, in order.
        batch_size: scans per forward pass.
    """
    tokenizer = model.fmri_tokenizer
    device = next(tokenizer.parameters()).device
    pooled = []
    for start in range(0, len(scans), batch_size):
        chunk = scans[start : start + batch_size]
        inputs = processor(
            text=[FMRI_START_TOKEN] * len(chunk),
            fmri=[s.data for s in chunk],
            tr=[s.tr for s in chunk],
            return_tensors="pt",
        )
        _, rois = roi_embeddings(tokenizer, inputs["fmri_values"].to(device))
        pooled.append(rois.float().mean(dim=1).reshape(len(chunk), -1, rois.shape[-1]).mean(dim=1).cpu())
    return torch.cat(pooled).double().numpy()


class EmbeddingInputs(BaselineInputs):
    """The Brainmarks protocol's inputs with each scan's embedding where `BaselineInputs` has its FC
    features (`fc`); only `brainmarks_fc` is fitted on them (they have no time series for the tangent space)."""

    def __init__(self, embeddings: np.ndarray) -> None:
        self.fc = embeddings


def embedding_inputs(model: Any, processor: Any, scans: Sequence[FmriScan], batch_size: int = 8) -> EmbeddingInputs:
    """`scan_embeddings` of `scans` as the inputs of the Brainmarks protocol (`baselines.fit_predict`)."""
    return EmbeddingInputs(scan_embeddings(model, processor, scans, batch_size))


__all__ = ["EMBEDDING_PROBE", "EmbeddingInputs", "embedding_inputs", "scan_embeddings"]
