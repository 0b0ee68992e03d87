"""Errors raised for bad fMRI input.

This module imports nothing but the standard library so that the configuration, modeling,
feature-extraction and processing files can import it relatively and still be copied into a Hub
repository as remote code.
"""


class FmriInputError(ValueError):
    """Bad fMRI input: the message names the file or argument, what was found and what was expected."""


class MissingTRError(FmriInputError):
    """A scan without a repetition time. `where` names the scan and the places looked at; `hint` says how
    to give one, in Python terms by default: a front end words it its own way with `MissingTRError(where, hint)`
    (the CLI's `--tr`, the app's TR field)."""

    def __init__(self, where: str, hint: str = "pass tr=<seconds>") -> None:
        self.where, self.hint = where, hint
        super().__init__(f"{where}; {hint}")


__all__ = ["FmriInputError", "MissingTRError"]
