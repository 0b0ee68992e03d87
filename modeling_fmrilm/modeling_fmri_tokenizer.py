"""Stage 1 of fMRI-LM: the neural tokenizer that turns fMRI windows into discrete codes.

Remote-code rule (README, "Layout"): this file imports only torch, transformers and sibling modules,
so that `save_pretrained` can copy it into a Hub repository.

Pipeline for a batch of windows `(batch, num_rois, window_length)`:

1. time-only patching into `n_patches = window_length // patch_length` patches per ROI, giving
   `n_tokens = num_rois * n_patches` tokens ordered ROI-major (token `r * n_patches + p`),
2. [`FmriTokenizerEncoder`]: linear patch embedding + learned ROI and time position embeddings,
   pre-LayerNorm transformer blocks (attention through transformers' attention interface),
3. projection to `code_dim` and L2 normalisation,
4. [`FmriVectorQuantizer`]: L2-normalised EMA vector quantiser (spherical k-means initialisation
   from encoder outputs gathered over the first steps, restart of codes unused over a horizon,
   straight-through gradients), computed in float32 whatever the weights' dtype,
5. [`FmriTokenizerDecoder`] (same block structure) and a linear head back to `patch_length`
   frames per token.

[`FmriTokenizerModel`] holds this pipeline (reconstruction + commitment loss; `encode`/`decode`);
it is what Stage 2 holds, frozen. [`FmriTokenizerForPreTraining`] wraps it and adds the Stage 1
heads that its config turns on: a SigLIP contrast between pooled fMRI features and text embeddings
(`text_embed_dim`) and a domain-confusion classifier behind gradient reversal separating fMRI code
vectors from the language model's word embeddings (`use_domain_confusion`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Unpack

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput, TransformersKwargs, can_return_tuple, logging
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_fmrilm import FmriTokenizerConfig
from .errors import FmriInputError

logger = logging.get_logger(__name__)


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


def code_counts(codes: torch.Tensor, num_codes: int) -> torch.Tensor:
    """Float counts `(num_codes,)` of integer `codes` of any shape (a fixed-size scatter, traceable)."""
    flat = codes.reshape(-1)
    counts = torch.zeros(num_codes, device=codes.device, dtype=torch.float32)
    return counts.scatter_add_(0, flat, torch.ones_like(flat, dtype=torch.float32))


def codebook_usage(codes: torch.Tensor, num_codes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Utilisation and perplexity of a set of codes.

    Args:
        codes: integer tensor of any shape with values in `[0, num_codes)`.
        num_codes: codebook size.

    Returns:
        `(utilisation, perplexity)`, scalar float tensors: the fraction of codes used at least
        once, and `exp(entropy)` of the empirical code distribution (1 … `num_codes`).
    """
    return codebook_usage_of_counts(code_counts(codes, num_codes))


def codebook_usage_of_counts(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`codebook_usage` of a code histogram `(num_codes,)` (summed over batches or processes)."""
    probs = counts / counts.sum().clamp_min(1.0)
    entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum()
    return (counts > 0).float().mean(), entropy.exp()


def spherical_kmeans(
    vectors: torch.Tensor, num_clusters: int, num_iters: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spherical k-means (cosine similarity) on unit vectors, with no cluster left empty.

    Args:
        vectors: `(n, dim)` unit-norm vectors.
        num_clusters: number of centroids `k`; when `n < k` the starting points repeat.
        num_iters: Lloyd iterations. After each, the clusters left empty are moved onto the vectors
            farthest from their centroids (as scikit-learn's k-means relocates empty clusters).
        generator: random generator for the starting points.

    Returns:
        `(centroids, counts)`: `(k, dim)` unit-norm centroids and `(k,)` float cluster sizes of an
        assignment to those centroids.
    """
    n = vectors.shape[0]
    if n >= num_clusters:
        start = torch.randperm(n, generator=generator, device="cpu")[:num_clusters]
    else:
        start = torch.randint(n, (num_clusters,), generator=generator, device="cpu")
    centroids = vectors[start.to(vectors.device)].clone()
    for _ in range(num_iters):
        similarity, assignment = _nearest(vectors, centroids)
        counts = code_counts(assignment, num_clusters).to(vectors.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, vectors)
        centroids = torch.where((counts > 0)[:, None], F.normalize(sums, dim=-1), centroids)
        empty = (counts == 0).nonzero().squeeze(1)
        if 0 < len(empty) <= n:
            centroids[empty] = vectors[similarity.topk(len(empty), largest=False).indices]
    return centroids, code_counts(_nearest(vectors, centroids)[1], num_clusters).to(vectors.dtype)


def _nearest(vectors: torch.Tensor, centroids: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Highest cosine similarity and its centroid for each unit vector, `chunk` vectors at a time
    (k-means runs on several times `num_codes` vectors: the full similarity matrix would not fit)."""
    best = [(part @ centroids.T).max(dim=1) for part in vectors.split(chunk)]
    return torch.cat([b.values for b in best]), torch.cat([b.indices for b in best])


def rotation_trick(vectors: torch.Tensor, code_vectors: torch.Tensor) -> torch.Tensor:
    """`code_vectors` `(n, dim)` in value, with the gradient to unit `vectors` `(n, dim)` carried by
    the rotation that takes each vector onto its code (Fifty et al. 2025, "Restructuring vector
    quantization with the rotation trick"), instead of the straight-through identity.

    With `r = (v + c) / ||v + c||` for unit `v` and code `c` (both held constant), `R = I - 2 r rᵀ +
    2 c vᵀ` is the rotation in the plane of `v` and `c` with `R v = c`; the output is `R v` (which
    is `c`) and the gradient reaching `v` is `Rᵀ` times the gradient at the code, so a vector's
    angle to its code shapes its update. A vector opposite its code (`r` undefined) gets a zero `r`.
    """
    unit = vectors.detach()
    codes = code_vectors.detach()
    r = F.normalize(unit + codes, dim=-1)
    rotated = (
        vectors - 2 * r * (r * vectors).sum(-1, keepdim=True) + 2 * codes * (unit * vectors).sum(-1, keepdim=True)
    )
    return rotated + (codes - rotated).detach()


def initial_codebook(num_codes: int, code_dim: int) -> torch.Tensor:
    """The codebook before any training: `num_codes` unit vectors drawn from N(0, I) with a generator
    seeded with 0, so that every fresh model (and `_init_weights`) gets the same float32 codebook."""
    generator = torch.Generator(device="cpu").manual_seed(0)
    draws = torch.randn(num_codes, code_dim, generator=generator, device="cpu", dtype=torch.float32)
    return F.normalize(draws, dim=-1)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _all_reduce(tensor: torch.Tensor, op: dist.ReduceOp = dist.ReduceOp.SUM) -> torch.Tensor:
    """Reduce `tensor` over processes in place when torch.distributed is running."""
    if _distributed():
        dist.all_reduce(tensor, op=op)
    return tensor


def _broadcast(tensor: torch.Tensor) -> torch.Tensor:
    """Copy rank 0's `tensor` to every process when torch.distributed is running."""
    if _distributed():
        dist.broadcast(tensor, src=0)
    return tensor


def _all_gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """Concatenate every process's `rows` `(n_rank, dim)` (the counts may differ) when torch.distributed runs."""
    if not _distributed():
        return rows
    sizes = [torch.zeros((), dtype=torch.long, device=rows.device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor(rows.shape[0], device=rows.device))
    largest = int(max(size.item() for size in sizes))
    padded = rows.new_zeros(largest, rows.shape[1])
    padded[: rows.shape[0]] = rows
    gathered = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded)
    return torch.cat([part[: int(size)] for part, size in zip(gathered, sizes, strict=True)])


class _Float32Buffers(nn.Module):
    """A module whose float32 buffers stay float32, values untouched, through `.to(dtype)`, `.half()`, `.bfloat16()`.

    The codebook and its statistics move by small EMA steps that half precision would round away;
    device moves still apply. (`_keep_in_fp32_modules_strict` does the same for `from_pretrained`.)
    """

    def _apply(self, fn: Callable, recurse: bool = True) -> nn.Module:
        originals = {
            name: buffer
            for name, buffer in self._buffers.items()
            if buffer is not None and buffer.dtype == torch.float32
        }
        super()._apply(fn, recurse)
        for name, original in originals.items():
            if self._buffers[name].dtype != torch.float32:
                self._buffers[name] = original.to(self._buffers[name].device)
        return self


class FmriCodebook(_Float32Buffers):
    """The `num_codes` unit code vectors, a float32 buffer `weight` `(num_codes, code_dim)` moved by
    [`FmriVectorQuantizer`]'s EMA. Every read goes through `forward`, so offload hooks fire."""

    def __init__(self, config: FmriTokenizerConfig) -> None:
        super().__init__()
        weight = torch.empty(config.num_codes, config.code_dim, dtype=torch.float32)
        if weight.device.type != "meta":
            weight.copy_(initial_codebook(config.num_codes, config.code_dim))
        self.register_buffer("weight", weight)

    def forward(self, codes: torch.Tensor | None = None) -> torch.Tensor:
        """Code vectors `(*codes.shape, code_dim)` of integer `codes`, or the whole codebook when `codes` is None."""
        return self.weight if codes is None else F.embedding(codes, self.weight)


class FmriVectorQuantizer(_Float32Buffers):
    """L2-normalised vector quantiser with EMA codebook updates, computed in float32.

    The codebook ([`FmriCodebook`]) is a buffer, not a parameter: each code moves by an exponential
    moving average of the unit vectors assigned to it. In training mode:

    - k-means initialisation: after `kmeans_warmup_steps` training batches (counted in the buffer
      `warmup_batches`), encoder outputs are gathered until there are
      `kmeans_init_vectors_per_code * num_codes` of them (over all processes); spherical k-means on
      them then sets the codebook, and the buffer `kmeans_vectors_used` records how many vectors it
      used (0: not initialised yet). Until then `forward` passes the vectors through unquantised,
      so the warm-up trains a plain autoencoder and the k-means clusters the features of a trained
      encoder rather than those of a random one.
    - usage: `code_usage` is an average over about `dead_code_horizon` steps of each code's
      assignments relative to the expected share (vectors per step / `num_codes`), so 1.0 is an
      average code whatever the batch size.
    - restarts: a code whose usage falls below `dead_code_min_usage` and that the current batch
      does not use is moved onto a random vector of the batch (rank 0's, broadcast) with usage 1.0;
      at most `max_restarts = ceil(num_codes / (dead_code_horizon * ln(1 / dead_code_min_usage)))`
      codes per step (the rate at which codes would come due if none were used), least used first.

    Statistics are summed over processes under torch.distributed, so every rank keeps the same
    codebook. Autocast is turned off inside: assignments compare float32 similarities.
    """

    def __init__(self, config: FmriTokenizerConfig) -> None:
        super().__init__()
        self.num_codes = config.num_codes
        self.decay = config.ema_decay
        self.usage_decay = 1.0 - 1.0 / config.dead_code_horizon
        self.min_usage = config.dead_code_min_usage
        # the rate at which codes come due if none is used: num_codes per horizon * ln(1 / min_usage) steps
        due_per_step = (
            config.num_codes / (config.dead_code_horizon * math.log(1 / self.min_usage)) if self.min_usage > 0 else 0
        )
        self.max_restarts = min(config.num_codes, math.ceil(due_per_step))
        self.kmeans_init = config.kmeans_init
        self.kmeans_init_vectors = config.kmeans_init_vectors_per_code * config.num_codes
        self.kmeans_warmup_steps = config.kmeans_warmup_steps
        self.kmeans_iters = config.kmeans_iters
        self.rotation_gradient = config.quantizer_gradient == "rotation"
        self.codebook = FmriCodebook(config)
        self.register_buffer("ema_sum", torch.zeros(config.num_codes, config.code_dim, dtype=torch.float32))
        self.register_buffer("code_usage", torch.ones(config.num_codes, dtype=torch.float32))
        self.register_buffer("kmeans_vectors_used", torch.zeros((), dtype=torch.long))
        self.register_buffer("warmup_batches", torch.zeros((), dtype=torch.long))
        self.register_buffer("last_restart_count", torch.zeros((), dtype=torch.long), persistent=False)
        self._kmeans_vectors: list[torch.Tensor] = []
        self._initialized_seen = False

    def assign(self, vectors: torch.Tensor) -> torch.Tensor:
        """Nearest code (highest cosine similarity) for unit `vectors` `(..., code_dim)` -> `(...)` long."""
        with torch.autocast(device_type=vectors.device.type, enabled=False):
            flat = vectors.detach().reshape(-1, vectors.shape[-1]).float()
            return (flat @ self.codebook().T).argmax(dim=1).reshape(vectors.shape[:-1])

    def forward(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantise unit `vectors` `(batch, n_tokens, code_dim)`.

        Returns:
            `(quantized, codes, commitment_loss)`: straight-through code vectors
            `(batch, n_tokens, code_dim)` in `vectors.dtype` (value of the codes, gradient of
            `vectors`), codes `(batch, n_tokens)` long, and the float32 scalar commitment loss
            `mean ||vectors - sg(code vector)||²`. In training mode before the k-means
            initialisation, `quantized` is `vectors` itself and the commitment loss 0.
        """
        with torch.autocast(device_type=vectors.device.type, enabled=False):
            flat = vectors.reshape(-1, vectors.shape[-1]).float()
            if self.training and self.kmeans_init and not self._gather_for_kmeans(flat.detach()):
                return vectors, self.assign(vectors), flat.new_zeros(())
            codes = self.assign(flat)
            code_vectors = self.codebook(codes)
            if self.training:
                self.update(flat.detach(), codes)
            commitment = (flat - code_vectors).pow(2).sum(-1).mean()
            if self.rotation_gradient:
                quantized = rotation_trick(flat, code_vectors).reshape(vectors.shape).to(vectors.dtype)
            else:
                code_vectors = code_vectors.reshape(vectors.shape).to(vectors.dtype)
                quantized = vectors + (code_vectors - vectors).detach()
            return quantized, codes.reshape(vectors.shape[:-1]), commitment

    @torch.no_grad()
    def _gather_for_kmeans(self, vectors: torch.Tensor) -> bool:
        """Whether the codebook is initialised; otherwise gather `vectors` and initialise once there are enough."""
        if not self._initialized_seen:
            self._initialized_seen = bool(self.kmeans_vectors_used > 0)
        if self._initialized_seen:
            return True
        if int(self.warmup_batches) < self.kmeans_warmup_steps:
            self.warmup_batches += 1
            return False
        self._kmeans_vectors.append(vectors)
        gathered = _all_reduce(torch.tensor(sum(len(part) for part in self._kmeans_vectors), device=vectors.device))
        if int(gathered) < self.kmeans_init_vectors:
            return False
        self.initialize(_all_gather_rows(torch.cat(self._kmeans_vectors)))
        self._kmeans_vectors.clear()
        return True

    @torch.no_grad()
    def initialize(self, vectors: torch.Tensor) -> None:
        """Spherical k-means initialisation of the codebook from unit `vectors` `(n, code_dim)`.

        Rank 0's centroids are broadcast; each code's usage starts at its cluster's share relative
        to the expected one.
        """
        centroids, counts = spherical_kmeans(vectors.float(), self.num_codes, self.kmeans_iters)
        _broadcast(centroids)
        _broadcast(counts)
        self.codebook.weight.copy_(centroids)
        self.ema_sum.copy_(centroids * counts[:, None])
        self.code_usage.copy_(counts * self.num_codes / vectors.shape[0])
        self.kmeans_vectors_used.fill_(vectors.shape[0])
        self._initialized_seen = True

    @torch.no_grad()
    def update(self, vectors: torch.Tensor, codes: torch.Tensor) -> None:
        """One EMA step from unit `vectors` `(n, code_dim)` assigned to `codes` `(n,)`, then restarts.

        Runs without a host sync: every quantity stays a tensor of fixed shape.
        """
        counts = _all_reduce(code_counts(codes, self.num_codes))
        sums = _all_reduce(torch.zeros_like(self.ema_sum).index_add_(0, codes, vectors))
        expected_share = counts.sum() / self.num_codes
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        norms = self.ema_sum.norm(dim=-1, keepdim=True)
        codebook = self.codebook.weight
        codebook.copy_(torch.where(norms > 0, self.ema_sum / norms.clamp_min(1e-12), codebook))
        relative = counts / expected_share.clamp_min(1e-12)
        self.code_usage.mul_(self.usage_decay).add_(relative, alpha=1 - self.usage_decay)
        if self.min_usage > 0:
            self.restart_dead_codes(vectors, unused=counts == 0, expected_share=expected_share)

    @torch.no_grad()
    def restart_dead_codes(
        self, vectors: torch.Tensor, unused: torch.Tensor, expected_share: torch.Tensor
    ) -> torch.Tensor:
        """Move dead codes onto random rows of `vectors` `(n, code_dim)`.

        A code is dead when its `code_usage` is below `min_usage` and `unused` `(num_codes,)` (no
        vector of this step, over all processes, is assigned to it) is true, so a code in use is
        never moved. At most `max_restarts` dead codes move per step, the least used first: codes
        that come due together (say, those k-means left with one vector each, none used since) are
        spread over steps instead of jumping at once. A restarted code gets usage 1.0 and an EMA sum
        of `expected_share` times its new vector, like an average code. Returns the `(num_codes,)`
        bool mask of restarted codes; their number is kept in `last_restart_count`.
        """
        dead = (self.code_usage < self.min_usage) & unused
        candidates = torch.where(dead, self.code_usage, torch.full_like(self.code_usage, float("inf")))
        chosen = candidates.topk(self.max_restarts, largest=False).indices
        restart = dead[chosen]
        picks = torch.randint(vectors.shape[0], (self.max_restarts,), device=vectors.device)
        fresh = _broadcast(vectors[picks].contiguous())
        codebook = self.codebook.weight
        codebook[chosen] = torch.where(restart[:, None], fresh, codebook[chosen])
        self.ema_sum[chosen] = torch.where(restart[:, None], fresh * expected_share, self.ema_sum[chosen])
        self.code_usage[chosen] = torch.where(
            restart, torch.ones_like(restart, dtype=torch.float32), self.code_usage[chosen]
        )
        restarted = torch.zeros_like(dead).scatter_(0, chosen, restart)
        self.last_restart_count.copy_(restarted.sum())
        return restarted


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Unpack[TransformersKwargs],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention written out in torch ops, the `"eager"` entry of transformers' attention interface.

    `query`, `key`, `value` are `(batch, heads, n_tokens, head_dim)`; an additive `attention_mask`
    broadcastable to `(batch, heads, n_tokens, n_tokens)` is added to the scores. Returns the output
    `(batch, n_tokens, heads, head_dim)` and the attention weights `(batch, heads, n_tokens, n_tokens)`.
    """
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


class FmriAttention(nn.Module):
    """Bidirectional multi-head self-attention on `(batch, n_tokens, hidden_size)`.

    The kernel is chosen by `config._attn_implementation` through transformers' attention interface
    (`"eager"`, `"sdpa"`, `"flash_attention_2"`, `"flex_attention"`, …); only `"eager"` returns the
    attention weights.
    """

    def __init__(self, config: FmriTokenizerConfig) -> None:
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = False
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, n_tokens, hidden = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch, n_tokens, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attended, weights = attention_interface(
            self,
            query,
            key,
            value,
            None,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
        )
        return self.out_proj(attended.reshape(batch, n_tokens, hidden)), weights


class FmriTransformerLayer(GradientCheckpointingLayer):
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
        attended, _ = self.attention(self.attention_norm(hidden_states))
        hidden_states = hidden_states + self.dropout(attended)
        return hidden_states + self.dropout(self.mlp(self.mlp_norm(hidden_states)))


def code_projection(config: FmriTokenizerConfig) -> nn.Module:
    """The map from encoder features `(..., hidden_size)` to `(..., code_dim)` that `config.code_projection` names:
    one `Linear` (`"linear"`), or `Linear` -> `Tanh` -> `Linear` (`"mlp"`, the paper's encoder output)."""
    if config.code_projection == "linear":
        return nn.Linear(config.hidden_size, config.code_dim)
    return nn.Sequential(
        nn.Linear(config.hidden_size, config.hidden_size), nn.Tanh(), nn.Linear(config.hidden_size, config.code_dim)
    )


SAFETENSORS_SUFFIXES = (".safetensors", ".safetensors.index.json")
PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class SafetensorsOnly:
    """Mixin of the fmrilm models: `from_pretrained` reads safetensors weights only.

    `use_safetensors` defaults to `True`, so a Hub repository without safetensors weights fails in
    transformers; a local folder without them fails here, saying how to convert it. Passing
    `use_safetensors=False` (for that one-off conversion of a folder you trust) reads pickled
    weights as transformers does.
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("use_safetensors", True)
        folder = os.path.join(str(pretrained_model_name_or_path), *filter(None, [kwargs.get("subfolder")]))
        if (
            kwargs["use_safetensors"]
            and os.path.isdir(folder)
            and not any(name.endswith(SAFETENSORS_SUFFIXES) for name in os.listdir(folder))
        ):
            pickled = sorted(name for name in os.listdir(folder) if name.endswith(PICKLED_SUFFIXES))
            raise FmriInputError(
                f"{folder}: expected safetensors weights (model.safetensors), found {pickled or 'no weights'}; fmrilm reads no pickled "
                f'weights. Convert a folder you trust once: python -c "from modeling_fmrilm import {cls.__name__} as M; '
                f"M.from_pretrained('{folder}', use_safetensors=False).save_pretrained('{folder}')\""
            )
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)


class FmriTokenizerPreTrainedModel(SafetensorsOnly, PreTrainedModel):
    config: FmriTokenizerConfig
    config_class = FmriTokenizerConfig
    base_model_prefix = "fmri_tokenizer"
    main_input_name = "fmri_values"
    supports_gradient_checkpointing = True
    _no_split_modules = ["FmriTransformerLayer", "FmriVectorQuantizer"]
    _keep_in_fp32_modules_strict = ["quantizer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _input_embed_layer = "input_projection"

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, FmriCodebook):
            init.copy_(module.weight, initial_codebook(*module.weight.shape))
        elif isinstance(module, FmriVectorQuantizer):
            init.zeros_(module.ema_sum)
            init.ones_(module.code_usage)
            init.zeros_(module.kmeans_vectors_used)
            init.zeros_(module.warmup_batches)
            init.zeros_(module.last_restart_count)
            module._initialized_seen = False
            module._kmeans_vectors.clear()
        elif isinstance(module, FmriTokenizerForPreTraining) and module.logit_scale is not None:
            # SigLIP's starting temperature (10) and bias (-10).
            init.constant_(module.logit_scale, math.log(10.0))
            init.constant_(module.logit_bias, -10.0)

    def save_pretrained(self, *args, **kwargs) -> None:
        """`PreTrainedModel.save_pretrained`, recording both Auto classes in `auto_map` when registered.

        `register_for_auto_class` records only the class being saved; a checkpoint of either
        [`FmriTokenizerModel`] or [`FmriTokenizerForPreTraining`] loads into both.
        """
        if type(self)._auto_class is not None:
            module = FmriTokenizerModel.__module__.rsplit(".", 1)[-1]
            self.config.auto_map = {
                **(getattr(self.config, "auto_map", None) or {}),
                "AutoModel": f"{module}.{FmriTokenizerModel.__name__}",
                "AutoModelForPreTraining": f"{module}.{FmriTokenizerForPreTraining.__name__}",
            }
        return super().save_pretrained(*args, **kwargs)


class FmriTokenizerTransformer(FmriTokenizerPreTrainedModel):
    """Token embedding (input projection + ROI and time position embeddings), blocks, final LayerNorm.

    The base of [`FmriTokenizerEncoder`] (inputs: patches `(batch, n_tokens, patch_length)`) and
    [`FmriTokenizerDecoder`] (inputs: code vectors `(batch, n_tokens, code_dim)`); both return
    `last_hidden_state` `(batch, n_tokens, hidden_size)` and, on request, the hidden states (the
    embeddings and each block's output, before the final LayerNorm) and attention weights.
    """

    def __init__(self, config: FmriTokenizerConfig, input_dim: int, num_layers: int) -> None:
        super().__init__(config)
        self.input_projection = nn.Linear(input_dim, config.hidden_size)
        self.roi_embeddings = nn.Embedding(config.num_rois, config.hidden_size)
        self.time_embeddings = nn.Embedding(config.num_patches, config.hidden_size)
        self.layers = nn.ModuleList(FmriTransformerLayer(config) for _ in range(num_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    @capture_outputs(tie_last_hidden_states=False)
    def forward(self, tokens: torch.Tensor, **kwargs: Unpack[TransformersKwargs]) -> BaseModelOutput:
        r"""
        tokens (`torch.FloatTensor` of shape `(batch, num_rois * n_patches, input_dim)`): per-token inputs, ROI-major.
        kwargs: `output_hidden_states` / `output_attentions`, read by `capture_outputs`.
        """
        if kwargs.get("output_attentions") and self.config._attn_implementation != "eager":
            logger.warning_once(
                f"output_attentions=True returns no attention weights with attn_implementation="
                f"{self.config._attn_implementation!r}; load the model with attn_implementation='eager'."
            )
        n_tokens = tokens.shape[1]
        n_patches = n_tokens // self.config.num_rois
        hidden = self.input_projection(tokens)
        rois = self.roi_embeddings(torch.arange(self.config.num_rois, device=hidden.device))
        times = self.time_embeddings(torch.arange(n_patches, device=hidden.device))
        hidden = hidden + (rois[:, None, :] + times[None, :, :]).reshape(1, n_tokens, -1)
        for layer in self.layers:
            hidden = layer(hidden)
        return BaseModelOutput(last_hidden_state=self.norm(hidden))


class FmriTokenizerEncoder(FmriTokenizerTransformer):
    """The encoder stack: patches `(batch, n_tokens, patch_length)` -> `(batch, n_tokens, hidden_size)`."""

    _can_record_outputs = {"hidden_states": FmriTransformerLayer, "attentions": FmriAttention}

    def __init__(self, config: FmriTokenizerConfig) -> None:
        super().__init__(config, config.patch_length, config.num_hidden_layers)


class FmriTokenizerDecoder(FmriTokenizerTransformer):
    """The decoder stack: code vectors `(batch, n_tokens, code_dim)` -> `(batch, n_tokens, hidden_size)`."""

    _can_record_outputs = {
        "hidden_states": OutputRecorder(FmriTransformerLayer, num_hidden_layers_key="num_decoder_layers"),
        "attentions": OutputRecorder(FmriAttention, index=1, num_hidden_layers_key="num_decoder_layers"),
    }

    def __init__(self, config: FmriTokenizerConfig) -> None:
        super().__init__(config, config.code_dim, config.num_decoder_layers)


@dataclass
class FmriTokenizerOutput(ModelOutput):
    r"""Output of [`FmriTokenizerModel.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`): `reconstruction_loss + commitment_weight * commitment_loss`.
        reconstruction_loss (`torch.FloatTensor` of shape `()`): MSE between input and reconstruction.
        commitment_loss (`torch.FloatTensor` of shape `()`): `mean ||vector - sg(code vector)||²`.
        reconstruction (`torch.FloatTensor` of shape `(batch, num_rois, n_frames)`): decoded windows.
        codes (`torch.LongTensor` of shape `(batch, num_rois * n_patches)`): code of each token (ROI-major).
        code_vectors (`torch.FloatTensor` of shape `(batch, num_rois * n_patches, code_dim)`): the
            straight-through quantised token vectors the decoder reads.
        perplexity (`torch.FloatTensor` of shape `()`): `exp(entropy)` of this batch's code distribution.
        utilisation (`torch.FloatTensor` of shape `()`): fraction of codes used in this batch.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*): the encoder's embeddings and block
            outputs, each `(batch, n_tokens, hidden_size)` (with `output_hidden_states=True`).
        attentions (`tuple(torch.FloatTensor)`, *optional*): the encoder's attention weights, each
            `(batch, heads, n_tokens, n_tokens)` (with `output_attentions=True` and eager attention).
        decoder_hidden_states (`tuple(torch.FloatTensor)`, *optional*): the same for the decoder.
        decoder_attentions (`tuple(torch.FloatTensor)`, *optional*): the same for the decoder.
    """

    loss: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    codes: torch.LongTensor | None = None
    code_vectors: torch.FloatTensor | None = None
    perplexity: torch.FloatTensor | None = None
    utilisation: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    decoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    decoder_attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class FmriTokenizerForPreTrainingOutput(FmriTokenizerOutput):
    r"""Output of [`FmriTokenizerForPreTraining.forward`]: every field of [`FmriTokenizerOutput`], then the heads'.

    Args:
        loss (`torch.FloatTensor` of shape `()`): reconstruction + weighted commitment, contrastive and
            domain losses (those whose heads the config builds).
        contrastive_loss (`torch.FloatTensor` of shape `()`, *optional*): SigLIP loss (when `text_embed_dim` is set).
        domain_loss (`torch.FloatTensor` of shape `()`, *optional*): domain-confusion loss (when
            `use_domain_confusion`).
        pooled_features (`torch.FloatTensor` of shape `(batch, code_dim)`): mean of the quantised
            token vectors (the fMRI side of the contrastive loss).
    """

    contrastive_loss: torch.FloatTensor | None = None
    domain_loss: torch.FloatTensor | None = None
    pooled_features: torch.FloatTensor | None = None


def _checks_data() -> bool:
    """Whether value checks that read tensor data (NaN, code range) run: not under torch.compile/export."""
    return not torch.compiler.is_compiling()


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

    # The heads of FmriTokenizerForPreTraining, in its checkpoints: not part of this model.
    _keys_to_ignore_on_load_unexpected = [
        r"^contrastive_projection\.",
        r"^logit_scale$",
        r"^logit_bias$",
        r"^domain_classifier\.",
    ]

    def __init__(self, config: FmriTokenizerConfig) -> None:
        super().__init__(config)
        self.encoder = FmriTokenizerEncoder(config)
        self.to_code = code_projection(config)
        self.quantizer = FmriVectorQuantizer(config)
        self.decoder = FmriTokenizerDecoder(config)
        self.reconstruction_head = nn.Linear(config.hidden_size, config.patch_length)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        """The encoder's input projection (patches -> hidden size), the model's first trainable map."""
        return self.encoder.input_projection

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.encoder.input_projection = value

    def check_fmri_values(self, fmri_values: torch.Tensor) -> int:
        """Validate `(batch, num_rois, n_frames)` windows and return `n_patches = n_frames // patch_length`.

        The NaN/inf check reads the data, so it is skipped under torch.compile/export (the feature
        extractor has checked the values already).

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
        if _checks_data() and not bool(torch.isfinite(fmri_values).all()):
            raise FmriInputError(f"fmri_values: expected finite values, found NaN/inf in a tensor of shape {shape}")
        return shape[2] // config.patch_length

    def _encode_vectors(
        self, fmri_values: torch.Tensor, **kwargs: Unpack[TransformersKwargs]
    ) -> tuple[torch.Tensor, BaseModelOutput]:
        """Unit vectors `(batch, n_tokens, code_dim)` before quantisation, and the encoder's output."""
        self.check_fmri_values(fmri_values)
        dtype = self.encoder.input_projection.weight.dtype
        patches = fmri_values.to(dtype).reshape(fmri_values.shape[0], -1, self.config.patch_length)
        encoded = self.encoder(patches, return_dict=True, **kwargs)
        return F.normalize(self.to_code(encoded.last_hidden_state), dim=-1), encoded

    def _reconstruct(
        self, code_vectors: torch.Tensor, **kwargs: Unpack[TransformersKwargs]
    ) -> tuple[torch.Tensor, BaseModelOutput]:
        """Windows `(batch, num_rois, n_patches * patch_length)` from code vectors `(batch, n_tokens, code_dim)`."""
        dtype = self.decoder.input_projection.weight.dtype
        decoded = self.decoder(code_vectors.to(dtype), return_dict=True, **kwargs)
        frames = self.reconstruction_head(decoded.last_hidden_state)
        return frames.reshape(code_vectors.shape[0], self.config.num_rois, -1), decoded

    def embed(self, fmri_values: torch.Tensor) -> torch.Tensor:
        """Encoder features before quantisation: unit vectors `(batch, num_rois * n_patches, code_dim)`."""
        return self._encode_vectors(fmri_values)[0]

    def encode(self, fmri_values: torch.Tensor) -> torch.LongTensor:
        """Codes of windows `(batch, num_rois, n_frames)` -> `(batch, num_rois * n_patches)` long.

        Never changes the codebook (the EMA update happens only in `forward` in training mode).
        """
        return self.quantizer.assign(self.embed(fmri_values))

    def decode(self, codes: torch.LongTensor) -> torch.FloatTensor:
        """Windows from codes `(batch, num_rois * n_patches)` -> `(batch, num_rois, n_patches * patch_length)`.

        Raises:
            FmriInputError: codes not 2-D integers, a length not a positive multiple of `num_rois`
                (or over the full window), or values outside `[0, num_codes)` (that check reads the
                data and is skipped under torch.compile/export).
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
        if _checks_data() and codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= config.num_codes):
            raise FmriInputError(
                f"codes: expected values in [0, {config.num_codes}), found {int(codes.min())}..{int(codes.max())}"
            )
        return self._reconstruct(self.quantizer.codebook(codes))[0]

    @can_return_tuple
    def forward(
        self,
        fmri_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | int | list[int] | None = None,
        return_loss: bool = True,
    ) -> FmriTokenizerOutput | tuple:
        r"""Tokenize and reconstruct windows; reconstruction + commitment loss.

        Args:
            fmri_values (`torch.FloatTensor` of shape `(batch, num_rois, n_frames)`): normalised
                windows (the feature extractor's `fmri_values`); `n_frames` a multiple of
                `patch_length`, at most `window_length`.
            output_attentions (`bool`, *optional*): return the encoder's and decoder's attention
                weights (eager attention only); defaults to `config.output_attentions`.
            output_hidden_states (`bool`, `int` or `list[int]`, *optional*): return the encoder's and
                decoder's hidden states (or those at the given indices); defaults to
                `config.output_hidden_states`.
            return_loss (`bool`, defaults to `True`): fill `loss`; `False` leaves it `None` (the component
                losses stay). transformers' `Trainer` reads this default to report an evaluation loss
                for a model without labels.
            return_dict (`bool`, *optional*): return a tuple when `False`; defaults to `config.return_dict`
                (`can_return_tuple`).

        Returns:
            [`FmriTokenizerOutput`]. In training mode the call also updates the codebook (k-means
            initialisation once enough vectors are gathered, EMA, restarts of unused codes).
        """
        flags = {
            "output_attentions": self.config.output_attentions if output_attentions is None else output_attentions,
            "output_hidden_states": self.config.output_hidden_states
            if output_hidden_states is None
            else output_hidden_states,
        }
        vectors, encoded = self._encode_vectors(fmri_values, **flags)
        quantized, codes, commitment = self.quantizer(vectors)
        reconstruction, decoded = self._reconstruct(quantized, **flags)
        reconstruction_loss = F.mse_loss(reconstruction.float(), fmri_values.float())
        utilisation, perplexity = codebook_usage(codes.detach(), self.config.num_codes)
        output = FmriTokenizerOutput(
            loss=reconstruction_loss + self.config.commitment_weight * commitment if return_loss else None,
            reconstruction_loss=reconstruction_loss,
            commitment_loss=commitment,
            reconstruction=reconstruction,
            codes=codes,
            code_vectors=quantized,
            perplexity=perplexity,
            utilisation=utilisation,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
            decoder_hidden_states=decoded.hidden_states,
            decoder_attentions=decoded.attentions,
        )
        return output


class FmriTokenizerForPreTraining(FmriTokenizerPreTrainedModel):
    r"""Stage 1 training model: [`FmriTokenizerModel`] (as `fmri_tokenizer`) plus the heads its config turns on.

    - `text_embed_dim` set: a SigLIP contrast between pooled fMRI features (projected to
      `text_embed_dim`) and descriptor-text embeddings; `forward` then needs `text_embeds`.
    - `use_domain_confusion`: a classifier behind gradient reversal telling fMRI code vectors from
      the language model's word embeddings; `forward` then needs `word_embeddings`.

    A head that is built is always fed (a missing input raises), so every parameter takes part in
    every step (as DDP requires). Its checkpoint loads into [`FmriTokenizerModel`] (the heads are
    dropped), which is what Stage 2 holds.
    """

    def __init__(self, config: FmriTokenizerConfig) -> None:
        super().__init__(config)
        self.fmri_tokenizer = FmriTokenizerModel(config)
        if config.text_embed_dim is not None:
            self.contrastive_projection = nn.Linear(config.code_dim, config.text_embed_dim)
            self.logit_scale = nn.Parameter(torch.empty(()))
            self.logit_bias = nn.Parameter(torch.empty(()))
        else:
            self.contrastive_projection = self.logit_scale = self.logit_bias = None
        if config.use_domain_confusion:
            self.domain_classifier = nn.Sequential(
                nn.Linear(config.code_dim, config.domain_hidden_size),
                nn.GELU(),
                nn.Linear(config.domain_hidden_size, 1),
            )
        else:
            self.domain_classifier = None
        self.post_init()

    def encode(self, fmri_values: torch.Tensor) -> torch.LongTensor:
        """[`FmriTokenizerModel.encode`] of the wrapped tokenizer."""
        return self.fmri_tokenizer.encode(fmri_values)

    def decode(self, codes: torch.LongTensor) -> torch.FloatTensor:
        """[`FmriTokenizerModel.decode`] of the wrapped tokenizer."""
        return self.fmri_tokenizer.decode(codes)

    def contrastive_loss(self, pooled_features: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """SigLIP loss between pooled fMRI features `(batch, code_dim)` and text embeddings `(batch, text_embed_dim)`.

        Pairs whose text embeddings are identical (e.g. two windows of one subject, described by
        one text) count as positives; all others as negatives.
        """
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

        The classifier learns to tell fMRI code vectors `(n, code_dim)` (label 1) from every row of
        `word_embeddings` `(vocab_size, code_dim)` (label 0), both L2-normalised; the loss is the
        mean of the two domains' binary cross-entropies, so the domains weigh the same whatever
        their sizes, and it is deterministic (no sampled rows). The reversed gradient pushes the
        encoder to make the two indistinguishable.
        """
        if word_embeddings.ndim != 2 or word_embeddings.shape[1] != self.config.code_dim:
            raise FmriInputError(
                f"word_embeddings: expected shape (vocab_size, {self.config.code_dim}) (code_dim), "
                f"found {tuple(word_embeddings.shape)}"
            )
        fmri_logits = self.domain_classifier(grad_reverse(code_vectors, self.config.grl_lambda)).squeeze(-1)
        words = F.normalize(word_embeddings.to(code_vectors.dtype), dim=-1)
        word_logits = self.domain_classifier(words).squeeze(-1)
        fmri_loss = F.binary_cross_entropy_with_logits(
            fmri_logits.float(), torch.ones_like(fmri_logits, dtype=torch.float32)
        )
        word_loss = F.binary_cross_entropy_with_logits(
            word_logits.float(), torch.zeros_like(word_logits, dtype=torch.float32)
        )
        return (fmri_loss + word_loss) / 2

    def _check_head_inputs(self, text_embeds: torch.Tensor | None, word_embeddings: torch.Tensor | None) -> None:
        """Each built head needs its input; an input without its head is an error too."""
        config = self.config
        heads = {
            "text_embeds": (
                text_embeds,
                self.contrastive_projection is not None,
                f"text_embed_dim={config.text_embed_dim}",
            ),
            "word_embeddings": (
                word_embeddings,
                self.domain_classifier is not None,
                f"use_domain_confusion={config.use_domain_confusion}",
            ),
        }
        for name, (value, built, setting) in heads.items():
            if built and value is None:
                raise FmriInputError(f"{name}: required (the config has {setting}), found None")
            if not built and value is not None:
                raise FmriInputError(f"{name}: given, but the config has {setting} (no head for it)")

    @can_return_tuple
    def forward(
        self,
        fmri_values: torch.Tensor,
        text_embeds: torch.Tensor | None = None,
        word_embeddings: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | int | list[int] | None = None,
        return_loss: bool = True,
    ) -> FmriTokenizerForPreTrainingOutput | tuple:
        r"""Tokenize, reconstruct and compute the Stage 1 losses.

        Args:
            fmri_values (`torch.FloatTensor` of shape `(batch, num_rois, n_frames)`): normalised windows.
            text_embeds (`torch.FloatTensor` of shape `(batch, text_embed_dim)`): embeddings of each
                window's descriptor text from a frozen text encoder; required exactly when the
                config has `text_embed_dim`.
            word_embeddings (`torch.FloatTensor` of shape `(vocab_size, code_dim)`): the language
                model's input embedding matrix; required exactly when `use_domain_confusion`.
            output_attentions, output_hidden_states, return_loss, return_dict: as in [`FmriTokenizerModel.forward`].

        Returns:
            [`FmriTokenizerForPreTrainingOutput`]. In training mode the call also updates the codebook.
        """
        self._check_head_inputs(text_embeds, word_embeddings)
        config = self.config
        outputs = self.fmri_tokenizer(
            fmri_values,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        pooled = outputs.code_vectors.mean(dim=1)
        loss = outputs.loss
        contrastive = domain = None
        if self.contrastive_projection is not None:
            contrastive = self.contrastive_loss(pooled, text_embeds)
            loss = loss + config.contrastive_weight * contrastive
        if self.domain_classifier is not None:
            domain = self.domain_loss(outputs.code_vectors.reshape(-1, config.code_dim), word_embeddings)
            loss = loss + config.domain_weight * domain
        output = FmriTokenizerForPreTrainingOutput(
            **{field.name: getattr(outputs, field.name) for field in fields(FmriTokenizerOutput)}
            | {"loss": loss if return_loss else None},
            contrastive_loss=contrastive,
            domain_loss=domain,
            pooled_features=pooled,
        )
        return output


__all__ = [
    "FmriCodebook",
    "FmriTokenizerDecoder",
    "FmriTokenizerEncoder",
    "FmriTokenizerForPreTraining",
    "FmriTokenizerForPreTrainingOutput",
    "FmriTokenizerModel",
    "FmriTokenizerOutput",
    "FmriTokenizerPreTrainedModel",
    "FmriVectorQuantizer",
    "SafetensorsOnly",
    "codebook_usage",
    "codebook_usage_of_counts",
    "grad_reverse",
    "spherical_kmeans",
]
