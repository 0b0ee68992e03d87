"""Configurations of fMRI-LM.

Remote-code rule (README, "Layout"): this file imports only transformers and sibling modules, so that
`save_pretrained` can copy it into a Hub repository and `trust_remote_code=True` loads it where
`modeling_fmrilm` is not installed.
"""

from __future__ import annotations

import os
from typing import Any, Literal, get_args

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .errors import FmriInputError

CodeProjection = Literal["linear", "mlp"]
"""Maps from the encoder's output to the code space: one Linear, or the paper's Linear -> Tanh -> Linear."""
QuantizerGradient = Literal["straight_through", "rotation"]
"""How the gradient crosses the quantiser: the straight-through identity, or the rotation trick."""


def require(condition: bool, config: Any, field: str, expectation: str, value: Any) -> None:
    """The one check of both configs: raise `FmriInputError` naming the config class and `field`,
    the expectation and the value found."""
    if not condition:
        raise FmriInputError(f"{type(config).__name__}.{field}: expected {expectation}, found {value!r}")


def is_count(value: Any, minimum: int) -> bool:
    """Whether `value` is an `int` (not a `bool`) of at least `minimum`."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


class FmriTokenizerConfig(PreTrainedConfig):
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
        code_projection (`str`, defaults to `"linear"`): the map from the encoder's output to
            `code_dim` before L2 normalisation and quantisation: `"linear"` (one `Linear`) or `"mlp"`
            (`Linear(hidden_size, hidden_size)` -> `Tanh` -> `Linear(hidden_size, code_dim)`, the
            paper's encoder output).
        commitment_weight (`float`, defaults to 0.25): weight of the commitment loss.
        quantizer_gradient (`str`, defaults to `"straight_through"`): how the reconstruction
            gradient reaches the encoder through the quantiser: `"straight_through"` (copied
            unchanged from the code vector to the encoder output) or `"rotation"` (through the
            rotation that takes the encoder output onto its code; Fifty et al. 2025).
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
        kmeans_warmup_steps (`int`, defaults to 0): training batches that run the decoder on the
            unquantised encoder outputs (a plain autoencoder) before the vectors for the k-means
            initialisation are gathered, so that the k-means clusters the features of a trained
            encoder instead of a random one's.
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

    num_rois: int = 450
    window_length: int = 160
    patch_length: int = 160
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_decoder_layers: int = 2
    num_attention_heads: int = 8
    intermediate_size: int | None = None
    hidden_dropout_prob: float = 0.0
    attention_dropout: float = 0.0
    layer_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    num_codes: int = 8192
    code_dim: int = 128
    code_projection: CodeProjection = "linear"
    commitment_weight: float = 0.25
    quantizer_gradient: QuantizerGradient = "straight_through"
    ema_decay: float = 0.99
    dead_code_min_usage: float = 0.03
    dead_code_horizon: int = 100
    kmeans_init: bool = True
    kmeans_init_vectors_per_code: int = 4
    kmeans_warmup_steps: int = 0
    kmeans_iters: int = 10
    text_embed_dim: int | None = None
    contrastive_weight: float = 1.0
    use_domain_confusion: bool = False
    domain_weight: float = 0.5
    domain_hidden_size: int = 256
    grl_lambda: float = 1.0

    def __post_init__(self, **kwargs: Any) -> None:
        require(
            "dead_code_threshold" not in kwargs,
            self,
            "dead_code_threshold",
            "no value: replaced by dead_code_min_usage (a fraction of the expected share) and dead_code_horizon",
            kwargs.get("dead_code_threshold"),
        )
        super().__post_init__(**kwargs)
        positive_ints = (
            "num_rois", "window_length", "patch_length", "hidden_size", "num_hidden_layers", "num_decoder_layers",
            "num_attention_heads", "num_codes", "code_dim", "domain_hidden_size", "dead_code_horizon",
            "kmeans_init_vectors_per_code", "kmeans_iters",
        )  # fmt: skip
        for field in positive_ints:
            require(is_count(getattr(self, field), minimum=1), self, field, "a positive integer", getattr(self, field))
        require(
            self.window_length % self.patch_length == 0,
            self,
            "patch_length",
            f"a divisor of window_length={self.window_length}",
            self.patch_length,
        )
        require(
            self.hidden_size % self.num_attention_heads == 0,
            self,
            "num_attention_heads",
            f"a divisor of hidden_size={self.hidden_size}",
            self.num_attention_heads,
        )
        require(self.num_codes >= 2, self, "num_codes", "at least 2", self.num_codes)
        require(
            is_count(self.kmeans_warmup_steps, minimum=0),
            self,
            "kmeans_warmup_steps",
            "a non-negative integer",
            self.kmeans_warmup_steps,
        )
        for field, alias in (("quantizer_gradient", QuantizerGradient), ("code_projection", CodeProjection)):
            require(
                getattr(self, field) in get_args(alias), self, field, f"one of {get_args(alias)}", getattr(self, field)
            )
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.hidden_size
        require(
            is_count(self.intermediate_size, minimum=1),
            self,
            "intermediate_size",
            "a positive integer",
            self.intermediate_size,
        )
        for field in ("hidden_dropout_prob", "attention_dropout"):
            require(0.0 <= getattr(self, field) < 1.0, self, field, "a probability in [0, 1)", getattr(self, field))
        require(0.0 < self.ema_decay < 1.0, self, "ema_decay", "a number in (0, 1)", self.ema_decay)
        for field in ("commitment_weight", "contrastive_weight", "domain_weight", "grl_lambda"):
            require(getattr(self, field) >= 0, self, field, "a non-negative number", getattr(self, field))
        require(
            0.0 <= self.dead_code_min_usage < 1.0,
            self,
            "dead_code_min_usage",
            "a fraction in [0, 1)",
            self.dead_code_min_usage,
        )
        for field in ("kmeans_init", "use_domain_confusion"):
            require(isinstance(getattr(self, field), bool), self, field, "a bool", getattr(self, field))
        require(self.layer_norm_eps > 0, self, "layer_norm_eps", "a positive number", self.layer_norm_eps)
        require(self.initializer_range > 0, self, "initializer_range", "a positive number", self.initializer_range)
        require(
            self.text_embed_dim is None or is_count(self.text_embed_dim, minimum=1),
            self,
            "text_embed_dim",
            "None or a positive integer",
            self.text_embed_dim,
        )
        for field in (
            "hidden_dropout_prob", "attention_dropout", "layer_norm_eps", "initializer_range", "commitment_weight",
            "ema_decay", "dead_code_min_usage", "contrastive_weight", "domain_weight", "grl_lambda",
        ):  # fmt: skip
            setattr(self, field, float(getattr(self, field)))

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


# -- Stage 2/3: the fMRI-language model ------------------------------------------------------

FMRI_START_TOKEN = "<fmri>"
FMRI_END_TOKEN = "</fmri>"
FMRI_PAD_TOKEN = "<fmri_pad>"
FMRI_FC_TOKEN = "<fmri_fc>"
FMRI_STREAMS = ("codes", "connectivity")
"""The fMRI streams a model can read: `codes` (the Stage 1 code tokens, discrete, the F2F targets) and
`connectivity` (one continuous token per ROI: its row of the window's functional connectivity)."""
FMRI_CODE_TOKEN_FORMAT = "<fmri_{:05d}>"
MAX_FMRI_CODES = 100_000  # five digits in the code token strings


def fmri_code_tokens(num_codes: int) -> list[str]:
    """The text tokens of the fMRI codes, `<fmri_00000>` … `<fmri_{num_codes-1:05d}>`, in code order."""
    return [FMRI_CODE_TOKEN_FORMAT.format(code) for code in range(num_codes)]


class FmriLMConfig(PreTrainedConfig):
    r"""Configuration of [`FmriLMForCausalLM`]: a causal language model that reads and writes fMRI tokens.

    A composite configuration (as LLaVA's): the frozen Stage 1 tokenizer's
    [`FmriTokenizerConfig`] and the text model's configuration (any causal LM: GPT-2, Qwen3,
    Llama, …), plus where the fMRI tokens sit in the unified vocabulary. The vocabulary holds the
    text tokens, one token per code (`<fmri_00000>` … with ids `first_code_token_id` …
    `first_code_token_id + num_codes - 1`) and the specials `<fmri>`, `</fmri>`, `<fmri_pad>` (the
    placeholder that the model overwrites with the code tokens of a scan) and, for a model that reads
    the connectivity stream, `<fmri_fc>` (the placeholder whose input embedding the model replaces
    with a projected row of the window's functional connectivity, one per ROI).

    Args:
        fmri_tokenizer_config (`FmriTokenizerConfig` or `dict`, *optional*): the Stage 1 tokenizer;
            defaults to `FmriTokenizerConfig()` (the paper's 450 ROIs, 8192 codes).
        text_config (`PreTrainedConfig` or `dict`, *optional*): the causal LM's configuration; a
            dict names its `model_type` (default `"gpt2"`). Its `vocab_size` must cover every fMRI id.
        first_code_token_id (`int`, *optional*): id of `<fmri_00000>`; code `c` is token
            `first_code_token_id + c`.
        fmri_start_token_id (`int`, *optional*): id of `<fmri>`.
        fmri_end_token_id (`int`, *optional*): id of `</fmri>`.
        fmri_pad_token_id (`int`, *optional*): id of `<fmri_pad>`.
            The four ids are given together or not at all; when none is given, the fMRI tokens are
            placed after the text vocabulary (codes first, then `<fmri>`, `</fmri>`, `<fmri_pad>`,
            then `<fmri_fc>` when the connectivity stream is on) and `text_config.vocab_size` grows
            by `num_codes + 3` (+ 1).
        fmri_fc_token_id (`int`, *optional*): id of `<fmri_fc>`; required with the connectivity
            stream when the other ids are given.
        fmri_streams (`tuple[str, ...]`, defaults to `("codes",)`): what the model reads of each
            window, from `FMRI_STREAMS`: `"codes"` (always; the temporal code tokens) and optionally
            `"connectivity"` (one token per ROI carrying its FC row, through
            `connectivity_projector`). A config saved without this key (before the connectivity
            stream existed) loads as codes only.
        connectivity_fisher_z (`bool`, defaults to `False`): connectivity rows hold Fisher's z
            (`arctanh r`, clipped at |r| = 1 - 1e-4) instead of Pearson's r. The diagonal is 0 either way.
        projector_hidden_size (`int`, *optional*): width of the connectivity projector's hidden
            layer (`Linear(num_rois, h) -> GELU -> Linear(h, hidden_size)`); defaults to the LM's
            hidden size.
        code_dropout (`float`, defaults to 0.0): in training only, the probability that a sequence's
            code tokens are all replaced by `<fmri_pad>` (one fixed embedding), so that the sequence
            is read from its connectivity tokens alone. Without it a model reading both streams
            learns each training subject's code tokens (which vary per subject as much as the
            connectivity rows and outnumber them) instead of what only the connectivity tokens
            carry; `bench/streams.py` measures what it changes.
        windows_per_scan (`int`, defaults to 1): windows of each scan the model reads (the
            paper reads the first one); a scan takes `windows_per_scan * fmri_tokenizer_config.num_tokens`
            placeholders.
        f2t_loss_weight (`float`, defaults to 1.0): Stage 2 weight of describing a scan (fMRI → text).
        f2f_loss_weight (`float`, defaults to 0.1): Stage 2 weight of predicting the next window's
            tokens (fMRI → fMRI).
        t2t_loss_weight (`float`, defaults to 0.5): Stage 2 weight of plain text (text → text).
        tie_word_embeddings (`bool`): read from `text_config` (the tie lives in the language model);
            recorded here because peft and transformers read it from the top-level config.

    Raises:
        FmriInputError: an id outside the text vocabulary, ids that overlap or are only partly
            given, a code range that does not fit, `windows_per_scan` < 1, a negative loss weight,
            unknown streams or streams without `"codes"`.
    """

    model_type = "fmrilm"
    sub_configs_defaults = {
        "fmri_tokenizer_config": SubConfigSpec(config_class=FmriTokenizerConfig),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="gpt2"),
    }

    fmri_tokenizer_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    first_code_token_id: int | None = None
    fmri_start_token_id: int | None = None
    fmri_end_token_id: int | None = None
    fmri_pad_token_id: int | None = None
    fmri_fc_token_id: int | None = None
    fmri_streams: tuple[str, ...] | list[str] = ("codes",)
    connectivity_fisher_z: bool = False
    projector_hidden_size: int | None = None
    code_dropout: float = 0.0
    windows_per_scan: int = 1
    f2t_loss_weight: float = 1.0
    f2f_loss_weight: float = 0.1
    t2t_loss_weight: float = 0.5
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        # A Stage 1 config loaded from a folder carries that folder's auto_map; it is not this model's.
        self.fmri_tokenizer_config.__dict__.pop("auto_map", None)
        vocab_size = getattr(self.text_config, "vocab_size", None)
        require(
            isinstance(vocab_size, int) and vocab_size > 0,
            self,
            "text_config",
            "a causal language model config with a positive integer vocab_size",
            vocab_size,
        )
        self.tie_word_embeddings = bool(getattr(self.text_config, "tie_word_embeddings", False))
        streams = self.fmri_streams
        require(
            isinstance(streams, (list, tuple))
            and "codes" in streams
            and set(streams) <= set(FMRI_STREAMS)
            and len(set(streams)) == len(streams),
            self,
            "fmri_streams",
            f"distinct names from {FMRI_STREAMS}, with 'codes'",
            streams,
        )
        self.fmri_streams = tuple(name for name in FMRI_STREAMS if name in streams)
        ids = self.special_token_ids
        if all(value is None for value in ids.values()) and self.first_code_token_id is None:
            num_codes = self.fmri_tokenizer_config.num_codes
            self.first_code_token_id = vocab_size
            self.fmri_start_token_id, self.fmri_end_token_id, self.fmri_pad_token_id = (
                vocab_size + num_codes + i for i in range(3)
            )
            self.text_config.vocab_size = vocab_size + num_codes + 3
            if self.reads_connectivity and self.fmri_fc_token_id is None:
                self.fmri_fc_token_id = self.text_config.vocab_size
                self.text_config.vocab_size += 1
        self.check_token_layout()
        require(
            self.projector_hidden_size is None
            or (isinstance(self.projector_hidden_size, int) and self.projector_hidden_size > 0),
            self,
            "projector_hidden_size",
            "a positive integer or None (the LM's hidden size)",
            self.projector_hidden_size,
        )
        self.connectivity_fisher_z = bool(self.connectivity_fisher_z)
        require(
            isinstance(self.code_dropout, (int, float))
            and not isinstance(self.code_dropout, bool)
            and 0 <= self.code_dropout <= 1,
            self,
            "code_dropout",
            "a probability in [0, 1]",
            self.code_dropout,
        )
        self.code_dropout = float(self.code_dropout)
        require(
            isinstance(self.windows_per_scan, int)
            and not isinstance(self.windows_per_scan, bool)
            and self.windows_per_scan > 0,
            self,
            "windows_per_scan",
            "a positive integer",
            self.windows_per_scan,
        )
        for field in ("f2t_loss_weight", "f2f_loss_weight", "t2t_loss_weight"):
            value = getattr(self, field)
            require(isinstance(value, (int, float)) and value >= 0, self, field, "a non-negative number", value)
            setattr(self, field, float(value))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> FmriLMConfig:
        """As `PreTrainedConfig.from_pretrained`, except that a config of another `model_type` and the
        checks of this class are `FmriInputError`s naming the config file."""
        location = str(pretrained_model_name_or_path)
        source = os.path.join(location, "config.json") if os.path.isdir(location) else location
        config_dict, _ = cls.get_config_dict(pretrained_model_name_or_path, **kwargs)
        if config_dict.get("model_type") != cls.model_type:
            raise FmriInputError(
                f"{source}: expected an fMRI-language model config (model_type {cls.model_type!r}), found model_type "
                f"{config_dict.get('model_type')!r}"
            )
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except FmriInputError as error:
            raise FmriInputError(f"{source}: {error}") from None

    @property
    def special_token_ids(self) -> dict[str, int | None]:
        """`{"fmri_start_token_id": …, "fmri_end_token_id": …, "fmri_pad_token_id": …}`, and
        `"fmri_fc_token_id"` when the connectivity stream is on."""
        ids = {
            "fmri_start_token_id": self.fmri_start_token_id,
            "fmri_end_token_id": self.fmri_end_token_id,
            "fmri_pad_token_id": self.fmri_pad_token_id,
        }
        if self.reads_connectivity:
            ids["fmri_fc_token_id"] = self.fmri_fc_token_id
        return ids

    @property
    def reads_connectivity(self) -> bool:
        """Whether the model reads the connectivity stream (one `<fmri_fc>` token per ROI and window)."""
        return "connectivity" in self.fmri_streams

    @property
    def connectivity_tokens_per_window(self) -> int:
        """`<fmri_fc>` placeholders per window: `num_rois` with the connectivity stream, else 0."""
        return self.fmri_tokenizer_config.num_rois if self.reads_connectivity else 0

    @property
    def max_positions(self) -> int | None:
        """Positions the language model attends over (its `max_position_embeddings`, or GPT-2's
        `n_positions`); `None` where its config states no limit."""
        text_config = self.text_config
        return getattr(text_config, "max_position_embeddings", None) or getattr(text_config, "n_positions", None)

    @property
    def num_codes(self) -> int:
        """Codebook size of the fMRI tokenizer (= number of code tokens)."""
        return self.fmri_tokenizer_config.num_codes

    @property
    def code_token_ids(self) -> range:
        """Ids of the code tokens, `<fmri_00000>` first."""
        return range(self.first_code_token_id, self.first_code_token_id + self.num_codes)

    def check_token_layout(self) -> None:
        """Check that the fMRI ids are integers inside `text_config.vocab_size` and do not overlap.

        Raises:
            FmriInputError: naming the field, what was expected and what was found.
        """
        vocab_size = self.text_config.vocab_size
        named = {"first_code_token_id": self.first_code_token_id, **self.special_token_ids}
        for field, value in named.items():
            require(
                isinstance(value, int) and not isinstance(value, bool) and 0 <= value < vocab_size,
                self,
                field,
                f"an integer token id in [0, text_config.vocab_size={vocab_size}) (give all the fMRI ids or none)",
                value,
            )
        require(
            self.num_codes <= MAX_FMRI_CODES,
            self,
            "fmri_tokenizer_config.num_codes",
            f"at most {MAX_FMRI_CODES} codes (five-digit code tokens)",
            self.num_codes,
        )
        codes = self.code_token_ids
        require(
            codes.stop <= vocab_size,
            self,
            "first_code_token_id",
            f"a code range [{codes.start}, {codes.stop}) of num_codes={self.num_codes} ids inside "
            f"text_config.vocab_size={vocab_size}",
            self.first_code_token_id,
        )
        specials = self.special_token_ids
        require(
            len(set(specials.values())) == len(specials),
            self,
            "fmri_start_token_id",
            f"{len(specials)} distinct special ids",
            specials,
        )
        for field, value in specials.items():
            require(
                value not in codes, self, field, f"an id outside the code range [{codes.start}, {codes.stop})", value
            )

    def to_dict(self) -> dict[str, Any]:
        """Serialisable dict; the one model class also serves `AutoModel` in `auto_map`."""
        output = super().to_dict()
        auto_map = output.get("auto_map")
        if auto_map and "AutoModelForCausalLM" in auto_map:
            auto_map.setdefault("AutoModel", auto_map["AutoModelForCausalLM"])
        return output


__all__ = ["FMRI_FC_TOKEN", "FMRI_STREAMS", "FmriLMConfig", "FmriTokenizerConfig", "fmri_code_tokens"]
