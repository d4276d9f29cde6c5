"""Per-rank memory of data parallel and FSDP2 on the embedded model (docs/DISTRIBUTED.md).

    export OMP_NUM_THREADS=1 MALLOC_MMAP_THRESHOLD_=65536  # large blocks go back to the OS when freed
    torchrun --standalone --nproc_per_node 2 scripts/fsdp_memory.py
    torchrun --standalone --nproc_per_node 2 scripts/fsdp_memory.py --fsdp

Each rank prints the parameter bytes it holds, its resident memory once set up (anonymous, and the
file-backed pages of the memory-mapped checkpoint, which the OS may drop), and the resident
high-water mark of one update over the same random turns (4 per rank, 384 prompt and 24 response
tokens each; seed 0), above what was resident before it.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import random

import torch

from coars_fast.distributed import from_env, shard
from coars_fast.distributed.fsdp import decoder_layers, local, shard_layers
from coars_fast.models import add_agent_adapters, load_model
from coars_fast.rollout.collector import TurnSample
from coars_fast.rollout.packing import pack
from coars_fast.train.config import LossConfig
from coars_fast.train.step import adapter_parameters, gradients_of_step


def kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def turns(vocab: int, users: int) -> list[list[TurnSample]]:
    rng = random.Random(0)
    out = []
    for u in range(users):
        prompt = tuple(rng.randrange(3, vocab) for _ in range(384))
        out.append(
            [
                TurnSample(
                    agent,
                    prompt,
                    prompt,
                    tuple(rng.randrange(3, vocab) for _ in range(24)),
                    (-1.0,) * 24,
                    rng.uniform(-1, 1),
                    str(u),
                )
                for agent in ("rec", "rec", "user", "user")
            ]
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fsdp", action="store_true")
    args = parser.parse_args()
    world = from_env("cpu")
    model, _ = load_model(None, "cpu")
    model = add_agent_adapters(model)
    units = shard_layers(model, world) if args.fsdp else []
    groups = adapter_parameters(model, ["rec", "user"])
    params = [p for g in groups.values() for p in g]
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # what sharding freed goes back to the OS
    held = sum(local(p).numel() * p.element_size() for p in model.parameters())
    layers = sum(local(p).numel() * p.element_size() for p in decoder_layers(model).parameters())
    settled = kib("RssAnon"), kib("RssFile")  # file: pages of the mmapped weights, which the OS may drop
    mine = [t for user in shard(turns(model.get_base_model().config.vocab_size, 2 * world.size), world) for t in user]
    model.train()
    gradients_of_step(model, mine, pack, 2048, LossConfig(), 1.0, "cpu", params, world, lockstep=bool(units))  # warm
    for p in params:
        p.grad = None
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # VmHWM := VmRSS
    before = kib("VmRSS")
    gradients_of_step(model, mine, pack, 2048, LossConfig(), 1.0, "cpu", params, world, lockstep=bool(units))
    peak = kib("VmHWM")
    mode = "FSDP2" if units else "data parallel"
    print(
        f"rank {world.rank} ({mode}, {world.size} ranks): parameters held {held / 2**20:.1f} MiB "
        f"(decoder layers {layers / 2**20:.1f} MiB); resident after setup {settled[0] / 1024:.0f} MiB "
        f"anonymous + {settled[1] / 1024:.0f} MiB file-backed; "
        f"update high-water mark {(peak - before) / 1024:.0f} MiB above {before / 1024:.0f} MiB",
        flush=True,
    )
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
