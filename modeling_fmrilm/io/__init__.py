"""Readers that turn files into `FmriScan` records."""

from .bids import applicable_sidecars, bids_metadata, parse_entities, sidecar_tr
from .embedded import AtlasTable, aal2_table, load_embedded
from .nifti import LabelAverager, find_fmriprep_bold, iter_fmriprep, read_nifti
from .readers import ScanFiles, find_scan_files, iter_scans, load_scans, read_array_file
from .scan import FmriScan

__all__ = [
    "AtlasTable",
    "FmriScan",
    "LabelAverager",
    "ScanFiles",
    "aal2_table",
    "applicable_sidecars",
    "bids_metadata",
    "find_fmriprep_bold",
    "find_scan_files",
    "iter_fmriprep",
    "iter_scans",
    "load_embedded",
    "load_scans",
    "parse_entities",
    "read_array_file",
    "read_nifti",
    "sidecar_tr",
]
