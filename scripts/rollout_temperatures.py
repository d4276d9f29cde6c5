"""What sampled training rollouts look like at a few temperatures (untrained agents, the training
collector with grounding and peer evidence): valid ratio, reward mean / spread / share positive per
agent, excluded turns, Recommender turns that carry loss weight, episodes with a hit. Markdown for
docs/RESULTS.md; the same users and candidates at every temperature.

    python scripts/rollout_temperatures.py --dataset lastfm --users 8 --temperatures 0.7 1.0 1.3
"""

import argparse
import statistics
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data-dir")
    parser.add_argument("--users", type=int, default=8, help="training users per temperature (G=2 episodes each)")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.7, 1.0, 1.3])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--free", action="store_true", help="free generation instead of grounded")
    args = parser.parse_args()

    from coars_fast.data import load_dataset, sasrec
    from coars_fast.data.candidates import CandidateBuilder
    from coars_fast.env.rewards import RewardSettings
    from coars_fast.models import GenerationSettings, load_model
    from coars_fast.rollout import Agents, PeerIndex, RolloutSettings, collect

    dataset = load_dataset(args.dataset, args.data_dir)
    ranker = sasrec.load_or_train(dataset)
    peers = PeerIndex(ranker, dataset)
    train = dataset.split("train")
    episodes = [train[i] for i in np.random.default_rng(args.seed).choice(len(train), size=args.users, replace=False)]
    candidates = CandidateBuilder(dataset, "random", 20, args.seed, ranker).build(episodes)
    model, tokenizer = load_model(None, "cpu")
    print(
        f"{dataset.name}: {args.users} training users x G=2 sampled episodes, at most 5 turns, seed {args.seed}, "
        f"{'free' if args.free else 'grounded'} generation, peer evidence on\n"
    )
    header = (
        "temperature",
        "valid",
        "episodes with a hit",
        "Hit@1",
        "R_rec mean",
        "R_rec sd",
        "R_rec > 0",
        "R_user mean",
        "R_user sd",
        "R_user > 0",
        "excluded turns",
        "rec turns with loss weight",
        "turns",
        "s",
    )
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for temperature in args.temperatures:
        agents = Agents(
            model, tokenizer, GenerationSettings(greedy=False, temperature=temperature, grounded=not args.free)
        )
        started = time.perf_counter()
        rollout = collect(agents, dataset, episodes, candidates, RolloutSettings(group_size=2), RewardSettings(), peers)
        s = rollout.stats
        turns = sum(len(st.turns) for st in rollout.states)
        cell = lambda key, s=s: f"{s[key]:.2f}" if key in s else "-"
        print(
            "| "
            + " | ".join(
                [
                    f"{temperature:.1f}",
                    cell("valid_ratio"),
                    cell("episodes_with_hit"),
                    cell("train_hit_at_1"),
                    cell("reward_rec"),
                    cell("reward_rec_std"),
                    cell("reward_rec_positive"),
                    cell("reward_user"),
                    cell("reward_user_std"),
                    cell("reward_user_positive"),
                    cell("excluded_share"),
                    cell("rec_weighted_share"),
                    str(turns),
                    f"{time.perf_counter() - started:.0f}",
                ]
            )
            + " |",
            flush=True,
        )
        actions = statistics.multimode([t.reply.action for st in rollout.states for t in st.turns if t.reply] or ["-"])
        print(f"<!-- T={temperature}: most frequent User action(s) {actions} -->", flush=True)


if __name__ == "__main__":
    main()
