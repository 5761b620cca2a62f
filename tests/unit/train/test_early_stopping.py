"""The plateau rule of early stopping (loop._early_stopping): a meaningful improvement resets
the count, a creeping one still makes the best weights but does not, and `min_delta` auto is
1 % of the best loss."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tunesmith.config import EarlyStoppingSpec
from tunesmith.train import loop
from tunesmith.train.loop import LoopState, _early_stopping


def _ctx(monkeypatch, **es):
    saved: list[int] = []
    monkeypatch.setattr(loop, "save", lambda ctx: saved.append(ctx.state.step))
    spec = SimpleNamespace(early_stopping=EarlyStoppingSpec(**es), save_every_steps=1000)
    return SimpleNamespace(spec=spec, state=LoopState()), saved


def _feed(ctx, losses):
    stops = []
    for step, value in enumerate(losses, start=1):
        ctx.state.step = step
        stops.append(_early_stopping(ctx, value))
    return stops


def test_a_creeping_plateau_stops_and_the_best_step_is_kept(monkeypatch):
    ctx, saved = _ctx(monkeypatch, enabled=True, patience=3)
    # falls, then creeps down by 0.2 % per evaluation: not meaningful (auto: 1 %)
    stops = _feed(ctx, [2.0, 1.5, 1.497, 1.494, 1.491])
    assert stops == [False, False, False, False, True]
    assert ctx.state.best_step == 5 and ctx.state.best_val_loss == pytest.approx(1.491)
    assert saved == [1, 2, 3, 4, 5]  # every new best is saved, to be restored


def test_a_meaningful_improvement_resets_the_count(monkeypatch):
    ctx, _ = _ctx(monkeypatch, enabled=True, patience=2)
    stops = _feed(ctx, [2.0, 2.1, 1.8, 1.85, 1.79, 1.6, 1.7, 1.65])
    # 1.8 (-10 %) and 1.6 (-11 %) reset; 1.79 is a new best but only -0.6 %
    assert stops == [False, False, False, False, True, False, False, True]
    assert ctx.state.best_step == 6


def test_an_absolute_min_delta_and_disabled_stopping(monkeypatch):
    ctx, _ = _ctx(monkeypatch, enabled=True, patience=1, min_delta=0.0)
    assert _feed(ctx, [2.0, 1.999, 2.5]) == [False, False, True]  # any improvement counts
    off, saved = _ctx(monkeypatch, enabled=False, patience=1)
    assert _feed(off, [2.0, 3.0, 4.0]) == [False, False, False]  # tracked, never stops
    assert off.state.best_step == 1 and saved == []
