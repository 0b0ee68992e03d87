"""Graph metrics of thresholded connectivity, for a batch of scans.

Input is a batch of connectivity matrices `(n_scans, n_rois, n_rois)`. The graph keeps the
strongest `density` fraction of the off-diagonal edges of each scan (proportional threshold,
default 10 %), as weights (weighted graph) and as 0/1 (binary graph). Definitions follow networkx
(the tests' reference; bctpy is GPL and not used):

- global efficiency: mean over ordered node pairs of `1 / d_ij` (0 when unreachable); binary
  `d` = hop count (`networkx.global_efficiency`), weighted `d` = shortest path with edge length
  `1 / w`;
- local efficiency (binary): mean over nodes of the global efficiency of the subgraph induced by
  the node's neighbours (`networkx.local_efficiency`);
- clustering: binary `networkx.clustering`; weighted = Onnela et al. 2005 with weights divided by
  the scan's largest weight (`networkx.clustering(weight=...)`);
- strength: sum of edge weights per node (degree for the binary graph);
- modularity Q of a partition (`networkx.community.modularity`), with the partition from Louvain
  (`networkx.community.louvain_communities`, seeded). Louvain is sequential by nature: it is the
  one step called per scan; everything else is vectorised over scans and ROIs;
- participation coefficient `1 - sum_s (k_is / k_i)^2` with the atlas networks as modules, then
  averaged per network.

Shortest paths use batched Floyd-Warshall (one vectorised min-plus relaxation of every scan and
node pair per pivot node) and breadth-first search by batched boolean matrix products.
"""

from __future__ import annotations

from collections.abc import Sequence

import networkx as nx
import numpy as np

from ..errors import FmriInputError
from .connectivity import network_membership


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


def hop_distances(adjacency: np.ndarray) -> np.ndarray:
    """Hop counts in binary graphs `(..., R, R)` by breadth-first search; `inf` when unreachable.

    Each step extends every scan's reachable set by one batched matrix product; the number of
    steps is the largest eccentricity in the batch.
    """
    links = adjacency.astype(np.float32)
    eye = np.eye(links.shape[-1], dtype=bool)
    reached = (links > 0) | eye
    distance = np.where(reached, (~eye).astype(np.float64), np.inf)
    for step in range(2, links.shape[-1]):
        grown = (reached.astype(np.float32) @ links > 0) | reached
        new = grown & ~reached
        if not new.any():
            break
        distance[new] = step
        reached = grown
    return distance


def weighted_distances(weights: np.ndarray) -> np.ndarray:
    """Shortest-path lengths with edge length `1 / w` in `(..., R, R)`, batched Floyd-Warshall."""
    with np.errstate(divide="ignore"):
        distance = np.where(weights > 0, 1.0 / weights, np.inf)
    diagonal = np.arange(weights.shape[-1])
    distance[..., diagonal, diagonal] = 0.0
    for pivot in range(weights.shape[-1]):
        np.minimum(distance, distance[..., :, pivot, None] + distance[..., None, pivot, :], out=distance)
    return distance


def efficiency_from_distances(distance: np.ndarray, n_nodes: np.ndarray | int | None = None) -> np.ndarray:
    """Mean of `1 / d` over ordered pairs of distinct nodes: `(..., R, R)` -> `(...)`.

    `n_nodes` counts the nodes of each graph when `distance` is padded with unreachable nodes.
    """
    size = distance.shape[-1] if n_nodes is None else n_nodes
    with np.errstate(divide="ignore"):
        inverse = np.where(np.isfinite(distance) & (distance > 0), 1.0 / distance, 0.0)
    pairs = np.asarray(size * (size - 1), dtype=np.float64)
    return np.divide(inverse.sum(axis=(-2, -1)), pairs, out=np.zeros(inverse.shape[:-2]), where=pairs > 0)


def global_efficiency(weights: np.ndarray, weighted: bool) -> np.ndarray:
    """Global efficiency `(n, R, R)` -> `(n,)`, binary (hops) or weighted (lengths `1 / w`)."""
    distance = weighted_distances(weights) if weighted else hop_distances(weights > 0)
    return efficiency_from_distances(distance)


def local_efficiency(weights: np.ndarray) -> np.ndarray:
    """Binary local efficiency per node `(n, R, R)` -> `(n, R)` (networkx's definition).

    The neighbourhood subgraphs of all nodes of all scans are gathered into one padded stack
    `(n * R, k_max, k_max)` (k_max = largest degree in the batch) and searched together.
    """
    adjacency = weights > 0
    n_scans, n_rois, _ = adjacency.shape
    degree = adjacency.sum(axis=-1)
    k_max = max(int(degree.max()), 1)
    neighbours = np.argsort(~adjacency, axis=-1, kind="stable")[..., :k_max]
    valid = np.arange(k_max) < degree[..., None]
    scan = np.arange(n_scans)[:, None, None, None]
    sub = adjacency[scan, neighbours[..., :, None], neighbours[..., None, :]]
    sub &= valid[..., :, None] & valid[..., None, :]
    distance = hop_distances(sub.reshape(-1, k_max, k_max)).reshape(n_scans, n_rois, k_max, k_max)
    return efficiency_from_distances(distance, degree)


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
    """Louvain partition of each scan's graph (networkx, seeded): `(n, R, R)` -> `(n, R)` ints."""
    labels = np.zeros(weights.shape[:2], dtype=np.int64)
    for index, matrix in enumerate(weights):
        graph = nx.from_numpy_array(matrix)
        for community, nodes in enumerate(nx.community.louvain_communities(graph, weight="weight", seed=seed)):
            labels[index, list(nodes)] = community
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


def graph_metrics(
    fc: np.ndarray, labels: Sequence[str], density: float = 0.1, seed: int = 0
) -> dict[str, np.ndarray]:
    """All graph metrics of `(n, R, R)` connectivity at a proportional threshold.

    Returns `(n,)` arrays `global_efficiency`, `global_efficiency_binary`, `local_efficiency`
    (binary, node mean), `clustering`, `clustering_binary` (node means), `strength` (node mean),
    `modularity`, `modularity_binary` (Louvain on each graph), `participation` (node mean), and
    `(n, K)` `participation_per_network` (mean over each network's nodes).
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
    }
