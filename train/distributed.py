"""torchrun support: process group setup and the few collectives the trainer needs."""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed() -> Distributed:
    """Join the torchrun process group (NCCL on CUDA, gloo on CPU); a lone process needs none."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Distributed(dist.get_rank(), world_size, local_rank)


def gather_objects(context: Distributed, value) -> list:
    """`value` from every rank, in rank order (a one-item list without a process group)."""
    if not context.enabled:
        return [value]
    gathered = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def mean_over_ranks(context: Distributed, tensor: torch.Tensor) -> torch.Tensor:
    if context.enabled:
        dist.all_reduce(tensor)  # SUM: gloo has no AVG
        tensor /= context.world_size
    return tensor


def any_rank(context: Distributed, flags: tuple[bool, ...], device: torch.device) -> tuple[bool, ...]:
    """Each flag True on every rank when it is True on any of them."""
    if not context.enabled:
        return flags
    tensor = torch.tensor([float(flag) for flag in flags], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tuple(bool(value) for value in tensor.tolist())


def shutdown(context: Distributed, finished: bool) -> None:
    """Leave the process group; after a finished run, only once every rank has finished.

    Without the barrier a rank that finished first would exit while gloo's worker threads (which outlive the
    process group: DistributedDataParallel keeps it) were still releasing its last collective's tensors, and
    Python, finalizing, aborts such a thread ("terminate called without an active exception", SIGABRT). The
    barrier waits until those collectives are done everywhere. A failed run leaves at once: its peers may never
    reach the barrier.
    """
    if not context.enabled:
        return
    if finished:
        dist.barrier()
    dist.destroy_process_group()
