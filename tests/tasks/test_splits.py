"""The one subject split: seeded hash of dataset/subject, stable as the cohort grows, manifest round trip."""

from __future__ import annotations

import json

import pytest

from modeling_fmrilm import FmriInputError
from modeling_fmrilm.splits import (
    MANIFEST_NAME,
    assign_split,
    read_manifest,
    resolve_split,
    split_subjects,
    subject_key,
    write_manifest,
)


def test_assignment_is_deterministic_and_follows_the_fractions():
    keys = [subject_key("ds", f"sub{i:04d}") for i in range(4000)]
    split = split_subjects(keys, (0.8, 0.1, 0.1), seed=0)
    counts = {name: len(split.subjects(name)) for name in ("train", "validation", "test")}
    assert sum(counts.values()) == 4000
    # binomial std of a 10% share of 4000 is 19: 4 std either way
    assert abs(counts["validation"] - 400) < 76 and abs(counts["test"] - 400) < 76
    assert split_subjects(list(reversed(keys)), (0.8, 0.1, 0.1), seed=0) == split
    assert split_subjects(keys, (0.8, 0.1, 0.1), seed=1) != split


def test_growing_cohort_never_moves_a_subject():
    small = split_subjects([f"a/s{i}" for i in range(50)], seed=3)
    grown = split_subjects([f"a/s{i}" for i in range(500)] + [f"b/s{i}" for i in range(50)], seed=3)
    assert all(grown.assignment[key] == value for key, value in small.assignment.items())


def test_same_subject_id_in_two_datasets_is_two_keys():
    assignments = {assign_split(subject_key(dataset, "01"), seed=0) for dataset in (f"d{i}" for i in range(40))}
    assert len(assignments) > 1  # keyed by dataset/subject, not the id alone


def test_manifest_round_trip_and_extension(tmp_path):
    split = split_subjects(["x/1", "x/2", "y/1"], (0.6, 0.2, 0.2), seed=5)
    path = write_manifest(tmp_path, split)
    assert path.name == MANIFEST_NAME and not list(tmp_path.glob(".splits.json-*"))
    loaded = read_manifest(tmp_path)
    assert loaded == split and loaded.fractions == (0.6, 0.2, 0.2)
    # a manifest that lists a subject wins over the hash; new subjects get the hash with its seed
    content = json.loads(path.read_text())
    content["subjects"]["x/1"] = "test"
    path.write_text(json.dumps(content))
    resolved = resolve_split(["x/1", "z/9"], tmp_path)
    assert resolved.of("x/1") == "test"
    assert resolved.of("z/9") == assign_split("z/9", (0.6, 0.2, 0.2), seed=5)


def test_bad_manifest_and_fractions_are_named(tmp_path):
    with pytest.raises(FmriInputError, match="splits.json"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(FmriInputError, match="expected a JSON manifest"):
        read_manifest(tmp_path)
    with pytest.raises(FmriInputError, match="fractions"):
        assign_split("a/b", (0.5, 0.2, 0.2))
