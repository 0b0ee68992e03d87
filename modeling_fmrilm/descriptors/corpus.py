"""Build the descriptor corpus: scans -> features -> z-scores -> text -> a Hugging Face dataset folder.

Layout written to `output_dir`:

    README.md                               dataset card (YAML `configs:`, features, provenance)
    splits.json                             the subject split (`modeling_fmrilm.splits` manifest)
    cohort_reference.json / .npz            the reference the z-scores are measured against
    data/descriptors/{split}-NNNNN-<digest>.parquet   one file per shard and split

Three steps, which `build_corpus` runs in a row in one process and which many processes or
machines can run apart (`datasets_scripts/build_descriptor_corpus.py --fit-reference-only`,
`--shard-index i --num-shards n`, `--merge`; a Slurm array job is one share per task):

1. `prepare`: survey every scan once (validation), assign each `dataset/subject` to a split with
   `modeling_fmrilm.splits` (seeded hash, or an existing manifest so a grown cohort keeps its
   assignment), and fit the cohort structure (tangent mean, gradient reference, group ICA) on a
   seeded subset of the training scans. Writes `.build/plan.json` and `.build/structure.*`.
2. `build_shards`: the features of shard `k` (`shard_size` consecutive scans) for every `k` with
   `k % num_shards == shard_index`, each written as `.build/raw/shard-k.npz` atomically (temp,
   fsync, rename: `modeling_fmrilm.atomic`). A finished shard is never computed again, so an
   interrupted share resumes; one that no longer reads whole (a crash of the machine) is named in a
   warning, moved aside as `shard-k.npz.corrupt` and computed again.
3. `merge`: the per-dataset norms, streamed over the training scans' shards; the records
   (z-scores, text); the parquet files, card, manifest and reference, staged in `.build/publish/`
   and moved into place only when all are written, so an interrupted build leaves no half-written
   split.

`prepare`, `merge` and `build_corpus` hold the output folder's lock (`modeling_fmrilm.locking`):
a second build of the same folder fails at once, naming the holder's pid and host. The shares of
one build run side by side by design and take no lock: each shard file is written under a name of
its own and renamed, so two writers of one shard leave one whole file.

Memory is bounded by the shard size and the reference-fit subset, not by the cohort. A rerun of
`prepare` with other inputs or settings starts the work folder afresh; with the same ones it
keeps the fitted structure and the finished shards.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import logging
import shutil
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from ..atomic import write_atomically
from ..errors import FmriInputError
from ..io import FmriScan
from ..locking import folder_lock
from ..sharded_build import (
    PLAN_NAME,
    BuildPlan,
    ScanInfo,
    ScanSource,
    publish_build,
    run_shards,
    selected_scans,
    set_aside,
    survey_scans,
)
from ..splits import DEFAULT_FRACTIONS, MANIFEST_NAME, SPLITS, resolve_split, write_manifest
from . import graph
from . import text as descriptor_text
from .reference import (
    DESCRIBED,
    DOMAINS,
    NORMED,
    SCALARS,
    VECTORS,
    CohortNorms,
    CohortReference,
    DescriptorSettings,
    compute_features,
    fit_structure,
    target_length,
    validate_scan,
    zscores,
)

logger = logging.getLogger(__name__)

CONFIG_NAME = "descriptors"
LIBRARIES = ("numpy", "scipy", "scikit-learn", "scikit-network", "nilearn", "pyarrow")
WORK_DIR = ".build"
STRUCTURE = "structure"
PREPARE_HINT = "fit the reference first (build_descriptor_corpus.py --fit-reference-only)"
FEATURE_BATCH = 16  # scans per compute_features call: bounds memory at any shard size (26 MB per 450x450 stack)
DEMO_FRACTIONS = (0.6, 0.2, 0.2)  # 12 embedded subjects, seed 0: 6 train, 3 validation, 3 test
UNREACHABLE = "pairs without a path add 0 to global and local efficiency (1 / inf), as networkx defines them"


@dataclass
class CorpusSummary:
    """Result of `build_corpus` and `merge`."""

    folder: Path
    split_sizes: dict[str, int]
    skipped: list[str] = field(default_factory=list)
    reused_shards: int = 0


def corpus_config(roi_labels: Sequence[str], atlas: str, settings: DescriptorSettings, shard_size: int) -> dict:
    """Everything besides the scans that fixes the shards' contents (compared by shares and merge)."""
    if shard_size < 1:
        raise FmriInputError(f"shard_size: expected a positive number of scans, found {shard_size}")
    config = {
        "atlas": atlas,
        "roi_labels": list(roi_labels),
        "settings": settings.to_dict(),
        "shard_size": int(shard_size),
    }
    return json.loads(json.dumps(config))  # as a saved plan holds it (tuples become lists)


def survey(
    source: ScanSource, n_rois: int, settings: DescriptorSettings, skip_bad: bool = False, progress: bool = True
) -> tuple[list[ScanInfo], list[str]]:
    """Validate every scan once; returns the good scans' infos and one message per skipped scan."""
    return survey_scans(
        source, lambda scan: validate_scan(scan.data, scan.tr, scan.name, n_rois, settings), skip_bad, progress
    )


def _batches(
    items: Iterable[tuple[int, np.ndarray, float]], batch_size: int = FEATURE_BATCH
) -> Iterator[tuple[list[int], np.ndarray, float]]:
    """Group `(row, data (R, T), tr)` by length and TR into batches of `batch_size`, each yielded as
    soon as it is full (the partial ones at the end): rows, stacked `(n, R, T)`, TR. Streams: at most
    one partial batch per (length, TR) is held."""
    pending: dict[tuple[int, float], list[tuple[int, np.ndarray]]] = {}

    def stacked(group: list[tuple[int, np.ndarray]], tr: float) -> tuple[list[int], np.ndarray, float]:
        return [row for row, _ in group], np.stack([data for _, data in group]), tr

    for row, data, tr in items:
        shape = (data.shape[-1], tr)
        pending.setdefault(shape, []).append((row, data))
        if len(pending[shape]) == batch_size:
            yield stacked(pending.pop(shape), tr)
    for (_, tr), group in pending.items():
        yield stacked(group, tr)


def shard_features(
    items: Sequence[tuple[int, np.ndarray, float]], reference: CohortReference
) -> dict[str, np.ndarray]:
    """Features of one shard `[(row, data (R, T), tr), ...]`, rows ordered as given."""
    out: dict[str, np.ndarray] = {}
    for rows, batch, tr in _batches(items):
        features = compute_features(batch, tr, reference)
        for name, values in features.items():
            if name not in out:
                out[name] = np.zeros((len(items), *values.shape[1:]), dtype=values.dtype)
            out[name][rows] = values
    return out


def _shard_task(
    reference: CohortReference, shard: int, infos: Sequence[ScanInfo], scans: Sequence[FmriScan]
) -> dict[str, np.ndarray]:
    """`shard_features` of one shard's scans (the task `run_shards` runs, here or in a worker)."""
    return shard_features([(row, np.asarray(scan.data), float(scan.tr)) for row, scan in enumerate(scans)], reference)


def _raw_path(work: Path, shard: int) -> Path:
    return work / "raw" / f"shard-{shard:05d}.npz"


def _finished(work: Path, shard: int) -> bool:
    """Whether shard `shard` was written and reads whole; one that does not is named in a warning
    and moved aside (`shard-k.npz.corrupt`), so that it is computed again."""
    path = _raw_path(work, shard)
    if not path.exists():
        return False
    try:
        with np.load(path, allow_pickle=False) as raw:
            for name in raw.files:
                raw[name]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        set_aside(path, "truncated or corrupt shard", error)
        return False
    return True


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries the descriptors depend on."""
    return {name: importlib.metadata.version(name) for name in LIBRARIES}


def _fit_reference(source: ScanSource, plan: BuildPlan, settings: DescriptorSettings) -> CohortReference:
    """Fit the structure on a seeded subset of the training scans, streamed in batches one (length,
    TR) group after another (groups in order of first appearance, scans in source order), each
    scan read once."""
    train = [info.index for info in plan.infos if info.split == "train"]
    rng = np.random.default_rng(settings.seed)
    chosen = set(rng.choice(train, min(len(train), settings.max_fit_scans), replace=False).tolist() if train else [])
    groups: dict[tuple[int, float], list[int]] = {}
    for info in plan.infos:
        if info.index in chosen:
            groups.setdefault((info.n_timepoints, info.tr), []).append(info.index)
    n_frames = sum(len(indices) * target_length(n_t, tr, settings) for (n_t, tr), indices in groups.items())

    def batches() -> Iterator[tuple[np.ndarray, float]]:
        for indices in groups.values():
            items = (
                (0, np.asarray(scan.data, dtype=np.float32), float(scan.tr))
                for _, scan in selected_scans(source, indices)
            )
            yield from ((batch, tr) for _, batch, tr in _batches(items))

    config = plan.config
    return fit_structure(batches(), config["roi_labels"], config["atlas"], settings, n_frames)


def prepare(
    source: ScanSource,
    output_dir: str | Path,
    roi_labels: Sequence[str],
    atlas: str,
    settings: DescriptorSettings = DescriptorSettings(),
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    split_manifest: str | Path | None = None,
    shard_size: int = 64,
    skip_bad: bool = False,
    progress: bool = True,
) -> BuildPlan:
    """Step 1 (module docstring): survey, split and fit the cohort structure into `output_dir/.build`.

    The split is `modeling_fmrilm.splits.resolve_split` of the `dataset/subject` keys with
    `fractions` and `settings.seed`, or the assignment in `split_manifest` (a `splits.json` or a
    corpus folder) extended by the same hash for subjects it does not list.
    """
    work = Path(output_dir) / WORK_DIR
    with folder_lock(output_dir, "a corpus build"):
        infos, skipped = survey(source, len(roi_labels), settings, skip_bad, progress)
        if not infos:
            raise FmriInputError(f"descriptor corpus: no usable scans ({len(skipped)} skipped)")
        split = resolve_split([info.subject_key for info in infos], split_manifest, fractions, settings.seed)
        for info in infos:
            info.split = split.of(info.subject_key)
        plan = BuildPlan(infos, split, corpus_config(roi_labels, atlas, settings, shard_size), skipped)
        plan.install(work, "raw")
        if not (work / f"{STRUCTURE}.json").exists():
            _fit_reference(source, plan, settings).save(work, STRUCTURE)
        return plan


def build_shards(
    source: ScanSource,
    output_dir: str | Path,
    shard_index: int = 0,
    num_shards: int = 1,
    num_proc: int = 1,
    progress: bool = True,
    expected_config: dict | None = None,
) -> int:
    """Step 2: compute the missing shards `k` with `k % num_shards == shard_index`; returns how many
    of this share's shards were already finished (reused).

    `source` must list the scans in the order `prepare` saw them (each scan's name is checked).
    """
    if not 0 <= shard_index < num_shards:
        raise FmriInputError(
            f"shard_index: expected 0 <= shard_index < num_shards ({num_shards}), found {shard_index}"
        )
    work = Path(output_dir) / WORK_DIR
    plan = BuildPlan.load(work, expected_config, PREPARE_HINT)
    reference = CohortReference.load(work, STRUCTURE)
    shards = plan.shards
    mine = [k for k in range(len(shards)) if k % num_shards == shard_index]
    todo = [k for k in mine if not _finished(work, k)]

    def save(k: int, features: dict[str, np.ndarray]) -> None:
        write_atomically(_raw_path(work, k), lambda handle: np.savez(handle, **features))

    task = functools.partial(_shard_task, reference)
    run_shards(
        source,
        plan,
        todo,
        task,
        save,
        num_proc,
        progress,
        f"descriptor shards (share {shard_index}/{num_shards})",
        work / PLAN_NAME,
    )
    return len(mine) - len(todo)


def _provenance(plan: BuildPlan, reference: CohortReference) -> dict:
    return {
        "atlas": reference.atlas,
        "settings": reference.settings.to_dict(),
        "libraries": library_versions(),
        "reference_version": reference.version,
        "split": {"seed": plan.split.seed, "fractions": list(plan.split.fractions), "manifest": MANIFEST_NAME},
        "graph": {**graph.library_versions(), "density": reference.settings.density, "unreachable_pairs": UNREACHABLE},
    }


def _records(
    shard: list[ScanInfo], features: dict[str, np.ndarray], reference: CohortReference, provenance: dict
) -> list[dict]:
    records = []
    for row, info in enumerate(shard):
        values = {name: features[name][row] for name in features}
        z = zscores(values, info.dataset, reference)
        components = int(values["graph_components"])
        record = {
            "subject": info.subject,
            "session": info.session,
            "dataset": info.dataset,
            "split": info.split,
            "text_key": info.text_key,
            "scan": info.key,
            "atlas": reference.atlas,
            "tr": info.tr,
            "n_timepoints": info.n_timepoints,
            "text": descriptor_text.describe(
                {name: float(z[name]) for name in DESCRIBED},
                reference.network_pairs,
                z["network_pair_fc"],
                info.dataset,
                info.key,
                DOMAINS,
                reference.settings.seed,
            ),
        }
        for name in SCALARS:
            record[name] = float(values[name])
            record[f"z_{name}"] = float(z[name])
        for name in VECTORS:
            record[name] = [float(v) for v in values[name]]
        record["z_network_pair_fc"] = [float(v) for v in z["network_pair_fc"]]
        record["graph_components"] = components
        scan_graph = {**provenance["graph"], "components": components, "connected": components == 1}
        record["provenance"] = json.dumps({**provenance, "graph": scan_graph}, sort_keys=True)
        records.append(record)
    return records


def content_digest(folder: Path) -> str:
    """sha256 over the names and bytes of the parquet files in `folder` (sorted)."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.parquet")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def dataset_card(
    reference: CohortReference, split_sizes: dict[str, int], provenance: dict, command: str, digest: str
) -> str:
    """README.md of the corpus: YAML `configs:` + features, provenance and how it was built.

    The data files carry the first 12 hex digits of the content digest in their names, and the
    YAML patterns name it: `datasets` keys its cache of a local folder on the YAML metadata only,
    so two corpora with the same card would otherwise share one cache entry and `load_dataset`
    would silently return the first one's rows for both.
    """
    splits = [s for s in SPLITS if split_sizes.get(s)]
    yaml = ["---", "configs:", f"- config_name: {CONFIG_NAME}", "  default: true", "  data_files:"]
    for split in splits:
        yaml += [f"  - split: {split}", f"    path: data/{CONFIG_NAME}/{split}-*-{digest[:12]}.parquet"]
    yaml += ["license: other", "tags:", "- fmri", "- neuroscience", "- fmrilm", "---", ""]
    settings = reference.settings
    split_info, graph_info = provenance["split"], provenance["graph"]
    body = [
        "# fMRI descriptor corpus",
        "",
        "Each record describes one parcellated resting-state scan by imaging features, their z-scores "
        "against a cohort reference fitted on the training split, and a text paragraph phrased from "
        "those z-scores (fmrilm, after fMRI-LM, Wei et al. 2025, arXiv 2511.21760).",
        "",
        "## Splits",
        "",
        f"By subject: each `dataset/subject` goes to one split by a seeded hash of the key (seed "
        f"{split_info['seed']}, fractions {split_info['fractions']}), so no subject is in two splits and a cohort "
        f"that grows keeps every subject's split. The assignment is `{MANIFEST_NAME}` (`modeling_fmrilm.splits`).",
        "",
        *[f"- {s}: {split_sizes[s]} scans" for s in splits],
        "",
        "## Columns",
        "",
        "- `subject`, `session`, `dataset`, `split`, `text_key` (`dataset/subject[/session]`, the key of the text), "
        "`scan`, `atlas`, `tr`, `n_timepoints` (as acquired); `text`: the description;",
        "- one column per scalar descriptor and `z_<name>` its z-score (rounded to 2 decimals, as printed): "
        + ", ".join(f"`{n}`" for n in SCALARS)
        + f" (the {len(DESCRIBED)} phrased in `text` are {', '.join(DESCRIBED)});",
        *[f"- `{n}`: list over {what}s" for n, what in VECTORS.items()],
        "- `z_network_pair_fc`; `graph_components`: connected components of the thresholded graph (1 when "
        "connected); `provenance`: JSON of the settings below, with the scan's graph components.",
        "",
        f"Networks ({len(reference.networks)}): {', '.join(reference.networks)}. Network pairs, in list order: "
        f"{', '.join(reference.network_pairs)}.",
        "",
        "## Provenance",
        "",
        f"- atlas: {reference.atlas} ({reference.n_rois} ROIs)",
        f"- every series resampled to TR {settings.target_tr} s (the model's TR) before any descriptor, with "
        "`modeling_fmrilm.feature_extraction_fmrilm.resample`",
        f"- graph: proportional threshold, density {settings.density}; Louvain {graph_info['louvain']} seed "
        f"{settings.seed}; weighted shortest paths {graph_info['shortest_paths']} (scipy.sparse.csgraph); "
        f"{graph_info['unreachable_pairs']}",
        f"- gradients: diffusion map, kernel {settings.gradient_kernel}, sparsity {settings.gradient_sparsity}, "
        f"{settings.n_gradients} gradients, Procrustes-aligned to the reference",
        f"- ICA: FastICA, {settings.n_ica_components} components, seed {settings.seed}",
        f"- ALFF band {settings.alff_band[0]}-{settings.alff_band[1]} Hz, fALFF full range up to {settings.full_range_max} Hz",
        f"- covariance for partial/tangent: {settings.covariance_estimator}",
        f"- library versions: {json.dumps(provenance['libraries'])}",
        f"- reference: `cohort_reference.json` + `cohort_reference.npz` ({reference.version})",
        f"- data files: sha256 {digest} (names and bytes of the parquet files, sorted)",
        "",
        "## How it was built",
        "",
        "```",
        command,
        "```",
        "",
        'Load with `datasets.load_dataset("<this folder or repo>")`.',
        "",
    ]
    return "\n".join(yaml + body)


def merge(
    output_dir: str | Path,
    command: str = "fmrilm descriptor corpus (Python API)",
    progress: bool = True,
    expected_config: dict | None = None,
) -> CorpusSummary:
    """Step 3: norms, records and the published folder, from a prepared build whose shards are all finished."""
    output_dir = Path(output_dir)
    with folder_lock(output_dir, "a corpus build"):
        work = output_dir / WORK_DIR
        plan = BuildPlan.load(work, expected_config, PREPARE_HINT)
        reference = CohortReference.load(work, STRUCTURE)
        shards = plan.shards
        missing = [k for k in range(len(shards)) if not _finished(work, k)]
        if missing:
            raise FmriInputError(
                f"{work / 'raw'}: expected {len(shards)} finished shards, {len(missing)} missing ({missing[:20]}); "
                "shard k belongs to share k % num_shards: run those shares (--shard-index i --num-shards n) first"
            )
        norms = CohortNorms()
        for k, shard in enumerate(shards):
            train = np.array([info.split == "train" for info in shard])
            if train.any():
                with np.load(_raw_path(work, k), allow_pickle=False) as raw:
                    norms.add(
                        {name: raw[name][train] for name in NORMED}, [i.dataset for i in shard if i.split == "train"]
                    )
        reference.norms = norms.norms(reference.settings.min_norm_scans)
        provenance = _provenance(plan, reference)
        publish = work / "publish"
        if publish.exists():
            shutil.rmtree(publish)
        staged = publish / "data" / CONFIG_NAME
        staged.mkdir(parents=True)
        sizes = dict.fromkeys(SPLITS, 0)
        for k, shard in enumerate(tqdm(shards, desc="records", disable=not progress)):
            with np.load(_raw_path(work, k), allow_pickle=False) as raw:
                records = _records(shard, {name: raw[name] for name in raw.files}, reference, provenance)
            for split in SPLITS:
                rows = [r for r in records if r["split"] == split]
                if rows:
                    pq.write_table(pa.Table.from_pylist(rows), staged / f"{split}-{k:05d}.parquet")
                    sizes[split] += len(rows)
        digest = content_digest(staged)
        for path in list(staged.glob("*.parquet")):
            path.rename(path.with_name(f"{path.stem}-{digest[:12]}.parquet"))
        (publish / "README.md").write_text(dataset_card(reference, sizes, provenance, command, digest))
        reference.save(publish)
        write_manifest(publish, plan.split)
        publish_build(
            work,
            output_dir,
            CONFIG_NAME,
            ("cohort_reference.json", "cohort_reference.npz", MANIFEST_NAME, "README.md"),
        )
        return CorpusSummary(output_dir, sizes, plan.skipped)


def build_corpus(
    source: ScanSource,
    output_dir: str | Path,
    roi_labels: Sequence[str],
    atlas: str,
    settings: DescriptorSettings = DescriptorSettings(),
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    shard_size: int = 64,
    num_proc: int = 1,
    skip_bad: bool = False,
    progress: bool = True,
    command: str = "fmrilm descriptor corpus (Python API)",
    split_manifest: str | Path | None = None,
) -> CorpusSummary:
    """Build (or resume) the corpus of `source` in `output_dir`: `prepare`, `build_shards` of every
    shard, `merge` (see the module docstring).

    Args:
        source: a sequence of `FmriScan` (may be lazy: only the needed items are read), or a
            callable returning a fresh iterator over them (re-read once per pass, in the same order).
        roi_labels: network of each ROI (its length is the expected ROI count).
        atlas: atlas name recorded with the corpus.
        settings: descriptor settings; `settings.seed` also seeds the subject split.
        fractions: train/validation/test fractions of the subject split.
        shard_size: scans per shard (per parquet file and per unit of resumable work).
        num_proc: processes computing shards.
        skip_bad: report and skip bad scans instead of stopping at the first.
        split_manifest: an existing `splits.json` (or corpus folder) whose assignment is kept.

    Raises:
        FmriInputError: a bad scan (named) without `skip_bad`, or too few scans to fit on.
    """
    with folder_lock(output_dir, "a corpus build"):
        prepare(
            source, output_dir, roi_labels, atlas, settings, fractions, split_manifest, shard_size, skip_bad, progress
        )
        reused = build_shards(source, output_dir, num_proc=num_proc, progress=progress)
        summary = merge(output_dir, command, progress)
    summary.reused_shards = reused
    return summary


def push_to_hub(folder: str | Path, repo_id: str, token: str | None = None, private: bool = False, api=None) -> str:
    """Publish a corpus folder as a Hub dataset repo (`modeling_fmrilm.hub.push_folder`; `api`: an `HfApi`)."""
    from ..hub import push_folder

    return push_folder(folder, repo_id, "dataset", token=token, private=private, api=api)


def demo_corpus(
    scans: Sequence[FmriScan], output_dir: str | Path, roi_labels: Sequence[str] | None = None
) -> CorpusSummary:
    """Build the corpus of the embedded scans and report it (`report_corpus`).

    The split uses fractions (0.6, 0.2, 0.2) and seed 0: on the 12 embedded subjects, 6 train,
    3 validation and 3 test, both cohorts in the test split.
    """
    from ..io import aal2_table

    labels = list(roi_labels) if roi_labels is not None else aal2_table().systems
    logger.info("== Descriptor corpus (features -> z-scores -> text)")
    summary = build_corpus(
        scans, output_dir, labels, scans[0].atlas, fractions=DEMO_FRACTIONS, progress=False, command="fmrilm demo"
    )
    report_corpus(summary)
    return summary


def report_corpus(summary: CorpusSummary) -> None:
    """Log a built corpus's folder, split sizes and the first training subject's description."""
    logger.info(
        f"corpus written to {summary.folder}: " + ", ".join(f"{s} {n}" for s, n in summary.split_sizes.items())
    )
    first = sorted((summary.folder / "data" / CONFIG_NAME).glob("train-*.parquet"))[0]
    record = pq.read_table(first, columns=["subject", "dataset", "text"]).slice(0, 1).to_pylist()[0]
    logger.info(f"description of {record['dataset']}/{record['subject']}:\n{record['text']}")


__all__ = [
    "CONFIG_NAME",
    "DEMO_FRACTIONS",
    "FEATURE_BATCH",
    "LIBRARIES",
    "PREPARE_HINT",
    "STRUCTURE",
    "UNREACHABLE",
    "WORK_DIR",
    "CorpusSummary",
    "build_corpus",
    "build_shards",
    "content_digest",
    "corpus_config",
    "dataset_card",
    "demo_corpus",
    "library_versions",
    "merge",
    "prepare",
    "push_to_hub",
    "report_corpus",
    "shard_features",
    "survey",
]
