"""The one subject split of the whole pipeline.

Every subject key `dataset/subject` is assigned to `train`, `validation` or `test` by a seeded
hash of the key itself, not by shuffling a list: the assignment of a subject never depends on
which other subjects are in the cohort, so a cohort that grows never moves a test subject into
training. The descriptor corpus writes the assignment as a manifest (`splits.json`) beside its
card; the training stages and the evaluation read that manifest (passing the corpus folder is
enough) and, for a subject the manifest does not list, apply the same function with the
manifest's seed and fractions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import write_text_atomically
from .errors import FmriInputError

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
MANIFEST_NAME = "splits.json"


def subject_key(dataset: str, subject: str) -> str:
    """The unit of splitting: `dataset/subject` (the same subject id in two datasets never collides)."""
    return f"{dataset}/{subject}"


def text_key(dataset: str, subject: str, session: str | None = None) -> str:
    """The key of a scan's text: `dataset/subject[/session]`."""
    return "/".join(part for part in (dataset, subject, session) if part)


def subject_of(key: str) -> str:
    """The `dataset/subject` part of a text key `dataset/subject[/session]`."""
    return "/".join(key.split("/")[:2])


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or min(values) < 0 or abs(sum(values) - 1.0) > 1e-6 or values[0] <= 0:
        raise FmriInputError(
            f"fractions: expected three non-negative train/validation/test fractions summing to 1 with "
            f"train > 0, found {tuple(fractions)}"
        )
    return values  # type: ignore[return-value]


def assign_split(key: str, fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0) -> str:
    """`train`, `validation` or `test` for one subject key, from a seeded SHA-256 hash of the key.

    The hash maps the key to a number in [0, 1); the fractions cut that interval in order.
    """
    train, validation, _ = _check_fractions(fractions)
    digest = hashlib.sha256(f"fmrilm-split:{seed}:{key}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    if position < train:
        return "train"
    return "validation" if position < train + validation else "test"


@dataclass
class SubjectSplit:
    """The assignment of subject keys to splits, with the seed and fractions that made it."""

    assignment: dict[str, str]
    seed: int = 0
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    source: str | None = field(default=None, compare=False)

    def subjects(self, split: str) -> list[str]:
        """Sorted subject keys of one split."""
        if split not in SPLITS:
            raise FmriInputError(f"split: expected one of {SPLITS}, found {split!r}")
        return sorted(key for key, value in self.assignment.items() if value == split)

    def of(self, key: str) -> str:
        """The split of `key`; a key the assignment does not list gets the same hash function."""
        return self.assignment.get(key) or assign_split(key, self.fractions, self.seed)

    def extended(self, keys: Iterable[str]) -> SubjectSplit:
        """This split with `keys` added (each by the hash function unless already listed)."""
        assignment = dict(self.assignment)
        for key in keys:
            assignment.setdefault(key, assign_split(key, self.fractions, self.seed))
        return SubjectSplit(assignment, self.seed, self.fractions, self.source)

    def to_json(self) -> dict:
        return {
            "seed": self.seed,
            "fractions": list(self.fractions),
            "method": "sha256(f'fmrilm-split:{seed}:{dataset}/{subject}') -> [0, 1), cut by the fractions",
            "subjects": dict(sorted(self.assignment.items())),
        }


def split_subjects(keys: Iterable[str], fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0) -> SubjectSplit:
    """Assign every subject key by `assign_split`."""
    fractions = _check_fractions(fractions)
    return SubjectSplit({key: assign_split(key, fractions, seed) for key in sorted(set(keys))}, seed, fractions)


def write_manifest(folder: str | Path, split: SubjectSplit) -> Path:
    """Write `folder/splits.json` atomically (`write_text_atomically`) and return its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MANIFEST_NAME
    write_text_atomically(path, json.dumps(split.to_json(), indent=2))
    return path


def read_manifest(folder_or_file: str | Path) -> SubjectSplit:
    """The split written by `write_manifest`, from the folder (e.g. the descriptor corpus) or the file.

    Raises:
        FmriInputError: no manifest there, or one that is not of this form.
    """
    path = Path(folder_or_file)
    path = path / MANIFEST_NAME if path.is_dir() else path
    if not path.is_file():
        raise FmriInputError(f"{path}: expected a subject-split manifest ({MANIFEST_NAME}), found no such file")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
        assignment = {str(k): str(v) for k, v in content["subjects"].items()}
        split = SubjectSplit(assignment, int(content["seed"]), _check_fractions(content["fractions"]), str(path))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise FmriInputError(
            f"{path}: expected a JSON manifest with 'seed', 'fractions' and 'subjects', could not read it ({error})"
        ) from None
    unknown = sorted({value for value in assignment.values()} - set(SPLITS))
    if unknown:
        raise FmriInputError(f"{path}: expected splits {SPLITS}, found {unknown}")
    return split


def resolve_split(
    keys: Iterable[str],
    manifest: str | Path | None = None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> SubjectSplit:
    """The split of `keys`: from the manifest in `manifest` (a corpus folder or the file) when given,
    else by `split_subjects`. Keys the manifest does not list are assigned by the same function
    with the manifest's seed and fractions."""
    if manifest is None:
        return split_subjects(keys, fractions, seed)
    return read_manifest(manifest).extended(keys)


def model_split(model_dir: str | Path) -> SubjectSplit | None:
    """The subject split a model was trained on, from its `training_record.json` (written by the
    training stages); `None` where the folder has no record or the record no split."""
    path = Path(model_dir) / "training_record.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if "split" not in record:
        return None
    split = record["split"]
    return SubjectSplit(dict(split["subjects"]), int(split["seed"]), tuple(split["fractions"]), str(path))


__all__ = [
    "DEFAULT_FRACTIONS",
    "MANIFEST_NAME",
    "SPLITS",
    "SubjectSplit",
    "assign_split",
    "model_split",
    "read_manifest",
    "resolve_split",
    "split_subjects",
    "subject_key",
    "subject_of",
    "text_key",
    "write_manifest",
]
