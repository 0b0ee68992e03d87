"""BIDS file-name entities and JSON sidecars."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

_ENTITY = re.compile(r"(?:^|_)([a-zA-Z0-9]+)-([a-zA-Z0-9.+]+)")
_NIFTI_SUFFIXES = (".nii.gz", ".nii", ".dtseries.nii")


def strip_extension(path: str | Path) -> str:
    """File name without its (possibly double) extension: `sub-01_bold.nii.gz` -> `sub-01_bold`."""
    name = Path(path).name
    for suffix in _NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def parse_entities(path: str | Path) -> dict[str, str]:
    """BIDS key-value entities from a file name: `sub-01_ses-2_task-rest_bold` -> `{sub: 01, ses: 2, task: rest}`."""
    return {key: value for key, value in _ENTITY.findall(strip_extension(path))}


def sidecar(path: str | Path) -> dict[str, Any]:
    """The JSON sidecar next to `path` (same name, `.json`), or `{}` when there is none."""
    candidate = Path(path).with_name(strip_extension(path) + ".json")
    if not candidate.is_file():
        return {}
    with open(candidate) as handle:
        return json.load(handle)


def sidecar_tr(path: str | Path) -> float | None:
    """`RepetitionTime` from the JSON sidecar, or `None`."""
    value = sidecar(path).get("RepetitionTime")
    return float(value) if value is not None else None


def subject_and_session(path: str | Path) -> tuple[str, str | None]:
    """Subject and session from BIDS entities, else the parent folder name and no session."""
    entities = parse_entities(path)
    if "sub" in entities:
        return entities["sub"], entities.get("ses")
    return Path(path).parent.name or strip_extension(path), None
