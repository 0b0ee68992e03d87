"""BIDS file-name entities, and JSON metadata found by the BIDS inheritance principle.

Entities are parsed by `nilearn.interfaces.bids.parse_bids_filename`. A scan's metadata is the
merge of every applicable JSON file (BIDS "inheritance principle"): a JSON file applies to a data
file when it sits in the data file's folder or a folder above it, no higher than the dataset root,
has the same suffix (`bold`, `timeseries`, ...) and its entities are a subset of the data file's
(same keys, same values). They are merged from the dataset root down, and within a folder from
fewer entities to more, so the nearest and most specific value wins: `task-rest_bold.json` at the
root gives `RepetitionTime` to every `sub-*/func/sub-*_task-rest_bold.nii.gz`, and a
`sub-01/sub-01_task-rest_bold.json` overrides it for subject 01.

The dataset root is the nearest folder above the file holding `dataset_description.json`; without
one, the folder holding the file's subject folder (`sub-<label>`, the label of the file's `sub`
entity); without that, the file's own folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import FmriInputError

_NIFTI_SUFFIXES = (".nii.gz", ".nii", ".dtseries.nii")


def strip_extension(path: str | Path) -> str:
    """File name without its (possibly double) extension: `sub-01_bold.nii.gz` -> `sub-01_bold`."""
    name = Path(path).name
    for suffix in _NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _name_parts(path: str | Path) -> tuple[dict[str, str | None], str]:
    """nilearn's parse of a file name: every `_`-separated part (value `None` for a bare word), suffix."""
    from nilearn.interfaces.bids import parse_bids_filename  # imported on use: nilearn takes ~1 s to import

    parsed = parse_bids_filename(str(path))
    return parsed["entities"], parsed["suffix"]


def parse_entities(path: str | Path) -> dict[str, str]:
    """BIDS key-value entities of a file name: `sub-01_ses-2_task-rest_bold.nii.gz` -> `{sub: 01, ses: 2, task: rest}`.

    Parsed by `nilearn.interfaces.bids.parse_bids_filename`; parts without a value (words of a
    non-BIDS name) are left out.
    """
    return {key: value for key, value in _name_parts(path)[0].items() if value is not None}


def dataset_root(path: str | Path) -> Path:
    """The BIDS dataset folder `path` belongs to (see the module's docstring for the rule)."""
    folder = Path(path).resolve().parent
    ancestors = [folder, *folder.parents]
    for candidate in ancestors:
        if (candidate / "dataset_description.json").is_file():
            return candidate
    subject = parse_entities(path).get("sub")
    subject_folder = next((a for a in ancestors if subject is not None and a.name == f"sub-{subject}"), None)
    return subject_folder.parent if subject_folder is not None else folder


def applicable_sidecars(path: str | Path) -> list[Path]:
    """The JSON files whose metadata apply to `path`, in the order they are merged (last wins)."""
    path = Path(path).resolve()
    entities, suffix = _name_parts(path)
    root = dataset_root(path)
    folders = [path.parent, *path.parent.parents]
    levels = folders[: folders.index(root) + 1][::-1]  # root first
    found = []
    for depth, folder in enumerate(levels):
        for candidate in folder.glob(f"*{suffix}.json"):
            candidate_entities, candidate_suffix = _name_parts(candidate)
            if candidate_suffix == suffix and candidate_entities.items() <= entities.items():
                found.append((depth, len(candidate_entities), candidate))
    found.sort(key=lambda item: (item[0], item[1], item[2].name))
    _check_unordered_conflicts(found)
    return [candidate for _, _, candidate in found]


def _check_unordered_conflicts(found: list[tuple[int, int, Path]]) -> None:
    """Two files in one folder with as many entities have no order: they must not set a key differently."""
    groups: dict[tuple[int, int], list[Path]] = {}
    for depth, count, candidate in found:
        groups.setdefault((depth, count), []).append(candidate)
    for files in groups.values():
        seen: dict[str, tuple[Any, Path]] = {}
        for file in files:
            for key, value in _read_json(file).items():
                if key in seen and seen[key][0] != value:
                    raise FmriInputError(
                        f"{file}: sets {key}={value!r} while {seen[key][1].name} in the same folder, with as many "
                        f"entities, sets {key}={seen[key][0]!r}; BIDS inheritance cannot order them: remove one"
                    )
                seen[key] = (value, file)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FmriInputError(
            f"{path}: expected a JSON object of BIDS metadata, found unreadable JSON ({error})"
        ) from None
    if not isinstance(content, dict):
        raise FmriInputError(f"{path}: expected a JSON object of BIDS metadata, found {type(content).__name__}")
    return content


def bids_metadata(path: str | Path) -> dict[str, Any]:
    """Metadata of `path` merged from its applicable JSON files (`{}` when there is none)."""
    merged: dict[str, Any] = {}
    for file in applicable_sidecars(path):
        merged.update(_read_json(file))
    return merged


def sidecar_tr(path: str | Path) -> float | None:
    """`RepetitionTime` from the applicable JSON metadata (nearest wins), or `None`."""
    value = bids_metadata(path).get("RepetitionTime")
    return float(value) if value is not None else None


def subject_and_session(path: str | Path) -> tuple[str, str | None]:
    """Subject and session from BIDS entities, else the parent folder name and no session."""
    entities = parse_entities(path)
    if "sub" in entities:
        return entities["sub"], entities.get("ses")
    return Path(path).parent.name or strip_extension(path), None


__all__ = [
    "applicable_sidecars",
    "bids_metadata",
    "dataset_root",
    "parse_entities",
    "sidecar_tr",
    "strip_extension",
    "subject_and_session",
]
