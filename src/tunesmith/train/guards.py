"""Stop a run that has stopped learning, instead of letting it end "completed".

Only a non-finite loss or gradient used to stop a run. A learning rate far too high (1e6) can
keep both finite and still destroy the model: the loss shoots far above where it started, or
the model collapses to the uniform distribution (every token equally likely: the loss sits at
ln(vocabulary size)), or the gradient dies (exactly zero, step after step). Each of these, held
for several consecutive steps, stops the run with a TrainingError (the run is marked failed).

The guard looks only at two numbers the loop already has on the host (the step's loss and its
gradient norm): no extra device sync, no extra work per step. The same numbers are all-reduced,
so every rank decides the same way at the same step.
"""

from __future__ import annotations

import math
from typing import Any

from tunesmith.errors import TrainingError

DIVERGED_STEPS = 5  # consecutive steps far above the start
COLLAPSED_STEPS = 5  # consecutive steps at the uniform-distribution loss
ZERO_GRAD_STEPS = 3  # consecutive steps with a gradient of exactly zero
UNIFORM_TOLERANCE = 0.01  # relative distance to ln(vocab) that counts as "at" it
HINT = "lower learning_rate (or lr_multiplier); the run is marked failed"


def diverged_above(start: float) -> float:
    """The loss that is 'far above' a start loss: more than double it, and 3 nats above it."""
    return start + max(start, 3.0)


class DivergenceGuard:
    """Counts consecutive bad steps; `check` raises a TrainingError when a count runs out.

    `start_loss` is the first step's loss (before any update moved the model: a diverging run
    cannot drag it up); the loop keeps it in its checkpointed state so a resumed run compares
    against the same start. `uniform_loss` is ln(vocab) for objectives whose loss is a token
    cross-entropy (None otherwise); the collapse check only applies to a run that started well
    below it (a randomly initialised model starts there). `zero_grad_stops=False` for GRPO,
    where a zero gradient only means every group's completions scored alike (nothing to learn
    from this step's samples, not a dead model)."""

    def __init__(self, uniform_loss: float | None, *, zero_grad_stops: bool = True):
        self.uniform = uniform_loss
        self.zero_grad_stops = zero_grad_stops
        self.high = self.flat = self.zero = 0

    def check(self, state: Any, step: int, loss: float, grad_norm: float) -> None:
        if state.start_loss is None:
            state.start_loss = loss
        start = state.start_loss
        self.high = self.high + 1 if loss > diverged_above(start) else 0
        at_uniform = (
            self.uniform is not None
            and start < (1 - 10 * UNIFORM_TOLERANCE) * self.uniform
            and math.isclose(loss, self.uniform, rel_tol=UNIFORM_TOLERANCE)
        )
        self.flat = self.flat + 1 if at_uniform else 0
        self.zero = self.zero + 1 if grad_norm == 0.0 else 0
        if self.flat >= COLLAPSED_STEPS:
            raise TrainingError(
                f"the model collapsed: the loss has sat at {loss:.4g} = ln(vocabulary size), "
                f"the loss of a uniform guess, for {self.flat} steps (step {step}; it started at "
                f"{start:.4g}); training stopped",
                hint=HINT,
            )
        if self.high >= DIVERGED_STEPS:
            raise TrainingError(
                f"training diverged: the loss is {loss:.4g} at step {step}, far above the "
                f"{start:.4g} it started at, for {self.high} steps in a row; training stopped",
                hint=HINT,
            )
        if self.zero >= ZERO_GRAD_STEPS and self.zero_grad_stops:
            raise TrainingError(
                f"the gradient has been exactly zero for {self.zero} steps (step {step}): the "
                "model no longer learns anything; training stopped",
                hint=HINT,
            )


def uniform_loss(model: Any, unit: str) -> float | None:
    """ln(vocabulary size) when the objective's loss is a per-token cross-entropy."""
    if unit != "tokens":
        return None
    config = getattr(model, "config", None)
    vocab = getattr(config, "vocab_size", None)
    return math.log(vocab) if isinstance(vocab, int) and vocab > 1 else None
