"""Descriptor features against independent references (nilearn, networkx, BrainSpace, scipy, loops)."""

import warnings

import networkx as nx
import numpy as np
import pytest
from nilearn.connectome import ConnectivityMeasure
from scipy.signal import periodogram
from sklearn.covariance import EmpiricalCovariance

from modeling_fmrilm.descriptors import amplitude, connectivity, gradients, graph, ica, reference, temporal
from modeling_fmrilm.errors import FmriInputError
from modeling_fmrilm.io import aal2_table


def synthetic(n_scans=3, n_rois=24, n_t=240, seed=0):
    """Scans with a shared signal and two blocks of correlated ROIs."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_scans, n_rois, n_t))
    x += 0.5 * rng.standard_normal((n_scans, 1, n_t))
    x[:, : n_rois // 3] += rng.standard_normal((n_scans, 1, n_t))
    x[:, n_rois // 3 : 2 * n_rois // 3] += rng.standard_normal((n_scans, 1, n_t))
    return x


@pytest.fixture(scope="module")
def embedded(embedded_scans):
    return embedded_scans, np.stack([connectivity.correlation(s.data[None])[0] for s in embedded_scans])


def time_major(x):
    return [scan.T for scan in x]


def test_correlation_and_partial_match_nilearn():
    x = synthetic()
    reference = ConnectivityMeasure(kind="correlation", cov_estimator=EmpiricalCovariance()).fit_transform(
        time_major(x)
    )
    np.testing.assert_allclose(connectivity.correlation(x), reference, atol=1e-12)
    z = connectivity.standardize(x)
    reference = ConnectivityMeasure(kind="partial correlation").fit_transform(time_major(z))
    np.testing.assert_allclose(connectivity.partial_correlation(z), reference, atol=1e-12)


@pytest.mark.slow
def test_tangent_matches_nilearn_on_embedded(embedded):
    scans, _ = embedded
    z = [connectivity.standardize(s.data[None])[0] for s in scans]
    measure = ConnectivityMeasure(kind="tangent")
    reference = measure.fit_transform([s.T for s in z])
    covariances = np.stack([connectivity.covariance(s[None])[0] for s in z])
    tangent = connectivity.TangentSpace().fit(covariances)
    np.testing.assert_allclose(tangent.mean_, measure.mean_, atol=1e-9)
    np.testing.assert_allclose(tangent.transform(covariances), reference, atol=1e-8)
    np.testing.assert_allclose(tangent.distance(covariances), np.linalg.norm(reference, axis=(1, 2)), rtol=1e-9)
    restored = connectivity.TangentSpace.from_mean(tangent.mean_)  # a cohort reference's stored mean
    np.testing.assert_array_equal(restored.whitening_, tangent.whitening_)
    np.testing.assert_array_equal(restored.transform(covariances), tangent.transform(covariances))
    with pytest.raises(FmriInputError, match="TangentSpace: not fitted"):
        connectivity.TangentSpace().transform(covariances)


def test_cholesky_precision_and_batched_ledoit_wolf_match_numpy_and_sklearn():
    from sklearn.covariance import LedoitWolf

    x = synthetic(n_scans=2, n_rois=20, n_t=60)
    shrunk = connectivity.covariance(x)
    for scan, matrix in zip(x, shrunk, strict=True):
        np.testing.assert_allclose(matrix, LedoitWolf().fit(scan.T).covariance_, atol=1e-12)
    np.testing.assert_allclose(connectivity.precision(shrunk), np.linalg.inv(shrunk), rtol=1e-9, atol=1e-12)
    singular = np.stack([shrunk[0], np.ones((20, 20))])
    with pytest.raises(FmriInputError, match="covariance 1 of the batch is not positive definite"):
        connectivity.precision(singular)


def test_network_pair_fc_against_loop():
    fc = connectivity.correlation(synthetic())
    labels = ["a"] * 8 + ["b"] * 8 + ["c"] * 7 + ["d"]
    values = connectivity.network_pair_fc(fc, labels)
    names = connectivity.network_pair_names(["a", "b", "c", "d"])
    assert values.shape == (3, 10) and names[1] == "a-b"
    groups = {g: [i for i, label in enumerate(labels) if label == g] for g in "abcd"}
    for k, name in enumerate(names):
        first, second = name.split("-")
        pairs = [(i, j) for i in groups[first] for j in groups[second] if i != j]
        expected = np.mean([fc[:, i, j] for i, j in pairs], axis=0) if pairs else np.full(3, np.nan)
        np.testing.assert_allclose(values[:, k], expected, atol=1e-12)
    with pytest.raises(FmriInputError, match="one label per ROI"):
        connectivity.network_pair_fc(fc, labels[:-1])


def reference_graphs(weights):
    for matrix in weights:
        g = nx.from_numpy_array(matrix)
        for _, _, data in g.edges(data=True):
            data["length"] = 1.0 / data["weight"]
        yield g


def assert_graph_metrics_match_networkx(weights):
    """Every graph metric of `(n, R, R)` thresholded weights against networkx, graph by graph."""
    n_rois = weights.shape[-1]
    communities = graph.louvain_communities(weights, seed=0)
    binary_global, weighted_global = graph.global_efficiency(weights, False), graph.global_efficiency(weights, True)
    local = graph.local_efficiency(weights)
    for i, g in enumerate(reference_graphs(weights)):
        assert binary_global[i] == pytest.approx(nx.global_efficiency(g), abs=1e-12)
        assert local[i].mean() == pytest.approx(nx.local_efficiency(g), abs=1e-12)
        lengths = dict(nx.all_pairs_dijkstra_path_length(g, weight="length"))
        weighted = sum(1 / d for s in lengths for t, d in lengths[s].items() if t != s) / (n_rois * (n_rois - 1))
        assert weighted_global[i] == pytest.approx(weighted, abs=1e-12)
        nodes = sorted(g)
        np.testing.assert_allclose(
            graph.clustering(weights, True)[i], [nx.clustering(g, weight="weight")[n] for n in nodes], atol=1e-12
        )
        np.testing.assert_allclose(
            graph.clustering(weights, False)[i], [nx.clustering(g)[n] for n in nodes], atol=1e-12
        )
        partition = [set(np.flatnonzero(communities[i] == c)) for c in np.unique(communities[i])]
        q = nx.community.modularity(g, partition, weight="weight")
        assert graph.modularity(weights[i : i + 1], communities[i : i + 1])[0] == pytest.approx(q, abs=1e-12)
        # scikit-network's Louvain finds a partition as good as networkx's own (a heuristic: within 3 %)
        best = nx.community.modularity(
            g, nx.community.louvain_communities(g, weight="weight", seed=0), weight="weight"
        )
        assert q >= 0.97 * best
        strength = dict(g.degree(weight="weight"))
        np.testing.assert_allclose(weights[i].sum(axis=1), [strength[n] for n in nodes], atol=1e-12)
        assert graph.connected_components(weights[i : i + 1])[0] == nx.number_connected_components(g)


@pytest.mark.parametrize("density", [0.1, 0.25])
def test_graph_metrics_match_networkx(density):
    fc = connectivity.correlation(synthetic(n_scans=3, n_rois=30))
    weights = graph.proportional_threshold(fc, density)
    n_edges = round(density * 30 * 29 / 2)
    assert ((weights > 0).sum(axis=(1, 2)) == 2 * n_edges).all()
    assert_graph_metrics_match_networkx(weights)
    labels = ["a"] * 10 + ["b"] * 10 + ["c"] * 10
    participation = graph.participation_coefficient(weights, labels)
    member = np.repeat(np.eye(3), 10, axis=0)
    k = weights @ member
    with np.errstate(invalid="ignore"):
        expected = 1 - ((k / k.sum(-1, keepdims=True)) ** 2).sum(-1)
    np.testing.assert_allclose(participation, np.nan_to_num(expected), atol=1e-12)


def block_connectivity(n_rois, blocks, seed=0):
    """A valid FC whose strongest edges all lie within `blocks` equal blocks of ROIs (uncorrelated between)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_rois, 400))
    x += np.repeat(2 * rng.standard_normal((blocks, 400)), n_rois // blocks, axis=0)
    return connectivity.correlation(x[None])


def test_disconnected_graphs_match_networkx_with_unreachable_pairs_counting_zero():
    fc = np.concatenate([block_connectivity(30, 3, seed) for seed in range(2)])
    weights = graph.proportional_threshold(fc, 0.1)
    assert (graph.connected_components(weights) > 1).all()
    assert_graph_metrics_match_networkx(weights)


def test_disconnected_450_roi_scan_is_the_size_weighted_sum_of_its_pieces():
    """At the paper's 450 ROIs, a graph with no edge between its halves: efficiencies as defined
    (pairs across the halves add 0), i.e. the pair-weighted sum of the halves' own; nothing NaN."""
    fc = block_connectivity(450, 2)
    weights = graph.proportional_threshold(fc, 0.1)
    assert not weights[:, :225, 225:].any()  # no edge between the halves (some nodes are isolated too)
    labels = [f"net{i // 25}" for i in range(400)] + ["Subcortex"] * 50
    metrics = graph.graph_metrics(fc, labels, 0.1)
    pieces = [weights[:, :225, :225], weights[:, 225:, 225:]]
    assert all(np.isfinite(value).all() for value in metrics.values())
    assert metrics["graph_components"][0] == sum(graph.connected_components(piece)[0] for piece in pieces) >= 2
    pairs = 225 * 224 / (450 * 449)
    for weighted in (True, False):
        expected = sum(graph.global_efficiency(piece, weighted) for piece in pieces) * pairs
        assert metrics["global_efficiency" if weighted else "global_efficiency_binary"][0] == pytest.approx(
            expected[0], rel=1e-12
        )
    local = graph.local_efficiency(weights)
    np.testing.assert_allclose(
        local, np.concatenate([graph.local_efficiency(piece) for piece in pieces], axis=1), atol=1e-12
    )
    # chunking the neighbourhoods (down to one node per chunk) changes nothing
    np.testing.assert_allclose(graph.local_efficiency(weights, max_elements=1), local, atol=1e-12)


def test_louvain_partition_does_not_depend_on_the_batch():
    weights = graph.proportional_threshold(connectivity.correlation(synthetic(n_scans=3, n_rois=30)), 0.2)
    together = graph.louvain_communities(weights, seed=3)
    np.testing.assert_array_equal(graph.louvain_communities(weights[::-1], seed=3)[::-1], together)
    np.testing.assert_array_equal(graph.louvain_communities(weights[1:2], seed=3)[0], together[1])


def test_graph_metrics_on_embedded_match_networkx(embedded):
    _, fc = embedded
    weights = graph.proportional_threshold(fc[[0, 9]])
    local = graph.local_efficiency(weights).mean(axis=1)
    for i, g in enumerate(reference_graphs(weights)):
        assert graph.global_efficiency(weights, False)[i] == pytest.approx(nx.global_efficiency(g), abs=1e-12)
        assert local[i] == pytest.approx(nx.local_efficiency(g), abs=1e-12)
    metrics = graph.graph_metrics(fc[:2], aal2_table().systems)
    assert metrics["participation_per_network"].shape == (2, 9)
    assert all(np.isfinite(v).all() for v in metrics.values())


def brainspace_gradients(fc, **kwargs):
    from brainspace.gradient import GradientMaps

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GradientMaps(n_components=3, approach="dm", random_state=0, **kwargs).fit(fc).gradients_


def test_gradients_match_brainspace_up_to_sign(embedded):
    _, fc = embedded
    ours, _ = gradients.gradients(fc[[0, 7]])
    for i, index in enumerate([0, 7]):
        reference = brainspace_gradients(fc[index])
        for g in range(3):
            assert abs(np.corrcoef(ours[i, :, g], reference[:, g])[0, 1]) >= 0.99


def test_diffusion_map_is_exact_eigendecomposition():
    fc = connectivity.correlation(synthetic(n_scans=2, n_rois=30))
    matrix = gradients.affinity(fc)
    ours, values = gradients.diffusion_map(matrix)
    d = matrix.sum(-1) ** -0.5
    w = matrix * d[:, :, None] * d[:, None, :]
    operator = w / w.sum(-1, keepdims=True)
    for i in range(2):
        applied = operator[i] @ ours[i]
        eigen = values[i] / (1 + values[i])
        np.testing.assert_allclose(applied, ours[i] * eigen, atol=1e-10)


def test_procrustes_matches_brainspace(embedded):
    from brainspace.gradient.alignment import procrustes

    _, fc = embedded
    grads, _ = gradients.gradients(fc)
    reference, _ = gradients.gradients(fc.mean(axis=0)[None])
    aligned = gradients.procrustes_align(grads, reference[0])
    for i in (0, 11):
        np.testing.assert_allclose(aligned[i], procrustes(grads[i], reference[0]), atol=1e-10)
    summary = gradients.gradient_summary(aligned, aal2_table().systems)
    assert summary["gradient1_per_network"].shape == (12, 9)
    np.testing.assert_allclose(summary["gradient2_range"], np.ptp(aligned[..., 1], axis=1))


@pytest.mark.parametrize("n_t,tr", [(301, 0.72), (300, 2.0)])
def test_alff_falff_match_scipy_periodogram(n_t, tr):
    x = np.random.default_rng(1).standard_normal((2, 4, n_t)).cumsum(-1)
    alff, falff = amplitude.alff(x, tr)
    freqs, power = periodogram(x, fs=1 / tr)
    amp = np.sqrt(power)
    band = (freqs >= 0.01) & (freqs <= 0.08)
    full = (freqs > 0) & (freqs <= min(0.25, 0.5 / tr))
    np.testing.assert_allclose(alff, amp[..., band].mean(-1), rtol=1e-10)
    np.testing.assert_allclose(falff, amp[..., band].sum(-1) / amp[..., full].sum(-1), rtol=1e-10)
    ratio = amplitude.band_ratio(x, tr)
    low, high = (freqs >= 0.01) & (freqs < 0.1), (freqs >= 0.1) & (freqs <= 0.25)
    np.testing.assert_allclose(ratio, power[..., low].sum(-1) / power[..., high].sum(-1), rtol=1e-10)


def test_band_checks_name_the_scan():
    assert amplitude.min_timepoints(2.0) == 50 and amplitude.min_timepoints(0.72) == 139
    amplitude.check_band("scan-a", 50, 2.0)
    with pytest.raises(FmriInputError, match="scan-a.*at least 50 frames"):
        amplitude.check_band("scan-a", 49, 2.0)
    with pytest.raises(FmriInputError, match="scan-b.*Nyquist"):
        amplitude.check_band("scan-b", 500, 60.0)


def dfa_loop(series, scales):
    profile = np.cumsum(series - series.mean())
    fluctuations = []
    for s in scales:
        residuals = []
        for w in range(len(profile) // s):
            segment = profile[w * s : (w + 1) * s]
            t = np.arange(s)
            residuals.append(segment - np.polyval(np.polyfit(t, segment, 1), t))
        fluctuations.append(np.sqrt(np.mean(np.concatenate(residuals) ** 2)))
    return np.polyfit(np.log(scales), np.log(fluctuations), 1)[0]


def test_dfa_matches_per_roi_loop_and_known_exponents(embedded):
    scans, _ = embedded
    x = scans[9].data[None, :5].astype(np.float64)
    scales = temporal.dfa_scales(x.shape[-1])
    expected = [dfa_loop(x[0, r], scales) for r in range(5)]
    np.testing.assert_allclose(temporal.hurst_dfa(x)[0], expected, atol=1e-10)
    rng = np.random.default_rng(0)
    assert temporal.hurst_dfa(rng.standard_normal((1, 20, 2000))).mean() == pytest.approx(0.5, abs=0.05)
    assert temporal.hurst_dfa(rng.standard_normal((1, 20, 2000)).cumsum(-1)).mean() == pytest.approx(1.5, abs=0.1)
    with pytest.raises(FmriInputError, match="DFA needs more than 32"):
        temporal.dfa_scales(30)


def test_temporal_statistics_against_numpy():
    x = synthetic(n_scans=2, n_rois=5, n_t=100) + 100.0
    np.testing.assert_allclose(temporal.tsnr(x), x.mean(-1) / x.std(-1))
    expected = [
        [np.dot(r[1:] - r.mean(), r[:-1] - r.mean()) / np.dot(r - r.mean(), r - r.mean()) for r in scan] for scan in x
    ]
    np.testing.assert_allclose(temporal.lag1_autocorrelation(x), expected, atol=1e-12)


def test_group_ica_dual_regression_recovers_sources():
    rng = np.random.default_rng(0)
    sources = rng.laplace(size=(4, 3, 600))
    mixing = rng.standard_normal((12, 3))
    x = mixing @ sources + 0.01 * rng.standard_normal((4, 12, 600))
    z = connectivity.standardize(x)
    group = ica.GroupICA(n_components=3, seed=0).fit(z.transpose(0, 2, 1).reshape(-1, 12))
    timecourses, maps = group.dual_regression(z)
    assert timecourses.shape == (4, 3, 600) and maps.shape == (4, 3, 12)
    match = np.abs(np.corrcoef(timecourses[0], sources[0])[:3, 3:])
    assert (match.max(axis=1) > 0.99).all()
    features = ica.component_features(timecourses, 2.0)
    z_tc = (timecourses - timecourses.mean(-1, keepdims=True)) / timecourses.std(-1, keepdims=True)
    np.testing.assert_allclose(features["outlier_rate"], (np.abs(z_tc) > 3).mean(-1))
    np.testing.assert_allclose(features["fnc"][1], np.corrcoef(timecourses[1])[np.triu_indices(3, 1)], atol=1e-12)
    again = ica.GroupICA(n_components=3, seed=0).fit(z.transpose(0, 2, 1).reshape(-1, 12))
    np.testing.assert_array_equal(again.mixing, group.mixing)


def band_limited_scan(times, seed, n_rois=32, n_networks=4):
    """Sums of sinusoids between 0.01 and 0.2 Hz (amplitude ~ f^-1/2) at `times` (s): 4 networks of
    graded strength with graded loadings, subject-specific scale, and every ROI's own sinusoids."""
    rng = np.random.default_rng(seed)
    n_sources = 8 * n_rois
    freqs = rng.uniform(0.01, 0.2, (n_sources, 1))
    sources = np.sin(2 * np.pi * freqs * times + rng.uniform(0, 2 * np.pi, (n_sources, 1))) / np.sqrt(freqs)
    mixing = 0.3 * rng.standard_normal((n_rois, n_sources))
    size = n_rois // n_networks
    loading = np.linspace(0.6, 1.4, size) * rng.uniform(0.7, 1.3)
    for network in range(n_networks):
        mixing[network * size : (network + 1) * size, network] += loading * (1 + network)
    return mixing @ sources + 100.0


def test_descriptors_at_the_target_tr_do_not_encode_the_acquisition_tr(monkeypatch):
    """One band-limited signal drawn at TR 0.72 s (415 frames) and at TR 2.0 s (150 frames, the
    same 298 s) gives the same descriptors once both are resampled to TR 2.0 s.

    Tolerance, on the scale the text prints: z-scores against the cohort (12 subjects at TR 2.0 s);
    for every descriptor and network pair the mean over subjects of |z(0.72 s) - z(2.0 s)| is at
    most 0.5, half a severity band (bands are 1 z wide), so the TR moves no description by a band
    on average and leaves no systematic shift for the text to encode. The residual is the
    resampler's interpolation error (linear interpolation of a 0.2 Hz sinusoid sampled every
    0.72 s is off by up to ~6 %); it is not held per subject because binary graph metrics of a
    32-ROI graph flip edges at the threshold (measured: one subject's binary clustering moves by
    2 SD). Measured with linear resampling: at most 0.29 (binary clustering, local efficiency).
    Without the resampling, the temporal descriptors move by more than 2 (measured 3 for the ICA
    autocorrelation up to 2000 for the ICA spectral ratio): asserted too, so the test can fail.
    """
    labels = [f"net{i // 8}" for i in range(32)]
    settings = reference.DescriptorSettings(n_ica_components=4)
    slow = np.stack([band_limited_scan(np.arange(150) * 2.0, s) for s in range(12)])
    fast = np.stack([band_limited_scan(np.arange(415) * 0.72, s) for s in range(12)])

    def mean_z_shift():
        cohort = reference.fit_structure([(slow, 2.0)], labels, "toy", settings)
        at_slow, at_fast = (
            reference.compute_features(slow, 2.0, cohort),
            reference.compute_features(fast, 0.72, cohort),
        )
        norms = reference.CohortNorms()
        norms.add(at_slow, ["toy"] * len(slow))
        cohort.norms = norms.norms(3)
        z_slow, z_fast = reference.zscores(at_slow, "toy", cohort), reference.zscores(at_fast, "toy", cohort)
        return {name: np.abs(z_fast[name] - z_slow[name]).mean(axis=0).max() for name in reference.NORMED}

    shift = mean_z_shift()
    assert max(shift.values()) <= 0.5, {name: round(float(v), 2) for name, v in shift.items() if v > 0.5}
    monkeypatch.setattr(reference, "resample", lambda data, tr, target_tr: data)  # descriptors at the native TR
    native = mean_z_shift()
    temporal_descriptors = ("falff", "autocorrelation", "ica_spectral_ratio", "ica_variability", "ica_autocorrelation")
    assert min(native[name] for name in temporal_descriptors) > 2


def test_frame_selection_streams_the_seeded_subset_of_all_frames():
    """Streamed batch by batch, the ICA's frames are those the whole stack would give:
    `stack[sort(default_rng(seed).choice(total, size))]`, or every frame up to `size`."""
    rows = np.arange(1000, dtype=np.float64)[:, None] * [1.0, -1.0]
    streamed = reference.FrameSelection(1000, 100, seed=3)
    for start in range(0, 1000, 70):
        streamed.add(rows[start : start + 70])
    expected = rows[np.sort(np.random.default_rng(3).choice(1000, 100, replace=False))]
    np.testing.assert_array_equal(streamed.frames, expected)
    assert streamed.rows.shape == (100, 2)
    everything = reference.FrameSelection(60, 100, seed=3)
    everything.add(rows[:60])
    np.testing.assert_array_equal(everything.frames, rows[:60])
    short = reference.FrameSelection(1000, 100, seed=3)
    short.add(rows[:10])
    with pytest.raises(FmriInputError, match="expected 1000 frames"):
        _ = short.frames


def test_cohort_norms_streamed_in_batches_equal_numpy_on_the_whole_cohort():
    rng = np.random.default_rng(0)
    features = {name: rng.normal(size=30) * 3 + 5 for name in reference.SCALARS}
    features["network_pair_fc"] = rng.normal(size=(30, 4))
    features["network_pair_fc"][:, 2] = np.nan  # a one-ROI network's within pair
    datasets = np.array(["a"] * 12 + ["b"] * 8 + ["a"] * 8 + ["c"] * 2)
    norms = reference.CohortNorms()
    for start in range(0, 30, 7):
        norms.add({name: values[start : start + 7] for name, values in features.items()}, datasets[start : start + 7])
    result = norms.norms(min_scans=3)
    assert set(result) == {reference.POOLED, "a", "b"}  # c has 2 scans, below min_scans
    for group, mask in ((reference.POOLED, np.ones(30, bool)), ("a", datasets == "a"), ("b", datasets == "b")):
        assert result[group]["n_scans"] == mask.sum()
        for name in reference.NORMED:
            values = features[name][mask]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                expected_mean, expected_sd = np.nanmean(values, axis=0), np.nanstd(values, axis=0, ddof=1)
            np.testing.assert_allclose(result[group][name]["mean"], expected_mean, rtol=1e-12)
            np.testing.assert_allclose(result[group][name]["sd"], expected_sd, rtol=1e-12)
    assert np.isnan(result["a"]["network_pair_fc"]["mean"][2])
