"""Multi-process training under `torchrun`: the process group, sharding and reductions.

Launched by `torchrun --nproc-per-node N -m cnnlab train ...`, each process reads RANK, WORLD_SIZE and
LOCAL_RANK from the environment; without them everything here is a no-op for one process. NCCL runs
on GPUs, gloo on CPUs. Collectives time out (CNNLAB_DDP_TIMEOUT_S, default 300 s) so a rank that dies
fails the others instead of leaving them waiting; torchrun also stops the survivors when one exits.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job: rank `rank` of `world_size`."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_env() -> DistContext:
    """The context torchrun's environment variables describe (one process when they are absent)."""
    return DistContext(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                       int(os.environ.get("LOCAL_RANK", 0)))


def setup(device_type: str) -> DistContext:
    """Join the process group when launched by torchrun (NCCL on CUDA, gloo otherwise)."""
    context = context_from_env()
    if context.enabled and not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(context.local_rank)
        timeout = timedelta(seconds=float(os.environ.get("CNNLAB_DDP_TIMEOUT_S", 300)))
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo", timeout=timeout)
    return context


def teardown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def shard(indices: np.ndarray, context: DistContext) -> np.ndarray:
    """This rank's share of `indices`, without the padding a DistributedSampler adds (for exact evaluation)."""
    return indices[context.rank::context.world_size]


def all_reduce_sum(tensor: torch.Tensor, context: DistContext) -> torch.Tensor:
    """Sum `tensor` over all ranks in place (unchanged for one process)."""
    if context.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
