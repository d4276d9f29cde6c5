"""Data-parallel training over torch.distributed, as launched by `torchrun`.

Every rank holds the whole (frozen) base and both adapters, plays its share of a step's users,
packs and runs its own micro-batches; the adapters' gradients are summed across ranks in one bucket
(the token weights already divide by the whole step's turn count, so the sum is the one-process
gradient), and every rank takes the same optimizer step. Rank 0 alone writes the run folder.
One process (no WORLD_SIZE, or 1) is the world of size 1 and touches no collective.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch

from coars_fast.errors import ConfigError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The rank that owns the run folder (logs, checkpoints, report)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE = World()


def from_env(device: str | None = None, timeout_s: float = 600.0) -> World:
    """The world torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK); the process
    group is started here: NCCL when the run uses CUDA, gloo on CPU. A collective that waits longer
    than `timeout_s` (a lost rank) raises instead of hanging."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return SINGLE
    import torch.distributed as dist

    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    if use_cuda:
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(seconds=timeout_s))
    return world


def device_for(world: World, device: str | None) -> str | None:
    """One GPU per rank: `cuda` becomes `cuda:LOCAL_RANK`; CPU and explicit indices stay as given."""
    if not world.distributed:
        return device
    if device in (None, "cuda") and torch.cuda.is_available():
        return f"cuda:{world.local_rank}"
    return device


def shard(items: Sequence, world: World) -> list:
    """This rank's share, round robin: rank r takes items r, r + size, ..."""
    return list(items[world.rank :: world.size])


def unshard(shares: Sequence[Sequence], total: int) -> list:
    """The inverse of `shard` over every rank's share (in rank order)."""
    out = [None] * total
    for rank, share in enumerate(shares):
        for i, item in enumerate(share):
            out[rank + i * len(shares)] = item
    return out


def check_divisible(users: int, world: World) -> None:
    if users % world.size:
        raise ConfigError(
            f"train.users_per_step is {users}, which {world.size} ranks cannot share evenly; "
            f"use a multiple of {world.size}"
        )


def gather(obj, world: World) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if not world.distributed:
        return [obj]
    import torch.distributed as dist

    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def sum_counts(counts: Mapping[str, int], world: World) -> dict[str, int]:
    """Per key, the sum over ranks (keys missing on a rank count 0)."""
    if not world.distributed:
        return dict(counts)
    total: dict[str, int] = {}
    for part in gather(dict(counts), world):
        for key, value in part.items():
            total[key] = total.get(key, 0) + value
    return total


def any_rank(flag: bool, world: World) -> bool:
    """True on every rank when it is true on any (so all ranks skip a step together)."""
    if not world.distributed:
        return flag
    import torch.distributed as dist

    value = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def sum_gradients(params: Sequence[torch.nn.Parameter], world: World) -> None:
    """Sum every parameter's gradient across ranks, in one flat bucket (a rank that produced no
    gradient for a parameter contributes zeros)."""
    if not world.distributed or not params:
        return
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    bucket = torch.cat([g.reshape(-1) for g in grads]).float()
    dist.all_reduce(bucket, op=dist.ReduceOp.SUM)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = bucket[offset : offset + n].view_as(p).to(p.dtype)
        offset += n


def main_first(world: World, build):
    """`build()` on rank 0, then on the others: what it caches on disk (a converted model, a trained
    SASRec) is computed once, not raced by every rank."""
    if world.main:
        value = build()
        barrier(world)
        return value
    barrier(world)
    return build()


def barrier(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        dist.barrier()


def finish(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
