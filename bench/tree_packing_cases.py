"""The update of one training step's turns with shared-prefix (token tree) packing against flat
packing (every turn its own sequence: what TRL and verl do for multi-turn rollouts, without padding).
Also a command line (`python bench/tree_packing_cases.py packing IMPL SIZE float32`) that runs one
side in a fresh process and prints its peak extra resident memory (see measure.py).

The turns are the default preset's: the first training step of `coars-fast train --dataset lastfm`
(seed 0, 2 users x G = 2 episodes of up to 5 turns, grounded sampling, 32-token reasons), played by
the embedded model, the turns the exclusion rule keeps, with the real prompts (history, 20
candidates, memory) and hindsight teachers. They ship in bench/data/ (recording needs the embedded
model, the LastFM files and about a minute; delete the file to record them again). The "smoke" size
has a tiny random model play one user's shorter episodes instead (cached).

The model has the embedded SmolLM2-135M's shape (width, heads, vocabulary), random weights. The
"cpu" size keeps 2 of its 30 layers, so that the exactness check, the timed rounds and the memory
runs in fresh processes fit the bench's time on 2 CPU cores; the loss over the 49,152-token
vocabulary costs both sides alike, so fewer layers understate the tree's gain. The "full" size has
all 30 layers (the embedded model's shape): the bench times it once more, without memory runs. Both
sides run the same `accumulate_gradients`, fp32, each at its best CPU token budget (measured with the
full model): tree packing at the CPU preset's 2,048 unique tokens per stream, flat packing at 2,048
(each sequence attending to itself only; on the full model 1,024 measured 1.03x and 4,096 1.16x its
time).
"""

import json
import sys
from pathlib import Path

import torch
from measure import rss_high_water

from coars_fast.cache import atomic_write, cache_dir
from coars_fast.models.lora import add_agent_adapters
from coars_fast.rollout import TurnSample, pack, pack_trees
from coars_fast.train.config import LossConfig
from coars_fast.train.step import accumulate_gradients

CPU = dict(hidden=576, layers=2, heads=9, kv_heads=3, intermediate=1536, budget={"tree": 2048, "flat": 2048})
SIZES = {
    "cpu": CPU,
    "full": dict(CPU, layers=30),  # the embedded model's depth
    "smoke": dict(
        hidden=64,
        layers=2,
        heads=4,
        kv_heads=2,
        intermediate=128,
        budget={"tree": 512, "flat": 512},
        # a tiny random player's episodes (seconds), every turn kept
        users=1,
        group=2,
        turns=2,
        reason_tokens=4,
    ),
}
SEED = 0


def _load(path: Path) -> list[TurnSample]:
    return [
        TurnSample(**{k: tuple(v) if isinstance(v, list) else v for k, v in t.items()})
        for t in json.loads(path.read_text())
    ]


def _save(path: Path, samples) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps([t.__dict__ for t in samples])))


def default_step_turns(size: str) -> list[TurnSample]:
    """The turns the bench updates (see the module docstring)."""
    if size == "smoke":
        return _tiny_player_turns(SIZES["smoke"])
    path = Path(__file__).with_name("data") / f"tree-packing-turns-lastfm-default-step1-seed{SEED}.json"
    if not path.is_file():
        _save(path, _record_default_step())
    return _load(path)


def _record_default_step() -> list[TurnSample]:
    """The first step of the default preset on LastFM, played by the embedded model (no update)."""
    import tempfile

    from coars_fast.data import resolve_data_dir
    from coars_fast.train.config import load_config
    from coars_fast.train.trainer import Trainer

    config = load_config("cpu", ["data.dataset=lastfm", f"data.data_dir={resolve_data_dir()}", "tensorboard=false"])
    trainer = Trainer(config, Path(tempfile.mkdtemp(prefix="bench-turns-")), progress=False)
    episodes, _ = trainer.step_users(0)
    trainer.model.eval()
    return trainer.play(episodes).samples


def _tiny_player_turns(s: dict) -> list[TurnSample]:
    """Episodes of real LastFM users played by a tiny random model with the real tokenizer, cached."""
    key = f"u{s['users']}-g{s['group']}-t{s['turns']}-r{s['reason_tokens']}-seed{SEED}"
    path = cache_dir("bench") / f"tree-packing-turns-smoke-{key}.json"
    if path.is_file():
        return _load(path)
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from coars_fast.data import load_dataset, resolve_data_dir
    from coars_fast.data.candidates import CandidateBuilder
    from coars_fast.env.rewards import RewardSettings
    from coars_fast.models import GenerationSettings
    from coars_fast.models.loading import embedded_model_dir
    from coars_fast.rollout import Agents, RolloutSettings, collect

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    torch.manual_seed(SEED)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
    )
    player = LlamaForCausalLM(config).eval().requires_grad_(False)
    player.generation_config.eos_token_id = tokenizer.eos_token_id
    lastfm = load_dataset("lastfm", resolve_data_dir())
    train = lastfm.split("train")
    episodes = [
        train[i] for i in torch.randperm(len(train), generator=torch.Generator().manual_seed(SEED))[: s["users"]]
    ]
    agents = Agents(
        player,
        tokenizer,
        GenerationSettings(
            greedy=False, temperature=1.0, max_new_tokens=64, batch_size=16, reason_tokens=s["reason_tokens"]
        ),
    )
    rollout = collect(
        agents,
        lastfm,
        episodes,
        CandidateBuilder(lastfm).build(episodes),
        RolloutSettings(group_size=s["group"], max_turns=s["turns"]),
        RewardSettings(exclude_unlogged_positive=False),
    )
    _save(path, rollout.samples)
    return rollout.samples


def make_inputs(size):
    from transformers import LlamaConfig, LlamaForCausalLM

    s = SIZES[size]
    samples = default_step_turns(size)
    torch.manual_seed(SEED)
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=s["hidden"],
        intermediate_size=s["intermediate"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"],
        num_key_value_heads=s["kv_heads"],
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
    )
    model = add_agent_adapters(LlamaForCausalLM(config).requires_grad_(False))
    for name, p in model.named_parameters():  # LoRA B starts at 0; make the adapters non-trivial
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
        if "lora_" in name:
            p.requires_grad_(True)
    model.train()
    return {"model": model, "samples": samples, "size": s, "device": torch.device("cpu")}


def _update(name, packer):
    def run(x):
        model = x["model"]
        model.zero_grad(set_to_none=True)
        batches = packer(x["samples"], x["size"]["budget"][name])
        stats = accumulate_gradients(model, batches, LossConfig(), 1.0, x["device"])
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return sum(v for k, v in stats.items() if k.startswith("loss_")), grads

    return run


IMPLEMENTATIONS = {"packing": {"tree": _update("tree", pack_trees), "flat": _update("flat", pack)}}


if __name__ == "__main__":
    case, impl, size, _dtype = sys.argv[1:5]
    print(json.dumps({"peak_extra_bytes": rss_high_water(IMPLEMENTATIONS[case][impl], make_inputs(size))}))
