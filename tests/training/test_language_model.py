"""The demo's small language model: its corpus-trained BPE keeps every task answer as one token."""

from __future__ import annotations

from transformers import AutoModelForCausalLM, AutoTokenizer

from modeling_fmrilm.tasks.registry import label_vocabulary
from modeling_fmrilm.training.language_model import build_small_language_model, train_bpe_tokenizer

CORPUS = ["The coupling between the default mode and salience networks is higher than typical (z = 1.3)."] * 8
PROMPT = "### Question: Is this participant a control or a patient?\n### Answer:"


def test_label_words_split_by_the_corpus_bpe_become_single_tokens_that_decode_and_survive_saving(tmp_path):
    words = label_vocabulary()
    assert {" Control", " Patient", " Male", " lower", " typical", " higher"} <= set(words)
    plain = train_bpe_tokenizer(CORPUS, 300)
    assert len(plain(" Patient", add_special_tokens=False)["input_ids"]) > 1  # what the corpus alone gives
    folder = build_small_language_model(CORPUS, tmp_path / "lm", kind="qwen3", vocab_size=300, whole_words=words)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.vocab_size == len(tokenizer)
    ids = {word: tokenizer(word, add_special_tokens=False)["input_ids"] for word in words}
    assert all(len(piece) == 1 for piece in ids.values()), ids
    assert len({piece[0] for piece in ids.values()}) == len(words)
    for word in words:  # after the prompt as Stage 3 writes it, the answer is still its one token and decodes back
        text = PROMPT + word + "\n"
        encoded = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert ids[word][0] in encoded and tokenizer.decode(encoded) == text
    # words the corpus merges already are not added twice
    assert len(tokenizer) - len(plain) == sum(
        len(plain(word, add_special_tokens=False)["input_ids"]) > 1 for word in words
    )
