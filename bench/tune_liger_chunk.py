"""Sweeps `chunk_size` (sequences per chunk) of Liger's fused GRPO loss, the bench's Liger arm of the
CoARS step (bench/cases.py: 128-row sequences), at a benchmark shape; every size is timed in every
round (interleaved medians), ours and naive alongside. Copy the fastest into cases.LIGER_CHUNK_SIZE
and the figures into bench/RESULTS.md.

    python bench/tune_liger_chunk.py [--shape cpu] [--sizes 1 2 4 8 16] [--rounds 2]
"""

import argparse

import torch
from cases import IMPLEMENTATIONS, SEQ_LEN, SHAPES, make_inputs
from measure import interleaved_medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="cpu", choices=sorted(SHAPES))
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    device = torch.device("cuda" if args.shape.startswith("gpu") else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    x = make_inputs(args.shape, dtype, device)
    impls = IMPLEMENTATIONS["coars"]
    sequences = SHAPES[args.shape]["n"] // SEQ_LEN

    def liger(size):
        return lambda inputs: impls["liger"](dict(inputs, liger_chunk_size=size))

    arms = {f"liger chunk {size}": liger(size) for size in args.sizes if size <= sequences}
    arms.update(ours=impls["ours"], naive=impls["naive"])
    times = interleaved_medians(arms, x, args.rounds, warmup=1, device=device)
    best = min((t, name) for name, t in times.items() if name.startswith("liger"))[1]
    print(f"{args.shape} ({sequences} sequences of {SEQ_LEN} rows), {dtype}, median of {args.rounds}:")
    print("| arm | median s | vs naive |\n|---|---|---|")
    for name, t in times.items():
        mark = " (fastest Liger)" if name == best else ""
        print(f"| {name}{mark} | {t:.3f} | {t / times['naive']:.2f}x |")


if __name__ == "__main__":
    main()
