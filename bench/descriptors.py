"""Benchmark: batched descriptors vs a per-scan loop over the reference libraries.

One synthetic cohort (scans generated lazily, seeded, 100 ROIs x 1200 frames, TR 0.72 s).
Batched pipeline (modeling_fmrilm.descriptors, chunks of 50 scans): Pearson, partial and tangent
connectivity, graph metrics at 10 % density (efficiency, local efficiency, clustering, strength,
Louvain modularity, participation), gradients (diffusion map + Procrustes), ALFF/fALFF.
Reference loop, one scan at a time: nilearn ConnectivityMeasure (correlation, partial
correlation; tangent = scipy logm around the same fitted mean, since nilearn refuses to transform
a single scan), networkx on the same thresholded graph, BrainSpace GradientMaps, scipy periodogram.
The reference loop is timed on a subset and extrapolated as scans/s. Peak RSS of the batched
pipeline streaming 500 and 2000 scans is measured in fresh subprocesses.

    .venv/bin/python bench/descriptors.py [--scans 500] [--reference-scans 30]
"""

from __future__ import annotations

import argparse
import os

# One BLAS thread for both pipelines: a fair comparison, stable on a shared 2-core machine
# (oversubscribed BLAS threads made both sides an order of magnitude slower there).
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
from peak_memory import run_with_peak_rss  # noqa: E402

from modeling_fmrilm.descriptors import amplitude, connectivity, gradients, graph  # noqa: E402

N_ROIS, N_T, TR, CHUNK, DENSITY = 100, 1200, 0.72, 50, 0.1
LABELS = [f"net{i // 10}" for i in range(N_ROIS)]


def scan(index: int) -> np.ndarray:
    """One synthetic scan (ROI-major), generated from its index: shared signal + 10 networks of graded strength."""
    rng = np.random.default_rng(index)
    x = rng.standard_normal((N_ROIS, N_T), dtype=np.float32)
    x += 0.4 * rng.standard_normal((1, N_T), dtype=np.float32)
    strength = np.linspace(0.5, 1.5, 10, dtype=np.float32)[:, None]  # graded: distinct gradients
    x += np.repeat(strength * rng.standard_normal((10, N_T), dtype=np.float32), 10, axis=0)
    return x


def chunks(n_scans: int):
    for start in range(0, n_scans, CHUNK):
        yield np.stack([scan(i) for i in range(start, min(n_scans, start + CHUNK))])


def fit(n_fit: int = 50):
    batch = next(chunks(n_fit))
    z = connectivity.standardize(batch)
    tangent = connectivity.TangentSpace().fit(connectivity.covariance(z))
    ref, _ = gradients.gradients(connectivity.correlation(batch).mean(axis=0)[None])
    return tangent, ref[0]


def batched(batch: np.ndarray, tangent, grad_ref) -> dict[str, np.ndarray]:
    fc = connectivity.correlation(batch)
    z = connectivity.standardize(batch)
    weights = graph.proportional_threshold(fc, DENSITY)
    grads, _ = gradients.gradients(fc)
    alff, falff = amplitude.alff(batch, TR)
    metrics = graph.graph_metrics(fc, LABELS, DENSITY)
    return {
        "correlation": fc,
        "partial": connectivity.partial_correlation(z),
        "tangent": tangent.transform(connectivity.covariance(z)),
        "global_efficiency": metrics["global_efficiency_binary"],
        "local_efficiency": metrics["local_efficiency"],
        "clustering": graph.clustering(weights, weighted=True),
        "modularity": metrics["modularity"],
        "strength": weights.sum(-1),
        "gradients": gradients.procrustes_align(grads, grad_ref),
        "alff": alff,
        "falff": falff,
    }


def reference_one(x: np.ndarray, tangent, grad_ref) -> dict[str, np.ndarray]:
    import networkx as nx
    from brainspace.gradient import GradientMaps
    from brainspace.gradient.alignment import procrustes
    from nilearn.connectome import ConnectivityMeasure
    from scipy.linalg import logm
    from scipy.signal import periodogram
    from sklearn.covariance import EmpiricalCovariance, LedoitWolf

    fc = ConnectivityMeasure(kind="correlation", cov_estimator=EmpiricalCovariance()).fit_transform([x.T])[0]
    z = (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)
    partial = ConnectivityMeasure(kind="partial correlation").fit_transform([z.T])[0]
    whitening = tangent.whitening
    tangent_vec = logm(whitening @ LedoitWolf().fit(z.T).covariance_ @ whitening).real
    rows, cols = np.triu_indices(N_ROIS, 1)
    values = fc[rows, cols]
    keep = np.argsort(-values)[: round(DENSITY * values.size)]
    g = nx.Graph()
    g.add_nodes_from(range(N_ROIS))
    g.add_weighted_edges_from((int(rows[k]), int(cols[k]), max(values[k], 0.0)) for k in keep)
    partition = nx.community.louvain_communities(g, weight="weight", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grads = GradientMaps(n_components=3, approach="dm", random_state=0).fit(fc).gradients_
    freqs, power = periodogram(x, fs=1 / TR)
    amp = np.sqrt(power)
    band, full = (freqs >= 0.01) & (freqs <= 0.08), (freqs > 0) & (freqs <= 0.25)
    return {
        "correlation": fc,
        "partial": partial,
        "tangent": tangent_vec,
        "global_efficiency": nx.global_efficiency(g),
        "local_efficiency": nx.local_efficiency(g),
        "clustering": np.array([nx.clustering(g, weight="weight")[n] for n in range(N_ROIS)]),
        "modularity": nx.community.modularity(g, partition, weight="weight"),
        "strength": np.array([d for _, d in sorted(g.degree(weight="weight"))]),
        "gradients": procrustes(grads, grad_ref),
        "alff": amp[:, band].mean(1),
        "falff": amp[:, band].sum(1) / amp[:, full].sum(1),
    }


def peak_rss_mb(n_scans: int) -> float:
    """Peak RSS (MB) of a fresh process streaming `n_scans` scans through the batched pipeline."""
    code = (
        f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); import descriptors as b\n"
        "t, r = b.fit()\n"
        f"[b.batched(c, t, r)['modularity'].sum() for c in b.chunks({n_scans})]"
    )
    return run_with_peak_rss(code)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=500)
    parser.add_argument("--reference-scans", type=int, default=30)
    parser.add_argument("--memory-scans", type=int, nargs=2, default=(500, 2000))
    args = parser.parse_args()
    tangent, grad_ref = fit()

    start = time.perf_counter()
    first = None
    for chunk in chunks(args.scans):
        out = batched(chunk, tangent, grad_ref)
        first = first or out
    batched_rate = args.scans / (time.perf_counter() - start)
    print(f"batched pipeline: {args.scans} scans, {batched_rate:.1f} scans/s")

    start = time.perf_counter()
    refs = [reference_one(scan(i), tangent, grad_ref) for i in range(args.reference_scans)]
    reference_rate = args.reference_scans / (time.perf_counter() - start)
    print(f"reference loop: timed on the first {args.reference_scans} scans, extrapolated: {reference_rate:.1f} scans/s")

    shared = [k for k in refs[0] if k != "gradients"]
    diffs = {k: max(float(np.max(np.abs(np.asarray(first[k][i]) - refs[i][k]))) for i in range(args.reference_scans)) for k in shared}
    for name, value in diffs.items():
        print(f"  max |batched - reference| {name:<18} {value:.2e}")
    corr = min(
        abs(np.corrcoef(first["gradients"][i][:, g], refs[i]["gradients"][:, g])[0, 1])
        for i in range(args.reference_scans) for g in range(3)
    )
    print(f"  gradients vs BrainSpace: min |correlation| {corr:.4f} (not in max_abs_diff: BrainSpace runs ARPACK "
          "on the non-symmetric diffusion operator, an approximate eigensolver; ours is the exact symmetric eigh)")
    small, large = (peak_rss_mb(n) for n in args.memory_scans)
    print(f"peak RSS streaming {args.memory_scans[0]} scans: {small:.0f} MB; {args.memory_scans[1]} scans: {large:.0f} MB")
    ratio = batched_rate / reference_rate
    worst = max(diffs.values())
    memory = large / small
    print(f"TARGET speed: ratio {ratio:.1f}x (target >= 5x) {'PASS' if ratio >= 5 else 'FAIL'}")
    print(f"TARGET max_abs_diff: {worst:.1e} (target <= 1e-05) {'PASS' if worst <= 1e-5 else 'FAIL'}")
    print(f"TARGET memory: ratio {memory:.2f}x (target <= 1.5x) {'PASS' if memory <= 1.5 else 'FAIL'}")


if __name__ == "__main__":
    main()
