"""Shared-prefix (token tree) packing: the tree, its mask and positions, against independent
computations; and exactness against flat packing on a tiny model, on random trees and on turns of
real LastFM episodes (log-probs within 1e-5, LoRA gradients within 1e-4 relative, fp32)."""

import random

import pytest
import torch
from helpers import count_sdpa_calls, tiny_llama

from coars_fast.models import GenerationSettings, LoraSettings, add_agent_adapters
from coars_fast.models.packed_attention import tree_chains, tree_mask
from coars_fast.rollout import Agents, RolloutSettings, TurnSample, collect, pack, pack_trees, padding_report
from coars_fast.rollout.packing import _stream
from coars_fast.rollout.tree_packing import token_tree, tree_stream
from coars_fast.train.config import LossConfig
from coars_fast.train.step import accumulate_gradients, adapter_parameters, decoder_and_head, response_hidden

VOCAB = 211


def random_sequences(rng: random.Random) -> list[tuple[int, ...]]:
    """Sequences over a few shared trunks: random-length shared prefixes, single-token branches,
    a sequence that is a prefix of another, and an exact duplicate."""
    token = lambda: rng.randrange(3, VOCAB)
    out = []
    for _ in range(rng.randint(1, 3)):
        trunk = tuple(token() for _ in range(rng.randint(1, 30)))
        for _ in range(rng.randint(1, 4)):
            cut = rng.randint(1, len(trunk))
            out.append(trunk[:cut] + tuple(token() for _ in range(rng.randint(0, 12))))
        out.append(trunk + (token(),))  # a single-token branch off the trunk's end
        out.append(trunk[: rng.randint(1, len(trunk))])  # a prefix of the trunk (and of others)
    out.append(rng.choice(out))
    out.append(tuple(token() for _ in range(rng.randint(1, 5))))  # shares nothing
    rng.shuffle(out)
    return out


@pytest.mark.parametrize("seed", range(40))
def test_token_tree_against_an_independent_trie(seed):
    print(f"seed {seed}")
    sequences = random_sequences(random.Random(seed))
    tree = token_tree(sequences)
    # one node per distinct prefix
    assert len(tree.input_ids) == len({s[: i + 1] for s in sequences for i in range(len(s))})
    mask = tree_mask(torch.tensor(tree.subtree_end))[0, 0]
    ancestors = {}  # node -> the set of nodes it must see: itself and the path above it
    for sequence, path in zip(sequences, tree.paths):
        assert [tree.input_ids[n] for n in path] == list(sequence)  # each sequence reads back exactly
        assert [tree.depths[n] for n in path] == list(range(len(sequence)))  # positions are depths
        for i, node in enumerate(path):
            assert ancestors.setdefault(node, set(path[: i + 1])) == set(path[: i + 1])
    expected = torch.zeros_like(mask)
    for node, seen in ancestors.items():
        expected[node, sorted(seen)] = True
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("seed", range(40))
def test_tree_chains_see_exactly_what_the_tree_mask_shows(seed):
    """The CPU tree attention runs chain by chain: each chain's node i sees its chain's ancestor
    ranges and the chain up to i. Rebuilt as a mask, that is the tree rule (tree_mask, checked above
    against an independent trie); every chain is a run of nodes each the child of the one before."""
    print(f"seed {seed}")
    tree = token_tree(random_sequences(random.Random(seed)))
    subtree_end = torch.tensor(tree.subtree_end)
    chains = tree_chains(subtree_end)
    seen = torch.zeros(len(tree.input_ids), len(tree.input_ids), dtype=torch.bool)
    for a, b, ancestors in chains:
        assert all(tree.depths[i] == tree.depths[i - 1] + 1 for i in range(a + 1, b))
        for i in range(a, b):
            for start, end in ancestors:
                seen[i, start:end] = True
            seen[i, a : i + 1] = True
    assert [a for a, _, _ in chains] == sorted({a for a, _, _ in chains}) and chains[-1][1] == len(tree.input_ids)
    assert torch.equal(seen, tree_mask(subtree_end)[0, 0])


def test_tree_mask_counts_visible_pairs_exactly():
    # a chain a-b-c with a branch d off b: 3 + 3 + 1 (+ the diagonal) visible pairs
    tree = token_tree([(5, 6, 7), (5, 6, 9)])
    assert tree.input_ids == [5, 6, 7, 9] and tree.depths == [0, 1, 2, 2] and tree.subtree_end == [4, 4, 3, 4]
    assert tree_mask(torch.tensor(tree.subtree_end))[0, 0].int().tolist() == [
        [1, 0, 0, 0],
        [1, 1, 0, 0],
        [1, 1, 1, 0],
        [1, 1, 0, 1],
    ]


@pytest.fixture(scope="module")
def model(smol_tokenizer):
    torch.manual_seed(0)
    peft = add_agent_adapters(tiny_llama(smol_tokenizer, hidden=64, layers=2, seed=0), LoraSettings(rank=4, alpha=8))
    for name, p in peft.named_parameters():  # LoRA B starts at 0; make the adapters matter
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    adapter_parameters(peft, ("rec", "user"))
    return peft


def _logprobs(model, stream, targets):
    decoder, head = decoder_and_head(model)
    with torch.no_grad():
        hidden = response_hidden(decoder, stream)
    return torch.log_softmax(hidden @ head.T, -1).gather(1, targets[:, None])[:, 0]


def _step(model, batches):
    model.zero_grad(set_to_none=True)
    model.train()
    stats = accumulate_gradients(model, batches, LossConfig(), 1.0, torch.device("cpu"))
    model.eval()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return sum(v for k, v in stats.items() if k.startswith("loss_")), grads


def assert_tree_equals_flat(model, samples, budget):
    flat, tree = pack(samples, budget), pack_trees(samples, budget)
    # the same turns in the same order per micro-batch give the same log-probs, row for row
    for agent in ("rec", "user"):
        mine = [s for s in samples if s.agent == agent]
        if not mine:
            continue
        responses = [s.response_ids for s in mine]
        targets = torch.tensor([t for r in responses for t in r])
        for prompts in ([s.prompt_ids for s in mine], [s.teacher_prompt_ids for s in mine]):
            model.set_adapter(agent)
            a = _logprobs(model, _stream(prompts, responses), targets)
            b = _logprobs(model, tree_stream(prompts, responses), targets)
            assert (a - b).abs().max().item() <= 1e-5, f"{agent}: log-probs differ by {(a - b).abs().max():.2e}"
    loss_flat, grads_flat = _step(model, flat)
    loss_tree, grads_tree = _step(model, tree)
    assert grads_flat.keys() == grads_tree.keys() and grads_flat
    worst = max(
        ((grads_tree[n] - grads_flat[n]).norm() / grads_flat[n].norm().clamp_min(1e-20)).item() for n in grads_flat
    )
    print(f"loss {loss_flat:.6f} vs {loss_tree:.6f}; worst relative LoRA-gradient difference {worst:.2e}")
    assert abs(loss_flat - loss_tree) <= 1e-5 * max(1.0, abs(loss_flat))
    assert worst <= 1e-4
    return flat, tree


def _random_samples(seed):
    rng = random.Random(seed)
    token = lambda: rng.randrange(3, 4000)
    samples = []
    for user in range(3):
        system = tuple(token() for _ in range(rng.randint(5, 40)))
        for _episode in range(2):
            memory = ()
            for _turn in range(3):
                question = tuple(token() for _ in range(rng.randint(1, 4)))
                prompt = system + memory + question
                teacher = system + memory + tuple(token() for _ in range(rng.randint(1, 6))) + question
                for agent in ("rec", "user"):
                    response = tuple(token() for _ in range(rng.randint(1, 6)))
                    samples.append(
                        TurnSample(
                            agent,
                            prompt,
                            teacher,
                            response,
                            tuple(-rng.random() for _ in response),
                            rng.uniform(-1, 1),
                            f"u{user}",
                        )
                    )
                memory += tuple(token() for _ in range(rng.randint(1, 8)))
    samples.append(samples[0])  # the same turn twice: rows may share a node
    return samples


@pytest.mark.parametrize("seed,budget", [(0, 4096), (1, 120), (2, 60)])
def test_tree_packing_equals_flat_packing_on_random_turns(model, seed, budget):
    print(f"seed {seed}, budget {budget}")
    samples = _random_samples(seed)
    flat, tree = assert_tree_equals_flat(model, samples, budget)
    for batch in tree:  # the budget holds in unique tokens, unless one turn alone exceeds it
        for stream in (batch.student, batch.teacher):
            assert stream.tokens <= budget or batch.turns == 1
    report = padding_report(tree, budget)
    assert report["tokens_flat"] == padding_report(flat, budget)["tokens"] > report["tokens"]


def test_an_off_by_one_in_positions_or_mask_is_caught(model):
    """The comparison above has the power to see the errors it guards against."""
    samples = [s for s in _random_samples(3) if s.agent == "rec"]
    prompts, responses = [s.prompt_ids for s in samples], [s.response_ids for s in samples]
    targets = torch.tensor([t for r in responses for t in r])
    model.set_adapter("rec")
    reference = _logprobs(model, _stream(prompts, responses), targets)
    good = tree_stream(prompts, responses)
    shifted = tree_stream(prompts, responses)
    later = torch.arange(shifted.tokens) >= shifted.tokens // 2  # (a uniform shift is harmless: RoPE is relative)
    shifted.position_ids = shifted.position_ids + later  # the later half of the tree off by one
    leaky = tree_stream(prompts, responses)
    leaky.subtree_end = leaky.subtree_end + 1  # each node also seen by the next node in pre-order
    assert (_logprobs(model, good, targets) - reference).abs().max() <= 1e-5
    for broken in (shifted, leaky):
        assert (_logprobs(model, broken, targets) - reference).abs().max() > 1e-3


@pytest.mark.data
def test_tree_packing_equals_flat_packing_on_real_lastfm_turns(model, smol_tokenizer, lastfm):
    """Turns of real LastFM episodes (grounded sampling, real prompts, hindsight teachers), 2 users
    x 2 episodes x up to 3 turns (every turn kept: the exclusion rule would drop most of the random
    model's turns): exact, and far fewer tokens computed."""
    from coars_fast.data.candidates import CandidateBuilder
    from coars_fast.env.rewards import RewardSettings

    torch.manual_seed(0)
    agents = Agents(
        model, smol_tokenizer, GenerationSettings(greedy=False, max_new_tokens=12, batch_size=8, reason_tokens=6)
    )
    episodes = lastfm.split("train")[:2]
    model.eval()
    rollout = collect(
        agents,
        lastfm,
        episodes,
        CandidateBuilder(lastfm).build(episodes),
        RolloutSettings(group_size=2, max_turns=3),
        RewardSettings(exclude_unlogged_positive=False),
    )
    assert {s.agent for s in rollout.samples} == {"rec", "user"}
    flat, tree = assert_tree_equals_flat(model, rollout.samples, 1024)
    ratio = padding_report(tree, 1024)["token_ratio"]
    print(f"{len(rollout.samples)} turns; tree packing computes {ratio:.3f} of flat packing's tokens")
    assert ratio < 0.6


def test_cpu_tree_attention_runs_chain_by_chain(model, monkeypatch):
    """On CPU a token tree attends chain by chain (one sdpa per chain in every layer, instead of one
    over the dense tree mask); hidden states and gradients equal the dense mask's, and the model's
    sdpa setting is restored."""
    samples = [s for s in _random_samples(5) if s.agent == "rec"]
    stream = tree_stream([s.prompt_ids for s in samples], [s.response_ids for s in samples])
    chains = len(tree_chains(stream.subtree_end))
    assert chains > 3, "the case needs a branching tree"
    decoder, _ = decoder_and_head(model)
    model.set_adapter("rec")
    weights = [p for n, p in model.named_parameters() if p.requires_grad and ".rec." in n]

    def run(dense):
        model.zero_grad(set_to_none=True)
        if dense:  # the tree's dense mask, one sdpa per layer
            out = decoder(
                input_ids=stream.input_ids[None],
                position_ids=stream.position_ids[None],
                attention_mask=tree_mask(stream.subtree_end),
                use_cache=False,
            )
            hidden = out.last_hidden_state[0, stream.rows]
        else:
            hidden = response_hidden(decoder, stream)
        hidden.square().sum().backward()
        return hidden.detach(), [p.grad.clone() for p in weights]

    calls = count_sdpa_calls(monkeypatch)
    got, got_grads = run(dense=False)
    assert len(calls) == model.config.num_hidden_layers * chains, "one sdpa per chain in every layer"
    assert decoder.config._attn_implementation == "sdpa"
    calls.clear()
    want, want_grads = run(dense=True)
    assert len(calls) == model.config.num_hidden_layers
    assert weights and all(w.norm() > 0 for w in want_grads)
    assert (got - want).abs().max().item() <= 1e-5
    for g, w in zip(got_grads, want_grads):
        # fp32, sums in another order: 3e-5 to 1.2e-4 relative seen across the LoRA weights (it
        # depends on the machine's MKL kernels); a wrong mask or chain is off by order one
        assert ((g - w).norm() / w.norm()).item() <= 5e-4


@pytest.mark.slow
def test_flex_attention_block_mask_follows_the_tree(model, monkeypatch):
    """The CUDA path (flex attention with the tree's block mask), run forward-only on CPU, where
    torch compiles flex attention but has no backward for it: hidden states equal flat packing's."""
    from coars_fast.models import packed_attention

    samples = [s for s in _random_samples(4) if s.agent == "user"]
    prompts, responses = [s.prompt_ids for s in samples], [s.response_ids for s in samples]
    decoder, _ = decoder_and_head(model)
    model.set_adapter("user")
    with torch.no_grad():
        flat = response_hidden(decoder, _stream(prompts, responses))
        monkeypatch.setattr(packed_attention, "flex_attention_available", lambda device: True)
        tree = response_hidden(decoder, tree_stream(prompts, responses))
    assert decoder.config._attn_implementation == "sdpa"  # switched back after the forward
    assert (flat - tree).abs().max().item() <= 1e-5
