"""Tests of the model files at the top of `modeling_fmrilm/`: the Stage 1 tokenizer, the Stage 2 model, the
processor and feature extractor, the encoder embeddings, the Hub export."""
