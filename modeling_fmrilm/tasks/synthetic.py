"""A synthetic cohort with known effects, built on the embedded data's connectivity structure.

Each synthetic subject's scan `(94 AAL2 regions, n_timepoints)` is Gaussian with

- **spatial structure** from the embedded scans: the group Pearson FC (mean of the 12 real scans'
  correlation matrices), perturbed per subject by a Wishart draw with `subject_df` degrees of
  freedom (the subject's own FC is the correlation of `subject_df` samples from the group FC), so
  subjects differ as real ones do;
- **temporal autocorrelation** of its own: an AR(1) filter whose coefficient is the lag-1
  autocorrelation of a randomly drawn real scan (mean over regions), carried to the synthetic TR
  as `phi ** (tr / tr_real)` (an exponential decay), applied to every region alike so the spatial
  correlation is kept exactly;
- a **group effect**: for the patients (half the subjects, seeded), a shared signal of weight
  `group_effect` is added to every region of one named network and, with the same sign, to every
  region of another (a negative weight adds it with opposite signs): their between-network coupling
  rises (falls) from `r` to about `(r ± w²) / (1 + w²)`;
- a **continuous effect**: every subject has a latent `u ~ N(0, 1)`; a shared signal of weight
  `score_effect * (1 + tanh(u))` couples a second pair of networks, and the score is
  `u + score_noise * N(0, 1)`: the score is tied to that pair's coupling, plus noise;
- a **dynamics effect** (`dynamics_effect > 0`; a second group label, `dynamics`, drawn
  independently of `group`): every region of `dynamics_network` gets its own added noise of
  variance `dynamics_effect`, slow (AR(1), coefficient `dynamics_ar`) for the subjects labelled
  `slow` and white for those labelled `typical`. The noise is independent of every other signal and standardised
  (zero mean, unit variance) within each block of `dynamics_block` frames, so its sample variance is
  the same in both groups in any window made of whole blocks and in the whole scan (a slow noise
  left alone has less variance inside a short window than a white one, which would show in the
  FC); the expected zero-lag correlations, and so the FC, are then the same in both groups, and
  only that network's lag-1 autocorrelation and low-frequency power differ. A connectivity model
  cannot read it; a temporal statistic can.

Setting `group_effect=0` (or `score_effect=0`) removes the effect: the labels are then independent
of the scans, and every honest classifier sits at chance. Everything is vectorised over subjects,
regions and time (batched Cholesky, batched matmul, one FFT for the AR filter); the generator is
seeded. Because each draw covers the whole cohort at once, a cohort is one draw: `sub-0001` of a
200-subject cohort is not `sub-0001` of a 1000-subject cohort with the same seed (to hold subjects
out of a larger cohort, take them from that cohort, not from a smaller one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from ..descriptors.connectivity import correlation, network_membership, network_pair_fc, network_pair_names
from ..errors import FmriInputError
from ..io import FmriScan, aal2_table, load_embedded
from ..io.embedded import ATLAS_NAME
from .labels import LabelTable

DATASET = "synthetic"


@dataclass(frozen=True)
class SyntheticSettings:
    """Every parameter of a synthetic cohort (recorded with it)."""

    n_subjects: int = 200
    n_timepoints: int = 320
    tr: float = 2.0
    group_effect: float = 0.2
    group_networks: tuple[str, str] = ("Frontal", "Parietal")
    score_effect: float = 0.2
    score_networks: tuple[str, str] = ("Occipital", "Temporal")
    score_noise: float = 0.5
    dynamics_effect: float = 0.0
    dynamics_network: str = "Sensorimotor"
    dynamics_ar: float = 0.9
    dynamics_block: int = 16
    patient_fraction: float = 0.5
    subject_df: int | None = 400
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SyntheticCohort:
    """The scans, their known labels and what generated them.

    Attributes:
        scans: one `FmriScan` per subject (`dataset="synthetic"`, `subject="sub-0001"`, …).
        group: 0 control / 1 patient, per subject.
        score: the continuous score, per subject.
        dynamics: 0 control / 1 patient of the dynamics effect, per subject (drawn whether or not
            the effect is on, from its own seeded generator, so the other draws do not change).
        latent: `u`, the latent that sets the score-pair coupling.
        ar_coefficients: each subject's AR(1) coefficient at `settings.tr`.
        settings: the parameters.
    """

    scans: list[FmriScan]
    group: np.ndarray
    score: np.ndarray
    latent: np.ndarray
    ar_coefficients: np.ndarray
    settings: SyntheticSettings
    dynamics: np.ndarray | None = None

    @property
    def subjects(self) -> list[str]:
        return [scan.subject for scan in self.scans]

    def effect_sizes(self, signals: Sequence[np.ndarray] | None = None) -> tuple[float, float]:
        """How strong the cohort's two effects are in `signals`: `(d, r)`.

        `d` is Cohen's d (patients minus controls, pooled std) of the mean Pearson FC between the
        two `group_networks`; `r` is the Pearson correlation of the score with the mean FC between
        the two `score_networks`. No model is fitted, so they measure how much of each effect a
        view of the scans keeps (a window, a reconstruction, decoded tokens).

        Args:
            signals: one `(n_rois, n_frames)` array per subject, in cohort order, all of one
                length; default: the scans themselves.

        Raises:
            FmriInputError: not one signal per subject, or signals of different shapes.
        """
        signals = [scan.data for scan in self.scans] if signals is None else list(signals)
        shapes = {np.shape(signal) for signal in signals}
        if len(signals) != len(self.scans) or len(shapes) != 1:
            raise FmriInputError(
                f"signals: expected one (n_rois, n_frames) array per subject ({len(self.scans)}), all of one shape; "
                f"found {len(signals)} with shapes {sorted(shapes)[:3]}"
            )
        labels = list(aal2_table().systems)
        pairs = network_pair_fc(correlation(np.stack(signals)), labels)
        names = network_pair_names(network_membership(labels)[0])

        def pair(networks: tuple[str, str]) -> np.ndarray:
            a, b = networks
            return pairs[:, names.index(f"{a}-{b}") if f"{a}-{b}" in names else names.index(f"{b}-{a}")]

        coupling, patients = pair(self.settings.group_networks), self.group == 1
        pooled = np.sqrt((coupling[patients].var(ddof=1) + coupling[~patients].var(ddof=1)) / 2)
        d = (coupling[patients].mean() - coupling[~patients].mean()) / pooled
        r = np.corrcoef(pair(self.settings.score_networks), self.score)[0, 1]
        return float(d), float(r)

    def label_table(self) -> LabelTable:
        """Canonical columns `group` (`control`/`patient`), `score` and `dynamics` (`typical`/`slow`),
        for the `synthetic_*` tasks."""
        return LabelTable(
            source=f"synthetic cohort (seed {self.settings.seed})",
            dataset=DATASET,
            subjects=self.subjects,
            columns={
                "group": ["patient" if g else "control" for g in self.group],
                "score": [float(s) for s in self.score],
                "dynamics": ["slow" if g else "typical" for g in self.dynamics],
            },
        )


@dataclass(frozen=True)
class EmbeddedStructure:
    """What the generator takes from the real scans: the group FC and the per-scan AR(1) coefficients."""

    group_fc: np.ndarray
    lag1: np.ndarray
    trs: np.ndarray


@lru_cache(maxsize=1)
def embedded_structure() -> EmbeddedStructure:
    """Group Pearson FC (mean over the embedded scans) and each scan's mean lag-1 autocorrelation."""
    scans = load_embedded()
    fcs, lag1 = [], []
    for scan in scans:
        x = scan.data.astype(np.float64)
        x = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)
        fcs.append(x @ x.T / x.shape[1])
        lag1.append(float(np.mean((x[:, 1:] * x[:, :-1]).mean(axis=1))))
    return EmbeddedStructure(np.mean(fcs, axis=0), np.asarray(lag1), np.asarray([scan.tr for scan in scans]))


def _network_mask(systems: np.ndarray, name: str) -> np.ndarray:
    mask = systems == name
    if not mask.any():
        raise FmriInputError(f"network {name!r}: expected one of the AAL2 systems {sorted(set(systems.tolist()))}")
    return mask


def ar1_filter(x: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Circular AR(1) filtering along the last axis, unit variance kept, one coefficient per batch item.

    `x` `(n, R, T)` white noise -> `(n, R, T)` with lag-k autocorrelation `phi**k` (+ a wrap-around
    term `phi**(T-k)`, negligible for `T >> 1/(1-phi)`): the frequency response
    `sqrt(1 - phi²) / (1 - phi e^{-2πif})` applied by one real FFT.
    """
    frequencies = np.fft.rfftfreq(x.shape[-1])
    phi = np.asarray(phi, dtype=np.float64)[:, None, None]
    response = np.sqrt(1 - phi**2) / (1 - phi * np.exp(-2j * np.pi * frequencies))
    return np.fft.irfft(np.fft.rfft(x, axis=-1) * response, n=x.shape[-1], axis=-1)


def blockwise_standardised(x: np.ndarray, block: int) -> np.ndarray:
    """`x` `(..., T)` with every block of `block` frames along the last axis (the last one may be
    shorter, unless it would have one frame: it then joins the block before) set to zero mean and
    unit variance."""
    n = x.shape[-1]
    whole = n // block * block
    if n - whole == 1 and whole >= block:
        whole -= block
    pieces = [x[..., :whole].reshape(*x.shape[:-1], whole // block, block)] if whole else []
    tail = x[..., whole:][..., None, :] if whole < n else None
    standardised = [
        ((piece - piece.mean(-1, keepdims=True)) / piece.std(-1, keepdims=True)).reshape(*x.shape[:-1], -1)
        for piece in pieces + ([tail] if tail is not None else [])
    ]
    return np.concatenate(standardised, axis=-1)


def make_synthetic_cohort(
    settings: SyntheticSettings = SyntheticSettings(), structure: EmbeddedStructure | None = None
) -> SyntheticCohort:
    """Draw a synthetic cohort (see the module docstring).

    Args:
        settings: sizes, effects (set one to 0 to remove it), named networks, seed.
        structure: the real data's FC and autocorrelations; default: from the embedded scans.

    Raises:
        FmriInputError: an unknown network name, or sizes out of range.
    """
    s = settings
    if (
        s.n_subjects < 4
        or s.n_timepoints < 8
        or not 0 < s.patient_fraction < 1
        or s.tr <= 0
        or s.dynamics_block < 2
        or s.dynamics_effect < 0
    ):
        raise FmriInputError(
            "synthetic settings: expected n_subjects >= 4, n_timepoints >= 8, 0 < patient_fraction < 1, tr > 0, "
            f"dynamics_block >= 2 and dynamics_effect >= 0, found {s}"
        )
    structure = structure or embedded_structure()
    table = aal2_table()
    systems = np.asarray(table.systems)
    n_rois = len(systems)
    rng = np.random.default_rng(s.seed)

    base = 0.999 * structure.group_fc + 0.001 * np.eye(n_rois)
    chol = np.linalg.cholesky(base)
    if s.subject_df:
        samples = chol @ rng.standard_normal((s.n_subjects, n_rois, s.subject_df))
        cov = samples @ samples.transpose(0, 2, 1) / s.subject_df
        scale = 1 / np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
        corr = cov * scale[:, :, None] * scale[:, None, :]
        mixing = np.linalg.cholesky(0.999 * corr + 0.001 * np.eye(n_rois))
    else:
        mixing = np.broadcast_to(chol, (s.n_subjects, n_rois, n_rois))
    x = mixing @ rng.standard_normal((s.n_subjects, n_rois, s.n_timepoints))

    group = np.zeros(s.n_subjects, dtype=np.int64)
    group[rng.permutation(s.n_subjects)[: int(round(s.patient_fraction * s.n_subjects))]] = 1
    latent = rng.standard_normal(s.n_subjects)
    score = latent + s.score_noise * rng.standard_normal(s.n_subjects)

    shared = rng.standard_normal((2, s.n_subjects, s.n_timepoints))
    a, b = (_network_mask(systems, name) for name in s.group_networks)
    loading = a.astype(np.float64) + np.sign(s.group_effect or 1.0) * b
    x += (abs(s.group_effect) * group)[:, None, None] * loading[None, :, None] * shared[0][:, None, :]
    c, d = (_network_mask(systems, name) for name in s.score_networks)
    weight = s.score_effect * (1 + np.tanh(latent))
    x += weight[:, None, None] * (c | d).astype(np.float64)[None, :, None] * shared[1][:, None, :]

    source = rng.integers(len(structure.lag1), size=s.n_subjects)
    phi = np.clip(structure.lag1[source], 0.0, 0.99) ** (s.tr / structure.trs[source])
    x = ar1_filter(x, phi)
    dynamics_rng = np.random.default_rng([s.seed, 1])  # its own stream: the draws above do not depend on the effect
    dynamics = np.zeros(s.n_subjects, dtype=np.int64)
    dynamics[dynamics_rng.permutation(s.n_subjects)[: s.n_subjects // 2]] = 1
    if s.dynamics_effect > 0:
        network = _network_mask(systems, s.dynamics_network)
        noise = ar1_filter(
            dynamics_rng.standard_normal((s.n_subjects, int(network.sum()), s.n_timepoints)), s.dynamics_ar * dynamics
        )
        x[:, network] += np.sqrt(s.dynamics_effect) * blockwise_standardised(noise, s.dynamics_block)
    x = x.astype(np.float32)

    scans = [
        FmriScan(
            data=x[i],
            tr=s.tr,
            subject=f"sub-{i + 1:04d}",
            dataset=DATASET,
            atlas=ATLAS_NAME,
            roi_names=list(table.names),
        )
        for i in range(s.n_subjects)
    ]
    return SyntheticCohort(scans, group, score, latent, phi, s, dynamics)


__all__ = [
    "DATASET",
    "EmbeddedStructure",
    "SyntheticCohort",
    "SyntheticSettings",
    "ar1_filter",
    "blockwise_standardised",
    "embedded_structure",
    "make_synthetic_cohort",
]
