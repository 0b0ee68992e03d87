"""Two processes against one on the doubled batch: the flags and the comparison the three stages' tests share.

The claim under test is that a step of 2 DDP processes on 2 examples each is the step of 1 process on
the 4 examples: the same loss, the same all-reduced gradient. The step is taken with plain SGD (no
momentum, weight decay, clipping, warm-up or schedule), so each weight moves by exactly
`-learning_rate * gradient`, linear in the gradient. AdamW's first step moves every weight by about
`learning_rate * sign(gradient)`, so a gradient near zero, whose sign depends on the order of a float
sum (an all-reduce against one process's batch), moves by the whole learning rate on one machine and
not on another; with SGD it moves by nearly nothing either way.

Tolerance: the gradient of one weight is a sum over the batch's examples and tokens; reordering that
float32 sum changes it by at most a few float32 epsilons (1.2e-7) of the sum of its terms' magnitudes,
so the SGD steps differ by about 1e-6 of the tensor's largest step (seen: 2e-8 of steps up to 0.13 in
Stage 2, 2.4e-7 of steps up to 1.4 in Stage 1). The tolerance is `STEP_RTOL` (1e-5) of the tensor's
largest step or of its largest value (state that the step does not move but both runs update the
same way, such as the quantiser's all-reduced EMA sums), at least `FLOOR`. A real DDP bug (gradients summed instead of averaged, one process's gradient
dropped, examples seen twice, a loss normalised per process) changes the step by a sizeable fraction
of `learning_rate * |gradient|`, and the test compares the *step*, not only the weights, so it fails.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file

LEARNING_RATE = 0.5
SGD_STEP = [
    "--optim", "sgd", "--learning_rate", str(LEARNING_RATE), "--weight_decay", "0", "--max_grad_norm", "0",
    "--warmup_steps", "0", "--lr_scheduler_type", "constant",
]  # fmt: skip
"""Trainer flags for one plain SGD step (momentum is torch's default 0)."""

STEP_RTOL, FLOOR = 1e-5, 1e-7


def assert_same_step(found: Path, expected: Path, initial: Path, min_moved: float = 1e-4) -> None:
    """The weights after the two-process step (`found`) equal those after the one-process step
    (`expected`); both runs start from the weights in `initial`, and the step must have moved some
    weight of the model by more than `min_moved` (so that the comparison has something to compare).

    Each argument is a safetensors file.
    """
    found, expected, initial = load_file(found), load_file(expected), load_file(initial)
    assert found.keys() == expected.keys() == initial.keys()
    largest_step = 0.0
    for name in expected:
        step_found, step_expected = found[name] - initial[name], expected[name] - initial[name]
        scale = float(step_expected.abs().max())
        tolerance = max(STEP_RTOL * max(scale, float(expected[name].abs().max())), FLOOR)
        difference = float((step_found - step_expected).abs().max())
        assert difference <= tolerance, (
            f"{name}: the two steps differ by {difference:.3g}, more than {tolerance:.3g} (its largest step {scale:.3g})"
        )
        largest_step = max(largest_step, scale)
    assert largest_step > min_moved, f"the step moved no weight by more than {min_moved} (largest {largest_step})"
