"""Tests of `modeling_fmrilm/training/`: the three stages on transformers.Trainer, kill and resume, the demo's
small language model."""
