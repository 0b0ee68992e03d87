"""Errors raised for bad fMRI input.

This module imports nothing but the standard library so that the configuration, modeling,
feature-extraction and processing files can import it relatively and still be copied into a Hub
repository as remote code.
"""


class FmriInputError(ValueError):
    """Bad fMRI input: the message names the file or argument, what was found and what was expected."""
