"""16-ROI scans of two sites, their atlas labels and the descriptor settings of the small corpus builds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modeling_fmrilm.descriptors.reference import DescriptorSettings
from modeling_fmrilm.io import FmriScan

N_ROIS = 16
LABELS = ["Visual"] * 6 + ["Motor"] * 5 + ["Default"] * 5
SETTINGS = DescriptorSettings(n_ica_components=4, density=0.2, seed=4)
FRACTIONS = (0.5, 0.25, 0.25)  # with seed 4, the 8 subjects of make_scans split 5 / 2 / 1


def make_scans(n_subjects=8, seed=0):
    rng = np.random.default_rng(seed)
    scans = []
    for s in range(n_subjects):
        n_t, tr, dataset = (150, 2.0, "siteA") if s % 2 else (300, 0.8, "siteB")
        x = rng.standard_normal((N_ROIS, n_t)).cumsum(axis=1) * 0.3 + rng.standard_normal((N_ROIS, n_t))
        x[:6] += rng.standard_normal(n_t)
        scans.append(FmriScan((x + 1000).astype(np.float32), tr, f"sub{s:02d}", dataset=dataset, atlas="toy"))
    return scans


def scan_folder(tmp_path: Path) -> tuple[Path, Path]:
    """`make_scans()` saved as `.npy` files under `tmp_path/scans` (150 frames each), and their atlas table."""
    folder = tmp_path / "scans"
    folder.mkdir()
    for scan in make_scans():
        np.save(folder / f"sub-{scan.subject}_task-rest_bold.npy", scan.data[:, :150])
    table = tmp_path / "atlas.tsv"
    table.write_text("network\n" + "\n".join(LABELS) + "\n")
    return folder, table


def folder_files(folder):
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}
