"""Tests of the `fmrilm` command line (`cli.py`), the app (`app.py`) and the demo's figures (`figures.py`)."""
