"""The scan record of the data contract."""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FmriInputError


@dataclass
class FmriScan:
    """One parcellated scan.

    Attributes:
        data: float32 `(n_rois, n_timepoints)`, ROI-major.
        tr: seconds between time points.
        subject: subject id (splits are made on it).
        session: session id, or `None`.
        dataset: name of the cohort the scan comes from.
        atlas: name of the parcellation.
        roi_names: one name per ROI, or `None`.
        source: the file it was read from, or `None`.
        censored: boolean `(n_acquired,)` over the acquired frames, True for each frame a sample
            mask censored; `None` when no mask was applied. `data` then covers the acquired frames
            from the first to the last uncensored one, and the censored frames inside that span
            hold interpolated values (`interpolated`); see `modeling_fmrilm.io.censoring`.
        extra: further metadata (BIDS entities, ...).
    """

    data: np.ndarray
    tr: float
    subject: str
    session: str | None = None
    dataset: str = "unknown"
    atlas: str = "unknown"
    roi_names: list[str] | None = None
    source: str | None = None
    censored: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """Identifier used in messages: the source file if any, else `dataset/subject[/session]`."""
        if self.source:
            return self.source
        return "/".join(p for p in (self.dataset, self.subject, self.session) if p)

    @property
    def n_rois(self) -> int:
        return int(self.data.shape[0])

    @property
    def n_timepoints(self) -> int:
        return int(self.data.shape[1])

    @property
    def interpolated(self) -> np.ndarray:
        """Boolean `(n_timepoints,)`: True for each frame of `data` filled in for a censored frame."""
        if self.censored is None:
            return np.zeros(self.n_timepoints, dtype=bool)
        first = int(np.argmin(self.censored))  # the first kept frame
        return self.censored[first : first + self.n_timepoints]

    def metadata(self) -> dict[str, Any]:
        """Everything but the array, as plain values (for datasets and JSON)."""
        return {
            "subject": self.subject,
            "session": self.session,
            "dataset": self.dataset,
            "atlas": self.atlas,
            "tr": self.tr,
            "n_rois": self.n_rois,
            "n_timepoints": self.n_timepoints,
            "source": self.source,
            "n_censored": int(self.censored.sum()) if self.censored is not None else 0,
            "n_interpolated": int(self.interpolated.sum()),
            **self.extra,
        }


def require_file(path: Path, what: str) -> None:
    """Raise `FmriInputError` unless `path` is a regular file (or a link to one), saying what it is instead."""
    if path.is_file():
        return
    if path.is_dir():
        found = "a folder (pass a file inside it)"
    elif path.is_symlink():
        try:
            path.resolve(strict=True)
            found = "a symbolic link to something that is not a regular file"
        except RuntimeError:  # Python < 3.13 reports a link loop as RuntimeError
            found = "a symbolic link loop"
        except OSError as error:
            found = "a symbolic link loop" if error.errno == errno.ELOOP else "a symbolic link to a missing file"
    elif path.exists():
        found = "something that is not a regular file (a device, a pipe or a socket)"
    else:
        found = "no such file"
    raise FmriInputError(f"{path}: expected {what}, found {found}")


__all__ = ["FmriScan", "require_file"]
