"""Stage 1 of fMRI-LM: the neural tokenizer that turns fMRI windows into discrete codes (DESIGN.md §4).

Remote-code rule (DESIGN.md §2): this file imports only torch, transformers and sibling modules,
so that `save_pretrained` can copy it into a Hub repository.

Pipeline for a batch of windows `(batch, num_rois, window_length)`:

1. time-only patching into `n_patches = window_length // patch_length` patches per ROI, giving
   `n_tokens = num_rois * n_patches` tokens ordered ROI-major (token `r * n_patches + p`),
2. linear patch embedding + learned ROI and time position embeddings,
3. transformer encoder (pre-LayerNorm blocks using `torch.nn.functional.scaled_dot_product_attention`),
4. projection to `code_dim` and L2 normalisation,
5. L2-normalised EMA vector quantiser (spherical k-means initialisation from the first training
   batch, dead-code restart, straight-through gradients),
6. transformer decoder and a linear head back to `patch_length` frames per token.

Losses: reconstruction (MSE on the normalised signal) + commitment, and optionally a SigLIP
contrast between pooled fMRI features and text embeddings and a domain-confusion loss (a
classifier behind a gradient-reversal layer separating fMRI code vectors from LM word embeddings).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_fmrilm import FmriTokenizerConfig
from .errors import FmriInputError


class _GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by `-scale`."""

    @staticmethod
    def forward(ctx, inputs: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return inputs.view_as(inputs)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad_output, None


def grad_reverse(inputs: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Gradient-reversal layer: returns `inputs` unchanged; its gradient is multiplied by `-scale`."""
    return _GradientReversal.apply(inputs, scale)


def codebook_usage(codes: torch.Tensor, num_codes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Utilisation and perplexity of a set of codes.

    Args:
        codes: integer tensor of any shape with values in `[0, num_codes)`.
        num_codes: codebook size.

    Returns:
        `(utilisation, perplexity)`, scalar float tensors: the fraction of codes used at least
        once, and `exp(entropy)` of the empirical code distribution (1 … `num_codes`).
    """
    counts = torch.bincount(codes.reshape(-1), minlength=num_codes).float()
    probs = counts / counts.sum().clamp_min(1.0)
    entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum()
    return (counts > 0).float().mean(), entropy.exp()


def spherical_kmeans(
    vectors: torch.Tensor, num_clusters: int, num_iters: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spherical k-means (cosine similarity) on unit vectors.

    Args:
        vectors: `(n, dim)` unit-norm vectors.
        num_clusters: number of centroids `k`; when `n < k` the starting points repeat.
        num_iters: Lloyd iterations.
        generator: random generator for the starting points.

    Returns:
        `(centroids, counts)`: `(k, dim)` unit-norm centroids and `(k,)` float cluster sizes of the
        last assignment. A cluster that ends empty keeps its previous centroid.
    """
    n = vectors.shape[0]
    if n >= num_clusters:
        start = torch.randperm(n, generator=generator, device="cpu")[:num_clusters]
    else:
        start = torch.randint(n, (num_clusters,), generator=generator, device="cpu")
    centroids = vectors[start.to(vectors.device)].clone()
    counts = torch.zeros(num_clusters, device=vectors.device, dtype=vectors.dtype)
    for _ in range(num_iters):
        assignment = (vectors @ centroids.T).argmax(dim=1)
        counts = torch.bincount(assignment, minlength=num_clusters).to(vectors.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, vectors)
        filled = counts > 0
        centroids = torch.where(filled[:, None], F.normalize(sums, dim=-1), centroids)
    return centroids, counts


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over processes in place when torch.distributed is running."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


def _broadcast(tensor: torch.Tensor) -> torch.Tensor:
    """Copy rank 0's `tensor` to every process when torch.distributed is running."""
    if dist.is_available() and dist.is_initialized():
        dist.broadcast(tensor, src=0)
    return tensor


class FmriVectorQuantizer(nn.Module):
    """L2-normalised vector quantiser with EMA codebook updates.

    The codebook is a buffer (not a parameter): it moves by exponential moving averages of the
    unit vectors assigned to each code. Codes whose EMA assignment count falls below
    `dead_code_threshold` are restarted from random vectors of the current batch. Statistics are
    summed over processes under torch.distributed, so every rank keeps the same codebook.
    """

    def __init__(self, config: FmriTokenizerConfig) -> None:
        super().__init__()
        self.num_codes = config.num_codes
        self.decay = config.ema_decay
        self.dead_code_threshold = config.dead_code_threshold
        self.kmeans_init = config.kmeans_init
        self.kmeans_iters = config.kmeans_iters
        self.register_buffer("codebook", torch.empty(config.num_codes, config.code_dim))
        self.register_buffer("ema_count", torch.zeros(config.num_codes))
        self.register_buffer("ema_sum", torch.zeros(config.num_codes, config.code_dim))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Code vectors `(*codes.shape, code_dim)` for integer `codes` of any shape."""
        return F.embedding(codes, self.codebook)

    def assign(self, vectors: torch.Tensor) -> torch.Tensor:
        """Nearest code (highest cosine similarity) for unit `vectors` `(..., code_dim)` -> `(...)` long."""
        flat = vectors.reshape(-1, vectors.shape[-1]).float()
        return (flat @ self.codebook.T).argmax(dim=1).reshape(vectors.shape[:-1])

    @torch.no_grad()
    def initialize(self, vectors: torch.Tensor) -> None:
        """Spherical k-means initialisation of the codebook from unit `vectors` `(n, code_dim)`."""
        centroids, counts = spherical_kmeans(vectors, self.num_codes, self.kmeans_iters)
        self.codebook.copy_(_broadcast(centroids))
        self.ema_count.copy_(_broadcast(counts))
        self.ema_sum.copy_(self.codebook * self.ema_count[:, None])
        self.initialized.fill_(True)

    @torch.no_grad()
    def update(self, vectors: torch.Tensor, codes: torch.Tensor) -> None:
        """One EMA step from unit `vectors` `(n, code_dim)` assigned to `codes` `(n,)`, then restarts."""
        counts = torch.bincount(codes, minlength=self.num_codes).to(vectors.dtype)
        sums = torch.zeros_like(self.ema_sum).index_add_(0, codes, vectors)
        _all_reduce_sum(counts)
        _all_reduce_sum(sums)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        norms = self.ema_sum.norm(dim=-1, keepdim=True)
        self.codebook.copy_(torch.where(norms > 0, self.ema_sum / norms.clamp_min(1e-12), self.codebook))
        if self.dead_code_threshold > 0:
            self.restart_dead_codes(vectors, fair_share=float(counts.sum()) / self.num_codes)

    @torch.no_grad()
    def restart_dead_codes(self, vectors: torch.Tensor, fair_share: float) -> torch.Tensor:
        """Move codes with `ema_count < dead_code_threshold` onto random rows of `vectors` `(n, code_dim)`.

        A restarted code gets an EMA count of `max(fair_share, dead_code_threshold)` (the average
        assignments per code in this step) so that it is not restarted again at once. Returns the
        `(num_codes,)` bool mask of restarted codes.
        """
        dead = self.ema_count < self.dead_code_threshold
        n_dead = int(dead.sum())
        if n_dead == 0:
            return dead
        if vectors.shape[0] >= n_dead:
            picks = torch.randperm(vectors.shape[0], device=vectors.device)[:n_dead]
        else:
            picks = torch.randint(vectors.shape[0], (n_dead,), device=vectors.device)
        fresh = _broadcast(vectors[picks].contiguous())
        count = max(fair_share, self.dead_code_threshold)
        self.codebook[dead] = fresh
        self.ema_count[dead] = count
        self.ema_sum[dead] = fresh * count
        return dead

    def forward(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantise unit `vectors` `(batch, n_tokens, code_dim)`.

        In training mode this first initialises the codebook (once, if `kmeans_init`) and, after
        assignment, updates it by EMA and restarts dead codes.

        Returns:
            `(quantized, codes, commitment_loss)`: straight-through code vectors
            `(batch, n_tokens, code_dim)` (value of the codes, gradient of `vectors`), codes
            `(batch, n_tokens)` long, and the scalar commitment loss
            `mean ||vectors - sg(code vector)||²`.
        """
        flat = vectors.reshape(-1, vectors.shape[-1]).float()
        if self.training and self.kmeans_init and not bool(self.initialized):
            self.initialize(flat.detach())
        codes = self.assign(flat)
        if self.training:
            self.update(flat.detach(), codes)
        code_vectors = self.lookup(codes).to(vectors.dtype).reshape(vectors.shape)
        commitment = (vectors - code_vectors.detach()).pow(2).sum(-1).mean()
        quantized = vectors + (code_vectors - vectors).detach()
        return quantized, codes.reshape(vectors.shape[:-1]), commitment


class FmriAttention(nn.Module):
    """Bidirectional multi-head self-attention on `(batch, n_tokens, hidden_size)` via torch SDPA."""

    def __init__(self, config: FmriTokenizerConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dropout = config.attention_dropout
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, n_tokens, hidden = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch, n_tokens, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attended = F.scaled_dot_product_attention(
            query, key, value, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out_proj(attended.transpose(1, 2).reshape(batch, n_tokens, hidden))


class FmriTransformerLayer(nn.Module):
    """Pre-LayerNorm transformer block: `x + attn(ln(x))`, then `x + mlp(ln(x))`."""

    def __init__(self, config: FmriTokenizerConfig) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = FmriAttention(config)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = nn.Sequential(
            nn.Linear(config.hidden_size, config.intermediate_size),
            nn.GELU(),
            nn.Linear(config.intermediate_size, config.hidden_size),
        )
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.dropout(self.attention(self.attention_norm(hidden_states)))
        return hidden_states + self.dropout(self.mlp(self.mlp_norm(hidden_states)))


class FmriTransformer(nn.Module):
    """Token embedding (input projection + ROI and time position embeddings), blocks, final LayerNorm.

    Used twice: the encoder embeds patches `(batch, n_tokens, patch_length)`, the decoder embeds
    code vectors `(batch, n_tokens, code_dim)`; both return `(batch, n_tokens, hidden_size)`.
    """

    def __init__(self, config: FmriTokenizerConfig, input_dim: int, num_layers: int) -> None:
        super().__init__()
        self.input_projection = nn.Linear(input_dim, config.hidden_size)
        self.roi_embeddings = nn.Embedding(config.num_rois, config.hidden_size)
        self.time_embeddings = nn.Embedding(config.num_patches, config.hidden_size)
        self.layers = nn.ModuleList(FmriTransformerLayer(config) for _ in range(num_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, inputs: torch.Tensor, n_patches: int) -> torch.Tensor:
        hidden = self.input_projection(inputs)
        positions = self.roi_embeddings.weight[:, None, :] + self.time_embeddings.weight[None, :n_patches, :]
        hidden = hidden + positions.reshape(1, -1, hidden.shape[-1])
        for layer in self.layers:
            hidden = layer(hidden)
        return self.norm(hidden)


@dataclass
class FmriTokenizerOutput(ModelOutput):
    r"""Output of [`FmriTokenizerModel.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`): reconstruction + weighted commitment, contrastive
            and domain losses.
        reconstruction_loss (`torch.FloatTensor` of shape `()`): MSE between input and reconstruction.
        reconstruction (`torch.FloatTensor` of shape `(batch, num_rois, window_length)`): decoded windows.
        codes (`torch.LongTensor` of shape `(batch, num_rois * n_patches)`): code of each token (ROI-major).
        commitment_loss (`torch.FloatTensor` of shape `()`).
        contrastive_loss (`torch.FloatTensor` of shape `()`, *optional*): SigLIP loss, when `text_embeds` given.
        domain_loss (`torch.FloatTensor` of shape `()`, *optional*): domain-confusion loss, when
            `word_embeddings` given.
        perplexity (`torch.FloatTensor` of shape `()`): `exp(entropy)` of this batch's code distribution.
        utilisation (`torch.FloatTensor` of shape `()`): fraction of codes used in this batch.
        pooled_features (`torch.FloatTensor` of shape `(batch, code_dim)`): mean of the quantised
            token vectors (the fMRI side of the contrastive loss).
    """

    loss: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    codes: torch.LongTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    contrastive_loss: torch.FloatTensor | None = None
    domain_loss: torch.FloatTensor | None = None
    perplexity: torch.FloatTensor | None = None
    utilisation: torch.FloatTensor | None = None
    pooled_features: torch.FloatTensor | None = None


class FmriTokenizerPreTrainedModel(PreTrainedModel):
    config: FmriTokenizerConfig
    config_class = FmriTokenizerConfig
    base_model_prefix = "fmri_tokenizer"
    main_input_name = "fmri_values"
    _no_split_modules = ["FmriTransformerLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, FmriVectorQuantizer):
            init.normal_(module.codebook)
            init.copy_(module.codebook, F.normalize(module.codebook, dim=-1))
            init.zeros_(module.ema_count)
            init.zeros_(module.ema_sum)
            init.zeros_(module.initialized)
        elif isinstance(module, FmriTokenizerModel) and module.logit_scale is not None:
            # SigLIP's starting temperature (10) and bias (-10).
            init.constant_(module.logit_scale, torch.log(torch.tensor(10.0)).item())
            init.constant_(module.logit_bias, -10.0)


class FmriTokenizerModel(FmriTokenizerPreTrainedModel):
    r"""The fMRI-LM neural tokenizer: windows `(batch, num_rois, window_length)` <-> codes `(batch, n_tokens)`.

    `n_tokens = num_rois * n_patches` with `n_patches = window_length // patch_length`; tokens are
    ordered ROI-major (token `r * n_patches + p` is ROI `r`, patch `p`). Windows shorter than
    `config.window_length` are accepted when their length is a multiple of `patch_length`.

    Example:

    ```python
    >>> from modeling_fmrilm import FmriTokenizerConfig, FmriTokenizerModel
    >>> config = FmriTokenizerConfig(num_rois=94, window_length=64, patch_length=16, num_codes=256, code_dim=32)
    >>> model = FmriTokenizerModel(config).eval()
    >>> codes = model.encode(torch.randn(2, 94, 64))  # (2, 376)
    >>> model.decode(codes).shape
    torch.Size([2, 94, 64])
    ```
    """

    def __init__(self, config: FmriTokenizerConfig) -> None:
        super().__init__(config)
        self.encoder = FmriTransformer(config, config.patch_length, config.num_hidden_layers)
        self.to_code = nn.Linear(config.hidden_size, config.code_dim)
        self.quantizer = FmriVectorQuantizer(config)
        self.decoder = FmriTransformer(config, config.code_dim, config.num_decoder_layers)
        self.reconstruction_head = nn.Linear(config.hidden_size, config.patch_length)
        if config.text_embed_dim is not None:
            self.contrastive_projection = nn.Linear(config.code_dim, config.text_embed_dim)
            self.logit_scale = nn.Parameter(torch.empty(()))
            self.logit_bias = nn.Parameter(torch.empty(()))
        else:
            self.contrastive_projection = self.logit_scale = self.logit_bias = None
        self.domain_classifier = nn.Sequential(
            nn.Linear(config.code_dim, config.domain_hidden_size),
            nn.GELU(),
            nn.Linear(config.domain_hidden_size, 1),
        )
        self.post_init()

    def check_fmri_values(self, fmri_values: torch.Tensor) -> int:
        """Validate `(batch, num_rois, n_frames)` windows and return `n_patches = n_frames // patch_length`.

        Raises:
            FmriInputError: not a 3-D float tensor, wrong ROI count, a length that is not a
                multiple of `patch_length` or longer than `window_length`, NaN/inf.
        """
        config = self.config
        expected = f"(batch, {config.num_rois}, {config.window_length})"
        if not isinstance(fmri_values, torch.Tensor) or fmri_values.ndim != 3:
            shape = tuple(fmri_values.shape) if hasattr(fmri_values, "shape") else type(fmri_values).__name__
            raise FmriInputError(f"fmri_values: expected a 3-D tensor {expected}, found shape {shape}")
        shape = tuple(fmri_values.shape)
        if shape[1] != config.num_rois:
            raise FmriInputError(
                f"fmri_values: expected {config.num_rois} ROIs on axis 1 {expected}, found shape {shape}"
            )
        if shape[2] % config.patch_length or not 0 < shape[2] <= config.window_length:
            raise FmriInputError(
                f"fmri_values: expected a window length on axis 2 that is a multiple of patch_length="
                f"{config.patch_length} and at most window_length={config.window_length}, found shape {shape}"
            )
        if not torch.is_floating_point(fmri_values):
            raise FmriInputError(f"fmri_values: expected a float tensor, found dtype {fmri_values.dtype}")
        if not bool(torch.isfinite(fmri_values).all()):
            raise FmriInputError(f"fmri_values: expected finite values, found NaN/inf in a tensor of shape {shape}")
        return shape[2] // config.patch_length

    def embed(self, fmri_values: torch.Tensor) -> torch.Tensor:
        """Encoder features before quantisation.

        Args:
            fmri_values: `(batch, num_rois, n_frames)`, `n_frames` a multiple of `patch_length`.

        Returns:
            unit-norm vectors `(batch, num_rois * n_patches, code_dim)`.
        """
        n_patches = self.check_fmri_values(fmri_values)
        batch = fmri_values.shape[0]
        patches = fmri_values.to(self.dtype).reshape(batch, -1, self.config.patch_length)
        hidden = self.encoder(patches, n_patches)
        return F.normalize(self.to_code(hidden), dim=-1)

    def reconstruct(self, code_vectors: torch.Tensor) -> torch.Tensor:
        """Decode code vectors `(batch, num_rois * n_patches, code_dim)` to `(batch, num_rois, n_patches * patch_length)`."""
        batch, n_tokens, _ = code_vectors.shape
        n_patches = n_tokens // self.config.num_rois
        hidden = self.decoder(code_vectors, n_patches)
        return self.reconstruction_head(hidden).reshape(batch, self.config.num_rois, n_patches * self.config.patch_length)

    def encode(self, fmri_values: torch.Tensor) -> torch.LongTensor:
        """Codes of windows `(batch, num_rois, n_frames)` -> `(batch, num_rois * n_patches)` long.

        Never changes the codebook (the EMA update happens only in `forward` in training mode).
        """
        return self.quantizer.assign(self.embed(fmri_values))

    def decode(self, codes: torch.LongTensor) -> torch.FloatTensor:
        """Windows from codes `(batch, num_rois * n_patches)` -> `(batch, num_rois, n_patches * patch_length)`.

        Raises:
            FmriInputError: codes not 2-D integers, a length not a positive multiple of `num_rois`
                (or over the full window), or values outside `[0, num_codes)`.
        """
        config = self.config
        if codes.ndim != 2 or torch.is_floating_point(codes):
            raise FmriInputError(
                f"codes: expected a 2-D integer tensor (batch, {config.num_tokens}), found shape "
                f"{tuple(codes.shape)} dtype {codes.dtype}"
            )
        n_tokens = codes.shape[1]
        if n_tokens == 0 or n_tokens % config.num_rois or n_tokens > config.num_tokens:
            raise FmriInputError(
                f"codes: expected a length that is a multiple of num_rois={config.num_rois} and at most "
                f"{config.num_tokens}, found shape {tuple(codes.shape)}"
            )
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= config.num_codes):
            raise FmriInputError(f"codes: expected values in [0, {config.num_codes}), found {int(codes.min())}..{int(codes.max())}")
        return self.reconstruct(self.quantizer.lookup(codes).to(self.dtype))

    def contrastive_loss(self, pooled_features: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """SigLIP loss between pooled fMRI features `(batch, code_dim)` and text embeddings `(batch, text_embed_dim)`.

        Pairs whose text embeddings are identical (e.g. two windows of one subject, described by
        one text) count as positives; all others as negatives.
        """
        if self.contrastive_projection is None:
            raise FmriInputError("text_embeds: given, but the config has text_embed_dim=None (no contrastive head)")
        if text_embeds.shape != (pooled_features.shape[0], self.config.text_embed_dim):
            raise FmriInputError(
                f"text_embeds: expected shape ({pooled_features.shape[0]}, {self.config.text_embed_dim}), "
                f"found {tuple(text_embeds.shape)}"
            )
        image = F.normalize(self.contrastive_projection(pooled_features), dim=-1)
        text = F.normalize(text_embeds.to(image.dtype), dim=-1)
        logits = image @ text.T * self.logit_scale.exp() + self.logit_bias
        same_text = torch.cdist(text.float(), text.float()) < 1e-5
        labels = same_text.to(logits.dtype) * 2 - 1
        return -F.logsigmoid(labels * logits).sum() / logits.shape[0]

    def domain_loss(self, code_vectors: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        """Domain-confusion loss behind a gradient-reversal layer.

        The classifier learns to tell fMRI code vectors `(n, code_dim)` (label 1) from as many
        random rows of `word_embeddings` `(vocab_size, code_dim)` (label 0), both L2-normalised;
        the reversed gradient pushes the encoder to make the two indistinguishable.
        """
        if word_embeddings.ndim != 2 or word_embeddings.shape[1] != self.config.code_dim:
            raise FmriInputError(
                f"word_embeddings: expected shape (vocab_size, {self.config.code_dim}) (code_dim), "
                f"found {tuple(word_embeddings.shape)}"
            )
        rows = torch.randint(word_embeddings.shape[0], (code_vectors.shape[0],), device=word_embeddings.device)
        words = F.normalize(word_embeddings[rows].to(code_vectors.dtype), dim=-1)
        fmri = grad_reverse(code_vectors, self.config.grl_lambda)
        logits = self.domain_classifier(torch.cat([fmri, words])).squeeze(-1)
        labels = torch.cat([torch.ones_like(logits[: fmri.shape[0]]), torch.zeros_like(logits[fmri.shape[0] :])])
        return F.binary_cross_entropy_with_logits(logits, labels)

    def forward(
        self,
        fmri_values: torch.Tensor,
        text_embeds: torch.Tensor | None = None,
        word_embeddings: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> FmriTokenizerOutput | tuple:
        r"""Tokenize, reconstruct and compute the Stage 1 losses.

        Args:
            fmri_values (`torch.FloatTensor` of shape `(batch, num_rois, n_frames)`): normalised
                windows (the feature extractor's `fmri_values`); `n_frames` a multiple of
                `patch_length`, at most `window_length`.
            text_embeds (`torch.FloatTensor` of shape `(batch, text_embed_dim)`, *optional*):
                embeddings of each window's descriptor text from a frozen text encoder; turns on the
                SigLIP loss.
            word_embeddings (`torch.FloatTensor` of shape `(vocab_size, code_dim)`, *optional*): the
                language model's input embedding matrix; turns on the domain-confusion loss.
            return_dict (`bool`, *optional*): return a tuple when `False`.

        Returns:
            [`FmriTokenizerOutput`]. In training mode the call also updates the codebook (EMA,
            k-means initialisation on the first call, dead-code restarts).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        config = self.config
        vectors = self.embed(fmri_values)
        quantized, codes, commitment = self.quantizer(vectors)
        reconstruction = self.reconstruct(quantized)
        reconstruction_loss = F.mse_loss(reconstruction.float(), fmri_values.float())
        loss = reconstruction_loss + config.commitment_weight * commitment
        pooled = quantized.mean(dim=1)
        contrastive = domain = None
        if text_embeds is not None:
            contrastive = self.contrastive_loss(pooled, text_embeds)
            loss = loss + config.contrastive_weight * contrastive
        if word_embeddings is not None:
            domain = self.domain_loss(quantized.reshape(-1, config.code_dim), word_embeddings)
            loss = loss + config.domain_weight * domain
        utilisation, perplexity = codebook_usage(codes.detach(), config.num_codes)
        output = FmriTokenizerOutput(
            loss=loss,
            reconstruction_loss=reconstruction_loss,
            reconstruction=reconstruction,
            codes=codes,
            commitment_loss=commitment,
            contrastive_loss=contrastive,
            domain_loss=domain,
            perplexity=perplexity,
            utilisation=utilisation,
            pooled_features=pooled,
        )
        return output if return_dict else output.to_tuple()


__all__ = [
    "FmriTokenizerModel",
    "FmriTokenizerOutput",
    "FmriTokenizerPreTrainedModel",
    "FmriVectorQuantizer",
    "codebook_usage",
    "grad_reverse",
    "spherical_kmeans",
]
FmriTokenizerForPreTraining = FmriTokenizerModel  # DEV SHIM
