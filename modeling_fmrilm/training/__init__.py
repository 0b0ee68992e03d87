"""What each stage adds to `transformers.Trainer`: datasets, collators, callbacks.

One module per stage (`stage1`, …) plus what they share (`common`: cohorts, the subject split,
window datasets, checkpoints and the atomic final save; `text_inputs`: descriptor texts, the frozen text encoder and word
embeddings). Nothing here is remote code: a checkpoint carries only the model files.
"""

__all__: list[str] = []  # the stages are imported by module (`training.stage1`, ...)
