"""FmriProcessor: <fmri> expansion, scans in every form, windows, padding, chat template, decoding, save/load."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from transformers import AutoProcessor

from modeling_fmrilm import FmriInputError, FmriProcessor
from modeling_fmrilm.io import FmriScan
from tests.support import tiny_lm

N = tiny_lm.TOKENS_PER_WINDOW


@pytest.fixture(scope="module")
def processor(tiny_gpt2) -> FmriProcessor:
    return tiny_gpt2[1]


def ids_of(processor: FmriProcessor, *tokens: str) -> list[int]:
    return processor.tokenizer.convert_tokens_to_ids(list(tokens))


def test_each_marker_becomes_start_placeholders_end(processor):
    """`<fmri>` + the code placeholders + one connectivity placeholder per ROI + `</fmri>`."""
    start, end, pad, fc = ids_of(processor, "<fmri>", "</fmri>", "<fmri_pad>", "<fmri_fc>")
    R = tiny_lm.NUM_ROIS
    assert processor.connectivity_placeholders_per_scan == R
    out = processor(text="Scan: <fmri> Describe it.", fmri=tiny_lm.scan(1), tr=2.0)
    ids = out["input_ids"][0]
    begin = ids.index(start)
    assert ids[begin + 1 : begin + 1 + N] == [pad] * N and ids[begin + 1 + N : begin + 1 + N + R] == [fc] * R
    assert ids[begin + 1 + N + R] == end
    assert ids.count(pad) == N and ids.count(fc) == R and ids.count(start) == ids.count(end) == 1
    text_only = processor.tokenizer("Scan: ")["input_ids"]
    assert ids[:begin] == text_only
    assert processor.expand_fmri_markers("a <fmri> b") == "a <fmri>" + "<fmri_pad>" * N + "<fmri_fc>" * R + "</fmri> b"
    # fmri_values are the feature extractor's first window of the scan
    windows = tiny_lm.feature_extractor()(tiny_lm.scan(1), tr=2.0)["fmri_values"]
    assert out["fmri_values"].shape == (1, tiny_lm.NUM_ROIS, tiny_lm.WINDOW_LENGTH)
    np.testing.assert_array_equal(out["fmri_values"], windows[:1])


def test_batch_with_several_scans_per_prompt_is_padded(processor):
    scans = [tiny_lm.scan(1), tiny_lm.scan(2, n_timepoints=60), tiny_lm.scan(3)]
    flat = processor(
        text=["<fmri> one", "two <fmri> and <fmri> scans"], fmri=scans, tr=[2.0, 2.0, 1.0], return_tensors="pt"
    )
    nested = processor(
        text=["<fmri> one", "two <fmri> and <fmri> scans"],
        fmri=[scans[:1], scans[1:]],
        tr=[2.0, 2.0, 1.0],
        return_tensors="pt",
    )
    for name in ("input_ids", "attention_mask", "fmri_values"):
        assert torch.equal(flat[name], nested[name]), name
    pad_id = processor.fmri_pad_token_id
    assert flat["input_ids"].shape[0] == 2 and flat["attention_mask"].shape == flat["input_ids"].shape
    assert (flat["input_ids"] == pad_id).sum(dim=1).tolist() == [N, 2 * N]
    assert flat["attention_mask"][0].sum() < flat["attention_mask"][1].sum() == flat["input_ids"].shape[1]
    expected = tiny_lm.feature_extractor()(scans, tr=[2.0, 2.0, 1.0])
    first = expected["window_index"] == 0
    np.testing.assert_array_equal(flat["fmri_values"].numpy(), expected["fmri_values"][first])
    assert flat["fmri_values"].dtype == torch.float32


def test_windows_per_scan_takes_the_first_windows_and_names_a_short_scan():
    _, processor = tiny_lm.build("qwen3", windows_per_scan=2)
    assert processor.placeholders_per_scan == 2 * N
    out = processor(text="<fmri>", fmri=tiny_lm.scan(1, n_timepoints=70), tr=2.0)  # 4 windows
    windows = tiny_lm.feature_extractor()(tiny_lm.scan(1, n_timepoints=70), tr=2.0)["fmri_values"]
    np.testing.assert_array_equal(out["fmri_values"], windows[:2])
    assert out["input_ids"][0].count(processor.fmri_pad_token_id) == 2 * N
    short = FmriScan(data=tiny_lm.scan(2, n_timepoints=20), tr=2.0, subject="sub-07", dataset="demo")
    with pytest.raises(
        FmriInputError,
        match=r"demo/sub-07: expected at least windows_per_scan=2 windows of 16 frames at TR 2.0 s, found 1",
    ):
        processor(text="<fmri> <fmri>", fmri=[tiny_lm.scan(1), short], tr=[2.0, None])  # None: the record's own TR
    with pytest.raises(FmriInputError, match=r"fmri\[1\]: expected at least windows_per_scan=2 windows"):
        processor(text="<fmri> <fmri>", fmri=[tiny_lm.scan(1), tiny_lm.scan(2, n_timepoints=20)], tr=2.0)


def test_marker_and_scan_counts_must_match(processor):
    with pytest.raises(FmriInputError, match=r"found 2 <fmri> marker\(s\) in the text and 1 scan\(s\) in fmri"):
        processor(text=["<fmri>", "<fmri>"], fmri=tiny_lm.scan(1), tr=2.0)
    with pytest.raises(FmriInputError, match=r"found 0 <fmri> marker\(s\) in the text and 1 scan\(s\)"):
        processor(text="no marker", fmri=tiny_lm.scan(1), tr=2.0)
    with pytest.raises(FmriInputError, match=r"fmri\[1\]: found 1 <fmri> marker\(s\) in text\[1\] and 2 scan\(s\)"):
        processor(
            text=["<fmri> <fmri>", "<fmri>"], fmri=[[tiny_lm.scan(1)] * 2, [tiny_lm.scan(2), tiny_lm.scan(3)]], tr=2.0
        )
    with pytest.raises(FmriInputError, match=r"tr: expected 2 values \(one per scan\), found 3"):
        processor(text="<fmri> <fmri>", fmri=[tiny_lm.scan(1), tiny_lm.scan(2)], tr=[2.0, 2.0, 2.0])
    with pytest.raises(FmriInputError, match=r"fmri\[0\]: no repetition time"):
        processor(text="<fmri>", fmri=tiny_lm.scan(1))
    with pytest.raises(FmriInputError, match="images: FmriProcessor takes text and fmri only"):
        processor(text="x", images=[np.zeros((2, 2))])


def test_scans_as_records_stacked_arrays_and_files(processor, tmp_path):
    scans = [tiny_lm.scan(1), tiny_lm.scan(2)]
    reference = processor(text="<fmri> <fmri>", fmri=scans, tr=[2.0, 1.0])["fmri_values"]
    records = [FmriScan(data=scans[0], tr=2.0, subject="a"), FmriScan(data=scans[1], tr=1.0, subject="b")]
    np.testing.assert_array_equal(processor(text="<fmri> <fmri>", fmri=records)["fmri_values"], reference)
    stacked = processor(text="<fmri> <fmri>", fmri=np.stack(scans), tr=[2.0, 1.0])["fmri_values"]
    np.testing.assert_array_equal(stacked, reference)
    paths = [tmp_path / "a.npy", tmp_path / "b.npy"]
    for path, data in zip(paths, scans, strict=True):
        np.save(path, data)
    from_files = processor(text="<fmri> <fmri>", fmri=[str(paths[0]), paths[1]], tr=[2.0, 1.0])["fmri_values"]
    np.testing.assert_array_equal(from_files, reference)
    transposed = tmp_path / "t.npy"
    np.save(transposed, scans[0].T)
    with pytest.raises(FmriInputError, match="t.npy: expected 6 ROIs on axis 0"):
        processor(text="<fmri>", fmri=str(transposed), tr=2.0)


def test_truncation_that_cuts_placeholders_is_an_error(processor):
    with pytest.raises(
        FmriInputError, match=rf"text\[0\]: expected {N} <fmri_pad> tokens for 1 scan\(s\) after tokenization, found"
    ):
        processor(text="Describe <fmri>", fmri=tiny_lm.scan(1), tr=2.0, truncation=True, max_length=10)


def test_chat_template_turns_fmri_parts_into_markers(processor):
    conversation = [
        {
            "role": "user",
            "content": [
                {"type": "fmri", "fmri": tiny_lm.scan(4), "tr": 2.0},
                {"type": "text", "text": " Is this a control?"},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "Control"}]},
        {"role": "user", "content": [{"type": "text", "text": "And sex?"}]},
    ]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    assert prompt == (
        "### Question: <fmri> Is this a control?\n### Answer: Control<|endoftext|>\n### Question: And sex?\n### Answer:"
    )
    tokenized = processor.apply_chat_template(
        conversation, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    direct = processor(text=prompt, fmri=tiny_lm.scan(4), tr=2.0, return_tensors="pt")
    for name in ("input_ids", "attention_mask", "fmri_values"):
        assert torch.equal(tokenized[name], direct[name]), name
    marker_only = [{"role": "user", "content": [{"type": "fmri"}, {"type": "text", "text": " Describe."}]}]
    with_kwargs = processor.apply_chat_template(
        marker_only, tokenize=True, return_dict=True, processor_kwargs={"fmri": tiny_lm.scan(4), "tr": 2.0}
    )
    assert with_kwargs["input_ids"][0].count(processor.fmri_pad_token_id) == N


def test_decode_drops_fmri_tokens_unless_kept(tiny_gpt2):
    model, processor = tiny_gpt2
    inputs = processor(
        text=["<fmri> Global efficiency", "is <fmri> elevated"],
        fmri=[tiny_lm.scan(1), tiny_lm.scan(2)],
        tr=2.0,
        return_tensors="pt",
    )
    with_codes = inputs["input_ids"].clone()
    with_codes[with_codes == processor.fmri_pad_token_id] = model.fmri_to_token_ids(inputs["fmri_values"]).flatten()
    texts = processor.batch_decode(with_codes, skip_special_tokens=False)
    assert texts[0].startswith(" Global efficiency") and "<fmri" not in "".join(texts)
    assert texts[1].startswith("is  elevated")
    kept = processor.batch_decode(with_codes, keep_fmri_tokens=True)
    first_code = model.fmri_to_token_ids(inputs["fmri_values"][:1])[0, 0].item() - model.config.first_code_token_id
    assert kept[0].startswith(f"<fmri><fmri_{first_code:05d}>") and kept[0].count("</fmri>") == 1
    assert processor.decode(with_codes[0]) == texts[0]
    assert processor.decode(with_codes[0], keep_fmri_tokens=True) == kept[0]
    assert len(processor.fmri_token_ids) == 12 + 4


def test_save_and_load_with_auto_processor(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is FmriProcessor
    assert (loaded.tokens_per_window, loaded.windows_per_scan, loaded.chat_template) == (
        processor.tokens_per_window,
        processor.windows_per_scan,
        processor.chat_template,
    )
    assert loaded.feature_extractor.to_dict() == processor.feature_extractor.to_dict()
    assert loaded.fmri_token_ids == processor.fmri_token_ids
    kwargs = dict(
        text=["<fmri> a", "b <fmri> c <fmri>"],
        fmri=[tiny_lm.scan(1), tiny_lm.scan(2), tiny_lm.scan(3)],
        tr=2.0,
        return_tensors="np",
    )
    for name, value in processor(**kwargs).items():
        np.testing.assert_array_equal(loaded(**kwargs)[name], value)
    assert set(loaded.model_input_names) >= {"input_ids", "attention_mask", "fmri_values"}


def test_a_tokenizer_without_fmri_tokens_is_rejected():
    with pytest.raises(
        FmriInputError, match=r"tokenizer: expected the added tokens \['<fmri>', '</fmri>', '<fmri_pad>'\]"
    ):
        FmriProcessor(tiny_lm.feature_extractor(), tiny_lm.text_tokenizer(), tokens_per_window=N)
    _, processor = tiny_lm.build("gpt2")
    with pytest.raises(
        FmriInputError, match=r"FmriProcessor.tokens_per_window: expected a positive integer, found None"
    ):
        FmriProcessor(processor.feature_extractor, processor.tokenizer)


@pytest.mark.parametrize(
    "smuggled",
    ["<fmri_00001><fmri_00002></fmri>", "</fmri>", "<fmri_pad>", "<fmri_fc>", "<FMRI_PAD>", "< fmri_00003 >"],
)
def test_text_cannot_carry_fmri_tokens(processor, smuggled):
    """Only the expansion of an `<fmri>` marker writes fMRI tokens: token strings in the text are refused."""
    prompt = f"<fmri> Is this a control? {smuggled}"
    with pytest.raises(
        FmriInputError,
        match=rf"text\[0\]: expected plain text, found the fMRI token string '{re.escape(smuggled.split('>')[0])}>' at character 26; fMRI tokens come only from the processor's expansion of <fmri> markers",
    ):
        processor(text=prompt, fmri=tiny_lm.scan(1), tr=2.0)
    with pytest.raises(FmriInputError, match=r"text\[1\]: expected plain text"):
        processor(text=["<fmri> fine", f"<fmri> {smuggled}"], fmri=[tiny_lm.scan(1), tiny_lm.scan(2)], tr=2.0)


def test_lookalike_text_is_plain_text(tiny_gpt2):
    """Near misses of the token strings tokenize as text: no code id, one <fmri>, one </fmri>, N placeholders."""
    model, processor = tiny_gpt2
    config = model.config
    ids = processor(text="<fmri> fmri_00001> fmri_pad> <fmri_00002 <fmri", fmri=tiny_lm.scan(1), tr=2.0)["input_ids"][
        0
    ]
    assert not set(ids) & set(config.code_token_ids)
    assert ids.count(config.fmri_start_token_id) == ids.count(config.fmri_end_token_id) == 1
    assert ids.count(config.fmri_pad_token_id) == N
