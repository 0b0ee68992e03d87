"""The window store: a cohort's preprocessed windows as a `datasets` folder every stage streams from.

`fmrilm preprocess COHORT --output-dir STORE` (or `build_window_store`) runs the readers and the
feature extractor once and writes:

    README.md                     dataset card (YAML `configs:` so `datasets.load_dataset(STORE)` reads it)
    preprocessor_config.json      the feature extractor (`FmriFeatureExtractor.from_pretrained(STORE)`)
    splits.json                   the subject split (`modeling_fmrilm.splits` manifest)
    window_store.json             what was built: configuration, plan fingerprint, counts, skipped scans, digest
    data/windows/{split}-NNNNN-<digest>.arrow   one Arrow file per shard and split

One row per window: `fmri_values` `(num_rois, window_length)` float32, `subject_key`
(`dataset/subject`), `text_key` (`dataset/subject[/session]`), `scan` (`ScanInfo.key`), `dataset`,
`subject`, `session`, `scan_index` (position of the scan in the source), `window_index` (within
its scan), `window_start` (first frame at the target TR), `tr` (of the source) and `split`.

Precision: float32, the feature extractor's own output, so a window read from the store equals
the one the extractor makes bit for bit and a Stage 1 run from a store equals one from memory
(float16 would halve the disk, 64 x 450 x 2 bytes = 58 kB a window instead of 115 kB, at a rounding
error of up to 2^-11 of each value). Arrow IPC files, not parquet: `datasets.Dataset.from_file`
memory-maps them as they are, so a stage reads any window at random without loading or converting
the store (parquet would be copied into the `datasets` cache first).

The build has the three steps of the descriptor corpus (`modeling_fmrilm.descriptors.corpus`), with
the same guarantees:

1. `prepare_store`: survey every scan once (the feature extractor's checks), split the subjects
   (`modeling_fmrilm.splits`: seeded hash, or an existing manifest), write `.build/plan.json`.
2. `build_store_shards`: the windows of shard `k` (`shard_size` consecutive scans) for every `k`
   with `k % num_shards == shard_index`, on `num_proc` processes; each shard's files are written
   atomically and its marker (`.build/shards/shard-k.json`: files, sizes, SHA-256) last, so a
   killed share resumes from its finished shards.
3. `merge_store`: the published folder, staged and moved into place when whole. A merge of shares
   equals a one-machine build file for file.

Memory is bounded by a shard (`shard_size` scans and their windows), whatever the cohort size.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from .atomic import write_atomically
from .errors import FmriInputError
from .feature_extraction_fmrilm import FmriFeatureExtractor
from .io import FmriScan
from .locking import folder_lock
from .sharded_build import (
    PLAN_NAME,
    BuildPlan,
    ScanInfo,
    ScanSource,
    publish_build,
    run_shards,
    set_aside,
    survey_scans,
)
from .splits import (
    DEFAULT_FRACTIONS,
    MANIFEST_NAME,
    SPLITS,
    SubjectSplit,
    read_manifest,
    resolve_split,
    write_manifest,
)

CONFIG_NAME = "windows"
RECORD_NAME = "window_store.json"
EXTRACTOR_NAME = "preprocessor_config.json"
WORK_DIR = ".build"
FORMAT_VERSION = 1
PREPARE_HINT = "prepare the store first (fmrilm preprocess ... --output-dir STORE --prepare-only)"
MAX_FILE_VALUES = 2**31 - 1  # Arrow list offsets are int32: values of one file's fmri_values column


@dataclass
class StoreSummary:
    """What `build_window_store` and `merge_store` return."""

    folder: Path
    windows: dict[str, int]
    scans: int
    skipped: list[str] = field(default_factory=list)
    reused_shards: int = 0


def store_config(extractor: FmriFeatureExtractor, shard_size: int) -> dict:
    """Everything besides the scans that fixes the shards' contents (compared by shares and merge)."""
    if shard_size < 1:
        raise FmriInputError(f"shard_size: expected a positive number of scans, found {shard_size}")
    if extractor.num_rois is None:
        raise FmriInputError("feature extractor: a window store needs num_rois (every window has the same shape)")
    settings = {k: v for k, v in extractor.to_dict().items() if k not in ("feature_extractor_type", "auto_map")}
    return json.loads(
        json.dumps({"format_version": FORMAT_VERSION, "feature_extractor": settings, "shard_size": int(shard_size)})
    )


def store_features(num_rois: int, window_length: int) -> Any:
    """The `datasets.Features` of a store's rows."""
    import datasets

    text = datasets.Value("string")
    return datasets.Features(
        {
            "fmri_values": datasets.Array2D((num_rois, window_length), "float32"),
            "subject_key": text,
            "text_key": text,
            "scan": text,
            "dataset": text,
            "subject": text,
            "session": text,
            "scan_index": datasets.Value("int64"),
            "window_index": datasets.Value("int64"),
            "window_start": datasets.Value("int64"),
            "tr": datasets.Value("float64"),
            "split": text,
        }
    )


def _extractor(config: dict) -> FmriFeatureExtractor:
    return FmriFeatureExtractor(**config["feature_extractor"])


def _work(output_dir: str | Path) -> Path:
    return Path(output_dir) / WORK_DIR


def _marker(work: Path, shard: int) -> Path:
    return work / "shards" / f"shard-{shard:05d}.json"


def _finished(work: Path, shard: int) -> dict | None:
    """Shard `shard`'s marker when the shard was written to the end (every file listed, at its
    size); a marker that does not read, or names a missing or short file, is named in a warning
    and moved aside, so that the shard is computed again."""
    path = _marker(work, shard)
    if not path.exists():
        return None
    try:
        marker = json.loads(path.read_text())
        for name, entry in marker["files"].items():
            size = (work / "shards" / name).stat().st_size
            if size != entry["bytes"]:
                raise ValueError(f"{name} has {size} bytes, the marker says {entry['bytes']}")
    except (OSError, ValueError, KeyError) as error:
        set_aside(path, "unfinished or corrupt shard", error)
        return None
    return marker


def _fmri_column(values: np.ndarray) -> pa.Array:
    """`(n, R, L)` float32 as the Arrow storage of `datasets.Array2D` (no copy of the values)."""
    from datasets.features.features import Array2DExtensionType

    n, rois, length = values.shape
    if values.size > MAX_FILE_VALUES:
        raise FmriInputError(
            f"shard_size: one shard's windows hold {values.size} values, more than an Arrow file's {MAX_FILE_VALUES}; use a smaller --shard-size"
        )
    flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).reshape(-1))
    rows = pa.ListArray.from_arrays(pa.array(np.arange(0, n * rois * length + 1, length, dtype=np.int32)), flat)
    windows = pa.ListArray.from_arrays(pa.array(np.arange(0, n * rois + 1, rois, dtype=np.int32)), rows)
    return pa.ExtensionArray.from_storage(Array2DExtensionType((rois, length), "float32"), windows)


def shard_tables(infos: Sequence[ScanInfo], arrays: Sequence[np.ndarray], config: dict) -> dict[str, pa.Table]:
    """The rows of one shard (its scans' infos and `(R, T)` arrays), one table per split present.

    Each scan goes through the feature extractor on its own: a batched call rounds its float32
    matrix products differently with the batch's size (by ~1e-5), and a scan's windows must not
    depend on which shard, share or store it was put in.
    """
    extractor = _extractor(config)
    per_scan = [extractor(array, tr=info.tr) for array, info in zip(arrays, infos, strict=True)]
    values = np.concatenate([features["fmri_values"] for features in per_scan])
    window_index = np.concatenate([features["window_index"] for features in per_scan])
    scan_of = np.repeat(np.arange(len(infos)), [len(features["window_index"]) for features in per_scan])
    schema = store_features(values.shape[1], values.shape[2]).arrow_schema
    tables = {}
    for split in SPLITS:
        rows = np.flatnonzero(np.array([infos[s].split == split for s in scan_of], dtype=bool))
        if not rows.size:
            continue
        chosen = [infos[s] for s in scan_of[rows]]
        columns = {
            "fmri_values": _fmri_column(values[rows]),
            "subject_key": [i.subject_key for i in chosen],
            "text_key": [i.text_key for i in chosen],
            "scan": [i.key for i in chosen],
            "dataset": [i.dataset for i in chosen],
            "subject": [i.subject for i in chosen],
            "session": [i.session for i in chosen],
            "scan_index": [i.index for i in chosen],
            "window_index": window_index[rows],
            "window_start": window_index[rows] * extractor.stride,
            "tr": [i.tr for i in chosen],
            "split": [split] * rows.size,
        }
        tables[split] = pa.table(columns, schema=schema)
    return tables


def write_shard(work: Path, config: dict, shard: int, infos: Sequence[ScanInfo], scans: Sequence[FmriScan]) -> int:
    """Compute and write shard `shard` of scans `scans` (its files atomically, then its marker); returns its windows."""
    files, windows = {}, 0
    arrays = [np.asarray(scan.data, dtype=np.float32) for scan in scans]
    for split, table in shard_tables(infos, arrays, config).items():
        name = f"{split}-{shard:05d}.arrow"
        digest = hashlib.sha256()

        def write(handle: Any, table: pa.Table = table) -> None:
            with pa.ipc.new_stream(handle, table.schema) as writer:
                writer.write_table(table)

        path = work / "shards" / name
        write_atomically(path, write)
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        files[name] = {"bytes": path.stat().st_size, "sha256": digest.hexdigest(), "rows": table.num_rows}
        windows += table.num_rows
    marker = {"shard": shard, "scans": [info.index for info in infos], "files": files}
    write_atomically(_marker(work, shard), lambda handle: handle.write(json.dumps(marker, sort_keys=True).encode()))
    return windows


def prepare_store(
    source: ScanSource,
    output_dir: str | Path,
    extractor: FmriFeatureExtractor,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    split_manifest: str | Path | SubjectSplit | None = None,
    split_seed: int = 0,
    shard_size: int = 16,
    skip_bad: bool = False,
    progress: bool = True,
) -> BuildPlan:
    """Step 1 (module docstring): survey and split into `output_dir/.build`. The split is
    `modeling_fmrilm.splits.resolve_split` of the `dataset/subject` keys with `fractions` and
    `split_seed`, or the assignment in `split_manifest` (a `splits.json`, a corpus or a store, or
    a `SubjectSplit`) extended by the same hash for subjects it does not list. A rerun with other scans or settings
    starts the work folder afresh; with the same ones it keeps the finished shards."""
    work = _work(output_dir)
    config = store_config(extractor, shard_size)
    with folder_lock(output_dir, "a window store build"):
        infos, skipped = survey_scans(source, extractor.validate, skip_bad, progress)
        if not infos:
            raise FmriInputError(f"window store: no usable scans ({len(skipped)} skipped)")
        keys = [info.subject_key for info in infos]
        if isinstance(split_manifest, SubjectSplit):
            split = split_manifest.extended(keys)
        else:
            split = resolve_split(keys, split_manifest, fractions, split_seed)
        for info in infos:
            info.split = split.of(info.subject_key)
        plan = BuildPlan(infos, split, config, skipped)
        plan.install(work, "shards")
        return plan


def build_store_shards(
    source: ScanSource,
    output_dir: str | Path,
    shard_index: int = 0,
    num_shards: int = 1,
    num_proc: int = 1,
    progress: bool = True,
    expected_config: dict | None = None,
) -> int:
    """Step 2: write the missing shards `k` with `k % num_shards == shard_index`; returns how many
    of this share's shards were already finished (reused). `source` must list the scans in the
    order `prepare_store` saw them (each scan's name is checked). The scans are read in this
    process and the windows computed and written by `num_proc` worker processes."""
    if not 0 <= shard_index < num_shards:
        raise FmriInputError(
            f"shard_index: expected 0 <= shard_index < num_shards ({num_shards}), found {shard_index}"
        )
    work = _work(output_dir)
    plan = BuildPlan.load(work, expected_config, PREPARE_HINT)
    shards = plan.shards
    mine = [k for k in range(len(shards)) if k % num_shards == shard_index]
    todo = [k for k in mine if _finished(work, k) is None]
    task = functools.partial(write_shard, work, plan.config)
    run_shards(
        source,
        plan,
        todo,
        task,
        lambda k, windows: None,
        num_proc,
        progress,
        f"window shards (share {shard_index}/{num_shards})",
        work / PLAN_NAME,
    )
    return len(mine) - len(todo)


def store_digest(markers: Sequence[dict]) -> str:
    """SHA-256 over every shard file's name and SHA-256, in shard order."""
    digest = hashlib.sha256()
    for marker in markers:
        for name in sorted(marker["files"]):
            digest.update(f"{name}:{marker['files'][name]['sha256']}\n".encode())
    return digest.hexdigest()


def dataset_card(config: dict, counts: dict[str, int], n_scans: int, command: str, digest: str) -> str:
    """README.md of a store: YAML `configs:` (the digest in the file patterns, so `datasets` never
    confuses two stores' caches) and what the rows hold."""
    splits = [s for s in SPLITS if counts.get(s)]
    yaml = ["---", "configs:", f"- config_name: {CONFIG_NAME}", "  default: true", "  data_files:"]
    for split in splits:
        yaml += [f"  - split: {split}", f"    path: data/{CONFIG_NAME}/{split}-*-{digest[:12]}.arrow"]
    yaml += ["license: other", "tags:", "- fmri", "- fmrilm", "---", ""]
    settings = config["feature_extractor"]
    body = [
        "# fMRI window store",
        "",
        f"The preprocessed windows of {n_scans} parcellated scans (fmrilm): one row per window, `fmri_values` "
        f"`({settings['num_rois']}, {settings['window_length']})` float32 as the feature extractor makes them "
        f"(`preprocessor_config.json`: TR {settings['target_tr']} s, stride {settings['window_stride'] or settings['window_length']} "
        f"frames, {settings['normalization']} normalisation, {settings['resample_method']} resampling).",
        "",
        "## Splits",
        "",
        f"By subject (`{MANIFEST_NAME}`, `modeling_fmrilm.splits`): no subject is in two splits.",
        "",
        *[f"- {s}: {counts[s]} windows" for s in splits],
        "",
        "## Columns",
        "",
        "`fmri_values`, `subject_key` (`dataset/subject`), `text_key` (`dataset/subject[/session]`), `scan`, `dataset`, "
        "`subject`, `session`, `scan_index` (position of the scan in the source), `window_index`, `window_start` (first "
        "frame at the target TR), `tr` (of the source), `split`.",
        "",
        f"Data files: sha256 {digest} (each Arrow file's name and sha256, in shard order).",
        "",
        "## How it was built",
        "",
        "```",
        command,
        "```",
        "",
        "Train from it with `--window_store <this folder or repo>` (recipes/README.md).",
        "",
    ]
    return "\n".join(yaml + body)


def merge_store(
    output_dir: str | Path,
    command: str = "fmrilm window store (Python API)",
    progress: bool = True,
    expected_config: dict | None = None,
) -> StoreSummary:
    """Step 3: the published store, from a prepared build whose shards are all finished."""
    output_dir = Path(output_dir)
    with folder_lock(output_dir, "a window store build"):
        work = _work(output_dir)
        plan = BuildPlan.load(work, expected_config, PREPARE_HINT)
        shards = plan.shards
        markers = [_finished(work, k) for k in range(len(shards))]
        missing = [k for k, marker in enumerate(markers) if marker is None]
        if missing:
            raise FmriInputError(
                f"{work / 'shards'}: expected {len(shards)} finished shards, {len(missing)} missing ({missing[:20]}); "
                "shard k belongs to share k % num_shards: run those shares (--shard-index i --num-shards n) first"
            )
        digest = store_digest(markers)
        publish = work / "publish"
        shutil.rmtree(publish, ignore_errors=True)
        staged = publish / "data" / CONFIG_NAME
        staged.mkdir(parents=True)
        counts = dict.fromkeys(SPLITS, 0)
        for marker in tqdm(markers, desc="window store files", unit="shard", disable=not progress):
            for name, entry in sorted(marker["files"].items()):
                target = staged / f"{Path(name).stem}-{digest[:12]}.arrow"
                try:  # a hard link: no copy, and the shard stays whole until the store is in place
                    os.link(work / "shards" / name, target)
                except OSError:
                    shutil.copyfile(work / "shards" / name, target)
                counts[name.split("-")[0]] += entry["rows"]
        (publish / "README.md").write_text(dataset_card(plan.config, counts, len(plan.infos), command, digest))
        _extractor(plan.config).save_pretrained(publish)
        write_manifest(publish, plan.split)
        record = {
            "format_version": FORMAT_VERSION,
            "fingerprint": plan.fingerprint,
            "config": plan.config,
            "windows": counts,
            "scans": len(plan.infos),
            "skipped": plan.skipped,
            "sha256": digest,
        }
        (publish / RECORD_NAME).write_text(json.dumps(record, indent=2, sort_keys=True))
        publish_build(work, output_dir, CONFIG_NAME, ("README.md", EXTRACTOR_NAME, MANIFEST_NAME, RECORD_NAME))
        return StoreSummary(output_dir, counts, len(plan.infos), plan.skipped)


def build_window_store(
    source: ScanSource,
    output_dir: str | Path,
    extractor: FmriFeatureExtractor,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    split_manifest: str | Path | SubjectSplit | None = None,
    split_seed: int = 0,
    shard_size: int = 16,
    num_proc: int = 1,
    skip_bad: bool = False,
    progress: bool = True,
    command: str = "fmrilm window store (Python API)",
) -> StoreSummary:
    """Build (or resume) the window store of `source` in `output_dir`: `prepare_store`,
    `build_store_shards` of every shard, `merge_store` (see the module docstring). A folder that
    already holds the finished store of the same scans and settings is kept as it is.

    Args:
        source: a sequence of `FmriScan` (may be lazy, e.g. `modeling_fmrilm.io.ScanFiles`), or a
            callable returning a fresh iterator over them.
        extractor: the feature extractor making the windows (`num_rois` set).
        fractions, split_manifest, split_seed: the subject split (`prepare_store`).
        shard_size: scans per shard (per Arrow file and per unit of resumable work).
        num_proc: processes computing shards.
        skip_bad: report and skip bad scans (listed in `window_store.json`) instead of stopping.

    Raises:
        FmriInputError: a bad scan (named) without `skip_bad`, or no usable scan.
    """
    with folder_lock(output_dir, "a window store build"):
        plan = prepare_store(
            source, output_dir, extractor, fractions, split_manifest, split_seed, shard_size, skip_bad, progress
        )
        record_path = Path(output_dir) / RECORD_NAME
        if record_path.is_file() and json.loads(record_path.read_text()).get("fingerprint") == plan.fingerprint:
            shutil.rmtree(_work(output_dir))
            record = json.loads(record_path.read_text())
            return StoreSummary(
                Path(output_dir), record["windows"], record["scans"], record["skipped"], reused_shards=len(plan.shards)
            )
        reused = build_store_shards(source, output_dir, num_proc=num_proc, progress=progress)
        summary = merge_store(output_dir, command, progress)
    summary.reused_shards = reused
    return summary


@dataclass
class WindowStore:
    """A finished store, opened from a folder or a Hub dataset id (`WindowStore.open`)."""

    location: str
    feature_extractor: FmriFeatureExtractor
    split: SubjectSplit
    record: dict

    @classmethod
    def open(cls, location: str | Path) -> WindowStore:
        """Open a store folder or Hub dataset id (its record, feature extractor and split; no windows read).

        Raises:
            FmriInputError: the folder exists but holds no finished store (naming what is missing).
        """
        location = str(location)
        if Path(location).exists():
            folder = Path(location)
            missing = [name for name in (RECORD_NAME, EXTRACTOR_NAME, MANIFEST_NAME) if not (folder / name).is_file()]
            if missing:
                building = (
                    " (a build is unfinished there: run its shares, then --merge)"
                    if (folder / WORK_DIR).exists()
                    else ""
                )
                raise FmriInputError(
                    f"{folder}: expected a window store (fmrilm preprocess ... --output-dir {folder}), missing {', '.join(missing)}{building}"
                )
        else:  # a Hub dataset id: its three small files (the windows are read by `windows`)
            from huggingface_hub import hf_hub_download

            folder = Path(hf_hub_download(location, RECORD_NAME, repo_type="dataset")).parent
            for name in (EXTRACTOR_NAME, MANIFEST_NAME):
                hf_hub_download(location, name, repo_type="dataset")
        record = json.loads((folder / RECORD_NAME).read_text())
        return cls(location, FmriFeatureExtractor.from_pretrained(folder), read_manifest(folder), record)

    def windows(self, split: str) -> Any:
        """The `datasets.Dataset` of one split's windows, memory-mapped (a local folder's Arrow files
        as they are; a Hub store's through `datasets.load_dataset`, that split's files only). Only
        this split's files are opened. Rows in shard order, then scan order."""
        import datasets

        if split not in SPLITS:
            raise FmriInputError(f"split: expected one of {SPLITS}, found {split!r}")
        pattern = f"{split}-*-{self.record['sha256'][:12]}.arrow"
        features = store_features(self.feature_extractor.num_rois, self.feature_extractor.window_length)
        if not Path(self.location).exists():
            return datasets.load_dataset(
                self.location, data_files={split: f"data/{CONFIG_NAME}/{pattern}"}, split=split, features=features
            )
        files = sorted((Path(self.location) / "data" / CONFIG_NAME).glob(pattern))
        if not files:
            return datasets.Dataset.from_dict({name: [] for name in features}, features=features)
        return datasets.concatenate_datasets([datasets.Dataset.from_file(str(path)) for path in files])


__all__ = [
    "StoreSummary",
    "WindowStore",
    "build_store_shards",
    "build_window_store",
    "merge_store",
    "prepare_store",
    "shard_tables",
    "store_config",
    "store_features",
    "write_shard",
]
