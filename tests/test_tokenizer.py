"""Stage 1 tokenizer: config, shapes, quantiser, losses, save/load, remote code."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import textwrap

import pytest
import torch
from transformers import AutoConfig, AutoModel

from modeling_fmrilm import FmriFeatureExtractor, FmriInputError, FmriTokenizerConfig, FmriTokenizerModel
from modeling_fmrilm.modeling_fmri_tokenizer import (
    FmriVectorQuantizer,
    codebook_usage,
    grad_reverse,
    spherical_kmeans,
)

TINY = dict(
    num_rois=6,
    window_length=16,
    patch_length=4,
    hidden_size=16,
    num_hidden_layers=1,
    num_decoder_layers=1,
    num_attention_heads=2,
    num_codes=12,
    code_dim=8,
    domain_hidden_size=8,
)


def tiny_config(**overrides) -> FmriTokenizerConfig:
    return FmriTokenizerConfig(**{**TINY, **overrides})


def tiny_model(seed: int = 0, **overrides) -> FmriTokenizerModel:
    torch.manual_seed(seed)
    return FmriTokenizerModel(tiny_config(**overrides))


def windows(batch: int = 4, seed: int = 1, length: int = 16) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, TINY["num_rois"], length, generator=generator)


# -- configuration ---------------------------------------------------------------------------


def test_config_json_round_trip(tmp_path):
    config = tiny_config(text_embed_dim=5, ema_decay=0.9, dead_code_threshold=0.5)
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "fmri_tokenizer"
    assert saved["patch_length"] == 4 and saved["text_embed_dim"] == 5 and saved["ema_decay"] == 0.9
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
    ],
)
def test_config_validation_names_the_field(overrides, field):
    with pytest.raises(FmriInputError, match=rf"FmriTokenizerConfig\.{field}: expected"):
        tiny_config(**overrides)


def test_paper_defaults():
    config = FmriTokenizerConfig()
    assert (config.num_rois, config.window_length, config.patch_length) == (450, 160, 160)
    assert (config.num_codes, config.code_dim, config.domain_weight) == (8192, 128, 0.5)


# -- shapes ----------------------------------------------------------------------------------


def test_forward_output_shapes_and_dtypes():
    model = tiny_model(text_embed_dim=5)
    x = windows()
    out = model(x, text_embeds=torch.randn(4, 5), word_embeddings=torch.randn(30, 8))
    assert out.reconstruction.shape == (4, 6, 16) and out.reconstruction.dtype == torch.float32
    assert out.codes.shape == (4, 24) and out.codes.dtype == torch.long
    assert out.pooled_features.shape == (4, 8)
    for name in ("loss", "reconstruction_loss", "commitment_loss", "contrastive_loss", "domain_loss", "perplexity", "utilisation"):
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
    as_tuple = model(x, return_dict=False)
    assert isinstance(as_tuple, tuple) and as_tuple[0].shape == ()


def test_optional_losses_are_off_without_their_inputs():
    out = tiny_model()(windows())
    assert out.contrastive_loss is None and out.domain_loss is None
    torch.testing.assert_close(out.loss, out.reconstruction_loss + 0.25 * out.commitment_loss)


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
    before = model.quantizer.codebook.clone()
    model.encode(windows())
    assert torch.equal(model.quantizer.codebook, before)
    assert not bool(model.quantizer.initialized)


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


def test_bad_codes_and_side_inputs_raise():
    model = tiny_model()
    with pytest.raises(FmriInputError, match=r"codes: expected a length that is a multiple of num_rois=6"):
        model.decode(torch.zeros(2, 7, dtype=torch.long))
    with pytest.raises(FmriInputError, match=r"codes: expected values in \[0, 12\)"):
        model.decode(torch.full((2, 24), 12))
    with pytest.raises(FmriInputError, match=r"word_embeddings: expected shape \(vocab_size, 8\)"):
        model(windows(), word_embeddings=torch.randn(10, 7))
    with pytest.raises(FmriInputError, match=r"text_embed_dim=None"):
        model(windows(), text_embeds=torch.randn(4, 5))


# -- quantiser -------------------------------------------------------------------------------


def unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


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
    q = FmriVectorQuantizer(tiny_config(num_codes=4, code_dim=3, **overrides))
    q.codebook.copy_(torch.eye(4, 3) + torch.tensor([[0, 0, 0], [0, 0, 0], [0, 0, 0], [1.0, 1.0, 1.0]]))
    q.codebook.copy_(unit(q.codebook))
    q.ema_sum.copy_(q.codebook)
    q.ema_count.fill_(1.0)
    q.initialized.fill_(True)
    return q


def test_ema_update_moves_codes_toward_assigned_vectors():
    q = quantizer(ema_decay=0.5, dead_code_threshold=0.0)
    target = unit(torch.tensor([1.0, 0.4, 0.0]))  # nearest to code 0 = e1
    vectors = target.repeat(10, 1)
    before = q.codebook.clone()
    q.train()
    _, codes, _ = q(vectors[None])
    assert codes.unique().tolist() == [0]
    after = q.codebook
    assert (after[0] @ target) > (before[0] @ target) + 0.05
    # the EMA step has the closed form normalise(d * sum_old + (1 - d) * sum_new)
    torch.testing.assert_close(after[0], unit(0.5 * before[0] + 0.5 * 10 * target))
    torch.testing.assert_close(after[1:], before[1:])  # unassigned codes stay
    torch.testing.assert_close(q.ema_count, torch.tensor([5.5, 0.5, 0.5, 0.5]))


def test_dead_codes_are_restarted_on_batch_vectors():
    torch.manual_seed(0)
    q = quantizer(ema_decay=0.5, dead_code_threshold=0.9)
    vectors = unit(torch.tensor([1.0, 0.1, 0.0]) + 0.01 * torch.randn(16, 3))
    q.train()
    q(vectors[None])
    # codes 1..3 got no assignment: their count fell to 0.5 < 0.9, so they now sit on batch vectors
    similarity = q.codebook[1:] @ vectors.T
    assert torch.allclose(similarity.max(dim=1).values, torch.ones(3), atol=1e-5)
    assert (q.ema_count[1:] >= 0.9).all()
    assert not torch.allclose(q.codebook[3], unit(torch.ones(3)))
    # with restarts off, a dead code stays where it was
    q_off = quantizer(ema_decay=0.5, dead_code_threshold=0.0).train()
    q_off(vectors[None])
    torch.testing.assert_close(q_off.codebook[3], unit(torch.ones(3)))


def test_kmeans_initialisation_on_first_training_batch():
    model = tiny_model()
    assert not bool(model.quantizer.initialized)
    x = windows(batch=8)
    out = model(x)
    assert bool(model.quantizer.initialized)
    # every code starts on (a normalised mean of) encoder vectors of the batch
    vectors = model.embed(x).reshape(-1, 8)
    assert ((model.quantizer.codebook @ vectors.T).max(dim=1).values > 0.5).all()
    assert out.utilisation > 0.5


def test_gradient_reversal_flips_the_sign_numerically():
    x = torch.randn(5, 3, requires_grad=True)
    weights = torch.randn(5, 3)
    (grad_plain,) = torch.autograd.grad((x * weights).sum(), x)
    (grad_reversed,) = torch.autograd.grad((grad_reverse(x, 0.7) * weights).sum(), x)
    torch.testing.assert_close(grad_plain, weights)
    torch.testing.assert_close(grad_reversed, -0.7 * weights)
    assert torch.equal(grad_reverse(x, 0.7), x)


def test_domain_loss_reverses_only_the_encoder_side_gradient():
    model = tiny_model(grl_lambda=1.0)
    codes = unit(torch.randn(10, 8)).requires_grad_(True)
    words = torch.randn(20, 8)
    torch.manual_seed(3)
    loss = model.domain_loss(codes, words)
    (grad_reversed,) = torch.autograd.grad(loss, codes, retain_graph=True)
    classifier_grad = torch.autograd.grad(loss, model.domain_classifier[0].weight)[0]
    model.config.grl_lambda = -1.0  # reversal of a reversal: the plain gradient
    torch.manual_seed(3)
    (grad_plain,) = torch.autograd.grad(model.domain_loss(codes, words), codes)
    torch.testing.assert_close(grad_reversed, -grad_plain)
    assert grad_plain.abs().sum() > 0 and classifier_grad.abs().sum() > 0


def test_siglip_loss_prefers_matching_text():
    model = tiny_model(text_embed_dim=8)
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


def trained_and_saved(folder) -> tuple[FmriTokenizerModel, torch.Tensor]:
    model = tiny_model(text_embed_dim=5)
    model(windows(batch=8))  # k-means init + one EMA step
    model.eval()
    x = windows(batch=3, seed=7)
    model.save_pretrained(folder)
    return model, x


def test_save_load_gives_identical_codes(tmp_path):
    model, x = trained_and_saved(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is FmriTokenizerModel and not loaded.training
    assert torch.equal(loaded.encode(x), model.encode(x))
    torch.testing.assert_close(loaded.quantizer.codebook, model.quantizer.codebook)
    assert bool(loaded.quantizer.initialized)
    torch.testing.assert_close(loaded.decode(model.encode(x)), model.decode(model.encode(x)))


REMOTE_LOADER = textwrap.dedent(
    """
    import importlib.abc, sys
    sys.path.insert(0, {site!r})

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "modeling_fmrilm":
                raise ImportError("modeling_fmrilm is blocked in this test")

    sys.meta_path.insert(0, Block())
    import torch
    from safetensors.torch import load_file
    from transformers import AutoFeatureExtractor, AutoModel
    model = AutoModel.from_pretrained({folder!r}, trust_remote_code=True).eval()
    extractor = AutoFeatureExtractor.from_pretrained({folder!r}, trust_remote_code=True)
    assert "modeling_fmrilm" not in sys.modules
    for loaded in (model, extractor):
        assert not type(loaded).__module__.startswith("modeling_fmrilm"), type(loaded).__module__
    x = load_file({inputs!r})["x"]
    raw = extractor(x[0].numpy(), tr=2.0)["fmri_values"]
    print(type(extractor).__name__, raw.shape)
    print(type(model).__name__, model.encode(x).tolist())
    """
)


def test_trust_remote_code_load_without_the_package(tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "tok"
    model, x = trained_and_saved(folder)
    FmriFeatureExtractor(num_rois=x.shape[1], window_length=x.shape[2], target_tr=2.0).save_pretrained(folder)
    saved = json.loads((folder / "config.json").read_text())
    assert saved["auto_map"] == {
        "AutoConfig": "configuration_fmrilm.FmriTokenizerConfig",
        "AutoModel": "modeling_fmri_tokenizer.FmriTokenizerModel",
    }
    for name in ("configuration_fmrilm.py", "modeling_fmri_tokenizer.py", "feature_extraction_fmrilm.py", "errors.py"):
        assert (folder / name).exists(), name
    save_file({"x": x}, tmp_path / "x.safetensors")
    script = REMOTE_LOADER.format(
        site=sysconfig.get_paths()["purelib"], folder=str(folder), inputs=str(tmp_path / "x.safetensors")
    )
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    extractor_line, model_line = result.stdout.strip().splitlines()[-2:]
    assert extractor_line == f"FmriFeatureExtractor (1, {x.shape[1]}, {x.shape[2]})"
    name, codes = model_line.split(" ", 1)
    assert name == "FmriTokenizerModel"
    assert json.loads(codes) == model.encode(x).tolist()
