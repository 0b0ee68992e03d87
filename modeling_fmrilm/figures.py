"""Figures (PNG, matplotlib, no display needed): the demo's (a held-out window beside its
reconstruction, codebook usage, a scan's FC matrix beside its description, training curves) and
the app's (the windows of an uploaded scan, its FC beside its description)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .atomic import write_atomically


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_atomically(path, lambda handle: figure.savefig(handle, format="png", dpi=110, bbox_inches="tight"))
    finally:
        _pyplot().close(figure)
    return path


def plot_reconstruction(
    window: np.ndarray, reconstruction: np.ndarray, r2: float, title: str, path: str | Path
) -> Path:
    """Heat maps of a window `(n_rois, n_frames)` and its reconstruction, on one colour scale, plus three ROIs' traces."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2), gridspec_kw={"width_ratios": [1, 1, 1.2]})
    limit = float(np.percentile(np.abs(window), 99))
    for axis, values, name in zip(
        axes[:2], (window, reconstruction), ("held-out window", "reconstruction from its codes"), strict=True
    ):
        image = axis.imshow(values, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        axis.set(title=name, xlabel="frame (TR 2 s)", ylabel="ROI")
    figure.colorbar(image, ax=axes[:2], shrink=0.8, label="robust z")
    rois = np.argsort(window.var(axis=1))[-3:]
    for offset, roi in enumerate(rois):
        axes[2].plot(window[roi] + 4 * offset, color=f"C{offset}", label=f"ROI {roi}")
        axes[2].plot(reconstruction[roi] + 4 * offset, color=f"C{offset}", linestyle="--")
    axes[2].set(title=f"solid: data, dashed: reconstruction (R² {r2:.2f})", xlabel="frame", yticks=[])
    axes[2].legend(loc="upper right", fontsize=8)
    figure.suptitle(title)
    return _save(figure, Path(path))


def plot_windows(
    fmri_values: np.ndarray, windows_read: int, target_tr: float, title: str, path: str | Path, max_shown: int = 4
) -> Path:
    """Heat maps (ROI × time) of a scan's first windows after preprocessing `(n_windows, n_rois, n_frames)`,
    on one colour scale; the titles of the first `windows_read` say the model reads them."""
    plt = _pyplot()
    shown = np.asarray(fmri_values)[:max_shown]
    figure, axes = plt.subplots(1, len(shown), figsize=(3.6 * len(shown) + 1.2, 3.8), squeeze=False)
    limit = float(np.percentile(np.abs(shown), 99)) or 1.0
    extent = (0.0, shown.shape[2] * target_tr, shown.shape[1] - 0.5, -0.5)
    for index, (axis, window) in enumerate(zip(axes[0], shown, strict=True)):
        image = axis.imshow(
            window, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest", extent=extent
        )
        axis.set(
            title=f"window {index + 1}" + (" (read by the model)" if index < windows_read else ""),
            xlabel="time in window (s)",
        )
    axes[0][0].set_ylabel("ROI")
    figure.colorbar(image, ax=list(axes[0]), shrink=0.8, label="robust z")
    figure.suptitle(title)
    return _save(figure, Path(path))


def plot_codebook_usage(counts: np.ndarray, title: str, path: str | Path) -> Path:
    """Codes sorted by use (log scale) and the cumulative share of tokens they cover."""
    plt = _pyplot()
    counts = np.sort(np.asarray(counts, dtype=float))[::-1]
    share = np.cumsum(counts) / max(counts.sum(), 1.0)
    probabilities = counts[counts > 0] / counts.sum()
    perplexity = float(np.exp(-(probabilities * np.log(probabilities)).sum()))
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.bar(np.arange(len(counts)), np.maximum(counts, 0.5), width=1.0, color="C0")
    axis.set(
        yscale="log",
        xlabel="code (sorted by use)",
        ylabel="tokens",
        title=f"{title}: {int((counts > 0).sum())}/{len(counts)} codes used, perplexity {perplexity:.1f}",
    )
    twin = axis.twinx()
    twin.plot(share, color="C3")
    twin.set(ylabel="cumulative share of tokens", ylim=(0, 1.02))
    return _save(figure, Path(path))


def plot_fc_with_description(
    data: np.ndarray, networks: Sequence[str], description: str, title: str, path: str | Path
) -> Path:
    """A scan's Pearson FC matrix `(n_rois, n_timepoints)` → `(n_rois, n_rois)`, ROIs grouped by
    network, beside its descriptor text."""
    plt = _pyplot()
    order = np.argsort(np.asarray(networks), kind="stable")
    fc = np.corrcoef(np.asarray(data, dtype=float))[np.ix_(order, order)]
    figure, axes = plt.subplots(1, 2, figsize=(15, 6.5), gridspec_kw={"width_ratios": [1, 1.1]})
    image = axes[0].imshow(fc, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    names = np.asarray(networks)[order]
    starts = [0, *np.flatnonzero(names[1:] != names[:-1]) + 1]
    axes[0].set_yticks(starts, names[starts], fontsize=7)
    axes[0].set_xticks([])
    for start in starts[1:]:
        axes[0].axhline(start - 0.5, color="k", linewidth=0.4)
        axes[0].axvline(start - 0.5, color="k", linewidth=0.4)
    figure.colorbar(image, ax=axes[0], shrink=0.8, label="Pearson r")
    axes[0].set_title("functional connectivity (ROIs grouped by network)")
    axes[1].axis("off")
    axes[1].text(
        0,
        1,
        "\n".join(textwrap.wrap(description, 95)),
        va="top",
        family="monospace",
        fontsize=7.5,
        transform=axes[1].transAxes,
    )
    axes[1].set_title("its description (descriptor corpus)")
    figure.suptitle(title)
    return _save(figure, Path(path))


def plot_training_curves(
    histories: Mapping[str, Sequence[Mapping[str, float]]], keys: Mapping[str, Sequence[str]], path: str | Path
) -> Path:
    """One panel per stage: the named log keys (training and `eval_` entries) against the epoch."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(histories), figsize=(5.5 * len(histories), 4), squeeze=False)
    for axis, (stage, history) in zip(axes[0], histories.items(), strict=True):
        for index, key in enumerate(keys[stage]):
            points = [(entry["epoch"], entry[key]) for entry in history if key in entry and "epoch" in entry]
            if points:
                x, y = zip(*points, strict=True)
                axis.plot(
                    x, y, marker=".", color=f"C{index}", linestyle="--" if key.startswith("eval_") else "-", label=key
                )
        axis.set(title=stage, xlabel="epoch")
        axis.legend(fontsize=8)
    return _save(figure, Path(path))


__all__ = [
    "plot_codebook_usage",
    "plot_fc_with_description",
    "plot_reconstruction",
    "plot_training_curves",
    "plot_windows",
]
