"""Stage 1 tokenizer: config, shapes, quantiser, heads and losses, save/load, remote code."""

from __future__ import annotations

import inspect
import json

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining
from transformers.utils import can_return_loss, find_labels

from modeling_fmrilm import (
    FmriFeatureExtractor,
    FmriInputError,
    FmriTokenizerConfig,
    FmriTokenizerForPreTraining,
    FmriTokenizerModel,
)
from modeling_fmrilm.modeling_fmri_tokenizer import (
    FmriVectorQuantizer,
    codebook_usage,
    grad_reverse,
    spherical_kmeans,
)
from tests.support.remote_code import run_without_package
from tests.support.tiny_tokenizer import TINY, tiny_config, tiny_model, tiny_pretraining, unit, windows

# -- configuration ---------------------------------------------------------------------------


def test_config_json_round_trip(tmp_path):
    config = tiny_config(text_embed_dim=5, ema_decay=0.9, dead_code_min_usage=0.05, use_domain_confusion=True)
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "fmri_tokenizer"
    assert saved["patch_length"] == 4 and saved["text_embed_dim"] == 5 and saved["ema_decay"] == 0.9
    assert saved["dead_code_min_usage"] == 0.05 and saved["use_domain_confusion"] is True
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, FmriTokenizerConfig)
    assert {k: v for k, v in loaded.to_dict().items() if k != "_name_or_path"} == {
        k: v for k, v in config.to_dict().items() if k != "_name_or_path"
    }
    assert (loaded.num_patches, loaded.num_tokens) == (4, 24)
    assert loaded.intermediate_size == 4 * TINY["hidden_size"]


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"window_length": 18}, "patch_length"),
        ({"num_attention_heads": 3}, "num_attention_heads"),
        ({"num_rois": 0}, "num_rois"),
        ({"num_codes": 1}, "num_codes"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"domain_weight": -0.5}, "domain_weight"),
        ({"hidden_dropout_prob": 1.2}, "hidden_dropout_prob"),
        ({"text_embed_dim": 0}, "text_embed_dim"),
        ({"code_dim": 2.5}, "code_dim"),
        ({"dead_code_min_usage": 1.0}, "dead_code_min_usage"),
        ({"dead_code_horizon": 0}, "dead_code_horizon"),
        ({"kmeans_init_vectors_per_code": 0}, "kmeans_init_vectors_per_code"),
        ({"use_domain_confusion": 1}, "use_domain_confusion"),
        ({"dead_code_threshold": 1.0}, "dead_code_threshold"),
        ({"code_projection": "conv"}, "code_projection"),
        ({"quantizer_gradient": "gumbel"}, "quantizer_gradient"),
        ({"kmeans_warmup_steps": -1}, "kmeans_warmup_steps"),
    ],
)
def test_config_validation_names_the_field(overrides, field):
    with pytest.raises(FmriInputError, match=rf"FmriTokenizerConfig\.{field}: expected"):
        tiny_config(**overrides)


def test_config_validation_runs_when_loading(tmp_path):
    """A config.json whose patch_length does not divide window_length fails from_pretrained like the constructor."""
    tiny_model().save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**saved, "patch_length": 5}))
    with pytest.raises(FmriInputError) as from_constructor:
        tiny_config(patch_length=5)
    for load in (
        AutoConfig.from_pretrained,
        FmriTokenizerModel.from_pretrained,
        AutoModelForPreTraining.from_pretrained,
    ):
        with pytest.raises(FmriInputError) as from_file:
            load(tmp_path)
        assert str(from_file.value) == str(from_constructor.value)
    assert "patch_length: expected a divisor of window_length=16, found 5" in str(from_constructor.value)


def test_paper_defaults():
    config = FmriTokenizerConfig()
    assert (config.num_rois, config.window_length, config.patch_length) == (450, 160, 160)
    assert (config.num_codes, config.code_dim, config.domain_weight) == (8192, 128, 0.5)
    assert config.text_embed_dim is None and config.use_domain_confusion is False


# -- shapes ----------------------------------------------------------------------------------


def test_forward_output_shapes_and_dtypes():
    model = tiny_pretraining(text_embed_dim=5, use_domain_confusion=True)
    x = windows()
    out = model(x, text_embeds=torch.randn(4, 5), word_embeddings=torch.randn(30, 8))
    assert out.reconstruction.shape == (4, 6, 16) and out.reconstruction.dtype == torch.float32
    assert out.codes.shape == (4, 24) and out.codes.dtype == torch.long
    assert out.pooled_features.shape == (4, 8)
    for name in (
        "loss",
        "reconstruction_loss",
        "commitment_loss",
        "contrastive_loss",
        "domain_loss",
        "perplexity",
        "utilisation",
    ):
        assert out[name].shape == (), name
        assert torch.isfinite(out[name]), name
    expected = (
        out.reconstruction_loss
        + model.config.commitment_weight * out.commitment_loss
        + model.config.contrastive_weight * out.contrastive_loss
        + model.config.domain_weight * out.domain_loss
    )
    torch.testing.assert_close(out.loss, expected)
    assert 0 < out.utilisation <= 1 and 1 <= out.perplexity <= 12
    as_tuple = model(x, text_embeds=torch.randn(4, 5), word_embeddings=torch.randn(30, 8), return_dict=False)
    assert isinstance(as_tuple, tuple) and as_tuple[0].shape == ()


def test_model_output_is_reconstruction_plus_commitment():
    model = tiny_model()
    out = model(windows())
    assert out.code_vectors.shape == (4, 24, 8)
    torch.testing.assert_close(out.loss, out.reconstruction_loss + 0.25 * out.commitment_loss)
    assert not hasattr(model, "domain_classifier") and not hasattr(model, "contrastive_projection")


def test_mlp_code_projection_is_linear_tanh_linear_before_the_unit_sphere():
    model = tiny_model(code_projection="mlp").eval()
    first, tanh, second = model.to_code
    assert isinstance(tanh, torch.nn.Tanh)
    assert (first.in_features, first.out_features, second.out_features) == (16, 16, 8)
    x = windows()
    features = model.encoder(x.reshape(4, 24, 4)).last_hidden_state
    expected = unit(torch.tanh(features @ first.weight.T + first.bias) @ second.weight.T + second.bias)
    torch.testing.assert_close(model.embed(x), expected)
    assert torch.equal(model.encode(x), model.quantizer.assign(expected))


def test_a_config_without_code_projection_loads_the_linear_projection(tmp_path):
    """Checkpoints saved before the option (no `code_projection` in config.json) keep their single Linear."""
    model = tiny_model().eval()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved.pop("code_projection") == "linear"
    (tmp_path / "config.json").write_text(json.dumps(saved))
    loaded = FmriTokenizerModel.from_pretrained(tmp_path)
    assert isinstance(loaded.to_code, torch.nn.Linear)
    assert torch.equal(loaded.encode(windows()), model.encode(windows()))


def test_heads_are_built_only_when_the_config_turns_them_on():
    bare = tiny_pretraining()
    assert bare.contrastive_projection is None and bare.logit_scale is None and bare.domain_classifier is None
    assert {name.split(".")[0] for name, _ in bare.named_parameters()} == {"fmri_tokenizer"}
    out = bare(windows())
    assert out.contrastive_loss is None and out.domain_loss is None
    torch.testing.assert_close(out.loss, out.reconstruction_loss + 0.25 * out.commitment_loss)
    both = tiny_pretraining(text_embed_dim=5, use_domain_confusion=True)
    assert {name.split(".")[0] for name, _ in both.named_parameters()} == {
        "fmri_tokenizer",
        "contrastive_projection",
        "logit_scale",
        "logit_bias",
        "domain_classifier",
    }


def test_every_parameter_gets_a_gradient_when_the_heads_are_fed():
    """What DDP needs: no built parameter is left out of the loss (the codebook is a buffer)."""
    model = tiny_pretraining(text_embed_dim=5, use_domain_confusion=True, kmeans_init=False)
    model(windows(), text_embeds=torch.randn(4, 5), word_embeddings=torch.randn(30, 8)).loss.backward()
    missing = [name for name, parameter in model.named_parameters() if parameter.grad is None]
    assert missing == []


def test_encode_decode_round_trip_shapes_and_dtypes():
    model = tiny_model().eval()
    x = windows(batch=3)
    codes = model.encode(x)
    assert codes.shape == (3, 24) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < 12
    decoded = model.decode(codes)
    assert decoded.shape == x.shape and decoded.dtype == torch.float32
    # forward in eval mode uses exactly the codes and decoder of encode/decode
    out = model(x)
    assert torch.equal(out.codes, codes)
    torch.testing.assert_close(out.reconstruction, decoded)
    # shorter windows (a multiple of patch_length) use the first time positions
    short = model.encode(x[..., :8])
    assert short.shape == (3, 12) and model.decode(short).shape == (3, 6, 8)


def test_encode_does_not_touch_the_codebook():
    model = tiny_model()  # train mode
    before = model.quantizer.codebook.weight.clone()
    model.encode(windows())
    assert torch.equal(model.quantizer.codebook.weight, before)
    assert int(model.quantizer.kmeans_vectors_used) == 0


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x, pattern",
    [
        (torch.randn(2, 5, 16), r"expected 6 ROIs on axis 1 .*found shape \(2, 5, 16\)"),
        (torch.randn(2, 6, 14), r"multiple of patch_length=4.*found shape \(2, 6, 14\)"),
        (torch.randn(2, 6, 20), r"at most window_length=16, found shape \(2, 6, 20\)"),
        (torch.randn(6, 16), r"3-D tensor \(batch, 6, 16\), found shape \(6, 16\)"),
    ],
)
def test_bad_shapes_raise_naming_the_shape(x, pattern):
    model = tiny_model()
    with pytest.raises(FmriInputError, match=pattern):
        model(x)
    with pytest.raises(FmriInputError, match=pattern):
        model.encode(x)


def test_nan_raises_naming_the_shape():
    x = windows()
    x[1, 2, 3] = float("nan")
    with pytest.raises(FmriInputError, match=r"NaN/inf .*shape \(4, 6, 16\)"):
        tiny_model()(x)


def test_bad_codes_raise():
    model = tiny_model()
    with pytest.raises(FmriInputError, match=r"codes: expected a length that is a multiple of num_rois=6"):
        model.decode(torch.zeros(2, 7, dtype=torch.long))
    with pytest.raises(FmriInputError, match=r"codes: expected values in \[0, 12\)"):
        model.decode(torch.full((2, 24), 12))


def test_head_inputs_are_required_exactly_when_the_head_is_built():
    with_heads = tiny_pretraining(text_embed_dim=5, use_domain_confusion=True)
    with pytest.raises(FmriInputError, match=r"text_embeds: required \(the config has text_embed_dim=5\), found None"):
        with_heads(windows(), word_embeddings=torch.randn(30, 8))
    with pytest.raises(
        FmriInputError, match=r"word_embeddings: required \(the config has use_domain_confusion=True\)"
    ):
        with_heads(windows(), text_embeds=torch.randn(4, 5))
    with pytest.raises(FmriInputError, match=r"word_embeddings: expected shape \(vocab_size, 8\)"):
        with_heads(windows(), text_embeds=torch.randn(4, 5), word_embeddings=torch.randn(10, 7))
    with pytest.raises(FmriInputError, match=r"text_embeds: expected shape \(4, 5\)"):
        with_heads(windows(), text_embeds=torch.randn(4, 6), word_embeddings=torch.randn(10, 8))
    bare = tiny_pretraining()
    with pytest.raises(FmriInputError, match=r"text_embeds: given, but the config has text_embed_dim=None"):
        bare(windows(), text_embeds=torch.randn(4, 5))
    with pytest.raises(FmriInputError, match=r"word_embeddings: given, but the config has use_domain_confusion=False"):
        bare(windows(), word_embeddings=torch.randn(30, 8))


@pytest.mark.parametrize("model_class", [FmriTokenizerModel, FmriTokenizerForPreTraining])
def test_loss_without_labels_as_trainer_expects(model_class):
    """Trainer reports an evaluation loss for a label-free model whose forward defaults `return_loss=True`,
    and divides the loss by the accumulation steps when forward takes no `**kwargs`."""
    assert can_return_loss(model_class) and find_labels(model_class) == []
    assert not any(p.kind == p.VAR_KEYWORD for p in inspect.signature(model_class.forward).parameters.values())
    model = model_class(tiny_config()).eval()
    with_loss, without = model(windows()), model(windows(), return_loss=False)
    assert with_loss.loss is not None and without.loss is None
    torch.testing.assert_close(without.reconstruction_loss, with_loss.reconstruction_loss)


@pytest.mark.parametrize("model_class", [FmriTokenizerModel, FmriTokenizerForPreTraining])
def test_a_misspelt_keyword_raises_instead_of_turning_a_loss_off(model_class):
    model = model_class(tiny_config(text_embed_dim=5) if model_class is FmriTokenizerForPreTraining else tiny_config())
    with pytest.raises(TypeError, match="text_embedding"):
        model(windows(), text_embedding=torch.randn(4, 5))


# -- quantiser -------------------------------------------------------------------------------


def test_codebook_usage_numbers():
    utilisation, perplexity = codebook_usage(torch.tensor([0, 0, 1, 1]), 4)
    assert utilisation.item() == pytest.approx(0.5)
    assert perplexity.item() == pytest.approx(2.0)
    utilisation, perplexity = codebook_usage(torch.tensor([3, 3, 3]), 4)
    assert (utilisation.item(), perplexity.item()) == (pytest.approx(0.25), pytest.approx(1.0))


def test_spherical_kmeans_finds_separated_clusters():
    torch.manual_seed(0)
    centres = torch.eye(4)
    points = unit(centres.repeat_interleave(50, 0) + 0.05 * torch.randn(200, 4))
    centroids, counts = spherical_kmeans(points, 4, 10, torch.Generator().manual_seed(0))
    assert sorted(counts.tolist()) == [50.0, 50.0, 50.0, 50.0]
    torch.testing.assert_close(centroids.norm(dim=-1), torch.ones(4))
    # every true centre has a centroid within cosine 0.99
    assert ((centroids @ centres.T).max(dim=0).values > 0.99).all()


def quantizer(**overrides) -> FmriVectorQuantizer:
    q = FmriVectorQuantizer(tiny_config(num_codes=4, code_dim=3, kmeans_init=False, **overrides))
    q.codebook.weight.copy_(unit(torch.eye(4, 3) + torch.tensor([[0, 0, 0], [0, 0, 0], [0, 0, 0], [1.0, 1.0, 1.0]])))
    q.ema_sum.copy_(q.codebook.weight)
    return q


def test_ema_update_moves_codes_toward_assigned_vectors():
    q = quantizer(ema_decay=0.5, dead_code_min_usage=0.0, dead_code_horizon=2)
    target = unit(torch.tensor([1.0, 0.4, 0.0]))  # nearest to code 0 = e1
    vectors = target.repeat(10, 1)
    before = q.codebook.weight.clone()
    q.train()
    _, codes, _ = q(vectors[None])
    assert codes.unique().tolist() == [0]
    after = q.codebook.weight
    assert (after[0] @ target) > (before[0] @ target) + 0.05
    # the EMA step has the closed form normalise(d * sum_old + (1 - d) * sum_new)
    torch.testing.assert_close(after[0], unit(0.5 * before[0] + 0.5 * 10 * target))
    torch.testing.assert_close(after[1:], before[1:])  # unassigned codes stay
    # usage relative to the expected share (10 vectors / 4 codes): code 0 got 4x its share, over a 2-step horizon
    torch.testing.assert_close(q.code_usage, torch.tensor([0.5 + 0.5 * 4.0, 0.5, 0.5, 0.5]))


def test_codes_unused_over_the_horizon_are_restarted_on_batch_vectors():
    torch.manual_seed(0)
    q = quantizer(ema_decay=0.5, dead_code_min_usage=0.2, dead_code_horizon=2).train()
    assert q.max_restarts == 2  # ceil(4 codes / (2 steps * ln(1 / 0.2)))
    vectors = unit(torch.tensor([1.0, 0.1, 0.0]) + 0.01 * torch.randn(16, 3))
    counts = []
    for _ in range(4):
        q(vectors[None])
        counts.append(int(q.last_restart_count))
    # codes 1..3 unused: usage 1 -> 0.5 -> 0.25 -> 0.125 < 0.2, due at step 3; two that step, the third next
    assert counts == [0, 0, 2, 1]
    similarity = q.codebook.weight[1:] @ vectors.T
    torch.testing.assert_close(similarity.max(dim=1).values, torch.ones(3))
    assert (q.code_usage[1:] >= 0.5).all()
    # with restarts off, a dead code stays where it was
    q_off = quantizer(ema_decay=0.5, dead_code_min_usage=0.0, dead_code_horizon=2).train()
    for _ in range(5):
        q_off(vectors[None])
    torch.testing.assert_close(q_off.codebook.weight[3], unit(torch.ones(3)))


def test_restarts_per_step_are_capped_least_used_first():
    q = FmriVectorQuantizer(
        tiny_config(num_codes=64, code_dim=3, kmeans_init=False, dead_code_min_usage=0.5, dead_code_horizon=16)
    ).train()
    assert q.max_restarts == 6  # ceil(64 / (16 * ln 2))
    q.code_usage.copy_(torch.linspace(0.0, 0.6, 64))  # codes 0..52 are below 0.5
    unused = torch.ones(64, dtype=torch.bool)
    restarted = q.restart_dead_codes(unit(torch.randn(10, 3)), unused=unused, expected_share=torch.tensor(10 / 64))
    assert restarted.nonzero().squeeze(1).tolist() == [0, 1, 2, 3, 4, 5]
    assert int(q.last_restart_count) == 6


def test_a_code_the_batch_uses_is_never_restarted():
    q = quantizer(ema_decay=0.5, dead_code_min_usage=0.5, dead_code_horizon=2).train()
    q.code_usage.fill_(0.0)  # every code judged dead by usage alone
    vectors = unit(torch.tensor([[1.0, 0.05, 0.0], [0.05, 1.0, 0.0]]).repeat(4, 1))  # codes 0 and 1
    before = q.codebook.weight.clone()
    _, codes, _ = q(vectors[None])
    assert sorted(codes.unique().tolist()) == [0, 1]
    assert int(q.last_restart_count) == 2  # codes 2 and 3
    # codes 0 and 1 moved only by their EMA step, towards their own vectors, not onto another vector
    assert (q.codebook.weight[0] @ before[0]) > 0.99 and (q.codebook.weight[1] @ before[1]) > 0.99


def test_kmeans_initialisation_waits_for_enough_vectors():
    model = tiny_model(kmeans_init_vectors_per_code=4)  # 12 codes: 48 vectors, two batches of 24
    x = windows(batch=1, seed=3), windows(batch=1, seed=4)
    before = model.quantizer.codebook.weight.clone()
    first = model(x[0])
    assert int(model.quantizer.kmeans_vectors_used) == 0
    assert torch.equal(model.quantizer.codebook.weight, before)
    # until then the decoder reads the unquantised vectors
    torch.testing.assert_close(first.code_vectors, model.embed(x[0]))
    assert first.commitment_loss.item() == 0.0
    model(x[1])
    assert int(model.quantizer.kmeans_vectors_used) == 48
    # every code starts on (a normalised mean of) the gathered encoder vectors, none empty
    vectors = torch.cat([model.embed(part) for part in x]).reshape(-1, 8)
    assert ((model.quantizer.codebook.weight @ vectors.T).max(dim=1).values > 0.5).all()
    assert (model.quantizer.code_usage > 0).all()


def test_kmeans_warmup_trains_the_autoencoder_before_gathering():
    """With kmeans_warmup_steps=2 the first two training batches run unquantised and are not gathered;
    the k-means clusters the third batch's encoder vectors; the count survives a state-dict round trip."""
    model = tiny_model(kmeans_warmup_steps=2, kmeans_init_vectors_per_code=2)  # 12 codes: 24 vectors, one window
    gathered = []
    model.quantizer.initialize = gathered.append
    x = [windows(batch=1, seed=seed) for seed in (3, 4, 5)]
    model.eval()(x[0])  # evaluation batches do not count
    model.train()
    first = model(x[0])
    torch.testing.assert_close(first.code_vectors, model.embed(x[0]))
    assert first.commitment_loss.item() == 0.0 and int(model.quantizer.warmup_batches) == 1
    resumed = tiny_model(seed=1, kmeans_warmup_steps=2, kmeans_init_vectors_per_code=2)
    resumed.load_state_dict(model.state_dict())
    resumed.quantizer.initialize = gathered.append
    resumed(x[1])
    assert int(resumed.quantizer.warmup_batches) == 2 and gathered == []
    resumed(x[2])
    assert len(gathered) == 1
    torch.testing.assert_close(gathered[0], resumed.embed(x[2]).reshape(-1, 8))


def test_gradient_reversal_flips_the_sign_numerically():
    x = torch.randn(5, 3, requires_grad=True)
    weights = torch.randn(5, 3)
    (grad_plain,) = torch.autograd.grad((x * weights).sum(), x)
    (grad_reversed,) = torch.autograd.grad((grad_reverse(x, 0.7) * weights).sum(), x)
    torch.testing.assert_close(grad_plain, weights)
    torch.testing.assert_close(grad_reversed, -0.7 * weights)
    assert torch.equal(grad_reverse(x, 0.7), x)


def test_domain_loss_reverses_only_the_encoder_side_gradient():
    model = tiny_pretraining(use_domain_confusion=True, grl_lambda=1.0)
    codes = unit(torch.randn(10, 8)).requires_grad_(True)
    words = torch.randn(20, 8)
    loss = model.domain_loss(codes, words)
    (grad_reversed,) = torch.autograd.grad(loss, codes, retain_graph=True)
    classifier_grad = torch.autograd.grad(loss, model.domain_classifier[0].weight)[0]
    model.config.grl_lambda = -1.0  # reversal of a reversal: the plain gradient
    (grad_plain,) = torch.autograd.grad(model.domain_loss(codes, words), codes)
    torch.testing.assert_close(grad_reversed, -grad_plain)
    assert grad_plain.abs().sum() > 0 and classifier_grad.abs().sum() > 0


def test_domain_loss_is_the_mean_of_both_domains_cross_entropies():
    model = tiny_pretraining(use_domain_confusion=True)
    codes, words = unit(torch.randn(10, 8)), torch.randn(50, 8)
    fmri_logits = model.domain_classifier(codes).squeeze(-1)
    word_logits = model.domain_classifier(unit(words)).squeeze(-1)
    expected = (
        -torch.nn.functional.logsigmoid(fmri_logits).mean() - torch.nn.functional.logsigmoid(-word_logits).mean()
    ) / 2
    torch.testing.assert_close(model.domain_loss(codes, words), expected)
    assert torch.equal(model.domain_loss(codes, words), model.domain_loss(codes, words))  # deterministic


def test_siglip_loss_prefers_matching_text():
    model = tiny_pretraining(text_embed_dim=8)
    with torch.no_grad():
        model.contrastive_projection.weight.copy_(torch.eye(8))
        model.contrastive_projection.bias.zero_()
    pooled = unit(torch.randn(4, 8))
    matched = model.contrastive_loss(pooled, pooled.clone())
    shuffled = model.contrastive_loss(pooled, pooled[[1, 2, 3, 0]])
    assert matched < shuffled
    # windows sharing one text are positives for each other
    shared = torch.stack([pooled[0], pooled[0], pooled[2], pooled[3]])
    z = unit(shared) @ unit(shared).T * 10.0 - 10.0
    labels = torch.tensor([[1, 1, -1, -1], [1, 1, -1, -1], [-1, -1, 1, -1], [-1, -1, -1, 1]]).float()
    expected = -torch.nn.functional.logsigmoid(labels * z).sum() / 4
    torch.testing.assert_close(model.contrastive_loss(shared, shared), expected)


# -- training --------------------------------------------------------------------------------


def test_loss_falls_over_30_steps():
    model = tiny_model(seed=0, num_codes=16)
    x = windows(batch=16, seed=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        out = model(x)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    assert sum(losses[-5:]) < sum(losses[:5])


# -- save / load -----------------------------------------------------------------------------


def trained_and_saved(folder) -> tuple[FmriTokenizerForPreTraining, torch.Tensor]:
    model = tiny_pretraining(text_embed_dim=5, use_domain_confusion=True)
    model(windows(batch=8), text_embeds=torch.randn(8, 5), word_embeddings=torch.randn(30, 8))  # k-means + EMA step
    model.eval()
    x = windows(batch=3, seed=7)
    model.save_pretrained(folder)
    return model, x


def test_save_load_gives_identical_codes(tmp_path):
    model, x = trained_and_saved(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert int(model.fmri_tokenizer.quantizer.kmeans_vectors_used) == 192
    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path)
    assert type(reloaded) is FmriTokenizerForPreTraining and not reloaded.training
    assert torch.equal(reloaded.encode(x), model.encode(x))
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name], tensor, rtol=0, atol=0, msg=name)


def test_either_checkpoint_loads_into_the_tokenizer_model(tmp_path):
    """Stage 2 holds FmriTokenizerModel: a ForPreTraining checkpoint (heads dropped) or a Model checkpoint."""
    pretraining, x = trained_and_saved(tmp_path / "pretraining")
    pretraining.fmri_tokenizer.save_pretrained(tmp_path / "model")
    expected = pretraining.encode(x)
    for folder in ("pretraining", "model"):
        loaded = AutoModel.from_pretrained(tmp_path / folder)
        assert type(loaded) is FmriTokenizerModel, folder
        assert torch.equal(loaded.encode(x), expected), folder
        torch.testing.assert_close(loaded.decode(expected), pretraining.decode(expected), msg=folder)
        torch.testing.assert_close(
            loaded.quantizer.codebook.weight, pretraining.fmri_tokenizer.quantizer.codebook.weight
        )
    # a Model checkpoint also loads into ForPreTraining: the tokenizer's weights kept, the heads new
    with_heads = FmriTokenizerForPreTraining.from_pretrained(tmp_path / "model", text_embed_dim=5)
    assert torch.equal(with_heads.encode(x), expected) and with_heads.contrastive_projection is not None


REMOTE_LOADER = """
    import sys
    import torch
    from safetensors.torch import load_file
    from transformers import AutoFeatureExtractor, AutoModel
    from transformers import AutoModelForPreTraining
    model = AutoModel.from_pretrained({folder!r}, trust_remote_code=True).eval()
    pretraining = AutoModelForPreTraining.from_pretrained({folder!r}, trust_remote_code=True).eval()
    extractor = AutoFeatureExtractor.from_pretrained({folder!r}, trust_remote_code=True)
    assert "modeling_fmrilm" not in sys.modules
    for loaded in (model, pretraining, extractor):
        assert not type(loaded).__module__.startswith("modeling_fmrilm"), type(loaded).__module__
    x = load_file({inputs!r})["x"]
    raw = extractor(x[0].numpy(), tr=2.0)["fmri_values"]
    assert pretraining.encode(x).tolist() == model.encode(x).tolist()
    print(type(extractor).__name__, raw.shape, type(pretraining).__name__)
    print(type(model).__name__, model.encode(x).tolist())
"""


def test_trust_remote_code_load_without_the_package(tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "tok"
    model, x = trained_and_saved(folder)
    FmriFeatureExtractor(num_rois=x.shape[1], window_length=x.shape[2], target_tr=2.0).save_pretrained(folder)
    saved = json.loads((folder / "config.json").read_text())
    assert saved["auto_map"] == {
        "AutoConfig": "configuration_fmrilm.FmriTokenizerConfig",
        "AutoModel": "modeling_fmri_tokenizer.FmriTokenizerModel",
        "AutoModelForPreTraining": "modeling_fmri_tokenizer.FmriTokenizerForPreTraining",
    }
    for name in ("configuration_fmrilm.py", "modeling_fmri_tokenizer.py", "feature_extraction_fmrilm.py", "errors.py"):
        assert (folder / name).exists(), name
    save_file({"x": x}, tmp_path / "x.safetensors")
    result = run_without_package(
        REMOTE_LOADER.format(folder=str(folder), inputs=str(tmp_path / "x.safetensors")), tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    extractor_line, model_line = result.stdout.strip().splitlines()[-2:]
    assert extractor_line == f"FmriFeatureExtractor (1, {x.shape[1]}, {x.shape[2]}) FmriTokenizerForPreTraining"
    name, codes = model_line.split(" ", 1)
    assert name == "FmriTokenizerModel"
    assert json.loads(codes) == model.encode(x).tolist()
