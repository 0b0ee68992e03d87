"""The tokenizer keeps transformers' model conventions: attention interface, recorded outputs, gradient
checkpointing, half precision, torch.export / torch.compile, disk offload, weight init, input embeddings."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from modeling_fmrilm import FmriTokenizerForPreTraining, FmriTokenizerModel
from modeling_fmrilm.modeling_fmri_tokenizer import initial_codebook
from tests.support.tiny_tokenizer import tiny_config, tiny_model, tiny_pretraining, windows

# two blocks each side, so that per-layer outputs are distinguishable
DEEP = dict(num_hidden_layers=2, num_decoder_layers=3)


def trained(model: torch.nn.Module, steps: int = 2) -> torch.nn.Module:
    """`model` after its codebook is initialised (k-means + EMA steps), in eval mode."""
    for seed in range(steps):
        model(windows(batch=8, seed=seed))
    return model.eval()


# -- attention interface ----------------------------------------------------------------------


def test_attention_implementation_is_switchable_and_eager_matches_sdpa():
    model = trained(tiny_model(**DEEP))
    assert model.config._attn_implementation == "sdpa"  # transformers' default when supported
    x = windows(batch=3, seed=9)
    with torch.no_grad():
        sdpa = model(x, output_hidden_states=True)
        model.set_attn_implementation("eager")
        assert model.config._attn_implementation == "eager"
        assert all(layer.attention.config._attn_implementation == "eager" for layer in model.encoder.layers)
        eager = model(x, output_hidden_states=True)
    assert torch.equal(eager.codes, sdpa.codes)
    torch.testing.assert_close(eager.reconstruction, sdpa.reconstruction, rtol=1e-5, atol=1e-5)
    for mine, theirs in zip(
        eager.hidden_states + eager.decoder_hidden_states, sdpa.hidden_states + sdpa.decoder_hidden_states, strict=True
    ):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


def test_attention_goes_through_the_registered_interface():
    calls = []

    def counting_sdpa(module, *args, **kwargs):
        calls.append(type(module).__name__)
        return sdpa_attention_forward(module, *args, **kwargs)

    AttentionInterface.register("fmri_test_counting", counting_sdpa)
    model = tiny_model(**DEEP, attn_implementation="fmri_test_counting").eval()
    model(windows())
    assert calls == ["FmriAttention"] * (2 + 3)


# -- recorded outputs ---------------------------------------------------------------------------


def test_hidden_states_and_attentions_of_encoder_and_decoder():
    model = trained(tiny_model(**DEEP, attn_implementation="eager"))
    x = windows(batch=3, seed=9)
    plain = model(x)
    assert plain.hidden_states is None and plain.attentions is None and plain.decoder_hidden_states is None
    out = model(x, output_hidden_states=True, output_attentions=True)
    assert [h.shape for h in out.hidden_states] == [(3, 24, 16)] * (2 + 1)
    assert [h.shape for h in out.decoder_hidden_states] == [(3, 24, 16)] * (3 + 1)
    assert [a.shape for a in out.attentions] == [(3, 2, 24, 24)] * 2
    assert [a.shape for a in out.decoder_attentions] == [(3, 2, 24, 24)] * 3
    for weights in out.attentions + out.decoder_attentions:
        torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2, 24))
    # the last encoder hidden state is what the quantiser reads (after the final norm and projection)
    vectors = torch.nn.functional.normalize(model.to_code(model.encoder.norm(out.hidden_states[-1])), dim=-1)
    torch.testing.assert_close(vectors, model.embed(x))
    # the first decoder hidden state embeds the code vectors, with ROI-major position embeddings
    decoder = model.decoder
    positions = (decoder.roi_embeddings.weight[:, None] + decoder.time_embeddings.weight[None, :4]).reshape(24, 16)
    torch.testing.assert_close(out.decoder_hidden_states[0], decoder.input_projection(out.code_vectors) + positions)
    # the config's flags work too, and the heads' model returns the same states
    model.config.output_hidden_states = True
    assert len(model(x).hidden_states) == 3
    model.config.output_hidden_states = False
    selected = model(x, output_hidden_states=[0, -1])
    assert selected.hidden_states[1] is None and torch.equal(selected.hidden_states[-1], out.hidden_states[-1])


def test_pretraining_model_returns_the_same_states():
    model = trained(tiny_pretraining(**DEEP, attn_implementation="eager"))
    x = windows(batch=2, seed=5)
    out = model(x, output_hidden_states=True, output_attentions=True)
    base = model.fmri_tokenizer(x, output_hidden_states=True, output_attentions=True)
    for name in ("hidden_states", "attentions", "decoder_hidden_states", "decoder_attentions"):
        assert len(out[name]) == len(base[name]) > 0, name
        for mine, theirs in zip(out[name], base[name], strict=True):
            torch.testing.assert_close(mine, theirs)


# -- gradient checkpointing ---------------------------------------------------------------------


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_checkpointed_step_has_the_gradients_of_the_plain_step(use_reentrant):
    plain = tiny_pretraining(**DEEP, text_embed_dim=5, use_domain_confusion=True, kmeans_init=False)
    checkpointed = copy.deepcopy(plain)
    checkpointed.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": use_reentrant})
    layers = [*checkpointed.fmri_tokenizer.encoder.layers, *checkpointed.fmri_tokenizer.decoder.layers]
    assert all(layer.gradient_checkpointing for layer in layers)
    runs = {"plain": 0, "checkpointed": 0}
    plain.fmri_tokenizer.encoder.layers[0].attention.register_forward_hook(
        lambda *_: runs.__setitem__("plain", runs["plain"] + 1)
    )
    layers[0].attention.register_forward_hook(lambda *_: runs.__setitem__("checkpointed", runs["checkpointed"] + 1))
    inputs = dict(fmri_values=windows(), text_embeds=torch.randn(4, 5), word_embeddings=torch.randn(20, 8))
    losses = {}
    for name, model in (("plain", plain), ("checkpointed", checkpointed)):
        loss = model(**inputs).loss
        loss.backward()
        losses[name] = loss.detach()
    assert runs == {"plain": 1, "checkpointed": 2}  # the checkpointed layer ran again in backward
    torch.testing.assert_close(losses["checkpointed"], losses["plain"])
    grads = dict(checkpointed.named_parameters())
    for name, parameter in plain.named_parameters():
        torch.testing.assert_close(grads[name].grad, parameter.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_input_embeddings_are_the_patch_projection_and_feed_frozen_adapters():
    """peft's recipe: frozen base, trainable adapters, reentrant checkpointing, `enable_input_require_grads`."""
    model = tiny_model(**DEEP, kmeans_init=False)
    assert model.get_input_embeddings() is model.encoder.input_projection
    assert FmriTokenizerForPreTraining(tiny_config()).get_input_embeddings() is not None
    model.requires_grad_(False)
    adapter = model.encoder.layers[1].mlp  # stands in for a LoRA adapter inside a checkpointed layer
    adapter.requires_grad_(True)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
    with pytest.warns(UserWarning, match="None of the inputs have requires_grad"):
        assert not model(windows()).loss.requires_grad  # the reentrant checkpoint cut the adapter off
    model.enable_input_require_grads()
    model(windows()).loss.backward()
    assert adapter[0].weight.grad is not None and adapter[0].weight.grad.abs().sum() > 0


# -- half precision ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_weights_encode_decode_and_train(dtype):
    reference = trained(tiny_model())
    model = copy.deepcopy(reference).to(dtype)
    quantizer = model.quantizer
    assert model.encoder.input_projection.weight.dtype == dtype
    assert {buffer.dtype for buffer in (quantizer.codebook.weight, quantizer.ema_sum, quantizer.code_usage)} == {
        torch.float32
    }
    torch.testing.assert_close(quantizer.codebook.weight, reference.quantizer.codebook.weight, rtol=0, atol=0)
    x = windows(batch=4, seed=11)
    codes = model.encode(x)
    agreement = (codes == reference.encode(x)).float().mean()
    assert agreement > 0.75, agreement
    decoded = model.decode(codes)
    assert decoded.dtype == dtype and torch.isfinite(decoded).all()
    # a training step: finite losses, weights move, EMA statistics updated in float32
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.encoder.input_projection.weight.detach().clone()
    usage_before = quantizer.code_usage.clone()
    out = model(x)
    assert out.commitment_loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    optimizer.step()
    assert not torch.equal(model.encoder.input_projection.weight, before)
    assert quantizer.code_usage.dtype == torch.float32 and not torch.equal(quantizer.code_usage, usage_before)


def test_autocast_keeps_the_quantiser_in_float32():
    model = trained(tiny_model())
    x = windows(batch=4, seed=11)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        vectors = model.embed(x)
        assert vectors.dtype == torch.bfloat16
        codes = model.encode(x)
    expected = (vectors.float().reshape(-1, 8) @ model.quantizer.codebook.weight.T).argmax(-1).reshape(codes.shape)
    assert torch.equal(codes, expected)


def test_bfloat16_round_trip_through_from_pretrained(tmp_path):
    model = trained(tiny_pretraining(text_embed_dim=5), steps=0)
    model(windows(batch=8), text_embeds=torch.randn(8, 5))  # k-means init
    model.eval().save_pretrained(tmp_path / "fp32")
    loaded = FmriTokenizerModel.from_pretrained(tmp_path / "fp32", dtype=torch.bfloat16)
    assert loaded.encoder.input_projection.weight.dtype == torch.bfloat16
    assert loaded.quantizer.codebook.weight.dtype == torch.float32  # _keep_in_fp32_modules_strict
    torch.testing.assert_close(
        loaded.quantizer.codebook.weight, model.fmri_tokenizer.quantizer.codebook.weight, rtol=0, atol=0
    )
    x = windows(batch=3, seed=7)
    codes = loaded.encode(x)
    assert (codes == model.encode(x)).float().mean() > 0.75
    # a bf16 checkpoint loads in bf16 (transformers 5 keeps the checkpoint's dtype) with identical codes
    loaded.save_pretrained(tmp_path / "bf16")
    again = FmriTokenizerModel.from_pretrained(tmp_path / "bf16")
    assert again.encoder.input_projection.weight.dtype == torch.bfloat16
    assert again.quantizer.codebook.weight.dtype == torch.float32
    assert torch.equal(again.encode(x), codes)
    assert again.decode(codes).dtype == torch.bfloat16


# -- torch.export / torch.compile -------------------------------------------------------------------


@pytest.mark.slow
def test_export_and_fullgraph_compile_in_eval_give_the_eager_outputs():
    model = trained(tiny_model(**DEEP))
    x = windows(batch=3, seed=9)
    with torch.no_grad():
        eager = model(x)
        exported = torch.export.export(model, (x,)).module()(x)
        compiled = torch.compile(model, fullgraph=True, backend="eager")(x)
        codes = torch.compile(model.encode, fullgraph=True, backend="eager")(x)
        decoded = torch.compile(model.decode, fullgraph=True, backend="eager")(codes)
    for out in (exported, compiled):
        out = out if isinstance(out, tuple) else out.to_tuple()
        for mine, theirs in zip(out, eager.to_tuple(), strict=True):
            torch.testing.assert_close(mine, theirs)
    assert torch.equal(codes, eager.codes)
    torch.testing.assert_close(decoded, eager.reconstruction)


def test_value_checks_run_eagerly():
    model = tiny_model().eval()
    x = windows()
    x[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN/inf"):
        model(x)


# -- device_map / disk offload -----------------------------------------------------------------------


def test_disk_offload_with_device_map_auto(tmp_path):
    model = trained(tiny_model(**DEEP, hidden_size=32, num_attention_heads=4))
    model.save_pretrained(tmp_path / "model")
    x = windows(batch=2, seed=3)
    offloaded = FmriTokenizerModel.from_pretrained(
        tmp_path / "model",
        device_map="auto",
        max_memory={"cpu": 60_000},
        offload_folder=tmp_path / "offload",
        offload_buffers=True,
    )
    placements = set(offloaded.hf_device_map.values())
    assert "disk" in placements and placements - {"disk"}, offloaded.hf_device_map
    with torch.no_grad():
        out = offloaded(x)
        expected = model(x)
        assert torch.equal(offloaded.encode(x), expected.codes)
        torch.testing.assert_close(offloaded.decode(expected.codes), expected.reconstruction)
    assert torch.equal(out.codes, expected.codes)
    torch.testing.assert_close(out.reconstruction, expected.reconstruction)


# -- weight initialisation ------------------------------------------------------------------------


def test_codebook_is_initialised_deterministically():
    first, second = tiny_model(seed=0), tiny_model(seed=1)
    assert not torch.equal(first.encoder.input_projection.weight, second.encoder.input_projection.weight)
    expected = initial_codebook(12, 8)
    for model in (first, second):
        torch.testing.assert_close(model.quantizer.codebook.weight, expected, rtol=0, atol=0)
    torch.testing.assert_close(expected.norm(dim=-1), torch.ones(12))
    assert (expected @ expected.T - torch.eye(12)).abs().max() < 0.99  # no two codes alike
    with torch.device("meta"):
        on_meta = FmriTokenizerModel(tiny_config())
    on_meta.to_empty(device="cpu")
    on_meta.init_weights()
    torch.testing.assert_close(on_meta.quantizer.codebook.weight, expected, rtol=0, atol=0)
    assert int(on_meta.quantizer.kmeans_vectors_used) == 0 and torch.equal(
        on_meta.quantizer.code_usage, torch.ones(12)
    )
