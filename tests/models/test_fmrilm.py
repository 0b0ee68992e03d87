"""Stage 2 model: FmriLMConfig, FmriLMForCausalLM.from_parts, forward, and the Hugging Face integrations.

Every integration runs with a tiny GPT-2 (tied head, vocabulary grown for the fMRI tokens) and a
tiny Qwen3 (untied head, padded vocabulary that already holds them), built from configs.
"""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoProcessor,
    GPT2Config,
    Trainer,
    TrainingArguments,
    default_data_collator,
)

from modeling_fmrilm import FmriInputError, FmriLMConfig, FmriLMForCausalLM, FmriProcessor
from modeling_fmrilm.configuration_fmrilm import fmri_code_tokens
from modeling_fmrilm.modeling_fmrilm import code_embeddings, connectivity_rows
from tests.support import tiny_lm
from tests.support.remote_code import run_without_package

KINDS = pytest.mark.parametrize("kind", tiny_lm.LM_KINDS)
LORA_TARGETS = {"gpt2": ["c_attn", "c_fc"], "qwen3": ["q_proj", "v_proj", "up_proj"]}


def prompt_inputs(processor: FmriProcessor, **kwargs):
    """Two prompts, three scans (one, then two), left-padded as for batched generation."""
    return processor(
        text=["<fmri> Describe this scan:", "Compare <fmri> with <fmri>:"],
        fmri=[tiny_lm.scan(1), tiny_lm.scan(2), tiny_lm.scan(3)],
        tr=2.0,
        return_tensors="pt",
        padding_side="left",
        **kwargs,
    )


def with_codes_written(model: FmriLMForCausalLM, inputs) -> torch.Tensor:
    """input_ids with the scans' code tokens pre-computed and written in (the `datasets.map` path)."""
    token_ids = model.fmri_to_token_ids(inputs["fmri_values"])
    input_ids = inputs["input_ids"].clone()
    input_ids[input_ids == model.config.fmri_pad_token_id] = token_ids.flatten()
    return input_ids


def precomputed_connectivity(model: FmriLMForCausalLM, inputs) -> torch.Tensor:
    """The windows' connectivity rows as the `datasets.map` pass stores them (float16)."""
    return model.fmri_connectivity(inputs["fmri_values"]).to(torch.float16)


def tiny_text_config(vocab_size: int = 100) -> GPT2Config:
    return GPT2Config(vocab_size=vocab_size, n_positions=64, n_embd=16, n_layer=1, n_head=2)


# -- configuration ---------------------------------------------------------------------------


def test_config_places_fmri_tokens_after_the_text_vocabulary_by_default():
    config = FmriLMConfig(fmri_tokenizer_config=tiny_lm.fmri_tokenizer().config, text_config=tiny_text_config(100))
    assert config.code_token_ids == range(100, 112)
    assert (config.fmri_start_token_id, config.fmri_end_token_id, config.fmri_pad_token_id) == (112, 113, 114)
    assert config.text_config.vocab_size == 115 and config.tie_word_embeddings
    assert (config.windows_per_scan, config.f2t_loss_weight, config.f2f_loss_weight, config.t2t_loss_weight) == (
        1,
        1.0,
        0.1,
        0.5,
    )
    assert config.get_text_config(decoder=True) is config.text_config


@pytest.mark.parametrize(
    "overrides, field",
    [
        (
            {"first_code_token_id": 0, "fmri_start_token_id": 20, "fmri_end_token_id": 21, "fmri_pad_token_id": 100},
            "fmri_pad_token_id",
        ),
        (
            {"first_code_token_id": 90, "fmri_start_token_id": 20, "fmri_end_token_id": 21, "fmri_pad_token_id": 22},
            "first_code_token_id",
        ),
        (
            {"first_code_token_id": 0, "fmri_start_token_id": 5, "fmri_end_token_id": 21, "fmri_pad_token_id": 22},
            "fmri_start_token_id",
        ),
        (
            {"first_code_token_id": 0, "fmri_start_token_id": 20, "fmri_end_token_id": 20, "fmri_pad_token_id": 22},
            "fmri_start_token_id",
        ),
        ({"fmri_pad_token_id": 50}, "first_code_token_id"),
        ({"windows_per_scan": 0}, "windows_per_scan"),
        ({"f2f_loss_weight": -0.1}, "f2f_loss_weight"),
        ({"code_dropout": 1.5}, "code_dropout"),
        ({"text_config": {"model_type": "gpt2", "vocab_size": 0}}, "text_config"),
    ],
)
def test_config_validation_names_the_field(overrides, field):
    kwargs = {
        "fmri_tokenizer_config": tiny_lm.fmri_tokenizer().config,
        "text_config": tiny_text_config(100),
        **overrides,
    }
    with pytest.raises(FmriInputError, match=rf"FmriLMConfig\.{field}: expected"):
        FmriLMConfig(**kwargs)


@KINDS
def test_config_round_trip_is_validated_on_load(kind, tmp_path):
    model, _ = tiny_lm.build(kind)
    model.config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, FmriLMConfig)
    assert loaded.text_config.model_type == kind and loaded.fmri_tokenizer_config.num_codes == 12
    without_path = lambda config: {k: v for k, v in config.to_dict().items() if k != "_name_or_path"}  # noqa: E731
    assert without_path(loaded) == without_path(model.config)
    saved = json.loads((tmp_path / "config.json").read_text())
    saved["fmri_pad_token_id"] = saved["text_config"]["vocab_size"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(
        FmriInputError, match=r"FmriLMConfig\.fmri_pad_token_id: expected an integer token id in \[0, "
    ):
        AutoConfig.from_pretrained(tmp_path)


# -- from_parts ------------------------------------------------------------------------------


@KINDS
def test_from_parts_adds_the_tokens_and_keeps_the_text_model(kind):
    text_tokenizer = tiny_lm.text_tokenizer()
    n_text = len(text_tokenizer)
    lm = tiny_lm.language_model(kind, n_text)
    text_ids = torch.tensor([text_tokenizer("Global efficiency is elevated.")["input_ids"]])
    with torch.no_grad():
        before = lm(text_ids).logits[..., :n_text].clone()
    vocab_before = lm.config.vocab_size
    model, processor = FmriLMForCausalLM.from_parts(
        tiny_lm.fmri_tokenizer(), lm, text_tokenizer=text_tokenizer, feature_extractor=tiny_lm.feature_extractor()
    )
    config = model.config
    assert not model.training and model.language_model is lm and config.text_config is lm.config
    assert config.code_token_ids == range(n_text, n_text + 12)
    assert text_tokenizer.convert_tokens_to_ids(fmri_code_tokens(12)) == list(config.code_token_ids)
    assert text_tokenizer.convert_tokens_to_ids(["<fmri>", "</fmri>", "<fmri_pad>", "<fmri_fc>"]) == list(
        config.special_token_ids.values()
    )
    assert (
        config.fmri_streams == ("codes", "connectivity")
        and processor.connectivity_tokens_per_window == tiny_lm.NUM_ROIS
    )
    assert fmri_code_tokens(12)[:2] == ["<fmri_00000>", "<fmri_00001>"] and fmri_code_tokens(12)[-1] == "<fmri_00011>"
    fmri_ids = [*config.code_token_ids, *config.special_token_ids.values()]
    assert all(text_tokenizer.added_tokens_decoder[i].special for i in fmri_ids)
    # GPT-2's vocabulary grows by the 16 fMRI tokens; Qwen3's padded vocabulary already holds them.
    assert config.text_config.vocab_size == (n_text + 16 if kind == "gpt2" else vocab_before)
    assert text_tokenizer.pad_token == tiny_lm.EOS
    assert processor.tokens_per_window == tiny_lm.TOKENS_PER_WINDOW and processor.windows_per_scan == 1
    with torch.no_grad():
        after = model(input_ids=text_ids).logits[..., :n_text]
    torch.testing.assert_close(after, before, rtol=0, atol=0)


@pytest.mark.parametrize("kind, code_dim", [("gpt2", 8), ("qwen3", 8), ("gpt2", 32), ("qwen3", 48)])
def test_fmri_rows_start_from_the_codebook_at_the_norm_of_the_text_rows(kind, code_dim):
    text_tokenizer = tiny_lm.text_tokenizer()
    n_text = len(text_tokenizer)
    lm = tiny_lm.language_model(kind, n_text)
    text_rows = lm.get_input_embeddings().weight[:n_text].detach().clone()
    head_rows = lm.get_output_embeddings().weight[:n_text].detach().clone()
    fmri_tokenizer = tiny_lm.fmri_tokenizer(code_dim=code_dim)
    model, _ = FmriLMForCausalLM.from_parts(fmri_tokenizer, lm, text_tokenizer=text_tokenizer)
    assert (model.get_output_embeddings().weight is model.get_input_embeddings().weight) == (kind == "gpt2")
    embedding = model.get_input_embeddings().weight.detach()
    head = model.get_output_embeddings().weight.detach()
    codes = list(model.config.code_token_ids)
    new_rows = codes + list(model.config.special_token_ids.values())
    torch.testing.assert_close(embedding[:n_text], text_rows, rtol=0, atol=0)
    norms = embedding[new_rows].norm(dim=-1)
    torch.testing.assert_close(norms, torch.full_like(norms, text_rows.norm(dim=-1).mean().item()))
    if kind == "qwen3":
        head_norms = head[new_rows].norm(dim=-1)
        torch.testing.assert_close(head_norms, torch.full_like(head_norms, head_rows.norm(dim=-1).mean().item()))
        torch.testing.assert_close(
            torch.nn.functional.normalize(head[codes], dim=-1), torch.nn.functional.normalize(embedding[codes], dim=-1)
        )
    codebook = fmri_tokenizer.quantizer.codebook.weight
    rows = torch.nn.functional.normalize(embedding[codes], dim=-1)
    if code_dim == 32:  # the LM's width: the rows are the code vectors themselves, rescaled
        torch.testing.assert_close(rows, codebook)
    elif code_dim < 32:  # an isometric embedding keeps every angle between codes
        torch.testing.assert_close(rows @ rows.T, codebook @ codebook.T, atol=1e-5, rtol=0)
    else:  # projected down: the rows are unit and still distinct
        assert torch.linalg.matrix_rank(rows) == min(12, 32)
    torch.testing.assert_close(rows, code_embeddings(codebook, 32))


def test_from_parts_loads_folders(tmp_path):
    stage1, lm_folder = tmp_path / "stage1", tmp_path / "lm"
    fmri_tokenizer = tiny_lm.fmri_tokenizer()
    fmri_tokenizer.save_pretrained(stage1)
    extractor = tiny_lm.feature_extractor()
    extractor.target_tr = 1.5
    extractor.save_pretrained(stage1)
    tiny_lm.save_lm_folder("qwen3", lm_folder)
    model, processor = FmriLMForCausalLM.from_parts(str(stage1), str(lm_folder), windows_per_scan=2)
    assert type(model.language_model).__name__ == "Qwen3ForCausalLM"
    assert processor.feature_extractor.target_tr == 1.5  # the Stage 1 folder's extractor
    assert processor.placeholders_per_scan == 2 * tiny_lm.TOKENS_PER_WINDOW and model.config.windows_per_scan == 2
    assert len(processor.tokenizer) == len(tiny_lm.text_tokenizer()) + 16
    torch.testing.assert_close(
        model.fmri_tokenizer.quantizer.codebook.weight, fmri_tokenizer.quantizer.codebook.weight
    )


def test_from_parts_errors_name_the_argument():
    lm = tiny_lm.language_model("gpt2", len(tiny_lm.text_tokenizer()))
    with pytest.raises(FmriInputError, match="text_tokenizer: not given, and the language model was built in memory"):
        FmriLMForCausalLM.from_parts(tiny_lm.fmri_tokenizer(), lm)
    extractor = tiny_lm.feature_extractor()
    extractor.window_length = 10
    with pytest.raises(
        FmriInputError,
        match=r"feature_extractor\.window_length: expected a multiple of the tokenizer's patch_length=4",
    ):
        FmriLMForCausalLM.from_parts(
            tiny_lm.fmri_tokenizer(), lm, tiny_lm.text_tokenizer(), feature_extractor=extractor
        )


# -- forward ---------------------------------------------------------------------------------


@KINDS
def test_online_fmri_values_and_precomputed_codes_give_the_same_logits(kind):
    model, processor = tiny_lm.build(kind)
    inputs = prompt_inputs(processor)
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    with torch.no_grad():
        online = model(**inputs, labels=labels)
        precomputed_ids = with_codes_written(model, inputs)
        precomputed = model(
            input_ids=precomputed_ids,
            attention_mask=inputs["attention_mask"],
            fmri_connectivity=precomputed_connectivity(model, inputs),
            labels=precomputed_ids.masked_fill(inputs["attention_mask"] == 0, -100),
        )
    torch.testing.assert_close(online.logits, precomputed.logits, rtol=0, atol=0)
    torch.testing.assert_close(online.loss, precomputed.loss, rtol=0, atol=0)
    # <fmri_fc> positions are never targets: the loss is the same with them ignored by hand.
    fc_positions = inputs["input_ids"] == model.config.fmri_fc_token_id
    with torch.no_grad():
        ignored = model(**inputs, labels=labels.masked_fill(fc_positions, -100))
    torch.testing.assert_close(ignored.loss, online.loss, rtol=0, atol=0)
    first_codes = model.fmri_tokenizer.encode(inputs["fmri_values"][:1]) + model.config.first_code_token_id
    positions = inputs["input_ids"][0] == model.config.fmri_pad_token_id
    assert torch.equal(precomputed_ids[0, positions], first_codes[0])
    # The fMRI reaches the logits: other scans give other logits.
    other = processor(text=["<fmri> Describe this scan:"], fmri=[tiny_lm.scan(9)], tr=2.0, return_tensors="pt")
    with torch.no_grad():
        assert not torch.equal(
            model(**other).logits,
            model(
                **processor(text=["<fmri> Describe this scan:"], fmri=[tiny_lm.scan(1)], tr=2.0, return_tensors="pt")
            ).logits,
        )
    stacked = inputs["fmri_values"][:, None]  # (n_windows, 1, ...) as a collator stacks examples
    with torch.no_grad():
        torch.testing.assert_close(model(**{**inputs, "fmri_values": stacked}).logits, online.logits, rtol=0, atol=0)


def test_training_path_compiles_as_one_graph():
    # Qwen3: GPT-2's own loss lookup logs a warning that breaks a full graph, with or without the wrapper.
    model, processor = tiny_lm.build("qwen3")
    inputs = prompt_inputs(processor)
    ids = with_codes_written(model, inputs)
    connectivity = precomputed_connectivity(model, inputs)
    model.train()
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # raises on any graph break
    loss = compiled(
        input_ids=ids, attention_mask=inputs["attention_mask"], fmri_connectivity=connectivity, labels=ids
    ).loss
    loss.backward()
    assert model.connectivity_projector.linear_1.weight.grad is not None  # the projector trains
    torch.testing.assert_close(
        loss,
        model(input_ids=ids, attention_mask=inputs["attention_mask"], fmri_connectivity=connectivity, labels=ids).loss,
    )
    # The online path too (pinned torch; torch 2.11 on CUDA raised an internal dynamo error there, see bench/lm_gpu.py).
    online = compiled(**inputs, labels=inputs["input_ids"]).loss
    torch.testing.assert_close(online, loss)


def test_placeholder_count_mismatch_names_both_counts():
    model, processor = tiny_lm.build("gpt2")
    inputs = processor(text="<fmri> Describe:", fmri=tiny_lm.scan(1), tr=2.0, return_tensors="pt")
    doubled = torch.cat([inputs["fmri_values"], inputs["fmri_values"]])
    with pytest.raises(FmriInputError, match=r"placeholders 24, codes 48 \(2 windows x 24 tokens\)"):
        model(input_ids=inputs["input_ids"], fmri_values=doubled)
    ids = with_codes_written(model, inputs)
    rows = precomputed_connectivity(model, inputs)
    with pytest.raises(
        FmriInputError,
        match=r"<fmri_fc> placeholders in input_ids and the connectivity rows do not match: placeholders 6, rows 12",
    ):
        model(input_ids=ids, fmri_connectivity=torch.cat([rows, rows]))
    with pytest.raises(FmriInputError, match=r"<fmri_fc> placeholders without fmri_values or fmri_connectivity"):
        model(input_ids=ids)
    with pytest.raises(FmriInputError, match="given with inputs_embeds"):
        model(inputs_embeds=torch.zeros(1, 3, 32), fmri_values=inputs["fmri_values"])
    codes_only, _ = tiny_lm.build("gpt2", fmri_streams=("codes",))
    with pytest.raises(FmriInputError, match=r"reads the streams \('codes',\)"):
        codes_only(input_ids=ids[:, :3], fmri_connectivity=rows)


def test_fmri_tokenizer_stays_frozen_and_in_eval_mode():
    model, processor = tiny_lm.build("qwen3")
    model.train()
    assert model.training and model.language_model.training
    assert not model.fmri_tokenizer.training and not any(m.training for m in model.fmri_tokenizer.modules())
    assert not any(p.requires_grad for p in model.fmri_tokenizer.parameters())
    codebook = model.fmri_tokenizer.quantizer.codebook.weight.clone()
    inputs = prompt_inputs(processor)
    model(**inputs, labels=inputs["input_ids"]).loss.backward()
    assert all(p.grad is None for p in model.fmri_tokenizer.parameters())
    assert model.get_input_embeddings().weight.grad is not None
    assert torch.equal(model.fmri_tokenizer.quantizer.codebook.weight, codebook)


# -- Hugging Face integration ----------------------------------------------------------------


@KINDS
def test_auto_classes_and_save_load_give_identical_logits(kind, tmp_path):
    model, processor = tiny_lm.build(kind)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    inputs = prompt_inputs(processor)
    with torch.no_grad():
        expected = model(**inputs).logits
    assert isinstance(AutoConfig.from_pretrained(tmp_path), FmriLMConfig)
    loaded_processor = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded_processor, FmriProcessor)
    reloaded_inputs = prompt_inputs(loaded_processor)
    for name in ("input_ids", "attention_mask", "fmri_values"):
        assert torch.equal(reloaded_inputs[name], inputs[name]), name
    for auto in (AutoModelForCausalLM, AutoModel):
        loaded = auto.from_pretrained(tmp_path)
        assert type(loaded) is FmriLMForCausalLM and not loaded.training and not loaded.fmri_tokenizer.training
        assert not any(p.requires_grad for p in loaded.fmri_tokenizer.parameters())
        assert all(p.requires_grad for p in loaded.language_model.parameters())
        assert (loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight) == (kind == "gpt2")
        with torch.no_grad():
            torch.testing.assert_close(loaded(**reloaded_inputs).logits, expected, rtol=0, atol=0)


def test_half_precision_loading_keeps_the_fmri_tokenizer_in_float32(tmp_path):
    model, processor = tiny_lm.build("qwen3")
    model.save_pretrained(tmp_path)
    loaded = FmriLMForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert loaded.language_model.dtype == torch.bfloat16 and loaded.fmri_tokenizer.dtype == torch.float32
    fmri_values = prompt_inputs(processor)["fmri_values"]
    assert torch.equal(loaded.fmri_to_token_ids(fmri_values), model.fmri_to_token_ids(fmri_values))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as Trainer runs bf16 mixed precision
        assert torch.equal(model.fmri_to_token_ids(fmri_values), loaded.fmri_to_token_ids(fmri_values))


REMOTE_LOADER = """
import numpy as np
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoProcessor

scans = np.load({scans!r})
logits = {{}}
for kind in ("gpt2", "qwen3"):
    folder = {folder!r} + "/" + kind
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    inputs = processor(text=["<fmri> Describe this scan:", "Compare <fmri> with <fmri>:"], fmri=list(scans),
                       tr=2.0, return_tensors="pt", padding_side="left")
    with torch.no_grad():
        logits[kind] = model(**inputs).logits.contiguous()
    print(kind, type(model).__module__, type(processor).__module__)
try:
    processor(text="<fmri>", fmri={scans!r}, tr=2.0)
except ValueError as error:
    print("path:", type(error).__name__, str(error).split(":")[1].strip())
assert "modeling_fmrilm" not in sys.modules
save_file(logits, {output!r})
"""


def test_trust_remote_code_load_without_the_package(tmp_path):
    expected = {}
    scans = np.stack([tiny_lm.scan(1), tiny_lm.scan(2), tiny_lm.scan(3)])
    np.save(tmp_path / "scans.npy", scans)
    for kind in tiny_lm.LM_KINDS:
        model, processor = tiny_lm.build(kind)
        model.save_pretrained(tmp_path / kind)
        processor.save_pretrained(tmp_path / kind)
        with torch.no_grad():
            expected[kind] = model(**prompt_inputs(processor)).logits
    saved = json.loads((tmp_path / "gpt2" / "config.json").read_text())
    assert saved["auto_map"] == {
        "AutoConfig": "configuration_fmrilm.FmriLMConfig",
        "AutoModelForCausalLM": "modeling_fmrilm.FmriLMForCausalLM",
        "AutoModel": "modeling_fmrilm.FmriLMForCausalLM",
    }
    processor_config = json.loads((tmp_path / "gpt2" / "processor_config.json").read_text())
    assert processor_config["auto_map"]["AutoProcessor"] == "processing_fmrilm.FmriProcessor"
    for name in (
        "modeling_fmrilm.py",
        "processing_fmrilm.py",
        "configuration_fmrilm.py",
        "modeling_fmri_tokenizer.py",
        "feature_extraction_fmrilm.py",
        "errors.py",
    ):
        assert (tmp_path / "gpt2" / name).exists(), name
    script = REMOTE_LOADER.format(
        folder=str(tmp_path), scans=str(tmp_path / "scans.npy"), output=str(tmp_path / "logits.safetensors")
    )
    result = run_without_package(script, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    for kind, line in zip(tiny_lm.LM_KINDS, lines[-3:-1], strict=True):
        name, model_module, processor_module = line.split()
        assert (
            name == kind
            and not model_module.startswith("modeling_fmrilm")
            and not processor_module.startswith("modeling_fmrilm")
        )
    assert lines[-1].startswith("path: FmriInputError reading scan files needs the fmrilm package")
    loaded = load_file(tmp_path / "logits.safetensors")
    for kind in tiny_lm.LM_KINDS:
        torch.testing.assert_close(loaded[kind], expected[kind], rtol=0, atol=0)


def count_encoder_calls(model: FmriLMForCausalLM) -> list[int]:
    calls = [0]
    model.fmri_tokenizer.encoder.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@KINDS
def test_greedy_generate_with_cache_equals_without(kind):
    model, processor = tiny_lm.build(kind)
    inputs = prompt_inputs(processor)
    calls = count_encoder_calls(model)
    cached = model.generate(**inputs, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert calls[0] == 1  # the cache: fmri_values only go to the first step
    uncached = model.generate(**inputs, max_new_tokens=6, do_sample=False, pad_token_id=0, use_cache=False)
    assert calls[0] == 1 + 6  # no cache: every step re-reads the whole prompt
    assert cached.shape == (2, inputs["input_ids"].shape[1] + 6)
    assert torch.equal(cached, uncached)
    position_ids = (inputs["attention_mask"].cumsum(-1) - 1).clamp_min(0)  # as generate numbers left-padded rows
    with torch.no_grad():
        first = model(**inputs, position_ids=position_ids).logits[:, -1].argmax(-1)
    assert torch.equal(cached[:, inputs["input_ids"].shape[1]], first)


@KINDS
def test_trainer_steps_with_fmri_values_reaching_forward(kind, tmp_path):
    built, processor = tiny_lm.build(kind)
    built.save_pretrained(tmp_path / "model")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")  # the loaded model, as a recipe gets it
    prompts = [f"<fmri> Scan {i}: global efficiency is elevated." for i in range(4)]
    rows = [processor(text=prompt, fmri=tiny_lm.scan(i), tr=2.0) for i, prompt in enumerate(prompts)]
    dataset = datasets.Dataset.from_dict(
        {
            "input_ids": [row["input_ids"][0] for row in rows],
            "attention_mask": [row["attention_mask"][0] for row in rows],
            "labels": [row["input_ids"][0] for row in rows],
            "fmri_values": [row["fmri_values"] for row in rows],
            "subject": [f"sub-{i}" for i in range(4)],  # not a forward argument: Trainer drops it
        }
    ).with_format("torch")
    calls = count_encoder_calls(model)
    embeddings_before = model.get_input_embeddings().weight.detach().clone()
    codebook = model.fmri_tokenizer.quantizer.codebook.weight.clone()
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=3,
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        activation_checkpointing=kind == "qwen3",
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=default_data_collator)
    trainer.train()
    assert calls[0] == 3  # one encoding per step: fmri_values reached forward
    assert model.is_activation_checkpointing == (kind == "qwen3")
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimized and not any(id(p) in optimized for p in model.fmri_tokenizer.parameters())
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert not torch.equal(model.get_input_embeddings().weight.detach(), embeddings_before)
    assert torch.equal(model.fmri_tokenizer.quantizer.codebook.weight, codebook) and not model.fmri_tokenizer.training


@KINDS
def test_peft_lora_with_trainable_fmri_rows_saves_reloads_and_merges(kind, tmp_path):
    model, processor = tiny_lm.build(kind)
    model.save_pretrained(tmp_path / "base")
    fmri_rows = list(model.config.code_token_ids) + list(model.config.special_token_ids.values())
    peft_config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=LORA_TARGETS[kind],
        fan_in_fan_out=kind == "gpt2",  # GPT-2's Conv1D stores weights transposed
        trainable_token_indices=fmri_rows,
        modules_to_save=["connectivity_projector"],
    )
    peft_model = get_peft_model(model, peft_config)
    trainable = {name for name, p in peft_model.named_parameters() if p.requires_grad}
    assert any("trainable_tokens_delta" in name for name in trainable) and any("lora_B" in name for name in trainable)
    assert any("connectivity_projector" in name for name in trainable)
    assert not any("fmri_tokenizer" in name for name in trainable)
    torch.manual_seed(3)
    with torch.no_grad():
        for parameter in peft_model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    inputs = prompt_inputs(processor)
    peft_model.eval()
    with torch.no_grad():
        adapted = peft_model(**inputs).logits
        base_logits = FmriLMForCausalLM.from_pretrained(tmp_path / "base")(**inputs).logits
    assert not torch.allclose(adapted, base_logits)
    peft_model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(
        FmriLMForCausalLM.from_pretrained(tmp_path / "base"), tmp_path / "adapter"
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, adapted, rtol=0, atol=0)
    merged = reloaded.merge_and_unload()
    assert type(merged) is FmriLMForCausalLM
    assert (merged.get_output_embeddings().weight is merged.get_input_embeddings().weight) == (kind == "gpt2")
    with torch.no_grad():
        torch.testing.assert_close(merged(**inputs).logits, adapted, rtol=1e-5, atol=1e-5)
    # trainable_token_indices trained the fMRI rows only: the text rows are the base model's.
    base_rows = FmriLMForCausalLM.from_pretrained(tmp_path / "base").get_input_embeddings().weight
    merged_rows = merged.get_input_embeddings().weight
    text_rows = [row for row in range(base_rows.shape[0]) if row not in fmri_rows]
    assert torch.equal(merged_rows[text_rows], base_rows[text_rows])
    assert not torch.equal(merged_rows[fmri_rows], base_rows[fmri_rows])


@pytest.mark.parametrize("kind, tie", [("gpt2", None), ("qwen3", True)])
def test_resize_token_embeddings_keeps_the_tie(kind, tie, tmp_path):
    model, processor = tiny_lm.build(kind, tie=tie)
    rows = model.config.text_config.vocab_size
    model.resize_token_embeddings(rows + 7)
    assert model.get_input_embeddings().weight.shape[0] == rows + 7 == model.config.text_config.vocab_size
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    inputs = prompt_inputs(processor)
    model.save_pretrained(tmp_path)
    loaded = FmriLMForCausalLM.from_pretrained(tmp_path)
    assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight
    assert loaded.config.text_config.vocab_size == rows + 7
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits, rtol=0, atol=0)
    with pytest.raises(
        FmriInputError, match=r"new_num_tokens: expected more than \d+ rows \(the highest fMRI token id\)"
    ):
        model.resize_token_embeddings(model.config.fmri_pad_token_id)


def test_connectivity_rows_equal_numpy_corrcoef_and_nilearn_per_window():
    """Pearson r of each window (numpy.corrcoef; nilearn's ConnectivityMeasure, kind="correlation",
    on the time-major window with the empirical covariance, not its default Ledoit-Wolf shrinkage), diagonal 0, at float16 precision; Fisher z is arctanh of it."""
    from nilearn.connectome import ConnectivityMeasure
    from sklearn.covariance import EmpiricalCovariance

    rng = np.random.default_rng(0)
    mixing = rng.standard_normal((7, 7))
    windows = np.einsum("ij,wjt->wit", mixing, rng.standard_normal((5, 7, 40))).astype(np.float32)
    windows[1, 3] = 2.5  # a ROI constant over one window: no defined correlation, row and column 0
    found = connectivity_rows(torch.from_numpy(windows)).numpy()
    assert found.shape == (5, 7, 7) and found.dtype == np.float32 and np.isfinite(found).all()
    off = ~np.eye(7, dtype=bool)
    nilearn = ConnectivityMeasure(
        kind="correlation", cov_estimator=EmpiricalCovariance(), standardize=False
    ).fit_transform([w.T.astype(np.float64) for w in windows])
    for index, window in enumerate(windows):
        if index == 1:
            continue
        expected = np.corrcoef(window.astype(np.float64))
        np.testing.assert_allclose(found[index][off], expected[off], atol=1e-3)  # float16: |error| <= 4.9e-4
        np.testing.assert_allclose(found[index][off], nilearn[index][off], atol=1e-3)
        assert np.all(np.diag(found[index]) == 0) and np.array_equal(found[index], found[index].T)
    assert np.all(found[1][3] == 0) and np.all(found[1][:, 3] == 0)
    expected_1 = np.corrcoef(np.delete(windows[1], 3, axis=0).astype(np.float64))
    kept = np.delete(np.delete(found[1], 3, axis=0), 3, axis=1)
    np.testing.assert_allclose(kept[~np.eye(6, dtype=bool)], expected_1[~np.eye(6, dtype=bool)], atol=1e-3)
    z = connectivity_rows(torch.from_numpy(windows[:1]), fisher_z=True).numpy()[0]
    np.testing.assert_allclose(z[off], np.arctanh(np.corrcoef(windows[0].astype(np.float64))[off]), atol=5e-3)
    assert np.all(np.diag(z) == 0)
    # Float16 precision is part of the definition: the stored column round-trips exactly.
    assert np.array_equal(found.astype(np.float16).astype(np.float32), found)


def test_connectivity_stream_reaches_the_logits_through_a_calibrated_projector():
    """Same codes, other connectivity rows: other logits; the projected rows start at the code rows' norm."""
    model, processor = tiny_lm.build("qwen3")
    inputs = prompt_inputs(processor)
    ids = with_codes_written(model, inputs)
    rows = model.fmri_connectivity(inputs["fmri_values"])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=inputs["attention_mask"], fmri_connectivity=rows).logits
        shuffled = model(input_ids=ids, attention_mask=inputs["attention_mask"], fmri_connectivity=rows.flip(0)).logits
        code_norm = model.get_input_embeddings().weight[list(model.config.code_token_ids)].norm(dim=-1).mean()
        factor = model.calibrate_connectivity_projector(rows)
        projected = model.connectivity_projector(rows.reshape(-1, rows.shape[-1]))
    assert not torch.allclose(logits, shuffled)
    torch.testing.assert_close(projected.norm(dim=-1).mean(), code_norm, rtol=1e-4, atol=0)
    assert factor > 0


def test_a_reset_projector_is_redrawn_from_the_seed_and_a_codes_only_model_has_none_to_reset():
    model, _ = tiny_lm.build("qwen3")
    before = [p.detach().clone() for p in model.connectivity_projector.parameters()]
    torch.manual_seed(3)
    model.reset_connectivity_projector()
    drawn = [p.detach().clone() for p in model.connectivity_projector.parameters()]
    torch.manual_seed(3)
    model.reset_connectivity_projector()
    assert all(torch.equal(a, b) for a, b in zip(drawn, model.connectivity_projector.parameters(), strict=True))
    assert not any(torch.equal(a, b) for a, b in zip(before, drawn, strict=True))
    codes_only, _ = tiny_lm.build("gpt2", fmri_streams=("codes",))
    with pytest.raises(ValueError, match=r"fmri_streams=\('codes',\): this model has no connectivity projector"):
        codes_only.reset_connectivity_projector()


def test_code_dropout_replaces_a_dropped_sequence_s_codes_by_the_pad_token_in_training_only():
    """p = 1: every code token reads as <fmri_pad> in training (the connectivity rows still written);
    in eval mode, and with p = 0, the logits are the scan's own."""
    model, processor = tiny_lm.build("qwen3")
    inputs = prompt_inputs(processor)
    ids = with_codes_written(model, inputs)
    rows = model.fmri_connectivity(inputs["fmri_values"])
    codes = model.stream_positions(ids, "codes")
    padded = ids.masked_fill(codes, model.config.fmri_pad_token_id)

    def run(input_ids):
        return model(input_ids=input_ids, attention_mask=inputs["attention_mask"], fmri_connectivity=rows).logits

    with torch.no_grad():
        model.eval()
        own, blank = run(ids), run(padded)
        model.config.code_dropout = 1.0
        assert torch.equal(run(ids), own)
        model.train()
        torch.testing.assert_close(run(ids), blank)
        model.config.code_dropout = 0.0
        torch.testing.assert_close(run(ids), own)
    assert codes.sum() == inputs["fmri_values"].shape[0] * model.config.fmri_tokenizer_config.num_tokens
    assert not torch.allclose(own, blank)


def test_code_dropout_drops_whole_sequences_at_its_rate():
    model, _ = tiny_lm.build("qwen3")
    config = model.config
    first = config.first_code_token_id
    ids = torch.cat([torch.full((4000, 1), 3), first + torch.arange(6).repeat(4000, 1)], dim=1)
    model.config.code_dropout = 0.3
    torch.manual_seed(0)
    dropped = model.drop_code_stream(ids)
    rows = (dropped[:, 1:] == config.fmri_pad_token_id).all(1)
    assert ((dropped[:, 1:] == ids[:, 1:]).all(1) | rows).all()  # a sequence is dropped whole or kept whole
    assert torch.equal(dropped[:, 0], ids[:, 0])  # text tokens are never touched
    assert abs(rows.float().mean().item() - 0.3) < 0.03  # binomial std at n=4000: 0.007


def test_codes_only_checkpoint_saved_before_the_connectivity_stream_loads_unchanged(tmp_path):
    """A folder written before the stream existed (its config and processor config lack the new keys)
    loads as codes only, with the same logits as the model that wrote it."""
    model, processor = tiny_lm.build("gpt2", fmri_streams=("codes",))
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    new_keys = {"fmri_streams", "fmri_fc_token_id", "connectivity_fisher_z", "projector_hidden_size"}
    config = json.loads((tmp_path / "config.json").read_text())
    assert new_keys <= set(config)
    (tmp_path / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k not in new_keys}))
    processor_config = json.loads((tmp_path / "processor_config.json").read_text())
    processor_config.pop("connectivity_tokens_per_window")
    (tmp_path / "processor_config.json").write_text(json.dumps(processor_config))
    assert "connectivity_projector" not in "".join(load_file(tmp_path / "model.safetensors"))
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    loaded_processor = AutoProcessor.from_pretrained(tmp_path)
    assert loaded.config.fmri_streams == ("codes",) and not hasattr(loaded, "connectivity_projector")
    assert loaded_processor.connectivity_placeholders_per_scan == 0
    inputs = prompt_inputs(loaded_processor)
    assert "<fmri_fc>" not in loaded_processor.tokenizer.get_added_vocab()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, model(**prompt_inputs(processor)).logits, rtol=0, atol=0)
