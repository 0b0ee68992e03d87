"""Text bands and templates; the corpus dataset folder (splits, resume, push, bad input)."""

import importlib.metadata
import importlib.util
import json
import re
import shutil
import sys

import numpy as np
import pytest
from datasets import load_dataset

from modeling_fmrilm import splits
from modeling_fmrilm.descriptors import corpus, reference, text
from modeling_fmrilm.descriptors.corpus import build_corpus, push_to_hub
from modeling_fmrilm.descriptors.reference import DescriptorSettings
from modeling_fmrilm.errors import FmriInputError
from tests.support import ROOT
from tests.support.corpus_scans import FRACTIONS, LABELS, N_ROIS, SETTINGS, folder_files, make_scans, scan_folder


@pytest.mark.parametrize(
    "z,expected",
    [
        (-2.01, "markedly lower"),
        (-2.0, "somewhat reduced"),
        (-1.01, "somewhat reduced"),
        (-1.0, "typical"),
        (0.0, "typical"),
        (1.0, "typical"),
        (1.01, "somewhat elevated"),
        (2.0, "somewhat elevated"),
        (2.01, "markedly elevated"),
    ],
)
def test_band_boundaries(z, expected):
    assert text.band(z) == expected


def describe(seed=0, scan_id="scan-1"):
    z = {
        name: round(float(v), 2)
        for name, v in zip(reference.DESCRIBED, np.linspace(-3, 3, len(reference.DESCRIBED)), strict=True)
    }
    pairs = ["A-A", "A-B", "B-B", "A-C", "B-C", "C-C"]
    return text.describe(
        z, pairs, [2.5, -1.5, 0.2, 1.2, -2.2, float("nan")], "toy", scan_id, reference.DOMAINS, seed
    ), z


def test_text_is_deterministic_and_states_only_record_numbers():
    first, z = describe()
    assert first == describe()[0]
    assert len({describe(scan_id=f"s{i}")[0] for i in range(6)}) > 1
    printed = re.findall(r"[-+]?\d+(?:\.\d+)?", first)
    allowed = {f"{v:+.2f}" for v in [*z.values(), 2.5, -1.5, 1.2, -2.2]}
    assert printed and set(printed) <= allowed
    assert "A-A (z = +2.50, markedly elevated), A-C (z = +1.20, somewhat elevated)" in first
    assert "B-C (z = -2.20, markedly lower), A-B (z = -1.50, somewhat reduced)" in first
    assert "(z = -3.00)" in first and "markedly lower" in first


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    summary = build_corpus(
        make_scans(), folder, LABELS, "toy", SETTINGS, fractions=FRACTIONS, shard_size=3, progress=False
    )
    return folder, summary


def test_corpus_loads_with_splits_columns_and_disjoint_subjects(built):
    folder, summary = built
    data = load_dataset(str(folder))
    assert set(data) == {"train", "validation", "test"}
    assert {k: len(v) for k, v in data.items()} == summary.split_sizes == {"train": 5, "validation": 2, "test": 1}
    expected = splits.split_subjects(
        [splits.subject_key(s.dataset, s.subject) for s in make_scans()], FRACTIONS, SETTINGS.seed
    )
    assert splits.read_manifest(folder) == expected
    for split in data:
        assert {splits.subject_key(r["dataset"], r["subject"]) for r in data[split]} == set(expected.subjects(split))
        assert data[split]["text_key"] == [
            splits.text_key(r["dataset"], r["subject"], r["session"]) for r in data[split]
        ]
    for column in (
        "subject",
        "session",
        "dataset",
        "split",
        "text_key",
        "text",
        "z_global_efficiency",
        "network_pair_fc",
        "provenance",
    ):
        assert column in data["train"].column_names
    provenance = json.loads(data["train"][0]["provenance"])
    assert provenance["settings"]["target_tr"] == 2.0 and provenance["split"] == {
        "seed": 4,
        "fractions": list(FRACTIONS),
        "manifest": "splits.json",
    }
    assert provenance["graph"]["louvain"] == f"scikit-network {importlib.metadata.version('scikit-network')}"
    assert provenance["graph"]["components"] == data["train"][0]["graph_components"] >= 1
    # at density 0.2 these toy graphs fall apart: efficiencies as defined, and the record says so
    rows = [row for split in data.values() for row in split]
    disconnected = [row for row in rows if row["graph_components"] > 1]
    assert disconnected and all(json.loads(row["provenance"])["graph"]["connected"] is False for row in disconnected)
    assert (
        "add 0 to global and local efficiency"
        in json.loads(disconnected[0]["provenance"])["graph"]["unreachable_pairs"]
    )
    assert all(np.isfinite(row[name]) for row in rows for name in reference.SCALARS)
    record = data["test"][0]
    numbers = set(re.findall(r"[-+]?\d+\.\d+", record["text"]))
    held = {f"{record['z_' + n]:+.2f}" for n in reference.DESCRIBED} | {
        f"{v:+.2f}" for v in record["z_network_pair_fc"]
    }
    assert numbers and numbers <= held
    card = (folder / "README.md").read_text()
    assert (
        "configs:" in card
        and re.search(r"path: data/descriptors/train-\*-[0-9a-f]{12}\.parquet", card)
        and "density 0.2" in card
    )
    assert not (folder / ".build").exists()


def test_reference_reused_to_describe_new_scans(built):
    folder, _ = built
    ref = reference.CohortReference.load(folder)
    assert ref.version == reference.REFERENCE_VERSION and ref.ica_mixing.shape == (N_ROIS, 4)
    data = load_dataset(str(folder), split="train")
    row = data[0]
    scan = next(s for s in make_scans() if s.subject == row["subject"])
    features = reference.compute_features(scan.data[None].astype(np.float64), scan.tr, ref)
    z = reference.zscores({k: v[0] for k, v in features.items()}, scan.dataset, ref)
    assert features["global_efficiency"][0] == pytest.approx(row["global_efficiency"], rel=1e-9)
    assert float(z["modularity"]) == row["z_modularity"]
    # the pooled norms are the training scans' own mean and SD; each record's z is against its dataset's norms (or the pooled)
    pooled = ref.norms[reference.POOLED]["fc_mean"]
    np.testing.assert_allclose(np.mean((np.array(data["fc_mean"]) - pooled["mean"]) / pooled["sd"]), 0.0, atol=1e-9)
    np.testing.assert_allclose(np.std(data["fc_mean"], ddof=1), pooled["sd"], rtol=1e-9)
    for record in data:
        norms = ref.norms.get(record["dataset"], ref.norms[reference.POOLED])["fc_mean"]
        assert record["z_fc_mean"] == round((record["fc_mean"] - norms["mean"]) / norms["sd"], 2)


def test_interrupted_build_resumes_from_finished_shards(tmp_path, monkeypatch):
    calls, fail = [], [True]
    real = corpus.shard_features

    def failing(items, ref):
        calls.append(len(items))
        if fail[0] and len(calls) == 2:
            raise InterruptedError("killed")
        return real(items, ref)

    monkeypatch.setattr(corpus, "shard_features", failing)
    with pytest.raises(InterruptedError):
        build_corpus(
            make_scans(), tmp_path, LABELS, "toy", SETTINGS, fractions=FRACTIONS, shard_size=3, progress=False
        )
    assert not (tmp_path / "data").exists() and len(list((tmp_path / ".build" / "raw").glob("*.npz"))) == 1
    calls.clear()
    fail[0] = False
    summary = build_corpus(
        make_scans(), tmp_path, LABELS, "toy", SETTINGS, fractions=FRACTIONS, shard_size=3, progress=False
    )
    assert summary.reused_shards == 1 and len(calls) == 2
    assert sum(summary.split_sizes.values()) == 8


def test_push_to_hub_uploads_the_folder(built, tmp_path):
    folder, _ = built

    class LocalApi:
        def create_repo(self, repo_id, repo_type, private, exist_ok):
            self.created = (repo_id, repo_type)

        def upload_folder(self, folder_path, repo_id, repo_type):
            shutil.copytree(folder_path, tmp_path / repo_id)

    api = LocalApi()
    assert push_to_hub(folder, "org/descriptors", api=api).endswith("datasets/org/descriptors")
    assert api.created == ("org/descriptors", "dataset")
    assert len(load_dataset(str(tmp_path / "org" / "descriptors"))["train"]) == 5


def test_push_to_hub_calls_huggingface_hub(built, monkeypatch):
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, *a, **k: calls.append(("create", a, k)))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", lambda self, **k: calls.append(("upload", k)))
    push_to_hub(built[0], "org/name")
    assert calls[0][1] == ("org/name",) and calls[1][1]["repo_type"] == "dataset"


@pytest.mark.parametrize(
    "corrupt,message",
    [
        (lambda x: x[:-1], r"expected 16 ROIs"),
        (lambda x: np.vstack([x[:-1], np.full((1, x.shape[1]), 5.0, np.float32)]), "constant"),
        (lambda x: x[:, :40], "at least 50 frames"),
        (lambda x: np.where(np.arange(x.shape[1]) == 3, np.nan, x).astype(np.float32), "NaN"),
    ],
)
def test_bad_scan_stops_the_build_or_is_skipped(tmp_path, corrupt, message):
    scans = make_scans()
    scans[3].data = corrupt(scans[3].data)
    scans[3].source = "bad_scan.npy"
    with pytest.raises(FmriInputError, match=f"bad_scan.npy.*{message}|bad_scan.npy"):
        build_corpus(scans, tmp_path / "a", LABELS, "toy", SETTINGS, progress=False)
    with pytest.raises(FmriInputError, match=message):
        build_corpus(scans, tmp_path / "a", LABELS, "toy", SETTINGS, progress=False)
    summary = build_corpus(
        scans, tmp_path / "b", LABELS, "toy", SETTINGS, fractions=FRACTIONS, skip_bad=True, progress=False
    )
    assert len(summary.skipped) == 1 and "bad_scan.npy" in summary.skipped[0]
    assert sum(summary.split_sizes.values()) == 7


def load_script():
    """datasets_scripts/build_descriptor_corpus.py as a module (registered, as its dataclass needs)."""
    if "build_descriptor_corpus" not in sys.modules:
        path = ROOT / "datasets_scripts" / "build_descriptor_corpus.py"
        spec = importlib.util.spec_from_file_location("build_descriptor_corpus", path)
        sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[spec.name])
    return sys.modules["build_descriptor_corpus"]


def test_cli_builds_from_a_folder_with_an_atlas_table(tmp_path):
    import csv

    script = load_script()
    main, read_network_labels = script.main, script.read_network_labels

    folder = tmp_path / "scans"
    folder.mkdir()
    for scan in make_scans():
        np.save(folder / f"sub-{scan.subject}_task-rest_bold.npy", scan.data[:, :150])
    table = tmp_path / "atlas.tsv"
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(["index", "name", "network"])
        writer.writerows([i, f"roi{i}", label] for i, label in enumerate(LABELS))
    assert read_network_labels(table) == LABELS
    out = tmp_path / "out"
    main(
        [
            "--scans",
            str(folder),
            "--tr",
            "2.0",
            "--atlas-table",
            str(table),
            "--output-dir",
            str(out),
            "--n-ica-components",
            "4",
            "--density",
            "0.2",
            "--num-proc",
            "2",
            "--shard-size",
            "3",
        ]
    )
    data = load_dataset(str(out))
    assert sum(len(split) for split in data.values()) == 8
    assert "--atlas-table" in (out / "README.md").read_text()


def test_text_and_scan_ids_do_not_depend_on_where_files_live(tmp_path):
    """The same scans read from two folders give the same records: no absolute path seeds the phrasing."""
    # The corpus folders share a name, so this also needs load_dataset's cache to tell them apart.
    texts = []
    for place in ("a", "b/deeper"):
        scans = make_scans()
        for scan in scans:
            scan.source = str(tmp_path / place / f"{scan.subject}_bold.npy")
        out = tmp_path / place / "corpus"
        build_corpus(scans, out, LABELS, "toy", SETTINGS, fractions=FRACTIONS, progress=False)
        rows = load_dataset(str(out))["train"]
        texts.append(list(zip(rows["scan"], rows["text"], strict=True)))
    assert texts[0] == texts[1]
    assert texts[0][0][0].endswith("_bold.npy") and str(tmp_path) not in texts[0][0][0]


def test_load_dataset_does_not_confuse_two_corpora_with_the_same_folder_name(tmp_path):
    """`datasets` caches a local folder by its name and YAML; the content digest in the YAML keeps them apart."""
    subjects = []
    for seed in (0, 1):
        out = tmp_path / f"run{seed}" / "corpus"
        build_corpus(make_scans(seed=seed), out, LABELS, "toy", SETTINGS, fractions=FRACTIONS, progress=False)
        subjects.append(load_dataset(str(out))["train"]["fc_mean"])
    assert subjects[0] != subjects[1]


def test_three_shares_merged_equal_one_build_file_for_file(tmp_path, monkeypatch):
    """prepare + 3 shares (one interrupted and resumed) + merge writes the same files as one build."""
    scans = make_scans()
    options = dict(fractions=FRACTIONS, shard_size=2, progress=False)
    build_corpus(scans, tmp_path / "one", LABELS, "toy", SETTINGS, command="build", **options)

    out = tmp_path / "shared"
    plan = corpus.prepare(scans, out, LABELS, "toy", SETTINGS, FRACTIONS, shard_size=2, progress=False)
    assert len(plan.shards) == 4  # share 0 of 3 holds shards 0 and 3
    calls, real = [], corpus.shard_features

    def killed_on_second_shard(items, ref):
        calls.append(len(items))
        if len(calls) == 2:
            raise InterruptedError("killed")
        return real(items, ref)

    monkeypatch.setattr(corpus, "shard_features", killed_on_second_shard)
    with pytest.raises(InterruptedError):
        corpus.build_shards(scans, out, shard_index=0, num_shards=3, progress=False)
    assert sorted(p.name for p in (out / ".build" / "raw").glob("*.npz")) == ["shard-00000.npz"]
    with pytest.raises(FmriInputError, match=r"3 missing \(\[1, 2, 3\]\)"):
        corpus.merge(out, "build", progress=False)
    monkeypatch.setattr(corpus, "shard_features", real)
    assert corpus.build_shards(scans, out, shard_index=0, num_shards=3, progress=False) == 1  # resumed: shard 0 kept
    assert corpus.build_shards(scans, out, shard_index=2, num_shards=3, progress=False) == 0
    read = []

    def stream():  # a source that can only be iterated: share 1 reads up to its last scan, no further
        for scan in scans:
            read.append(scan.subject)
            yield scan

    assert corpus.build_shards(stream, out, shard_index=1, num_shards=3, progress=False) == 0
    assert len(read) == 4  # shard 1 = scans 2 and 3
    corpus.merge(out, "build", progress=False)
    merged, single = folder_files(out), folder_files(tmp_path / "one")
    assert sorted(merged) == sorted(single) and "splits.json" in merged and "cohort_reference.npz" in merged
    assert all(merged[name] == single[name] for name in single)


def test_share_refuses_other_settings_and_changed_scans(tmp_path):
    scans = make_scans()
    corpus.prepare(scans, tmp_path, LABELS, "toy", SETTINGS, FRACTIONS, shard_size=4, progress=False)
    other = corpus.corpus_config(LABELS, "toy", DescriptorSettings(n_ica_components=4, density=0.3, seed=4), 4)
    with pytest.raises(FmriInputError, match="prepared with other settings"):
        corpus.build_shards(scans, tmp_path, 0, 2, progress=False, expected_config=other)
    scans[0].source = "renamed.npy"
    with pytest.raises(FmriInputError, match="renamed.npy: expected .* the source changed"):
        corpus.build_shards(scans, tmp_path, 0, 2, progress=False)
    with pytest.raises(FmriInputError, match="shard_index"):
        corpus.build_shards(scans, tmp_path, 2, 2, progress=False)


def test_split_manifest_keeps_the_assignment_of_a_grown_cohort(tmp_path):
    first = tmp_path / "first"
    build_corpus(make_scans(), first, LABELS, "toy", SETTINGS, fractions=FRACTIONS, progress=False)
    manifest = json.loads((first / "splits.json").read_text())
    moved = next(key for key, split in manifest["subjects"].items() if split == "train")
    manifest["subjects"][moved] = "test"  # a hand-made assignment the hash would not give
    (first / "splits.json").write_text(json.dumps(manifest))
    grown = make_scans(n_subjects=12)
    build_corpus(
        grown,
        tmp_path / "grown",
        LABELS,
        "toy",
        SETTINGS,
        fractions=(0.8, 0.1, 0.1),
        split_manifest=first,
        progress=False,
    )
    result = splits.read_manifest(tmp_path / "grown")
    assert result.seed == 4 and result.fractions == FRACTIONS  # the manifest's, not the call's
    assert all(result.assignment[key] == split for key, split in manifest["subjects"].items())
    for scan in grown[8:]:
        key = splits.subject_key(scan.dataset, scan.subject)
        assert result.assignment[key] == splits.assign_split(key, FRACTIONS, seed=4)
    tests = load_dataset(str(tmp_path / "grown"), split="test")
    assert moved in {splits.subject_key(d, s) for d, s in zip(tests["dataset"], tests["subject"], strict=True)}


def test_demo_corpus_splits_the_embedded_subjects_6_3_3(tmp_path):
    from modeling_fmrilm.io import load_embedded

    summary = corpus.demo_corpus(load_embedded(), tmp_path)
    assert summary.split_sizes == {"train": 6, "validation": 3, "test": 3}
    test_datasets = {key.split("/")[0] for key in splits.read_manifest(tmp_path).subjects("test")}
    assert test_datasets == {"hcp", "gw"}


def test_cli_shares_accept_both_flag_spellings(tmp_path):
    script = load_script()
    assert script.parse_args(["--output_dir", "a", "--shard-size", "5"]).shard_size == 5
    assert script.parse_args(
        ["--output-dir", "a", "--num_proc", "3", "--fractions", "0.6", "0.2", "0.2"]
    ).fractions == [0.6, 0.2, 0.2]
    with pytest.raises(FmriInputError, match="both or neither"):
        script.parse_args(["--output-dir", "a", "--shard-index", "0"])
    folder, table = scan_folder(tmp_path)
    common = [
        "--scans",
        str(folder),
        "--tr",
        "2.0",
        "--atlas_table",
        str(table),
        "--output-dir",
        str(tmp_path / "out"),
        "--n-ica-components",
        "4",
        "--density",
        "0.2",
        "--seed",
        "4",
        "--shard_size",
        "3",
    ]
    script.main([*common, "--fit-reference-only"])
    for index in ("0", "1"):
        script.main([*common, "--shard_index", index, "--num-shards", "2"])
    with pytest.raises(FmriInputError, match="prepared with other settings"):
        script.main([*common[:-6], "--shard_size", "3", "--merge"])  # without --density 0.2 etc.
    script.main([*common, "--merge"])
    data = load_dataset(str(tmp_path / "out"))
    assert sum(len(split) for split in data.values()) == 8
    assert "--merge" in (tmp_path / "out" / "README.md").read_text()
