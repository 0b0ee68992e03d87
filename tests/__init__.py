"""fmrilm's tests, laid out like the package: `models/`, `io/`, `descriptors/`, `tasks/`, `training/`, `cli/`.

A package (as transformers' `tests/` is), so pytest imports each file by its dotted name
(`tests.models.test_fmrilm`) with the repository root on `sys.path`, and the shared code is imported
from `tests.support`; the shared fixtures are in `tests/conftest.py`.
"""
