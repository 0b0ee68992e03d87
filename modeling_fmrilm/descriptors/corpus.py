"""Build the descriptor corpus: scans -> features -> z-scores -> text -> a Hugging Face dataset folder.

Layout written to `output_dir`:

    README.md                               dataset card (YAML `configs:`, features, provenance)
    cohort_reference.json / .npz            the reference the z-scores are measured against
    data/descriptors/{split}-NNNNN.parquet  one file per shard and split (train/validation/test)

Scans stream through three passes over the source (survey/validation, reference fit on a seeded
subset of the training subjects, features shard by shard), so memory is bounded by the shard size
and the fit subset, not by the cohort. Work happens in `output_dir/.build/`: every finished
feature shard is an `.npz` written atomically (temp + rename), so a rerun with the same inputs and
settings resumes from the finished shards; the split files appear in `data/` only when all of
them are written (one directory rename), so an interrupted build leaves no half-written split.
Splits are made by subject within each dataset (seeded), and the reference (tangent mean,
gradient reference, ICA mixing, per-dataset norms) is fitted on the training split only.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from ..errors import FmriInputError
from ..io import FmriScan
from . import text as descriptor_text
from .reference import (
    DESCRIBED,
    DOMAINS,
    SCALARS,
    VECTORS,
    CohortReference,
    DescriptorSettings,
    compute_features,
    fit_norms,
    fit_structure,
    validate_scan,
    zscores,
)

SPLITS = ("train", "validation", "test")
CONFIG_NAME = "descriptors"
LIBRARIES = ("numpy", "scipy", "scikit-learn", "nilearn", "networkx", "pyarrow")
ScanSource = Sequence[FmriScan] | Callable[[], Iterable[FmriScan]]


@dataclass
class ScanInfo:
    """What the survey pass keeps of a scan (the data is re-read later)."""

    index: int
    name: str
    subject: str
    session: str | None
    dataset: str
    tr: float
    n_timepoints: int
    split: str = ""

    @property
    def key(self) -> str:
        """Machine-independent scan id, `dataset/subject[/session]/file name`: the record's `scan`
        column and the seed of its phrasing (an absolute path would change both between machines)."""
        parts = [self.dataset, self.subject, self.session, Path(self.name).name]
        return "/".join(part for part in parts if part)


@dataclass
class CorpusSummary:
    """Result of `build_corpus`."""

    folder: Path
    split_sizes: dict[str, int]
    skipped: list[str] = field(default_factory=list)
    reused_shards: int = 0


def _scans(source: ScanSource) -> Iterator[FmriScan]:
    return iter(source() if callable(source) else source)


def survey(
    source: ScanSource, n_rois: int, settings: DescriptorSettings, skip_bad: bool = False, progress: bool = True
) -> tuple[list[ScanInfo], list[str]]:
    """Validate every scan once; returns the good scans' infos and one message per skipped scan."""
    infos, skipped = [], []
    for index, scan in enumerate(tqdm(_scans(source), desc="checking scans", disable=not progress)):
        try:
            validate_scan(scan.data, scan.tr, scan.name, n_rois, settings)
        except FmriInputError as error:
            if not skip_bad:
                raise
            skipped.append(str(error))
            print(f"skipped: {error}", file=sys.stderr)
            continue
        infos.append(ScanInfo(index, scan.name, scan.subject, scan.session, scan.dataset, float(scan.tr), scan.n_timepoints))
    return infos, skipped


def assign_splits(infos: Sequence[ScanInfo], fractions: Sequence[float], seed: int) -> None:
    """Set `info.split` by subject within each dataset (seeded permutation of sorted subject ids).

    Each split gets `round(fraction * n_subjects)` subjects (at least one when the dataset has three
    or more subjects); training gets the rest. A subject never appears in two splits.
    """
    for dataset in sorted({info.dataset for info in infos}):
        subjects = sorted({info.subject for info in infos if info.dataset == dataset})
        order = np.random.default_rng([seed, zlib.crc32(dataset.encode())]).permutation(len(subjects))
        n = len(subjects)
        held = [max(1, round(f * n)) if n >= 3 else 0 for f in fractions[1:]]
        bounds = np.cumsum([n - sum(held), *held])
        split_of = {subjects[i]: SPLITS[int(np.searchsorted(bounds, rank, side="right"))] for rank, i in enumerate(order)}
        for info in infos:
            if info.dataset == dataset:
                info.split = split_of[info.subject]


def _grouped(items: Sequence[tuple[int, np.ndarray, float]]) -> Iterator[tuple[list[int], np.ndarray, float]]:
    """Group `(position, data, tr)` by shape and TR: yields positions, stacked `(n, R, T)`, TR."""
    groups: dict[tuple[int, float], list[int]] = {}
    for position, (_, data, tr) in enumerate(items):
        groups.setdefault((data.shape[1], tr), []).append(position)
    for (_, tr), positions in groups.items():
        yield [items[p][0] for p in positions], np.stack([items[p][1] for p in positions]), tr


def shard_features(items: Sequence[tuple[int, np.ndarray, float]], reference: CohortReference) -> dict[str, np.ndarray]:
    """Features of one shard `[(row, data (R, T), tr), ...]`, rows ordered as given."""
    out: dict[str, np.ndarray] = {}
    for rows, batch, tr in _grouped(items):
        features = compute_features(batch, tr, reference)
        for name, values in features.items():
            if name not in out:
                out[name] = np.zeros((len(items), *values.shape[1:]))
            out[name][rows] = values
    return out


def _atomic_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as handle:
        np.savez(handle, **arrays)
    temporary.replace(path)


def _fingerprint(infos: Sequence[ScanInfo], settings: DescriptorSettings, labels: Sequence[str], extra: dict) -> str:
    state = {"scans": [vars(i) for i in infos], "settings": settings.to_dict(), "labels": list(labels), **extra}
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries the descriptors depend on."""
    return {name: importlib.metadata.version(name) for name in LIBRARIES}


def _fit_reference(
    source: ScanSource, infos: Sequence[ScanInfo], labels: Sequence[str], atlas: str, settings: DescriptorSettings
) -> CohortReference:
    train = [info.index for info in infos if info.split == "train"]
    rng = np.random.default_rng(settings.seed)
    chosen = set(rng.choice(train, min(len(train), settings.max_fit_scans), replace=False).tolist()) if train else set()
    items = [(0, scan.data, float(scan.tr)) for i, scan in enumerate(_scans(source)) if i in chosen]
    return fit_structure((batch for _, batch, _ in _grouped(items)), labels, atlas, settings)


def _shards(infos: Sequence[ScanInfo], shard_size: int) -> list[list[ScanInfo]]:
    return [list(infos[i : i + shard_size]) for i in range(0, len(infos), shard_size)]


def _compute_shards(
    source: ScanSource,
    shards: list[list[ScanInfo]],
    raw_dir: Path,
    reference: CohortReference,
    num_proc: int,
    progress: bool,
) -> int:
    """Compute every missing raw shard; returns how many finished shards were reused."""
    todo = {k for k in range(len(shards)) if not (raw_dir / f"shard-{k:05d}.npz").exists()}
    shard_of = {info.index: k for k, shard in enumerate(shards) for info in shard}
    position = {info.index: row for shard in shards for row, info in enumerate(shard)}
    pending: dict[int, list[tuple[int, np.ndarray, float]]] = {k: [] for k in todo}
    bar = tqdm(total=len(todo), desc="descriptor shards", disable=not progress)
    executor = ProcessPoolExecutor(num_proc) if num_proc > 1 and len(todo) > 1 else None
    futures = {}

    def finish(k: int, features: dict[str, np.ndarray]) -> None:
        _atomic_npz(raw_dir / f"shard-{k:05d}.npz", features)
        bar.update()

    try:
        if todo:
            for index, scan in enumerate(_scans(source)):
                k = shard_of.get(index)
                if k not in pending:
                    continue
                pending[k].append((position[index], np.asarray(scan.data), float(scan.tr)))
                if len(pending[k]) < len(shards[k]):
                    continue
                items = pending.pop(k)
                if executor is None:
                    finish(k, shard_features(items, reference))
                    continue
                futures[k] = executor.submit(shard_features, items, reference)
                while len(futures) > 2 * num_proc:
                    done = next(iter(futures))
                    finish(done, futures.pop(done).result())
            for k, future in futures.items():
                finish(k, future.result())
    finally:
        bar.close()
        if executor is not None:
            executor.shutdown(cancel_futures=True)
    return len(shards) - len(todo)


def _records(shard: list[ScanInfo], features: dict[str, np.ndarray], reference: CohortReference, provenance: str) -> list[dict]:
    records = []
    for row, info in enumerate(shard):
        values = {name: features[name][row] for name in features}
        z = zscores(values, info.dataset, reference)
        record = {
            "subject": info.subject,
            "session": info.session,
            "dataset": info.dataset,
            "split": info.split,
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
        record["provenance"] = provenance
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
    body = [
        "# fMRI descriptor corpus",
        "",
        "Each record describes one parcellated resting-state scan by imaging features, their z-scores "
        "against a cohort reference fitted on the training split, and a text paragraph phrased from "
        "those z-scores (fmrilm, after fMRI-LM, Wei et al. 2025, arXiv 2511.21760).",
        "",
        "## Splits (by subject, seeded; no subject in two splits)",
        "",
        *[f"- {s}: {split_sizes[s]} scans" for s in splits],
        "",
        "## Columns",
        "",
        "- `subject`, `session`, `dataset`, `split`, `scan`, `atlas`, `tr`, `n_timepoints`; `text`: the description;",
        "- one column per scalar descriptor and `z_<name>` its z-score (rounded to 2 decimals, as printed): "
        + ", ".join(f"`{n}`" for n in SCALARS)
        + f" (the {len(DESCRIBED)} phrased in `text` are {', '.join(DESCRIBED)});",
        *[f"- `{n}`: list over {what}s" for n, what in VECTORS.items()],
        "- `z_network_pair_fc`; `provenance`: JSON of the settings below.",
        "",
        f"Networks ({len(reference.networks)}): {', '.join(reference.networks)}. Network pairs, in list order: "
        f"{', '.join(reference.network_pairs)}.",
        "",
        "## Provenance",
        "",
        f"- atlas: {reference.atlas} ({reference.n_rois} ROIs)",
        f"- graph: proportional threshold, density {settings.density}; Louvain seed {settings.seed}",
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
        "Load with `datasets.load_dataset(\"<this folder or repo>\")`.",
        "",
    ]
    return "\n".join(yaml + body)


def build_corpus(
    source: ScanSource,
    output_dir: str | Path,
    roi_labels: Sequence[str],
    atlas: str,
    settings: DescriptorSettings = DescriptorSettings(),
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    shard_size: int = 64,
    num_proc: int = 1,
    skip_bad: bool = False,
    progress: bool = True,
    command: str = "fmrilm descriptor corpus (Python API)",
) -> CorpusSummary:
    """Build (or resume) the corpus of `source` in `output_dir` (see module docstring).

    Args:
        source: a sequence of `FmriScan`, or a callable returning a fresh iterator over them
            (re-read once per pass, in the same order).
        roi_labels: network of each ROI (its length is the expected ROI count).
        atlas: atlas name recorded with the corpus.
        fractions: train/validation/test fractions of subjects per dataset.
        shard_size: scans per shard (per parquet file and per unit of resumable work).
        num_proc: processes computing shards.
        skip_bad: report and skip bad scans instead of stopping at the first.

    Raises:
        FmriInputError: a bad scan (named) without `skip_bad`, or too few scans to fit on.
    """
    output_dir = Path(output_dir)
    work = output_dir / ".build"
    infos, skipped = survey(source, len(roi_labels), settings, skip_bad, progress)
    if not infos:
        raise FmriInputError(f"descriptor corpus: no usable scans ({len(skipped)} skipped)")
    assign_splits(infos, fractions, settings.seed)
    fingerprint = _fingerprint(infos, settings, roi_labels, {"atlas": atlas, "fractions": list(fractions), "shard_size": shard_size})
    state_path = work / "state.json"
    if work.exists() and (not state_path.exists() or json.loads(state_path.read_text()).get("fingerprint") != fingerprint):
        shutil.rmtree(work)
    raw_dir = work / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    state_path.write_text(json.dumps({"fingerprint": fingerprint}))
    if (work / "structure.json").exists():
        reference = CohortReference.load(work, "structure")
    else:
        reference = _fit_reference(source, infos, roi_labels, atlas, settings)
        reference.save(work, "structure")
    shards = _shards(infos, shard_size)
    reused = _compute_shards(source, shards, raw_dir, reference, num_proc, progress)
    raw = [dict(np.load(raw_dir / f"shard-{k:05d}.npz", allow_pickle=False)) for k in range(len(shards))]
    train = np.array([info.split == "train" for info in infos])
    stacked = {name: np.concatenate([r[name] for r in raw])[train] for name in [*SCALARS, "network_pair_fc"]}
    reference.norms = fit_norms(stacked, [i.dataset for i in infos if i.split == "train"], settings.min_norm_scans)
    reference.save(work)
    provenance = {
        "atlas": atlas,
        "settings": settings.to_dict(),
        "libraries": library_versions(),
        "reference_version": reference.version,
        "fractions": list(fractions),
    }
    provenance_json = json.dumps(provenance, sort_keys=True)
    staged = work / "data" / CONFIG_NAME
    if staged.exists():
        shutil.rmtree(staged)
    staged.mkdir(parents=True)
    sizes = dict.fromkeys(SPLITS, 0)
    for k, (shard, features) in enumerate(zip(shards, raw)):
        records = _records(shard, features, reference, provenance_json)
        for split in SPLITS:
            rows = [r for r in records if r["split"] == split]
            if rows:
                temporary = staged / f".{split}-{k:05d}.parquet.tmp"
                pq.write_table(pa.Table.from_pylist(rows), temporary)
                temporary.replace(staged / f"{split}-{k:05d}.parquet")
                sizes[split] += len(rows)
    digest = content_digest(staged)
    for path in list(staged.glob("*.parquet")):
        path.rename(path.with_name(f"{path.stem}-{digest[:12]}.parquet"))
    (work / "README.md").write_text(dataset_card(reference, sizes, provenance, command, digest))
    final = output_dir / "data" / CONFIG_NAME
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, final)
    for name in ("cohort_reference.json", "cohort_reference.npz", "README.md"):
        os.replace(work / name, output_dir / name)
    shutil.rmtree(work)
    return CorpusSummary(output_dir, sizes, skipped, reused)


def push_to_hub(folder: str | Path, repo_id: str, token: str | None = None, private: bool = False, api=None) -> str:
    """Publish a corpus folder as a Hub dataset repo (`modeling_fmrilm.hub.push_folder`; `api`: an `HfApi`)."""
    from ..hub import push_folder

    return push_folder(folder, repo_id, "dataset", token=token, private=private, api=api)


def demo_corpus(scans: Sequence[FmriScan], output_dir: str | Path, roi_labels: Sequence[str] | None = None) -> CorpusSummary:
    """Build the corpus of the embedded scans and print its folder, split sizes and one description."""
    from ..io import aal2_table

    labels = list(roi_labels) if roi_labels is not None else aal2_table().systems
    print("== Descriptor corpus (features -> z-scores -> text)")
    summary = build_corpus(scans, output_dir, labels, scans[0].atlas, progress=False, command="fmrilm demo")
    print(f"corpus written to {summary.folder}: " + ", ".join(f"{s} {n}" for s, n in summary.split_sizes.items()))
    first = sorted((summary.folder / "data" / CONFIG_NAME).glob("train-*.parquet"))[0]
    record = pq.read_table(first, columns=["subject", "dataset", "text"]).slice(0, 1).to_pylist()[0]
    print(f"description of {record['dataset']}/{record['subject']}:\n{record['text']}")
    return summary
