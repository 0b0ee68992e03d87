"""The offline language model of the demo: a byte-level BPE text tokenizer trained on
the descriptor corpus by the `tokenizers` library, and a small GPT-2- or Qwen3-shaped causal LM built
from its config (random weights). On a machine with a Hub connection `--base_model Qwen/Qwen3-0.6B`
takes this one's place through the same code path."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal, get_args

from transformers import AutoModelForCausalLM, GPT2Config, PretrainedConfig, PreTrainedTokenizerFast, Qwen3Config

from ..errors import FmriInputError

END_OF_TEXT = "<|endoftext|>"
LanguageModelKind = Literal["gpt2", "qwen3"]
"""The shapes of the small language model the stages build when no base model is given."""
LANGUAGE_MODEL_KINDS = get_args(LanguageModelKind)


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int = 2000, whole_words: Sequence[str] = ()
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (GPT-2 style, `<|endoftext|>` as bos/eos/pad) trained on `texts`.

    Each of `whole_words` (leading space included, as `" Patient"`) that the trained merges split is
    added as one token (a normal added token: matched in the text before BPE, decoded as itself).
    A pretrained LM's vocabulary has common words such as the tasks' answers as single tokens; a BPE
    trained on the descriptor corpus never sees `" Patient"` and splits it into four pieces, each of
    which a small model must then learn to predict in turn (the bench's Stage 3 left every piece
    after the first at about -5 nats)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    split = [word for word in dict.fromkeys(whole_words) if len(tokenizer.encode(word).ids) > 1]
    tokenizer.add_tokens([AddedToken(word, normalized=False, special=False) for word in split])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT, pad_token=END_OF_TEXT
    )


def small_language_model_config(
    kind: LanguageModelKind,
    vocab_size: int,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    max_positions: int = 2048,
    eos_token_id: int = 0,
) -> PretrainedConfig:
    """A GPT-2 (tied head) or Qwen3 (untied head) config of the given size."""
    if kind == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size, n_positions=max_positions, n_embd=hidden_size, n_layer=num_layers, n_head=num_heads,
            bos_token_id=eos_token_id, eos_token_id=eos_token_id,
        )  # fmt: skip
    if kind == "qwen3":
        return Qwen3Config(
            vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=4 * hidden_size, num_hidden_layers=num_layers,
            num_attention_heads=num_heads, num_key_value_heads=max(1, num_heads // 2), head_dim=hidden_size // num_heads,
            max_position_embeddings=max_positions, bos_token_id=eos_token_id, eos_token_id=eos_token_id, tie_word_embeddings=False,
        )  # fmt: skip
    raise FmriInputError(f"language model kind: expected one of {LANGUAGE_MODEL_KINDS}, found {kind!r}")


def build_small_language_model(
    texts: Iterable[str],
    folder: str | Path,
    kind: LanguageModelKind = "gpt2",
    vocab_size: int = 2000,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    max_positions: int = 2048,
    seed: int = 0,
    whole_words: Sequence[str] = (),
) -> Path:
    """Train the BPE tokenizer on `texts` (each of `whole_words` one token), build the small LM from
    its config, save both to `folder`."""
    import torch

    tokenizer = train_bpe_tokenizer(texts, vocab_size, whole_words)
    config = small_language_model_config(
        kind,
        len(tokenizer),
        hidden_size,
        num_layers,
        num_heads,
        max_positions,
        tokenizer.convert_tokens_to_ids(END_OF_TEXT),
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


__all__ = [
    "LANGUAGE_MODEL_KINDS",
    "LanguageModelKind",
    "build_small_language_model",
    "small_language_model_config",
    "train_bpe_tokenizer",
]
