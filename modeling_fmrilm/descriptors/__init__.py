"""Imaging descriptors of fMRI scans and the descriptor corpus.

One module per feature family, each a function over a batch `(n_scans, n_rois, n_timepoints)`:
`connectivity`, `graph`, `gradients`, `ica`, `amplitude`, `temporal`; `reference` (the pipeline
and the cohort reference), `text` (bands and templates), `corpus` (the dataset folder).
"""

from .corpus import CorpusSummary, build_corpus, build_shards, demo_corpus, merge, prepare, push_to_hub
from .reference import CohortReference, DescriptorSettings, compute_features
from .text import band, describe

__all__ = [
    "CohortReference",
    "CorpusSummary",
    "DescriptorSettings",
    "band",
    "build_corpus",
    "build_shards",
    "compute_features",
    "demo_corpus",
    "describe",
    "merge",
    "prepare",
    "push_to_hub",
]
