"""The demo's figures are written as PNG files of the expected size, atomically."""

from __future__ import annotations

import numpy as np
from PIL import Image

from modeling_fmrilm.figures import (
    plot_codebook_usage,
    plot_fc_with_description,
    plot_reconstruction,
    plot_training_curves,
)


def test_every_figure_is_a_png(tmp_path):
    rng = np.random.default_rng(0)
    window = rng.standard_normal((10, 32))
    paths = [
        plot_reconstruction(window, 0.8 * window, 0.64, "toy", tmp_path / "a.png"),
        plot_codebook_usage(rng.poisson(3, 64), "toy", tmp_path / "b.png"),
        plot_fc_with_description(
            rng.standard_normal((10, 50)),
            ["A"] * 4 + ["B"] * 6,
            "Overall connectivity is typical. " * 20,
            "toy",
            tmp_path / "c.png",
        ),
        plot_training_curves(
            {"s1": [{"epoch": 1, "loss": 2.0}, {"epoch": 1, "eval_loss": 2.5}, {"epoch": 2, "loss": 1.0}]},
            {"s1": ["loss", "eval_loss"]},
            tmp_path / "d.png",
        ),
    ]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "c.png", "d.png"]  # no temporary left
