"""Preprocessing speed and memory, each against a baseline measured in the same run.

(a) NIfTI 4D (61 x 73 x 61 x 300, gzip) + label atlas -> ROI time series: our reader vs nilearn's
    `NiftiLabelsMasker` called directly (no cleaning); ratio and largest absolute difference.
(b) Feature extractor on 200 HCP-sized scans (94 x 1200, TR 0.72 -> 2.0, windows of 160) vs a
    plain per-scan loop doing the same preprocessing one scan at a time: scipy `resample_poly` (the
    same Kaiser low-pass, odd-reflection padding) for the default anti-aliased resampling, scipy
    `interp1d` for `resample_method="linear"`; then numpy median/IQR and windows by slicing.
(c) Peak memory (RSS) when the extractor streams 200 and 2000 scans from .npy files.

Run: `.venv/bin/python bench/preprocess.py [--workdir DIR]`. Ends with one TARGET line per target
and exits 0 either way.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from fractions import Fraction
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.interpolate import interp1d
from scipy.signal import resample_poly

from modeling_fmrilm import FmriFeatureExtractor
from modeling_fmrilm.io.nifti import read_nifti
from peak_memory import run_with_peak_rss

SHAPE = (61, 73, 61)
N_VOLUMES = 300
N_LABELS = 100


def best_of(repeats: int, fn):
    """Smallest wall time of `repeats` calls, and the last result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def make_nifti(folder: Path) -> tuple[Path, Path]:
    """A brain-shaped synthetic BOLD image (zeros outside an ellipsoid) and a 100-label atlas."""
    rng = np.random.default_rng(0)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = [-90, -126, -72]
    grid = np.stack(np.indices(SHAPE), axis=-1).astype(np.float32)
    centre = (np.array(SHAPE) - 1) / 2
    inside = (((grid - centre) / (centre * 0.85)) ** 2).sum(-1) < 1
    # Atlas: nearest of 100 random seeds inside the brain.
    seeds = grid[inside][rng.choice(inside.sum(), N_LABELS, replace=False)]
    nearest = np.argmin(((grid[inside][:, None, :] - seeds[None]) ** 2).sum(-1), axis=1)
    atlas = np.zeros(SHAPE, np.int16)
    atlas[inside] = nearest + 1
    # BOLD: a slow signal per label + voxel noise, baseline ~1000.
    t = np.arange(N_VOLUMES) * 2.0
    label_signal = np.sin(2 * np.pi * rng.uniform(0.01, 0.1, (N_LABELS, 1)) * t) * 20
    bold = np.zeros(SHAPE + (N_VOLUMES,), np.float32)
    bold[inside] = 1000 + label_signal[nearest] + rng.standard_normal((inside.sum(), N_VOLUMES)) * 10
    bold_path, atlas_path = folder / "sub-01_task-rest_bold.nii.gz", folder / "atlas.nii.gz"
    image = nib.Nifti1Image(bold, affine)
    image.header.set_zooms((3.0, 3.0, 3.0, 2.0))
    nib.save(image, bold_path)
    nib.save(nib.Nifti1Image(atlas, affine), atlas_path)
    return bold_path, atlas_path


def bench_nifti(folder: Path) -> tuple[float, float]:
    from nilearn.maskers import NiftiLabelsMasker

    print("(a) NIfTI + atlas -> ROI time series")
    start = time.perf_counter()
    bold, atlas = make_nifti(folder)
    print(f"    wrote {bold.name} ({bold.stat().st_size / 1e6:.0f} MB gzip) in {time.perf_counter() - start:.1f} s")

    def nilearn_direct():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return NiftiLabelsMasker(str(atlas), standardize=None).fit_transform(str(bold))

    t_nilearn, reference = best_of(2, nilearn_direct)
    t_ours, scan = best_of(2, lambda: read_nifti(bold, atlas))
    diff = float(np.abs(scan.data.T - reference).max())
    print(f"    nilearn NiftiLabelsMasker: {t_nilearn:.2f} s; fmrilm read_nifti: {t_ours:.2f} s")
    print(f"    ratio {t_nilearn / t_ours:.2f}x, max |difference| {diff:.2e}")
    return t_nilearn / t_ours, diff


def loop_baseline(scans: list[np.ndarray], tr: float, target_tr: float, window: int, method: str) -> list[np.ndarray]:
    """One scan at a time: scipy resample_poly (antialias) or interp1d (linear), numpy median/IQR, slicing."""
    ratio = Fraction(target_tr / tr).limit_denominator(1000)  # resample_poly's down / up
    out = []
    for scan in scans:
        times = np.arange(scan.shape[1]) * tr
        new_times = np.arange(0, times[-1] + 1e-9, target_tr)
        if method == "linear":
            resampled = interp1d(times, scan, axis=1)(new_times)
        else:  # the mean is removed first, as the extractor does (robust z-scoring ignores it)
            centred = scan - scan.mean(axis=1, keepdims=True)
            resampled = resample_poly(centred, ratio.denominator, ratio.numerator, axis=1, padtype="antireflect")
            resampled = resampled[:, : new_times.size]
        median = np.median(resampled, axis=1, keepdims=True)
        q75, q25 = np.percentile(resampled, [75, 25], axis=1, keepdims=True)
        normalised = ((resampled - median) / np.maximum(q75 - q25, 1e-6)).astype(np.float32)
        out.extend(normalised[:, s : s + window] for s in range(0, normalised.shape[1] - window + 1, window))
    return out


def bench_extractor() -> dict[str, float]:
    """Speed ratio (loop time / extractor time) per resampling method."""
    print("(b) feature extractor, 200 scans of 94 x 1200 at TR 0.72 -> 2.0 s, windows of 160")
    rng = np.random.default_rng(1)
    scans = [(rng.standard_normal((94, 1200)) * 50 + 1e4).astype(np.float32) for _ in range(200)]
    ratios = {}
    for method, baseline in (("antialias", "resample_poly"), ("linear", "interp1d")):
        extractor = FmriFeatureExtractor(num_rois=94, resample_method=method)
        t_loop, reference = best_of(2, lambda method=method: loop_baseline(scans, 0.72, 2.0, 160, method))
        t_ours, features = best_of(2, lambda extractor=extractor: extractor(scans, tr=0.72))
        diff = float(np.abs(features["fmri_values"] - np.stack(reference)).max())
        ratios[method] = t_loop / t_ours
        print(
            f"    {method}: loop ({baseline}) {200 / t_loop:.0f} scans/s; extractor {200 / t_ours:.0f} scans/s; "
            f"ratio {ratios[method]:.2f}x; max |difference| {diff:.1e} (robust z units)"
        )
    return ratios


STREAM = """
import sys
from modeling_fmrilm import FmriFeatureExtractor
from modeling_fmrilm.io import iter_scans
extractor = FmriFeatureExtractor(num_rois=94)
files = sorted(__import__("pathlib").Path(sys.argv[1]).glob("*.npy"))[: int(sys.argv[2])]
windows = sum(b["fmri_values"].shape[0] for b in extractor.iter_windows(iter_scans(files, tr=0.72), batch_size=32))
print(windows)
"""


def bench_streaming(folder: Path) -> float:
    print("(c) peak RSS while streaming scans from .npy files (batches of 32 scans)")
    rng = np.random.default_rng(2)
    for i in range(2000):
        np.save(folder / f"scan{i:04d}.npy", (rng.standard_normal((94, 1200)) * 50 + 1e4).astype(np.float32))
    peaks = {}
    for n in (200, 2000):
        windows, peaks[n] = run_with_peak_rss(STREAM, str(folder), str(n))
        print(f"    {n} scans -> {windows} windows, peak RSS {peaks[n]:.0f} MiB")
    return peaks[2000] / peaks[200]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="folder for the synthetic files (default: a temp folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        folder = Path(tmp)
        nifti_ratio, nifti_diff = bench_nifti(folder)
        extractor_ratios = bench_extractor()
        memory_ratio = bench_streaming(folder)
    verdict = lambda ok: "PASS" if ok else "FAIL"  # noqa: E731
    print(f"TARGET nifti_speed: ratio {nifti_ratio:.2f}x (target >= 1.5x) {verdict(nifti_ratio >= 1.5)}")
    print(f"TARGET nifti_max_abs_diff: {nifti_diff:.1e} (target <= 1e-05) {verdict(nifti_diff <= 1e-5)}")
    extractor_ratio = extractor_ratios["antialias"]  # the default method
    print(f"TARGET extractor_speed: ratio {extractor_ratio:.2f}x (target >= 1.0x) {verdict(extractor_ratio >= 1.0)}")
    print(f"TARGET stream_memory: ratio {memory_ratio:.2f}x (target <= 1.5x) {verdict(memory_ratio <= 1.5)}")


if __name__ == "__main__":
    main()
