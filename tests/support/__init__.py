"""Code the tests share, imported as `tests.support.<module>` (nothing here is collected):

- `tiny_lm`: tiny offline Stage 2 parts (text tokenizer, GPT-2/Qwen3 LMs, fMRI tokenizer, scans, `build`).
- `tiny_tokenizer`: tiny Stage 1 tokenizer configs, models and windows, and a saved Stage 1 folder.
- `equivalence`: the SGD step flags and the comparison of a two-process step with a one-process one.
- `remote_code`: a fresh interpreter where `modeling_fmrilm` cannot be imported (trust_remote_code).
- `corpus_scans`: 16-ROI scans of two sites, their atlas labels and settings for small corpus builds.
- `stage1_runs`: the flags and inputs of tiny Stage 1 runs.
- `command_line`: `fmrilm` run in this process.

`ROOT` is the repository root, for the recipes and scripts the tests run.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
