"""Tests of `modeling_fmrilm/descriptors/`: the descriptor features and the descriptor corpus."""
