"""The descriptor text of a scan outside the corpus, measured against a corpus's stored cohort reference.

The same pipeline as a corpus record (`corpus.py`, whose text it reproduces for a scan of the corpus): features (`reference.compute_features`),
z-scores against the reference's norms (the scan's dataset's when the reference has them, else
the pooled ones), then the severity-band paragraph (`text.describe`).
"""

from __future__ import annotations

from pathlib import Path

from ..io import FmriScan
from ..sharded_build import ScanInfo
from .reference import DESCRIBED, DOMAINS, POOLED, CohortReference, compute_features, validate_scan, zscores
from .text import describe


def reference_cohort(reference: CohortReference, dataset: str) -> str:
    """The norms a scan of `dataset` is measured against: its own dataset's, else the pooled ones."""
    if dataset in reference.norms:
        return dataset
    return POOLED


def describe_new_scan(scan: FmriScan, reference: CohortReference | str | Path) -> str:
    """The descriptor paragraph of `scan` against `reference` (or the corpus folder holding `cohort_reference.json`).

    Raises:
        FmriInputError: the scan does not fit the reference (ROI count, too short for the
            frequency band, non-finite or constant ROIs), naming the scan.
    """
    if not isinstance(reference, CohortReference):
        reference = CohortReference.load(reference)
    data = validate_scan(scan.data, scan.tr, scan.name, reference.n_rois, reference.settings)
    cohort = reference_cohort(reference, scan.dataset)
    z = zscores(compute_features(data[None], scan.tr, reference), cohort, reference)
    label = (
        cohort
        if cohort != POOLED
        else "pooled " + "/".join(sorted(name for name in reference.norms if name != POOLED))
    )
    key = ScanInfo(
        0, scan.name, scan.subject, scan.session, scan.dataset, scan.tr, scan.n_timepoints
    ).key  # the corpus's phrasing seed
    return describe(
        {name: float(z[name][0]) for name in DESCRIBED},
        reference.network_pairs,
        z["network_pair_fc"][0],
        label,
        key,
        DOMAINS,
        reference.settings.seed,
    )


__all__ = ["describe_new_scan", "reference_cohort"]
