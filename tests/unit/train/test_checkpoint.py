"""Checkpoints are all-or-nothing and restore optimizer and RNG exactly, without pickles."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from tunesmith.runs import RunDir
from tunesmith.train import checkpoint as ckpt


def _model_and_optimizer():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    return model, opt


def _step(model, opt, seed):
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(seed))
    model(x).pow(2).sum().backward()
    opt.step()
    opt.zero_grad()


def test_save_load_continues_exactly(tmp_path):
    model, opt = _model_and_optimizer()
    _step(model, opt, 1)
    msd, osd = ckpt.gather_state(model, opt, full=True)
    path = ckpt.save_checkpoint(
        RunDir(tmp_path),
        1,
        model_state=msd,
        optimizer_state=osd,
        trainer_state={"step": 1},
        rng_states=[ckpt.rng_state()],
        keep=2,
    )
    assert (path / ckpt.COMPLETE).is_file() and path.name == "step-1"
    _step(model, opt, 2)
    expected = [p.detach().clone() for p in model.parameters()]

    fresh, fresh_opt = _model_and_optimizer()
    contents = ckpt.read_checkpoint(path)
    assert contents["trainer_state"] == {"step": 1}
    ckpt.load_training_state(fresh, fresh_opt, contents)
    _step(fresh, fresh_opt, 2)
    for a, b in zip(fresh.parameters(), expected, strict=True):
        assert torch.equal(a, b)
    # nothing in a checkpoint needs unpickling
    assert not list(path.glob("*.pt")) and not list(path.glob("*.bin"))


def test_rng_states_round_trip():
    state = ckpt.rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def _save_steps(run_dir, steps, *, keep: int, protect=None) -> None:
    """Save one trained state as a checkpoint at each of `steps`, pruning as the loop does."""
    model, opt = _model_and_optimizer()
    _step(model, opt, 1)
    msd, osd = ckpt.gather_state(model, opt, full=True)
    for step in steps:
        ckpt.save_checkpoint(
            RunDir(run_dir),
            step,
            model_state=msd,
            optimizer_state=osd,
            trainer_state={},
            rng_states=[],
            keep=keep,
            protect=protect,
        )


def test_incomplete_checkpoints_are_ignored_and_removed(tmp_path):
    _save_steps(tmp_path, (2, 4, 6), keep=2)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step-4", "step-6"]  # pruned to 2
    (root / ".tmp-step-8-123").mkdir()  # killed mid-save
    (root / "step-9").mkdir()  # no marker
    assert RunDir(tmp_path).latest_checkpoint() == root / "step-6"
    removed = {p.name for p in ckpt.remove_incomplete(RunDir(tmp_path))}
    assert removed == {".tmp-step-8-123", "step-9"}
    with pytest.raises(FileNotFoundError):
        ckpt.read_checkpoint(root / "step-9")


def test_pruning_keeps_the_protected_best_checkpoint(tmp_path):
    _save_steps(tmp_path, (1, 2, 3, 4), keep=1, protect={2})
    assert [s for s, _ in RunDir(tmp_path).complete_checkpoints()] == [2, 4]


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    from tunesmith.errors import TrainingError

    model, opt = _model_and_optimizer()
    _step(model, opt, 1)
    msd, osd = ckpt.gather_state(model, opt, full=True)
    path = ckpt.save_checkpoint(
        RunDir(tmp_path),
        1,
        model_state=msd,
        optimizer_state=osd,
        trainer_state={},
        rng_states=[],
        keep=1,
    )
    other = torch.nn.Sequential(torch.nn.Linear(4, 8))
    other.add_module("head", torch.nn.Linear(8, 2))  # same shapes, different names
    with pytest.raises(TrainingError, match="does not match"):
        ckpt.load_model_weights(other, ckpt.read_checkpoint(path)["model"])
