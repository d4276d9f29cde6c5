"""Rollout throughput against wave size: W sampled episodes in flight (one generation call per agent
per turn for all of them: generation.batch_size = W), on the default CPU preset's model and settings.
Prints episodes/s and generated tokens/s per wave size as markdown rows for docs/RESULTS.md.

Compare code versions by running it once per version, `--code-root` naming a checkout of the other
version (e.g. `git worktree add /tmp/before 8dc252d`, the generation path before 7b1fd5a). With the
same seed both versions sample the same tokens, which the printed token counts show.

    python scripts/rollout_throughput.py --dataset lastfm --data-dir ../shared/data --waves 4 16 64

On a GPU (random-init model of a published shape, the growing cache against the compiled static one):

    python scripts/rollout_throughput.py --config gpu-qwen2.5-0.5b --set model.name=/tmp/random-qwen2.5-0.5b \
        --set generation.static_cache=true --label static --waves 16 64 128
"""

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="lastfm")
    parser.add_argument("--data-dir")
    parser.add_argument("--config", default="cpu")
    parser.add_argument("--waves", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--turns", type=int, default=5, help="at most this many turns per episode")
    parser.add_argument("--code-root", help="import coars_fast from this checkout (another version)")
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--warm", action="store_true", help="play each wave once untimed first (compiled steps)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override")
    args = parser.parse_args()
    if args.code_root:
        sys.path.insert(0, str(Path(args.code_root).resolve()))

    import torch

    import coars_fast
    from coars_fast.rollout.runner import make_states, run_episodes
    from coars_fast.train.config import load_config
    from coars_fast.train.trainer import Trainer

    overrides = [f"data.dataset={args.dataset}", "tensorboard=false"]
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    overrides += args.set
    config = load_config(args.config, overrides)
    trainer = Trainer(config, Path(tempfile.mkdtemp(prefix="rollout-throughput-")), progress=False)
    trainer.model.eval()
    train = trainer.dataset.split("train")
    base = trainer.sampler.settings
    print(f"coars_fast from {Path(coars_fast.__file__).parent}; {torch.get_num_threads()} threads", flush=True)

    def play(wave: int):
        episodes = train[:wave]  # the same users for every version; the first ones of each larger wave
        states = make_states(trainer.dataset, episodes, trainer.candidates.build(episodes), args.turns)
        peers = trainer.peers.lookup({ep.episode_id: ep for ep in episodes}) if trainer.peers else None
        trainer.sampler.settings = replace(base, batch_size=wave)
        torch.manual_seed(0)
        started = time.perf_counter()
        with torch.no_grad():
            run_episodes(trainer.sampler, states, peers, progress=False, wave=wave)
        seconds = time.perf_counter() - started
        turns = [t for s in states for t in s.turns]
        tokens = sum(len(t.rec_output.ids) + (len(t.user_output.ids) if t.user_output else 0) for t in turns)
        return seconds, len(turns), tokens

    play(2)  # warm-up: first-call costs of the model and the prompt cache
    print("| code | wave (episodes) | turns | generated tokens | seconds | episodes/s | generated tokens/s |")
    print("|---|---|---|---|---|---|---|")
    for wave in args.waves:
        if args.warm:
            play(wave)
        seconds, turns, tokens = play(wave)
        print(
            f"| {args.label} | {wave} | {turns} | {tokens} | {seconds:.1f} | {wave / seconds:.3f} | "
            f"{tokens / seconds:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
