"""Seconds per update with flat and tree packing on the same turns: the default preset's first
training step (same seed, same users, same sampled episodes), the embedded model, fp32 on CPU.
The two updates alternate `--rounds` times from the same adapter state (gradients zeroed, no
optimizer step); medians are reported. Markdown rows for docs/RESULTS.md.

    python scripts/packing_update_time.py --dataset lastfm --data-dir ../shared/data --rounds 2
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="lastfm")
    parser.add_argument("--data-dir")
    parser.add_argument("--config", default="cpu")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--step", type=int, default=0, help="which step's users and seed (0: the first)")
    parser.add_argument("--budgets", type=int, nargs="+", help="token budgets to try (default: the preset's)")
    args = parser.parse_args()

    import torch

    from coars_fast.rollout import pack, pack_trees, padding_report
    from coars_fast.train.config import load_config
    from coars_fast.train.step import accumulate_gradients
    from coars_fast.train.trainer import Trainer

    overrides = [f"data.dataset={args.dataset}", "tensorboard=false"]
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    config = load_config(args.config, overrides)
    trainer = Trainer(config, Path(tempfile.mkdtemp(prefix="packing-time-")), progress=False)
    episodes, _ = trainer.step_users(args.step)  # exactly as Trainer.train_step
    trainer.model.eval()
    started = time.perf_counter()
    rollout = trainer.play(episodes)
    print(
        f"{config.data.dataset}: step {args.step + 1} of seed {config.train.seed}: {len(episodes)} users x "
        f"G={config.rollout.group_size}, {len(rollout.samples)} turns kept, rollout {time.perf_counter() - started:.0f} s"
    )

    arms = {
        (name, budget): packer
        for budget in (args.budgets or [config.train.token_budget])
        for name, packer in (("flat", pack), ("tree", pack_trees))
    }
    seconds = {arm: [] for arm in arms}
    losses = {}
    trainer.model.train()
    for _ in range(args.rounds):  # interleaved: a change in machine load hits every arm alike
        for (name, budget), packer in arms.items():
            trainer.model.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            batches = packer(rollout.samples, budget)
            stats = accumulate_gradients(
                trainer.model, batches, config.loss, config.generation.temperature, trainer.device
            )
            seconds[name, budget].append(time.perf_counter() - t0)
            losses[name, budget] = sum(v for k, v in stats.items() if k.startswith("loss_"))
    baseline = statistics.median(seconds["flat", config.train.token_budget if not args.budgets else args.budgets[0]])
    print(
        f"{args.rounds} rounds, {torch.get_num_threads()} threads; losses "
        + ", ".join(f"{n}@{b} {v:.6f}" for (n, b), v in losses.items())
        + "\n"
    )
    print(
        "| packing | token budget | tokens computed | micro-batches | update s (median) | per round | vs first flat |"
    )
    print("|---|---|---|---|---|---|---|")
    for (name, budget), packer in arms.items():
        batches = packer(rollout.samples, budget)
        report = padding_report(batches, budget)
        median = statistics.median(seconds[name, budget])
        rounds = ", ".join(f"{s:.1f}" for s in seconds[name, budget])
        print(
            f"| {name} | {budget} | {report['tokens']} ({report['token_ratio']:.3f} of flat) | {len(batches)} | "
            f"{median:.1f} | {rounds} | {median / baseline:.2f}x |"
        )


if __name__ == "__main__":
    main()
