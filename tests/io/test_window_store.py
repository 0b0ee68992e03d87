"""The window store (`modeling_fmrilm.window_store`, `fmrilm preprocess --output-dir`): what it holds
equals the feature extractor's windows; a killed build resumes to the uninterrupted result; three
shares merged equal one build file for file; bad scans stop the build or are listed; Stage 1 from a
store equals Stage 1 from the scans in memory and never reads a test subject's window."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import load_dataset
from safetensors.torch import load_file

from modeling_fmrilm import window_store
from modeling_fmrilm.cli import main as cli_main
from modeling_fmrilm.errors import FmriInputError
from modeling_fmrilm.feature_extraction_fmrilm import FmriFeatureExtractor
from modeling_fmrilm.io import FmriScan
from modeling_fmrilm.splits import SPLITS
from modeling_fmrilm.training.common import parse_arguments
from modeling_fmrilm.training.stage1 import Stage1Arguments, Stage1TrainingArguments, train_stage1
from modeling_fmrilm.window_store import WindowStore, build_window_store

FRACTIONS = (0.5, 0.3, 0.2)  # seed 0, these subjects: every split has some
WINDOWING = ["--window-length", "16", "--window-stride", "8"]


def make_scans(n_subjects: int = 8, n_rois: int = 6, seed: int = 0) -> list[FmriScan]:
    """Random walks of different lengths and TRs (some resampled, some not)."""
    rng = np.random.default_rng(seed)
    scans = []
    for i in range(n_subjects):
        tr = (2.0, 1.5)[i % 2]
        n_frames = 40 + 8 * i
        data = np.cumsum(rng.standard_normal((n_rois, n_frames)), axis=1).astype(np.float32) + 50
        scans.append(FmriScan(data, tr, f"s{i}", session="1" if i == 3 else None, dataset=("a", "b")[i % 3 == 0]))
    return scans


def extractor(n_rois: int = 6) -> FmriFeatureExtractor:
    return FmriFeatureExtractor(num_rois=n_rois, target_tr=2.0, window_length=16, window_stride=8)


def folder_files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def scan_folder(tmp_path: Path, scans: list[FmriScan]) -> Path:
    folder = tmp_path / "scans"
    folder.mkdir()
    for scan in scans:
        assert scan.tr == 2.0
        np.save(folder / f"sub-{scan.subject}_bold.npy", scan.data)
    return folder


def test_store_read_back_equals_the_feature_extractor_windows_and_loads_with_datasets(tmp_path):
    scans = make_scans()
    summary = build_window_store(
        scans, tmp_path / "store", extractor(), fractions=FRACTIONS, shard_size=3, progress=False
    )
    store = WindowStore.open(tmp_path / "store")
    assert (
        store.record["config"]
        == window_store.store_config(store.feature_extractor, 3)
        == window_store.store_config(extractor(), 3)
    )
    by_scan = {scan.name: extractor()(scan) for scan in scans}
    total = 0
    for split in SPLITS:
        rows = store.windows(split).with_format("numpy")[:]
        assert len(rows["fmri_values"]) == summary.windows[split] > 0
        for index in np.unique(rows["scan_index"]):
            scan = scans[index]
            mine = rows["scan_index"] == index
            expected = by_scan[scan.name]
            np.testing.assert_array_equal(rows["fmri_values"][mine], expected["fmri_values"])  # bit for bit
            np.testing.assert_array_equal(rows["window_index"][mine], expected["window_index"])
            np.testing.assert_array_equal(rows["window_start"][mine], expected["window_index"] * 8)
            assert set(rows["subject_key"][mine]) == {f"{scan.dataset}/{scan.subject}"}
            assert set(rows["split"][mine]) == {split} == {store.split.of(f"{scan.dataset}/{scan.subject}")}
            assert set(rows["tr"][mine]) == {scan.tr}
            assert set(rows["text_key"][mine]) == {"/".join(filter(None, (scan.dataset, scan.subject, scan.session)))}
        total += len(rows["fmri_values"])
    assert total == sum(len(features["fmri_values"]) for features in by_scan.values())
    loaded = load_dataset(str(tmp_path / "store"), cache_dir=str(tmp_path / "cache"))
    assert {split: len(loaded[split]) for split in loaded} == {s: n for s, n in summary.windows.items() if n}
    np.testing.assert_array_equal(
        np.asarray(loaded["train"][0]["fmri_values"], dtype=np.float32),
        store.windows("train").with_format("numpy")[0]["fmri_values"],
    )


def test_killed_build_resumes_from_finished_shards_and_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    scans = make_scans()
    options = dict(fractions=FRACTIONS, shard_size=3, progress=False, command="build")
    build_window_store(scans, tmp_path / "one", extractor(), **options)
    calls, real = [], window_store.write_shard

    def killed_on_second_shard(*arguments):
        calls.append(arguments[2])
        if len(calls) == 2:
            raise InterruptedError("killed")
        return real(*arguments)

    monkeypatch.setattr(window_store, "write_shard", killed_on_second_shard)
    with pytest.raises(InterruptedError):
        build_window_store(scans, tmp_path / "resumed", extractor(), **options)
    work = tmp_path / "resumed" / ".build" / "shards"
    assert sorted(path.name for path in work.glob("shard-*.json")) == ["shard-00000.json"]
    assert not (tmp_path / "resumed" / "data").exists()
    monkeypatch.setattr(window_store, "write_shard", real)
    summary = build_window_store(scans, tmp_path / "resumed", extractor(), **options)
    assert summary.reused_shards == 1
    assert folder_files(tmp_path / "resumed") == folder_files(tmp_path / "one")


def test_a_shard_cut_short_is_named_and_computed_again(tmp_path):
    scans = make_scans()
    out = tmp_path / "store"
    window_store.prepare_store(scans, out, extractor(), FRACTIONS, shard_size=3, progress=False)
    window_store.build_store_shards(scans, out, progress=False)
    victim = sorted((out / ".build" / "shards").glob("train-*.arrow"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.warns(UserWarning, match=r"shard-0000\d\.json: unfinished or corrupt shard .*has 100 bytes"):
        assert window_store.build_store_shards(scans, out, progress=False) == 2
    window_store.merge_store(out, progress=False)
    build_window_store(scans, tmp_path / "one", extractor(), FRACTIONS, shard_size=3, progress=False)
    assert folder_files(out) == folder_files(tmp_path / "one")


def test_three_shares_merged_on_the_command_line_equal_one_build_file_for_file(tmp_path, capsys):
    scans = make_scans(n_subjects=9)
    for scan in scans:
        scan.tr, scan.dataset = 2.0, "unknown"  # as the .npy reader will see them
    folder = scan_folder(tmp_path, scans)
    common = [
        "preprocess",
        str(folder),
        "--tr",
        "2",
        *WINDOWING,
        "--shard-size",
        "2",
        "--fractions",
        *map(str, FRACTIONS),
    ]
    cli_main([*common, "--output-dir", str(tmp_path / "one")])
    shared = str(tmp_path / "shared")
    cli_main([*common, "--output-dir", shared, "--prepare-only"])
    with pytest.raises(SystemExit):  # a share with other windowing than the preparation
        cli_main(
            [
                *common[:4],
                "--window-length",
                "12",
                "--shard-size",
                "2",
                "--output-dir",
                shared,
                "--shard-index",
                "0",
                "--num-shards",
                "3",
            ]
        )
    assert "prepared with other feature_extractor" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main([*common, "--output-dir", shared, "--merge"])
    assert "expected 5 finished shards, 5 missing" in capsys.readouterr().err
    for index in (2, 0, 1):
        cli_main(
            [
                *common,
                "--output-dir",
                shared,
                "--shard-index",
                str(index),
                "--num-shards",
                "3",
                "--num-proc",
                str(1 + (index == 0)),
            ]
        )
    cli_main([*common, "--output-dir", shared, "--merge"])
    merged, single = folder_files(Path(shared)), folder_files(tmp_path / "one")
    readme = "README.md"
    assert sorted(merged) == sorted(single) and len([n for n in merged if n.endswith(".arrow")]) >= 5
    assert all(merged[name] == single[name] for name in single if name != readme)
    assert merged[readme].split(b"## How it was built")[0] == single[readme].split(b"## How it was built")[0]


def test_a_bad_scan_stops_the_build_or_is_skipped_and_listed(tmp_path, capsys):
    scans = make_scans(n_subjects=4)
    for scan in scans:
        scan.tr = 2.0
    folder = scan_folder(tmp_path, scans)
    (folder / "sub-bad_bold.npy").write_bytes(b"not an array")
    command = ["preprocess", str(folder), "--tr", "2", *WINDOWING, "--output-dir", str(tmp_path / "store")]
    with pytest.raises(SystemExit) as stopped:
        cli_main(command)
    assert stopped.value.code == 2 and "sub-bad_bold.npy" in capsys.readouterr().err
    cli_main([*command, "--skip-bad"])
    out = capsys.readouterr().out
    assert "4 scans" in out and "skipped 1 scan(s)" in out and "skipped: " in out and "sub-bad_bold.npy" in out
    record = json.loads((tmp_path / "store" / "window_store.json").read_text())
    assert len(record["skipped"]) == 1 and "sub-bad_bold.npy" in record["skipped"][0]


def stage1_args(output_dir: Path, *extra: str) -> tuple[Stage1Arguments, Stage1TrainingArguments]:
    return parse_arguments(
        (Stage1Arguments, Stage1TrainingArguments),
        ["--window_length", "16", "--window_stride", "8", "--patch_length", "4", "--hidden_size", "16", "--num_hidden_layers", "1",
         "--num_decoder_layers", "1", "--num_attention_heads", "2", "--num_codes", "8", "--code_dim", "8", "--warmup_steps", "0",
         "--disable_tqdm", "true", "--output_dir", str(output_dir), "--num_train_epochs", "2", "--per_device_train_batch_size", "4",
         "--save_strategy", "no", "--split_fractions", *map(str, FRACTIONS), "--report_to", "none",
         "--config_overrides", json.dumps({"domain_hidden_size": 8, "kmeans_init": False, "dead_code_min_usage": 0.0}), *extra],
    )  # fmt: skip


def test_stage1_from_a_store_equals_stage1_from_memory_and_reads_no_test_window(tmp_path, monkeypatch):
    scans = make_scans()
    build_window_store(scans, tmp_path / "store", extractor(), fractions=FRACTIONS, shard_size=3, progress=False)
    store = WindowStore.open(tmp_path / "store")
    assert store.record["windows"]["test"] > 0  # the store holds test windows; training must not open them
    opened = []
    real = WindowStore.windows

    def recording(self, split):
        opened.append(split)
        return real(self, split)

    monkeypatch.setattr(WindowStore, "windows", recording)
    from_store = train_stage1(
        *stage1_args(tmp_path / "from_store", "--window_store", str(tmp_path / "store")), console_logs=False
    )
    assert sorted(opened) == ["train", "validation"]
    assert set(from_store.trainer.train_dataset.subject_keys) == set(store.split.subjects("train"))
    from_memory = train_stage1(*stage1_args(tmp_path / "from_memory"), scans=scans, console_logs=False)
    assert from_memory.split.assignment == store.split.assignment
    weights = [
        load_file(run / "final" / "model.safetensors") for run in (tmp_path / "from_store", tmp_path / "from_memory")
    ]
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        torch.testing.assert_close(weights[0][name], weights[1][name], rtol=0, atol=0, msg=name)
    record = json.loads((tmp_path / "from_store" / "final" / "training_record.json").read_text())
    assert record["window_store"] == str(tmp_path / "store")
    with pytest.raises(FmriInputError, match=r"window_length 16 \(asked for 12\)"):
        train_stage1(
            *stage1_args(tmp_path / "other", "--window_store", str(tmp_path / "store"), "--window_length", "12")
        )
    with pytest.raises(FmriInputError, match="expected a window store"):
        train_stage1(*stage1_args(tmp_path / "none", "--window_store", str(tmp_path)))
