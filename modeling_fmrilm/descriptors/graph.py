"""Graph metrics of thresholded connectivity, for a batch of scans.

Input is a batch of connectivity matrices `(n_scans, n_rois, n_rois)`. The graph keeps the
strongest `density` fraction of the off-diagonal edges of each scan (proportional threshold,
default 10 %), as weights (weighted graph) and as 0/1 (binary graph). Definitions follow networkx
(the tests' reference):

- global efficiency: mean over ordered node pairs of `1 / d_ij`; binary `d` = hop count
  (`networkx.global_efficiency`), weighted `d` = shortest path with edge length `1 / w`;
- local efficiency (binary): mean over nodes of the global efficiency of the subgraph induced by
  the node's neighbours (`networkx.local_efficiency`);
- clustering: binary `networkx.clustering`; weighted = Onnela et al. 2005 with weights divided by
  the scan's largest weight (`networkx.clustering(weight=...)`);
- strength: sum of edge weights per node (degree for the binary graph);
- modularity Q of a partition (`networkx.community.modularity`), with the partition from Louvain;
- participation coefficient `1 - sum_s (k_is / k_i)^2` with the atlas networks as modules, then
  averaged per network.

A graph that the threshold leaves disconnected keeps these definitions: a pair of nodes with no
path between them has `d = inf` and adds 0 to the efficiencies (networkx's convention), an
isolated node has local efficiency, clustering and participation 0; `connected_components` counts
the pieces so the corpus can record it. Nothing is NaN.

Where compiled, permissively licensed graph code exists it is used (bctpy, igraph and leidenalg
are GPL and stay out): weighted shortest paths are `scipy.sparse.csgraph.dijkstra` (BSD) and
Louvain is scikit-network's (BSD, Cython; Newman modularity, nodes shuffled by the seed), one call
per scan. Hop counts need no distance matrix: breadth-first search runs as batched boolean matrix
products and counts the node pairs first reached at each step (`inverse_distance_sums`); local
efficiency gathers the neighbourhood subgraphs of all nodes of all scans in chunks of similar
degree, each at most `max_elements` entries, so its memory is bounded whatever the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import version

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph
from sknetwork.clustering import Louvain

from ..errors import FmriInputError
from .connectivity import network_membership

LIBRARIES = {"louvain": "scikit-network", "shortest_paths": "scipy"}
CHUNK_ELEMENTS = 2**18  # 1 MiB of float32 per step: the fastest measured (2**16 to 2**22)


def library_versions() -> dict[str, str]:
    """The graph libraries and their installed versions, for the corpus provenance."""
    return {role: f"{name} {version(name)}" for role, name in LIBRARIES.items()}


def proportional_threshold(fc: np.ndarray, density: float = 0.1) -> np.ndarray:
    """Keep each scan's strongest `density` fraction of edges: `(n, R, R)` -> weights `(n, R, R)`.

    The number of kept undirected edges is `round(density * R (R - 1) / 2)`; the diagonal is 0
    and kept edges with a negative value are set to 0 (graph metrics need non-negative weights).
    """
    if not 0 < density <= 1:
        raise FmriInputError(f"density: expected a fraction in (0, 1], found {density!r}")
    n_scans, n_rois, _ = fc.shape
    rows, cols = np.triu_indices(n_rois, 1)
    n_keep = max(1, int(round(density * rows.size)))
    edges = fc[:, rows, cols]
    keep = np.argpartition(-edges, n_keep - 1, axis=1)[:, :n_keep]
    kept = np.zeros_like(edges)
    np.put_along_axis(kept, keep, np.take_along_axis(edges, keep, axis=1), axis=1)
    weights = np.zeros((n_scans, n_rois, n_rois), dtype=np.float64)
    weights[:, rows, cols] = np.maximum(kept, 0.0)
    return weights + weights.transpose(0, 2, 1)


def inverse_distance_sums(adjacency: np.ndarray) -> np.ndarray:
    """Sum of `1 / hops` over ordered pairs of distinct, connected nodes: `(..., k, k)` bool -> `(...)`.

    Breadth-first search from every node at once: the step-`d` reachable sets are one batched
    float32 matrix product of the step-`d - 1` sets with the adjacency (exact: the entries count
    paths, far below 2**24), and the pairs first reached at step `d` add `1 / d`. A graph stops
    taking part as soon as a step reaches nothing new; unreachable pairs add nothing.
    """
    links = adjacency.astype(np.float32)
    batch = links.shape[:-2]
    links = links.reshape(-1, *links.shape[-2:])
    reached = links > 0
    totals = reached.sum(axis=(-2, -1)).astype(np.float64)
    reached |= np.eye(links.shape[-1], dtype=bool)
    active = np.arange(links.shape[0])
    step = 2
    while active.size:
        grown = np.matmul(reached.astype(np.float32), links[active]) > 0
        grown |= reached
        new = (grown.sum(axis=(-2, -1)) - reached.sum(axis=(-2, -1))).astype(np.float64)
        totals[active] += new / step
        keep = new > 0
        active, reached = active[keep], grown[keep]
        step += 1
    return totals.reshape(batch)


def _pair_mean(sums: np.ndarray, n_nodes: np.ndarray | int) -> np.ndarray:
    """`sums / (n (n - 1))`, 0 where a graph has fewer than two nodes."""
    pairs = np.asarray(n_nodes, dtype=np.float64) * (np.asarray(n_nodes, dtype=np.float64) - 1)
    return np.divide(sums, pairs, out=np.zeros(np.shape(sums)), where=pairs > 0)


def _csr(matrix: np.ndarray) -> sparse.csr_matrix:
    return sparse.csr_matrix(matrix)


def weighted_distances(weights: np.ndarray) -> np.ndarray:
    """Shortest-path lengths with edge length `1 / w` of one graph `(R, R)` (Dijkstra); `inf` when unreachable.

    The weights are symmetric, so the graph is passed as directed (both directions present):
    scipy then skips building the undirected copy (a fifth of the time at 450 nodes).
    """
    lengths = np.divide(1.0, weights, out=np.zeros_like(weights, dtype=np.float64), where=weights > 0)
    return csgraph.dijkstra(_csr(lengths), directed=True)


def global_efficiency(weights: np.ndarray, weighted: bool) -> np.ndarray:
    """Global efficiency `(n, R, R)` -> `(n,)`, binary (hops) or weighted (lengths `1 / w`)."""
    n_rois = weights.shape[-1]
    if not weighted:
        step = max(1, CHUNK_ELEMENTS // n_rois**2)
        sums = [inverse_distance_sums(weights[start : start + step] > 0) for start in range(0, len(weights), step)]
        return _pair_mean(np.concatenate(sums), n_rois)
    sums = np.empty(weights.shape[0])
    for index, matrix in enumerate(weights):
        distance = weighted_distances(matrix)
        finite = np.isfinite(distance) & (distance > 0)
        sums[index] = np.reciprocal(distance[finite]).sum()
    return _pair_mean(sums, n_rois)


def _degree_chunks(degrees: np.ndarray, max_elements: int) -> list[slice]:
    """Cut degrees sorted ascending into runs whose `count * largest**2` stays within `max_elements`."""
    chunks, start = [], 0
    while start < degrees.size:
        cost = np.arange(1, degrees.size - start + 1) * np.maximum(degrees[start:], 1).astype(np.int64) ** 2
        stop = start + max(1, int(np.searchsorted(cost, max_elements, side="right")))
        chunks.append(slice(start, stop))
        start = stop
    return chunks


def local_efficiency(weights: np.ndarray, max_elements: int = CHUNK_ELEMENTS) -> np.ndarray:
    """Binary local efficiency per node `(n, R, R)` -> `(n, R)` (networkx's definition).

    The (scan, node) pairs are sorted by degree and cut into chunks (`_degree_chunks`); each
    chunk's neighbourhood subgraphs are stacked `(chunk, k, k)`, padded to the chunk's largest
    degree `k` with isolated nodes that add nothing, and searched together.
    """
    adjacency = weights > 0
    n_scans, n_rois, _ = adjacency.shape
    degree = adjacency.sum(axis=-1).ravel()
    order = np.argsort(degree, kind="stable")
    sums = np.zeros(degree.size)
    for chunk in _degree_chunks(degree[order], max_elements):
        items = order[chunk]
        k = int(degree[items[-1]])
        if k < 2:
            continue
        scan, node = np.divmod(items, n_rois)
        rows = adjacency[scan, node]
        neighbours = np.argsort(~rows, axis=-1, kind="stable")[:, :k]
        valid = np.arange(k) < degree[items, None]
        sub = adjacency[scan[:, None, None], neighbours[:, :, None], neighbours[:, None, :]]
        sub &= valid[:, :, None] & valid[:, None, :]
        sums[items] = inverse_distance_sums(sub)
    return _pair_mean(sums, degree).reshape(n_scans, n_rois)


def connected_components(weights: np.ndarray) -> np.ndarray:
    """Number of connected components of each thresholded graph: `(n, R, R)` -> `(n,)` ints."""
    return np.array([csgraph.connected_components(_csr(matrix > 0), directed=False)[0] for matrix in weights])


def clustering(weights: np.ndarray, weighted: bool) -> np.ndarray:
    """Clustering coefficient per node `(n, R, R)` -> `(n, R)`; 0 for degree < 2."""
    degree = (weights > 0).sum(axis=-1).astype(np.float64)
    if weighted:
        peak = weights.max(axis=(1, 2), keepdims=True)
        base = np.cbrt(np.divide(weights, peak, out=np.zeros_like(weights), where=peak > 0))
    else:
        base = (weights > 0).astype(np.float64)
    closed = np.einsum("nij,nji->ni", base @ base, base)
    pairs = degree * (degree - 1)
    return np.divide(closed, pairs, out=np.zeros_like(closed), where=pairs > 0)


def modularity(weights: np.ndarray, communities: np.ndarray) -> np.ndarray:
    """Newman modularity `Q = sum_c [L_c / m - (d_c / 2m)^2]` of given partitions.

    Args:
        weights: `(n, R, R)` symmetric non-negative weights (0/1 for the binary graph).
        communities: `(n, R)` integer community of each node.

    Returns:
        `(n,)`; 0 for a graph without edges.
    """
    n_communities = int(communities.max()) + 1
    member = (communities[..., None] == np.arange(n_communities)).astype(np.float64)
    block = member.transpose(0, 2, 1) @ weights @ member
    total = weights.sum(axis=(1, 2))
    within = np.trace(block, axis1=1, axis2=2)
    degree_sums = block.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = within / total - ((degree_sums / total[:, None]) ** 2).sum(axis=1)
    return np.where(total > 0, q, 0.0)


def louvain_communities(weights: np.ndarray, seed: int = 0) -> np.ndarray:
    """Louvain partition of each scan's graph (scikit-network, seeded): `(n, R, R)` -> `(n, R)` ints.

    Newman modularity at resolution 1, nodes shuffled by `seed`, and networkx's stopping threshold
    (1e-7) for the local moves and the aggregation. Each scan gets a fresh generator seeded by
    `seed` (scikit-network's draws from one generator per instance), so a scan's partition does
    not depend on its place in the batch, shard or process.
    """
    labels = np.empty(weights.shape[:2], dtype=np.int64)
    for index, matrix in enumerate(weights):
        louvain = Louvain(
            modularity="newman",
            tol_optimization=1e-7,
            tol_aggregation=1e-7,
            shuffle_nodes=True,
            random_state=seed,
            return_probs=False,
            return_aggregate=False,
        )
        labels[index] = louvain.fit_predict(_csr(matrix))
    return labels


def participation_coefficient(weights: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """`1 - sum_s (k_is / k_i)^2` per node, modules = networks: `(n, R, R)` -> `(n, R)`; 0 if isolated."""
    if weights.shape[-1] != len(labels):
        raise FmriInputError(
            f"network labelling: expected one label per ROI ({weights.shape[-1]} ROIs), found {len(labels)} labels"
        )
    _, member = network_membership(labels)
    per_module = weights @ member
    strength = per_module.sum(axis=-1, keepdims=True)
    share = np.divide(per_module, strength, out=np.zeros_like(per_module), where=strength > 0)
    return np.where(strength[..., 0] > 0, 1.0 - (share**2).sum(axis=-1), 0.0)


def graph_metrics(fc: np.ndarray, labels: Sequence[str], density: float = 0.1, seed: int = 0) -> dict[str, np.ndarray]:
    """All graph metrics of `(n, R, R)` connectivity at a proportional threshold.

    Returns `(n,)` arrays `global_efficiency`, `global_efficiency_binary`, `local_efficiency`
    (binary, node mean), `clustering`, `clustering_binary` (node means), `strength` (node mean),
    `modularity`, `modularity_binary` (Louvain on each graph), `participation` (node mean), and
    `(n, K)` `participation_per_network` (mean over each network's nodes) and `(n,)`
    `graph_components` (connected components of the thresholded graph; 1 when connected).
    """
    weights = proportional_threshold(fc, density)
    binary = (weights > 0).astype(np.float64)
    participation = participation_coefficient(weights, labels)
    _, member = network_membership(labels)
    return {
        "global_efficiency": global_efficiency(weights, weighted=True),
        "global_efficiency_binary": global_efficiency(weights, weighted=False),
        "local_efficiency": local_efficiency(weights).mean(axis=1),
        "clustering": clustering(weights, weighted=True).mean(axis=1),
        "clustering_binary": clustering(weights, weighted=False).mean(axis=1),
        "strength": weights.sum(axis=-1).mean(axis=1),
        "modularity": modularity(weights, louvain_communities(weights, seed)),
        "modularity_binary": modularity(binary, louvain_communities(binary, seed)),
        "participation": participation.mean(axis=1),
        "participation_per_network": participation @ member / member.sum(axis=0),
        "graph_components": connected_components(weights),
    }


__all__ = [
    "CHUNK_ELEMENTS",
    "LIBRARIES",
    "clustering",
    "connected_components",
    "global_efficiency",
    "graph_metrics",
    "inverse_distance_sums",
    "library_versions",
    "local_efficiency",
    "louvain_communities",
    "modularity",
    "participation_coefficient",
    "proportional_threshold",
    "weighted_distances",
]
