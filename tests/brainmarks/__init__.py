"""Tests of the Brainmarks plugin `brainmarks/models/fmrilm.py` (run in `.venv-brainmarks` by
`make brainmarks-test`)."""
