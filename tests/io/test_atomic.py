"""The one atomic writer every text, JSON, NPZ and PNG file goes through: the new content replaces
the old in one rename, and a writer that fails leaves the old file and no temporary behind."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modeling_fmrilm.atomic import write_atomically, write_text_atomically
from modeling_fmrilm.splits import SubjectSplit, read_manifest, write_manifest


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "record.json"
    write_text_atomically(path, json.dumps({"version": 1}))

    def fail(handle):
        handle.write(b'{"version": 2')  # half written, then the writer dies
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        write_atomically(path, fail)
    assert json.loads(path.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]
    write_atomically(tmp_path / "arrays.npz", lambda handle: np.savez(handle, x=np.arange(3)))
    with np.load(tmp_path / "arrays.npz") as arrays:
        np.testing.assert_array_equal(arrays["x"], [0, 1, 2])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arrays.npz", "record.json"]


def test_the_split_manifest_round_trips_through_the_atomic_writer(tmp_path):
    split = SubjectSplit({"a": "train", "b": "test"}, seed=3, fractions=(0.5, 0.0, 0.5))
    path = write_manifest(tmp_path, split)
    assert read_manifest(path) == split
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
