"""The `fmrilm` console script.

`fmrilm demo` runs the package's main job on the embedded data (see README); `fmrilm preprocess`
summarises what the feature extractor makes of any folder of scans.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .feature_extraction_fmrilm import FmriFeatureExtractor
from .io import FmriScan, load_scans


def summarize_cohort(scans: Sequence[FmriScan], extractor: FmriFeatureExtractor) -> str:
    """A table of scans (subject, shape, TR, windows) and the windows' statistics."""
    features = extractor(list(scans))
    values = features["fmri_values"]
    counts = np.bincount(features["scan_index"], minlength=len(scans))
    lines = [f"{'dataset':<8} {'subject':<10} {'rois':>5} {'frames':>7} {'TR (s)':>7} {'windows':>8}"]
    for scan, count in zip(scans, counts):
        lines.append(
            f"{scan.dataset:<8} {scan.subject:<10} {scan.n_rois:>5} {scan.n_timepoints:>7} {scan.tr:>7.2f} {count:>8}"
        )
    lines.append(
        f"{len(scans)} scans -> fmri_values {tuple(values.shape)} "
        f"(TR {extractor.target_tr} s, {extractor.window_length} frames per window, stride {extractor.stride}); "
        f"median {np.median(values):+.3f}, IQR {np.subtract(*np.percentile(values, [75, 25])):.3f}, "
        f"finite {bool(np.isfinite(values).all())}"
    )
    return "\n".join(lines)


def run_demo(args: argparse.Namespace) -> None:
    """The main job on the embedded data (`modeling_fmrilm.demo`)."""
    from .demo import run_demo as demo

    demo(Path(args.output_dir))


def run_preprocess(args: argparse.Namespace) -> None:
    inputs = args.inputs[0] if len(args.inputs) == 1 else args.inputs
    scans = load_scans(inputs, tr=args.tr, key=args.key)
    extractor = FmriFeatureExtractor(
        target_tr=args.target_tr, window_length=args.window_length, window_stride=args.window_stride
    )
    print(summarize_cohort(scans, extractor))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fmrilm", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the main job on the embedded data")
    demo.add_argument("--output-dir", default="outputs/demo")
    demo.set_defaults(func=run_demo)
    pre = commands.add_parser("preprocess", help="summarise windows made from a folder or files")
    pre.add_argument("inputs", nargs="+", help="a folder of scans or scan files")
    pre.add_argument("--tr", type=float, default=None, help="repetition time when files carry none")
    pre.add_argument("--key", default=None, help="variable/array/dataset holding the time series")
    pre.add_argument("--target-tr", type=float, default=2.0)
    pre.add_argument("--window-length", type=int, default=160)
    pre.add_argument("--window-stride", type=int, default=None)
    pre.set_defaults(func=run_preprocess)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
