"""z-scores -> severity bands -> a deterministic paragraph describing one scan.

Bands (applied to the z value as printed, rounded to 2 decimals, so the word always agrees with
the number):

    z < -2          markedly lower
    -2 <= z < -1    somewhat reduced
    -1 <= z <= 1    typical
    1 < z <= 2      somewhat elevated
    z > 2           markedly elevated

i.e. |z| = 1 and |z| = 2 exactly belong to the milder band. Each sentence has several phrasings;
the choice is drawn from a generator seeded by `(seed, crc32(scan id))`, so a scan gets the same
text on every run and different scans get varied wording. The only numbers the text states are
z-scores of the record (formatted `+0.00`); feature and network names carry no digits.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import numpy as np

BANDS = ("markedly lower", "somewhat reduced", "typical", "somewhat elevated", "markedly elevated")

LABELS = {
    "fc_mean": "overall functional connectivity",
    "fc_within": "within-network connectivity",
    "fc_between": "between-network connectivity",
    "gradient1_range": "the range of the principal gradient",
    "gradient1_variance": "the spread of the principal gradient",
    "gradient2_range": "the range of the second gradient",
    "gradient2_variance": "the spread of the second gradient",
    "gradient3_range": "the range of the third gradient",
    "gradient3_variance": "the spread of the third gradient",
    "global_efficiency": "global efficiency",
    "local_efficiency": "local efficiency",
    "clustering": "clustering",
    "modularity": "modularity",
    "strength": "node strength",
    "participation": "the participation coefficient",
    "ica_amplitude": "the amplitude of the independent components",
    "ica_variability": "their moment-to-moment variability",
    "ica_spectral_ratio": "their low- to high-frequency power ratio",
    "ica_autocorrelation": "their temporal autocorrelation",
    "ica_outlier_rate": "their rate of outlying frames",
    "ica_fnc": "the coupling between components",
    "falff": "the fractional amplitude of low-frequency fluctuations",
    "hurst": "the Hurst exponent",
}

OPENINGS = {
    "connectivity": ("Connectivity: ", "Functional connectivity: ", "Network coupling: "),
    "gradients": ("Gradients: ", "Connectivity gradients: ", "Macroscale gradients: "),
    "graph": ("Graph topology: ", "Network topology: ", "Graph metrics: "),
    "dynamics": ("Dynamics: ", "Signal dynamics: ", "Component dynamics and amplitude: "),
}
ITEM_TEMPLATES = (
    "{label} is {band} (z = {z})",
    "{label} appears {band} (z = {z})",
    "{label} reads as {band} (z = {z})",
)
PAIR_OPENINGS = {
    "elevated": ("The most elevated network pairs are ", "Coupling is highest relative to the cohort for "),
    "reduced": ("the most reduced are ", "the lowest relative to the cohort are "),
}
NO_PAIRS = ("No network pair departs from the typical range.", "All network pairs lie within the typical range.")
COHORT_LINES = (
    "Resting-state scan described against the {dataset} cohort.",
    "Descriptors relative to the {dataset} reference cohort.",
)


def band(z: float) -> str:
    """Severity band of a z-score (boundary convention in the module docstring)."""
    if z < -2:
        return BANDS[0]
    if z < -1:
        return BANDS[1]
    if z <= 1:
        return BANDS[2]
    if z <= 2:
        return BANDS[3]
    return BANDS[4]


def format_z(z: float) -> str:
    """`+1.23` / `-0.50`: two decimals with an explicit sign."""
    return f"{z:+.2f}"


def _item(rng: np.random.Generator, label: str, z: float) -> str:
    return ITEM_TEMPLATES[rng.integers(len(ITEM_TEMPLATES))].format(label=label, band=band(z), z=format_z(z))


def _sentence(parts: Sequence[str]) -> str:
    body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return body[0].upper() + body[1:] + "."


def top_pairs(names: Sequence[str], z: np.ndarray, k: int = 3) -> tuple[list[int], list[int]]:
    """Indices of the `k` most elevated (z > 1) and most reduced (z < -1) pairs, strongest first."""
    z = np.asarray(z, dtype=np.float64)
    order = np.argsort(np.where(np.isnan(z), 0.0, z), kind="stable")
    elevated = [int(i) for i in order[::-1][:k] if z[i] > 1]
    reduced = [int(i) for i in order[:k] if z[i] < -1]
    return elevated, reduced


def describe(
    z: Mapping[str, float],
    pair_names: Sequence[str],
    pair_z: Sequence[float],
    dataset: str,
    scan_id: str,
    domains: Mapping[str, Sequence[str]],
    seed: int = 0,
) -> str:
    """The paragraph for one scan.

    Args:
        z: rounded z-score of every described scalar.
        pair_names, pair_z: network pairs (`"A-B"`) and their rounded z-scores (NaN = undefined).
        dataset: cohort the scan is measured against.
        scan_id: stable identifier of the scan (seeds the phrasing).
        domains: domain -> scalar names, in text order.
        seed: corpus seed.
    """
    rng = np.random.default_rng([seed, zlib.crc32(scan_id.encode())])
    lines = [COHORT_LINES[rng.integers(len(COHORT_LINES))].format(dataset=dataset)]
    for domain, names in domains.items():
        opening = OPENINGS[domain][rng.integers(len(OPENINGS[domain]))]
        lines.append(opening + _sentence([_item(rng, LABELS[name], z[name]) for name in names]))
        if domain == "connectivity":
            lines.append(_pairs_sentence(rng, pair_names, np.asarray(pair_z, dtype=np.float64)))
    return " ".join(lines)


def _pairs_sentence(rng: np.random.Generator, names: Sequence[str], z: np.ndarray) -> str:
    elevated, reduced = top_pairs(names, z)
    if not elevated and not reduced:
        return NO_PAIRS[rng.integers(len(NO_PAIRS))]
    parts = []
    for kind, indices in (("elevated", elevated), ("reduced", reduced)):
        if indices:
            listed = ", ".join(f"{names[i]} (z = {format_z(z[i])}, {band(z[i])})" for i in indices)
            parts.append(PAIR_OPENINGS[kind][rng.integers(len(PAIR_OPENINGS[kind]))] + listed)
    body = "; ".join(parts)
    return body[0].upper() + body[1:] + "."


__all__ = [
    "BANDS",
    "COHORT_LINES",
    "ITEM_TEMPLATES",
    "LABELS",
    "NO_PAIRS",
    "OPENINGS",
    "PAIR_OPENINGS",
    "band",
    "describe",
    "format_z",
    "top_pairs",
]
