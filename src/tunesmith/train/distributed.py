"""torchrun support: the same command runs on 1 or N processes.

Under `torchrun --nproc-per-node N` the environment holds WORLD_SIZE/RANK/LOCAL_RANK; we join
the process group (NCCL on CUDA, gloo on CPU) and wrap the loss module in DDP — or FSDP when
`distributed.strategy: fsdp` (full fine-tuning of a model too big for one device). Without
torchrun everything here is a no-op, so the loop has no special cases for one process.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from tunesmith.errors import ConfigError


@dataclass
class DistInfo:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init(device_pref: str = "auto") -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        from tunesmith.models.load import pick_device

        return DistInfo(), pick_device(device_pref)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_pref in ("auto", "cuda")
    if use_cuda:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(world, rank, local_rank), device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's value on every rank (run dir, cancel decision, ...)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def resolve_strategy(strategy: str, info: DistInfo) -> str:
    if not info.enabled:
        return "single"
    return "ddp" if strategy == "auto" else strategy


def wrap(module: torch.nn.Module, strategy: str, info: DistInfo, device: torch.device) -> Any:
    """Wrap the loss module for data parallel training (identity for one process)."""
    if strategy == "single":
        return module
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        return DDP(module, device_ids=ids)
    if strategy == "fsdp":
        # FSDP2 (per-parameter sharding on DTensors): works with NCCL and with gloo on CPUs.
        from torch.distributed.fsdp import fully_shard

        layers = _decoder_layers(module)
        if not layers:
            raise ConfigError("FSDP could not find the model's decoder layers to shard")
        for layer in layers:
            fully_shard(layer)
        fully_shard(module)
        return module
    raise ConfigError(f"unknown distributed strategy '{strategy}'", hint="use auto, ddp or fsdp")


def _decoder_layers(module: torch.nn.Module) -> list[torch.nn.Module]:
    for sub in module.modules():
        layers = getattr(sub, "layers", None)
        if isinstance(layers, torch.nn.ModuleList) and len(layers) > 0:
            return list(layers)
    return []


def is_fsdp(module: Any) -> bool:
    return hasattr(module, "set_requires_gradient_sync")


@contextlib.contextmanager
def no_sync(wrapped: Any) -> Iterator[None]:
    """Skip the gradient all-reduce / reduce-scatter for a micro-batch that is not the last
    of its optimizer step (DDP `no_sync`, FSDP2 `set_requires_gradient_sync`)."""
    if hasattr(wrapped, "no_sync"):
        with wrapped.no_sync():
            yield
    elif is_fsdp(wrapped):
        wrapped.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            wrapped.set_requires_gradient_sync(True)
    else:
        yield


def clip_grad_norm(params: list[torch.Tensor], max_norm: float | None) -> float:
    """Total gradient norm (all ranks, all shards), clipping when `max_norm` > 0."""
    limit = max_norm if max_norm and max_norm > 0 else float("inf")
    norm = torch.nn.utils.clip_grad_norm_(params, limit)
    if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor over the shards
        norm = norm.full_tensor()
    return float(norm)
