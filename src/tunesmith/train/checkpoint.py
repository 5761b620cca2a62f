"""Crash-safe checkpoints: a checkpoint either exists completely or not at all.

Why: the field's classic failure is a checkpoint written in place, the job killed mid-save,
and resume crashing on a half-written file. Here a checkpoint is written into a temp folder
next to its final place, every file is fsync'ed, a `COMPLETE` marker is written last, and the
folder is renamed into place (an atomic rename on one filesystem). Resume only ever looks at
folders named `step-N` that hold the marker; leftovers of a killed save are deleted.

A checkpoint holds everything that makes a resumed run continue exactly like an uninterrupted
one: trainable weights (safetensors), optimizer state (tensors in safetensors, the rest in
JSON — nothing is unpickled), scheduler, the data position and trainer counters, and the RNG
states (python, numpy, torch, CUDA) of every rank.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
from pathlib import Path
from typing import Any

from tunesmith.io import atomic_write_json, fsync_dir, read_json
from tunesmith.runs import CHECKPOINT_COMPLETE as COMPLETE
from tunesmith.runs import CHECKPOINT_WEIGHTS as WEIGHTS
from tunesmith.runs import RunDir

OPTIMIZER = "optimizer.safetensors"
OPTIMIZER_META = "optimizer.json"
STATE = "trainer_state.json"
# Test hook: SIGKILL this process half-way through saving checkpoint N (after the weights are
# written, before the marker), to prove a killed save never becomes a "complete" checkpoint.
KILL_IN_SAVE_ENV = "TUNESMITH_DEBUG_KILL_IN_SAVE"


def remove_incomplete(run: RunDir) -> list[Path]:
    """Delete temp folders and marker-less `step-N` folders left by a killed save."""
    removed = run.incomplete_checkpoints()
    for d in removed:
        shutil.rmtree(d, ignore_errors=True)
    return removed


# ---------------------------------------------------------------------------------------------
# State dicts (work for plain modules, DDP and FSDP alike through torch.distributed.checkpoint)
# ---------------------------------------------------------------------------------------------


def _options(full: bool) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # ignore_frozen_params: a LoRA checkpoint holds the adapter, not the 100s of MB of base.
    return StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=not full)


def gather_state(model: Any, optimizer: Any, *, full: bool) -> tuple[dict, dict]:
    """Full (unsharded) model and optimizer state dicts on CPU. Collective under FSDP."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    return get_state_dict(model, optimizer, options=_options(full))


def _owned(tensors: dict[str, Any]) -> dict[str, Any]:
    """Contiguous private copies: safetensors refuses tensors that share storage (tied
    embeddings) and must not see a tensor that keeps changing under it."""
    return {k: v.detach().to("cpu").clone().contiguous() for k, v in tensors.items()}


def _flatten_optimizer(optim_sd: dict) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    tensors: dict[str, Any] = {}
    meta: dict[str, Any] = {"state": {}, "param_groups": optim_sd.get("param_groups", [])}
    for name, state in optim_sd.get("state", {}).items():
        extra: dict[str, Any] = {}
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}::{key}"] = value
            else:
                extra[key] = value
        meta["state"][str(name)] = extra
    return _owned(tensors), meta


def _unflatten_optimizer(tensors: dict[str, Any], meta: dict[str, Any]) -> dict:
    state: dict[str, dict[str, Any]] = {k: dict(v) for k, v in meta["state"].items()}
    for flat, value in tensors.items():
        name, _, key = flat.rpartition("::")
        state.setdefault(name, {})[key] = value
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


# ---------------------------------------------------------------------------------------------
# RNG
# ---------------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    version, internal, gauss = random.getstate()
    np_state: Any = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), *[_plain(x) for x in np_state[2:]]],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def _plain(x: Any) -> Any:
    return x.item() if hasattr(x, "item") else x


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


# ---------------------------------------------------------------------------------------------
# Save / load
# ---------------------------------------------------------------------------------------------


def _save_safetensors(tensors: dict[str, Any], path: Path) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path))
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def save_checkpoint(
    run: RunDir,
    step: int,
    *,
    model_state: dict[str, Any],
    optimizer_state: dict,
    trainer_state: dict[str, Any],
    rng_states: list[dict[str, Any]],
    keep: int,
    protect: set[int] | None = None,
) -> Path:
    """Write checkpoint `step` atomically (rank 0 only) and prune old ones.

    `protect` lists steps never pruned (the best checkpoint for early stopping)."""
    final = run.checkpoint(step)
    tmp = run.checkpoint_temp(step)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _save_safetensors(_owned(model_state), tmp / WEIGHTS)
    if os.environ.get(KILL_IN_SAVE_ENV) == str(step):
        os.kill(os.getpid(), signal.SIGKILL)
    opt_tensors, opt_meta = _flatten_optimizer(optimizer_state)
    _save_safetensors(opt_tensors, tmp / OPTIMIZER)
    atomic_write_json(tmp / OPTIMIZER_META, opt_meta)
    atomic_write_json(tmp / STATE, trainer_state)
    for rank, state in enumerate(rng_states):
        (tmp / f"rng-rank{rank}.json").write_text(json.dumps(state), encoding="utf-8")
    atomic_write_json(tmp / COMPLETE, {"step": step})
    fsync_dir(tmp)
    if final.exists():  # re-saving a step after resume: swap atomically-enough, old first out
        old = final.parent / f".old-step-{step}-{os.getpid()}"
        final.rename(old)
        shutil.rmtree(old, ignore_errors=True)
    tmp.rename(final)
    fsync_dir(final.parent)
    prune(run, keep=keep, protect=protect or set())
    return final


def prune(run: RunDir, *, keep: int, protect: set[int]) -> None:
    found = run.complete_checkpoints()
    for step, path in found[:-keep] if keep > 0 else found:
        if step not in protect:
            shutil.rmtree(path, ignore_errors=True)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint's contents (CPU tensors); nothing is unpickled."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / COMPLETE).is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint")
    optimizer = _unflatten_optimizer(
        load_file(str(path / OPTIMIZER)), read_json(path / OPTIMIZER_META)
    )
    rngs = sorted(path.glob("rng-rank*.json"), key=lambda p: int(p.stem[8:]))
    return {
        "model": load_file(str(path / WEIGHTS)),
        "optimizer": optimizer,
        "trainer_state": read_json(path / STATE),
        "rng": [json.loads(p.read_text(encoding="utf-8")) for p in rngs],
    }


def load_model_weights(model: Any, weights: dict[str, Any]) -> None:
    """Put checkpointed trainable weights back into `model` (plain, DDP or FSDP)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    result = set_model_state_dict(
        model, weights, options=StateDictOptions(full_state_dict=True, strict=False)
    )
    _check_keys(result, weights)


def load_training_state(model: Any, optimizer: Any, contents: dict[str, Any]) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    result = set_state_dict(
        model,
        optimizer,
        model_state_dict=contents["model"],
        optim_state_dict=contents["optimizer"],
        options=StateDictOptions(full_state_dict=True, strict=False),
    )
    _check_keys(result, contents["model"])


def _check_keys(result: Any, weights: dict[str, Any]) -> None:
    """strict=False because an adapter checkpoint holds only the trainable weights; but every
    weight in the checkpoint must land in the model, or resume would silently train others."""
    from tunesmith.errors import TrainingError

    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected or not weights:
        raise TrainingError(
            "the checkpoint does not match the model being trained "
            f"(e.g. {unexpected[:3] or 'no weights'})",
            hint="resume with the same adapter settings the run started with",
        )
