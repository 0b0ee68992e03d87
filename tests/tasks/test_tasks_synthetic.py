"""The synthetic cohort (known effects), the offline task builders and the connectivity baselines."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from nilearn.connectome import ConnectivityMeasure
from scipy.signal import lfilter
from sklearn.covariance import EmpiricalCovariance

from modeling_fmrilm import FmriInputError
from modeling_fmrilm.cli import evaluation_parser
from modeling_fmrilm.descriptors.corpus import build_corpus
from modeling_fmrilm.io import FmriScan, aal2_table, load_embedded
from modeling_fmrilm.tasks import (
    EvaluationSettings,
    SyntheticSettings,
    cohort_task_data,
    descriptor_task_data,
    evaluate,
    make_synthetic_cohort,
    most_varied,
    synthetic_task_data,
)
from modeling_fmrilm.tasks.baselines import BaselineInputs, fit_predict, pearson_fc_features
from modeling_fmrilm.tasks.data import network_pairs, pair_band
from modeling_fmrilm.tasks.evaluation_splits import stratified_split
from modeling_fmrilm.tasks.sources import build_tasks
from modeling_fmrilm.tasks.synthetic import EmbeddedStructure, SyntheticCohort, ar1_filter, embedded_structure

SYSTEMS = np.asarray(aal2_table().systems)


@pytest.fixture(scope="module")
def structure() -> EmbeddedStructure:
    return embedded_structure()


def standardized(cohort) -> np.ndarray:
    x = np.stack([s.data for s in cohort.scans]).astype(np.float64)
    return (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)


def pair_coupling(cohort, a: str, b: str) -> np.ndarray:
    x = standardized(cohort)
    fc = x @ x.transpose(0, 2, 1) / x.shape[-1]
    return fc[:, a == SYSTEMS][:, :, b == SYSTEMS].mean(axis=(1, 2))


def test_structure_comes_from_the_embedded_scans(structure):
    assert structure.group_fc.shape == (94, 94) and np.allclose(np.diag(structure.group_fc), 1)
    assert np.linalg.eigvalsh(structure.group_fc).min() > 0
    assert structure.lag1.shape == (12,) and set(structure.trs.tolist()) == {0.72, 2.0}


def test_default_cohort_size_labels_and_seed(structure):
    cohort = make_synthetic_cohort(structure=structure)
    assert (
        len(cohort.scans) == 200
        and cohort.scans[0].data.shape == (94, 320)
        and cohort.scans[0].data.dtype == np.float32
    )
    assert cohort.group.sum() == 100 and cohort.scans[0].subject == "sub-0001" and cohort.scans[0].tr == 2.0
    again = make_synthetic_cohort(structure=structure)
    assert np.array_equal(again.scans[7].data, cohort.scans[7].data) and np.array_equal(again.score, cohort.score)
    other = make_synthetic_cohort(SyntheticSettings(seed=1), structure=structure)
    assert not np.array_equal(other.scans[7].data, cohort.scans[7].data)
    table = cohort.label_table()
    assert table.columns["group"][:3] == ["patient" if g else "control" for g in cohort.group[:3]]
    with pytest.raises(FmriInputError, match="AAL2 systems"):
        make_synthetic_cohort(
            SyntheticSettings(n_subjects=10, group_networks=("Frontal", "Default")), structure=structure
        )


def test_effects_are_where_they_are_put_and_vanish_at_zero(structure):
    settings = SyntheticSettings(n_subjects=120, group_effect=0.5, score_effect=0.5, seed=3)
    cohort = make_synthetic_cohort(settings, structure=structure)
    group_pair = pair_coupling(cohort, "Frontal", "Parietal")
    difference = group_pair[cohort.group == 1].mean() - group_pair[cohort.group == 0].mean()
    assert difference > 5 * group_pair.std() / np.sqrt(60)
    untouched = pair_coupling(cohort, "Subcortical", "Sensorimotor")
    assert abs(
        untouched[cohort.group == 1].mean() - untouched[cohort.group == 0].mean()
    ) < 3 * untouched.std() / np.sqrt(30)
    assert np.corrcoef(pair_coupling(cohort, "Occipital", "Temporal"), cohort.score)[0, 1] > 0.5
    lowered = make_synthetic_cohort(SyntheticSettings(n_subjects=120, group_effect=-0.5, seed=3), structure=structure)
    low_pair = pair_coupling(lowered, "Frontal", "Parietal")
    assert low_pair[lowered.group == 1].mean() < low_pair[lowered.group == 0].mean()
    null = make_synthetic_cohort(
        SyntheticSettings(n_subjects=120, group_effect=0.0, score_effect=0.0, seed=3), structure=structure
    )
    null_pair = pair_coupling(null, "Frontal", "Parietal")
    assert abs(null_pair[null.group == 1].mean() - null_pair[null.group == 0].mean()) < 3 * null_pair.std() / np.sqrt(
        30
    )
    assert abs(np.corrcoef(pair_coupling(null, "Occipital", "Temporal"), null.score)[0, 1]) < 0.3


def test_effect_sizes_are_the_pair_couplings_d_and_r(structure):
    cohort = make_synthetic_cohort(
        SyntheticSettings(n_subjects=60, n_timepoints=96, group_effect=0.5, score_effect=0.5, seed=4),
        structure=structure,
    )

    def reference(view) -> tuple[float, float]:
        group_pair, score_pair = (
            pair_coupling(view, "Frontal", "Parietal"),
            pair_coupling(view, "Occipital", "Temporal"),
        )
        patients, controls = group_pair[view.group == 1], group_pair[view.group == 0]
        d = (patients.mean() - controls.mean()) / np.sqrt((patients.var(ddof=1) + controls.var(ddof=1)) / 2)
        return d, np.corrcoef(score_pair, view.score)[0, 1]

    d, r = cohort.effect_sizes()
    assert np.allclose((d, r), reference(cohort)) and d > 1.0 and r > 0.5
    halves = [scan.data[:, :48] for scan in cohort.scans]  # a view of the scans: their first 48 frames
    cut = SyntheticCohort(
        [FmriScan(x, 2.0, s.subject) for x, s in zip(halves, cohort.scans, strict=True)],
        cohort.group,
        cohort.score,
        cohort.latent,
        cohort.ar_coefficients,
        cohort.settings,
    )
    assert np.allclose(cohort.effect_sizes(halves), reference(cut))
    null = make_synthetic_cohort(
        SyntheticSettings(n_subjects=60, n_timepoints=96, group_effect=0.0, score_effect=0.0, seed=4),
        structure=structure,
    )
    assert (
        abs(null.effect_sizes()[0]) < 0.6 and abs(null.effect_sizes()[1]) < 0.35
    )  # 2.3 and 2.7 standard errors at n = 60
    with pytest.raises(FmriInputError, match="one \\(n_rois, n_frames\\) array per subject \\(60\\)"):
        cohort.effect_sizes(halves[:-1])


def test_each_subject_has_its_own_autocorrelation(structure):
    cohort = make_synthetic_cohort(SyntheticSettings(n_subjects=40, n_timepoints=2000, seed=2), structure=structure)
    x = standardized(cohort)
    lag1 = (x[:, :, 1:] * x[:, :, :-1]).mean(axis=(1, 2))
    np.testing.assert_allclose(lag1, cohort.ar_coefficients, atol=0.03)
    assert cohort.ar_coefficients.std() > 0.05
    # the circular AR(1) filter against scipy's recursive one (same autocorrelation, unit variance)
    noise = np.random.default_rng(0).standard_normal((2, 3, 20000))
    phi = np.array([0.3, 0.7])
    circular = ar1_filter(noise, phi)
    recursive = np.stack([lfilter([np.sqrt(1 - p**2)], [1, -p], n, axis=-1) for p, n in zip(phi, noise, strict=True)])
    for series in (circular, recursive):
        np.testing.assert_allclose(series.var(axis=-1), 1, atol=0.05)
        np.testing.assert_allclose((series[..., 2:] * series[..., :-2]).mean(-1).mean(-1), phi**2, atol=0.03)


def test_connectivity_baselines_separate_a_strong_effect_and_sit_at_chance_without_one(structure):
    for effect, check in ((0.6, lambda accuracy: accuracy > 0.9), (0.0, lambda accuracy: abs(accuracy - 0.5) < 0.15)):
        cohort = make_synthetic_cohort(
            SyntheticSettings(n_subjects=100, n_timepoints=200, group_effect=effect, score_effect=0.0, seed=5),
            structure=structure,
        )
        inputs = BaselineInputs(cohort.scans)
        for name in ("brainmarks_fc", "tangent_fc"):
            accuracies = []
            for seed in range(2):
                train, test = stratified_split(cohort.group, 0.3, seed)
                output = fit_predict(name, "classification", 2, cohort.group[train], inputs.split(train, test), seed)
                accuracies.append((output.probabilities.argmax(1) == cohort.group[test]).mean())
            assert check(np.mean(accuracies)), (name, effect, accuracies)


def test_pearson_features_are_nilearns_upper_triangle(structure):
    cohort = make_synthetic_cohort(SyntheticSettings(n_subjects=4, n_timepoints=60), structure=structure)
    scans = cohort.scans[:2] + [FmriScan(cohort.scans[2].data[:, :40], 2.0, "short")]
    measure = ConnectivityMeasure(kind="correlation", cov_estimator=EmpiricalCovariance())
    rows, cols = np.triu_indices(94, k=1)
    expected = measure.fit_transform([s.data.T.astype(np.float64) for s in scans])[:, rows, cols]
    np.testing.assert_allclose(pearson_fc_features(scans), expected, atol=1e-10)


def test_small_training_splits_get_a_note_not_a_crash():
    rng = np.random.default_rng(0)
    scans = [FmriScan(rng.standard_normal((5, 40)).astype(np.float32), 2.0, f"s{i}") for i in range(9)]
    split = BaselineInputs(scans).split(np.arange(7), np.array([7, 8]))
    unseen = fit_predict("brainmarks_fc", "classification", 3, np.array([0, 0, 0, 1, 1, 1, 0]), split, 0)
    assert unseen.probabilities.shape == (2, 3) and unseen.probabilities[:, 2].tolist() == [
        0,
        0,
    ]  # class 2 not in training
    np.testing.assert_allclose(unseen.probabilities.sum(1), 1)
    single = fit_predict("tangent_fc", "classification", 3, np.array([0, 0, 0, 0, 0, 1, 2]), split, 0)
    assert any("C fixed to 1" in note for note in single.notes) and single.probabilities.shape == (2, 3)
    one_class = fit_predict(
        "tangent_fc",
        "classification",
        2,
        np.zeros(5, int),
        BaselineInputs(scans).split(np.arange(5), np.array([5, 6])),
        0,
    )
    assert one_class.probabilities.tolist() == [[1, 0], [1, 0]] and "one class" in one_class.notes[0]


# -- offline task builders -------------------------------------------------------------------------


def test_cohort_task_and_synthetic_tasks(structure):
    scans = [
        FmriScan(np.zeros((3, 4), np.float32), 2.0, s, dataset=d) for s, d in (("a", "hcp"), ("b", "gw"), ("c", "hcp"))
    ]
    data = cohort_task_data(scans)
    assert (
        data.targets.tolist() == [0, 1, 0]
        and data.cohort_lines is None
        and data.subject_keys == ["hcp/a", "gw/b", "hcp/c"]
    )
    with pytest.raises(FmriInputError, match="other data sets"):
        cohort_task_data(scans + [FmriScan(np.zeros((3, 4), np.float32), 2.0, "d", dataset="abide")])
    cohort = make_synthetic_cohort(SyntheticSettings(n_subjects=20), structure=structure)
    group, score = synthetic_task_data(cohort)
    assert group.targets.tolist() == cohort.group.tolist() and np.array_equal(score.targets, cohort.score)
    assert group.task.name == "synthetic_group" and score.task.kind == "regression"


def test_descriptor_questions_from_the_corpus_z_scores(tmp_path):
    networks = ["Frontal", "Cingulo-insular", "Occipital"]
    (tmp_path / "cohort_reference.json").write_text(json.dumps({"networks": networks}))
    rows = [
        {"subject": f"s{i}", "dataset": "hcp", "session": None, "z_network_pair_fc": z, "split": "train"}
        for i, z in enumerate(
            [
                [-1.5, 0.2, 1.01, 0.0, float("nan"), 2.5],
                [1.0, -1.0, 3.0, 0.5, 0.1, -2.2],
                [0.0, 1.2, -0.4, -1.01, 0.3, 0.0],
            ]
        )
    ]
    folder = tmp_path / "data" / "descriptors"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "train-00000-abc.parquet")
    scans = [FmriScan(np.zeros((3, 4), np.float32), 2.0, f"s{i}", dataset="hcp") for i in (2, 0, 1)]
    tasks = descriptor_task_data(tmp_path, scans)
    names = [t.task.name for t in tasks]
    assert names == [
        f"network_pair:{p}"
        for p in (
            "Frontal-Frontal",
            "Frontal-Cingulo-insular",
            "Frontal-Occipital",
            "Cingulo-insular-Cingulo-insular",
            "Occipital-Occipital",
        )
    ]
    assert tasks[1].task.fields["a"] == "Frontal" and tasks[1].task.fields["b"] == "Cingulo-insular"
    assert tasks[0].targets.tolist() == [1, 0, 1]  # z 0.0, -1.5, 1.0 (1.0 is typical: the bands' boundary)
    assert tasks[2].targets.tolist() == [1, 2, 2]
    assert tasks[0].cohort_lines[0] == "Cohort: hcp.\n"
    assert [t.task.name for t in most_varied(tasks, 2)] == [
        names[0],
        names[4],
    ]  # 3 classes, then the first of the ties
    with pytest.raises(FmriInputError, match="undefined"):
        descriptor_task_data(tmp_path, scans, ["Cingulo-insular-Occipital"])
    with pytest.raises(FmriInputError, match="expected names"):
        descriptor_task_data(tmp_path, scans, ["Frontal-Default"])
    with pytest.raises(FmriInputError, match="no descriptor record"):
        descriptor_task_data(tmp_path, scans + [FmriScan(np.zeros((3, 4), np.float32), 2.0, "s9", dataset="hcp")])


COHORT_FLAGS = ["--synthetic_subjects", "6", "--synthetic_timepoints", "64", "--synthetic_seed", "0"]


@pytest.fixture(scope="module")
def cohort_corpus(tmp_path_factory):
    """A descriptor corpus of the embedded scans and the 6-subject synthetic cohort of `COHORT_FLAGS`, as the bench builds one."""
    scans = [*load_embedded(), *make_synthetic_cohort(SyntheticSettings(n_subjects=6, n_timepoints=64, seed=0)).scans]
    folder = tmp_path_factory.mktemp("cohort_corpus")
    build_corpus(scans, folder, SYSTEMS.tolist(), scans[0].atlas, progress=False)
    return folder


def corpus_z(corpus) -> dict[tuple[str, str], list[float]]:
    """Each record's `z_network_pair_fc`, by `(dataset, subject)`."""
    table = pq.read_table(
        sorted((corpus / "data").glob("*/*.parquet")), columns=["dataset", "subject", "z_network_pair_fc"]
    ).to_pylist()
    return {(r["dataset"], r["subject"]): r["z_network_pair_fc"] for r in table}


def test_descriptor_questions_of_the_synthetic_cohort_too(cohort_corpus, tmp_path):
    flags = [
        "--corpus",
        str(cohort_corpus),
        "--tasks",
        "descriptors",
        "synthetic",
        "--descriptor_scans",
        "all",
        "--max_pairs",
        "2",
    ]
    sources, _ = evaluation_parser().parse_args_into_dataclasses(
        [*flags, *COHORT_FLAGS, "--output_dir", str(tmp_path)]
    )
    tasks = build_tasks(sources, tmp_path)
    assert [len(t.scans) for t in tasks] == [18, 18, 6, 6] and [t.task.name for t in tasks[2:]] == [
        "synthetic_group",
        "synthetic_score",
    ]
    names = [f"{a}-{b}" for a, b in network_pairs(cohort_corpus)]
    z = corpus_z(cohort_corpus)
    for data in tasks[:2]:
        column = names.index(data.task.name.removeprefix("network_pair:"))
        expected = pair_band(np.asarray([z[(s.dataset, s.subject)][column] for s in data.scans]))
        assert data.targets.tolist() == expected.tolist()
        assert data.subject_keys[:12] == [f"{s.dataset}/{s.subject}" for s in load_embedded()]
        assert data.subject_keys[12:] == tasks[2].subject_keys == [f"synthetic/sub-{i:04d}" for i in range(1, 7)]
        assert all(a is b for a, b in zip(data.scans[12:], tasks[2].scans, strict=True))  # one cohort, built once
    assert not list(tmp_path.iterdir())  # no demo corpus built


def test_descriptor_questions_of_the_embedded_scans_by_default(cohort_corpus, tmp_path):
    args, _ = evaluation_parser().parse_args_into_dataclasses(
        [
            "--corpus",
            str(cohort_corpus),
            "--tasks",
            "descriptors",
            "--max_pairs",
            "2",
            *COHORT_FLAGS,
            "--output_dir",
            str(tmp_path),
        ]
    )
    assert args.descriptor_scans == "embedded"
    tasks = build_tasks(args, tmp_path)
    assert [len(t.scans) for t in tasks] == [12, 12]
    assert not any(key.startswith("synthetic/") for t in tasks for key in t.subject_keys)


def test_question_paraphrases_reach_every_task(tmp_path):
    parse = evaluation_parser().parse_args_into_dataclasses
    flags = ["--tasks", "synthetic", *COHORT_FLAGS, "--output_dir", str(tmp_path)]
    assert {data.task.paraphrases for data in build_tasks(parse(flags)[0], tmp_path)} == {None}
    tasks = build_tasks(parse([*flags, "--question_paraphrases", "1"])[0], tmp_path)
    assert [data.task.name for data in tasks] == ["synthetic_group", "synthetic_score"]
    assert {data.task.paraphrases for data in tasks} == {1}
    with pytest.raises(FmriInputError, match="question_paraphrases: expected a positive count, found 0"):
        parse([*flags, "--question_paraphrases", "0"])


def test_descriptor_questions_of_the_synthetic_cohort_need_a_corpus(tmp_path):
    args, _ = evaluation_parser().parse_args_into_dataclasses(
        ["--tasks", "descriptors", "--descriptor_scans", "all", *COHORT_FLAGS, "--output_dir", str(tmp_path)]
    )
    with pytest.raises(
        FmriInputError,
        match="--descriptor_scans all: expected --corpus, a descriptor corpus that describes the synthetic cohort",
    ):
        build_tasks(args, tmp_path)
    assert not list(tmp_path.iterdir())  # stopped before building the demo corpus


def test_baselines_only_evaluation_of_the_synthetic_cohort(structure):
    cohort = make_synthetic_cohort(
        SyntheticSettings(n_subjects=60, n_timepoints=120, group_effect=0.6, score_effect=0.6), structure=structure
    )
    report = evaluate(
        synthetic_task_data(cohort), settings=EvaluationSettings(seeds=(0, 1), n_resplits=3), progress=False
    )
    group = report.row("synthetic_group", "brainmarks_fc").summary()
    assert group["balanced_accuracy"]["mean"] > 0.85 and group["balanced_accuracy"]["n"] == 2
    assert report.row("synthetic_group", "majority").summary()["balanced_accuracy"]["mean"] == 0.5
    score = report.row("synthetic_score", "tangent_fc", resplits=True).summary()
    assert score["pearson_r"]["mean"] > 0.3 and score["mae"]["n"] == 3
    assert "synthetic_score | majority / mean" in report.to_markdown()


def test_dynamics_group_is_invisible_to_connectivity_and_read_by_a_temporal_statistic(structure):
    """synthetic_dynamics: with no coupling effect and a large dynamics effect, both FC baselines sit
    at chance, while the dynamics network's lag-1 autocorrelation separates the groups; the other
    draws of the cohort do not depend on the effect."""
    settings = SyntheticSettings(
        n_subjects=160, n_timepoints=200, group_effect=0.0, score_effect=0.0, dynamics_effect=1.0, seed=7
    )
    cohort = make_synthetic_cohort(settings, structure=structure)
    without = make_synthetic_cohort(
        SyntheticSettings(**{**settings.to_dict(), "dynamics_effect": 0.0}), structure=structure
    )
    assert np.array_equal(cohort.dynamics, without.dynamics) and np.array_equal(cohort.group, without.group)
    assert 0.45 < cohort.dynamics.mean() < 0.55 and abs(np.corrcoef(cohort.dynamics, cohort.group)[0, 1]) < 0.3
    network = np.asarray(aal2_table().systems) == settings.dynamics_network
    untouched = ~network
    np.testing.assert_array_equal(
        np.stack([s.data for s in cohort.scans])[:, untouched], np.stack([s.data for s in without.scans])[:, untouched]
    )
    inputs = BaselineInputs(cohort.scans)
    data = np.stack([s.data for s in cohort.scans]).astype(np.float64)
    z = (data - data.mean(-1, keepdims=True)) / data.std(-1, keepdims=True)
    lag1 = (z[..., 1:] * z[..., :-1]).mean(-1)[:, network].mean(1, keepdims=True)
    accuracies = {"brainmarks_fc": [], "tangent_fc": [], "lag1": []}
    for seed in range(3):
        train, test = stratified_split(cohort.dynamics, 0.3, seed)
        for name in ("brainmarks_fc", "tangent_fc"):
            output = fit_predict(name, "classification", 2, cohort.dynamics[train], inputs.split(train, test), seed)
            accuracies[name].append((output.probabilities.argmax(1) == cohort.dynamics[test]).mean())
        threshold = lag1[train].mean()
        accuracies["lag1"].append(((lag1[test, 0] > threshold) == cohort.dynamics[test]).mean())
    means = {name: float(np.mean(values)) for name, values in accuracies.items()}
    assert abs(means["brainmarks_fc"] - 0.5) < 0.12 and abs(means["tangent_fc"] - 0.5) < 0.12, means
    assert means["lag1"] > 0.95, means
    tasks = synthetic_task_data(cohort)
    assert [t.task.name for t in tasks] == ["synthetic_group", "synthetic_score", "synthetic_dynamics"]
    assert np.array_equal(tasks[2].targets, cohort.dynamics)
    assert [t.task.name for t in synthetic_task_data(without)] == ["synthetic_group", "synthetic_score"]
