"""Tests of `modeling_fmrilm/tasks/` (task sources, labels, the synthetic cohort, the evaluation) and the subject
split (`splits.py`)."""
