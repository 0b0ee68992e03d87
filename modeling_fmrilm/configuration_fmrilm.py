"""Configurations of fMRI-LM (DESIGN.md §4, §5).

Remote-code rule (DESIGN.md §2): this file imports only transformers and sibling modules, so that
`save_pretrained` can copy it into a Hub repository and `trust_remote_code=True` loads it where
`modeling_fmrilm` is not installed.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

from .errors import FmriInputError


def _check(condition: bool, field: str, expectation: str, value: Any) -> None:
    """Raise `FmriInputError` naming `field`, the expectation and the value found."""
    if not condition:
        raise FmriInputError(f"FmriTokenizerConfig.{field}: expected {expectation}, found {value!r}")


class FmriTokenizerConfig(PretrainedConfig):
    r"""Configuration of the Stage 1 neural tokenizer [`FmriTokenizerModel`] and [`FmriTokenizerForPreTraining`].

    A window `(num_rois, window_length)` is cut along time only into patches of `patch_length`
    frames, giving `num_rois * window_length // patch_length` tokens; each token becomes one of
    `num_codes` discrete codes.

    Args:
        num_rois (`int`, defaults to 450): ROIs per window (Schaefer-400 + Tian-S3 in the paper).
        window_length (`int`, defaults to 160): frames per window (at TR 2.0 s); the most frames a
            window may have. Shorter windows whose length is a multiple of `patch_length` use the
            first time position embeddings.
        patch_length (`int`, defaults to 160): frames per patch; must divide `window_length`.
        hidden_size (`int`, defaults to 256): width of the encoder and decoder.
        num_hidden_layers (`int`, defaults to 4): encoder transformer blocks.
        num_decoder_layers (`int`, defaults to 2): decoder transformer blocks.
        num_attention_heads (`int`, defaults to 8): attention heads; must divide `hidden_size`.
        intermediate_size (`int`, *optional*): MLP width; defaults to `4 * hidden_size`.
        hidden_dropout_prob (`float`, defaults to 0.0): dropout after attention and MLP.
        attention_dropout (`float`, defaults to 0.0): dropout on attention weights.
        layer_norm_eps (`float`, defaults to 1e-6): LayerNorm epsilon.
        initializer_range (`float`, defaults to 0.02): std of the normal weight initialisation.
        num_codes (`int`, defaults to 8192): codebook size.
        code_dim (`int`, defaults to 128): dimension of a code vector; set it to the language
            model's hidden size so that code vectors can seed its embedding rows.
        commitment_weight (`float`, defaults to 0.25): weight of the commitment loss.
        ema_decay (`float`, defaults to 0.99): decay of the exponential moving averages that move the
            code vectors.
        dead_code_min_usage (`float`, defaults to 0.03): a code is restarted (moved onto an encoder
            output of the current batch) when its usage over the last `dead_code_horizon` steps falls
            below this fraction of the expected share (vectors per step / `num_codes`) and the current
            batch does not use it; 0 disables restarts. At most
            `ceil(num_codes / (dead_code_horizon * ln(1 / dead_code_min_usage)))` codes restart per
            step (0.29% of the codes with the defaults), the least used first.
        dead_code_horizon (`int`, defaults to 100): steps over which usage is judged (the time
            constant of the usage average).
        kmeans_init (`bool`, defaults to `True`): initialise the codebook by spherical k-means on
            encoder outputs gathered over the first training steps.
        kmeans_init_vectors_per_code (`int`, defaults to 4): the k-means initialisation waits until
            it has gathered `kmeans_init_vectors_per_code * num_codes` encoder outputs (over all
            processes); until then training runs the decoder on the unquantised vectors.
        kmeans_iters (`int`, defaults to 10): k-means iterations for that initialisation.
        text_embed_dim (`int`, *optional*): dimension of the text embeddings of the SigLIP loss in
            [`FmriTokenizerForPreTraining`]; `None` (default) builds no contrastive head.
        contrastive_weight (`float`, defaults to 1.0): weight of the SigLIP loss.
        use_domain_confusion (`bool`, defaults to `False`): build the domain classifier of
            [`FmriTokenizerForPreTraining`] (fMRI code vectors vs the language model's word
            embeddings, behind gradient reversal).
        domain_weight (`float`, defaults to 0.5): weight of the domain-confusion loss, 0.5 as in the paper.
        domain_hidden_size (`int`, defaults to 256): width of the domain classifier.
        grl_lambda (`float`, defaults to 1.0): gradient-reversal scale.

    Every field is checked when the config is built, so also when it is loaded: a `config.json`
    that breaks a rule fails `from_pretrained` with the constructor's `FmriInputError`.
    """

    model_type = "fmri_tokenizer"

    def __init__(
        self,
        num_rois: int = 450,
        window_length: int = 160,
        patch_length: int = 160,
        hidden_size: int = 256,
        num_hidden_layers: int = 4,
        num_decoder_layers: int = 2,
        num_attention_heads: int = 8,
        intermediate_size: int | None = None,
        hidden_dropout_prob: float = 0.0,
        attention_dropout: float = 0.0,
        layer_norm_eps: float = 1e-6,
        initializer_range: float = 0.02,
        num_codes: int = 8192,
        code_dim: int = 128,
        commitment_weight: float = 0.25,
        ema_decay: float = 0.99,
        dead_code_min_usage: float = 0.03,
        dead_code_horizon: int = 100,
        kmeans_init: bool = True,
        kmeans_init_vectors_per_code: int = 4,
        kmeans_iters: int = 10,
        text_embed_dim: int | None = None,
        contrastive_weight: float = 1.0,
        use_domain_confusion: bool = False,
        domain_weight: float = 0.5,
        domain_hidden_size: int = 256,
        grl_lambda: float = 1.0,
        **kwargs: Any,
    ) -> None:
        positive_ints = {
            "num_rois": num_rois,
            "window_length": window_length,
            "patch_length": patch_length,
            "hidden_size": hidden_size,
            "num_hidden_layers": num_hidden_layers,
            "num_decoder_layers": num_decoder_layers,
            "num_attention_heads": num_attention_heads,
            "num_codes": num_codes,
            "code_dim": code_dim,
            "domain_hidden_size": domain_hidden_size,
            "dead_code_horizon": dead_code_horizon,
            "kmeans_init_vectors_per_code": kmeans_init_vectors_per_code,
            "kmeans_iters": kmeans_iters,
        }
        for field, value in positive_ints.items():
            _check(isinstance(value, int) and not isinstance(value, bool) and value > 0, field, "a positive integer", value)
        _check(
            window_length % patch_length == 0,
            "patch_length",
            f"a divisor of window_length={window_length}",
            patch_length,
        )
        _check(
            hidden_size % num_attention_heads == 0,
            "num_attention_heads",
            f"a divisor of hidden_size={hidden_size}",
            num_attention_heads,
        )
        _check(num_codes >= 2, "num_codes", "at least 2", num_codes)
        intermediate_size = 4 * hidden_size if intermediate_size is None else intermediate_size
        _check(isinstance(intermediate_size, int) and intermediate_size > 0, "intermediate_size", "a positive integer", intermediate_size)
        for field, value in {"hidden_dropout_prob": hidden_dropout_prob, "attention_dropout": attention_dropout}.items():
            _check(0.0 <= value < 1.0, field, "a probability in [0, 1)", value)
        _check(0.0 < ema_decay < 1.0, "ema_decay", "a number in (0, 1)", ema_decay)
        nonnegative = {
            "commitment_weight": commitment_weight,
            "contrastive_weight": contrastive_weight,
            "domain_weight": domain_weight,
            "grl_lambda": grl_lambda,
        }
        for field, value in nonnegative.items():
            _check(value >= 0, field, "a non-negative number", value)
        _check(0.0 <= dead_code_min_usage < 1.0, "dead_code_min_usage", "a fraction in [0, 1)", dead_code_min_usage)
        for field, value in {"kmeans_init": kmeans_init, "use_domain_confusion": use_domain_confusion}.items():
            _check(isinstance(value, bool), field, "a bool", value)
        _check(
            "dead_code_threshold" not in kwargs,
            "dead_code_threshold",
            "no value: replaced by dead_code_min_usage (a fraction of the expected share) and dead_code_horizon",
            kwargs.get("dead_code_threshold"),
        )
        _check(layer_norm_eps > 0, "layer_norm_eps", "a positive number", layer_norm_eps)
        _check(initializer_range > 0, "initializer_range", "a positive number", initializer_range)
        _check(
            text_embed_dim is None or (isinstance(text_embed_dim, int) and text_embed_dim > 0),
            "text_embed_dim",
            "None or a positive integer",
            text_embed_dim,
        )
        self.num_rois = num_rois
        self.window_length = window_length
        self.patch_length = patch_length
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_decoder_layers = num_decoder_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_dropout_prob = float(hidden_dropout_prob)
        self.attention_dropout = float(attention_dropout)
        self.layer_norm_eps = float(layer_norm_eps)
        self.initializer_range = float(initializer_range)
        self.num_codes = num_codes
        self.code_dim = code_dim
        self.commitment_weight = float(commitment_weight)
        self.ema_decay = float(ema_decay)
        self.dead_code_min_usage = float(dead_code_min_usage)
        self.dead_code_horizon = dead_code_horizon
        self.kmeans_init = kmeans_init
        self.kmeans_init_vectors_per_code = kmeans_init_vectors_per_code
        self.kmeans_iters = kmeans_iters
        self.text_embed_dim = text_embed_dim
        self.contrastive_weight = float(contrastive_weight)
        self.use_domain_confusion = use_domain_confusion
        self.domain_weight = float(domain_weight)
        self.domain_hidden_size = domain_hidden_size
        self.grl_lambda = float(grl_lambda)
        super().__init__(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Serialisable dict; `auto_map` entries are plain `"module.Class"` strings.

        transformers records any class whose name contains "Tokenizer" as a (slow, fast) text
        tokenizer pair in `auto_map`; this fMRI tokenizer is a model, so the pair is undone.
        """
        output = super().to_dict()
        if output.get("auto_map"):
            output["auto_map"] = {
                key: value[0] if isinstance(value, (list, tuple)) and key != "AutoTokenizer" else value
                for key, value in output["auto_map"].items()
            }
        return output

    @property
    def num_patches(self) -> int:
        """Patches per full window: `window_length // patch_length`."""
        return self.window_length // self.patch_length

    @property
    def num_tokens(self) -> int:
        """Codes per full window: `num_rois * num_patches`."""
        return self.num_rois * self.num_patches


__all__ = ["FmriTokenizerConfig"]
