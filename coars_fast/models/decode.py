"""The CPU decode loop (generation.py's path on CPU): transformers' `generate` steps every row of a
batch in lockstep until the longest is done. Here

- a row leaves the batch once its answer is done (the KV of finished rows is dropped once half the
  batch is: each drop copies the rest),
- each row's KV is kept left-aligned and ragged (RaggedKV): a step's pads never take a position, and
- tokens that grounding leaves no choice for (the rest of a title once it is the only one that fits,
  "\\nReason:", the stop that ends the free line) ride along with the token before them: they are fed
  in the same step, and their log-probs come out of it.

A decode step on the 2-core CPU is bound by reading the weights, so a step of 20 rows x 4 tokens costs
little more than one of 20 x 1: on `eval --num-users 10 --turns 2` the Recommender's 43 lockstep
steps become 34 (docs/RESULTS.md, fourteenth sitting). Tokens, choices and log-probs are those of
transformers' loop (tests/test_decode.py checks them against it).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from coars_fast.models.grounding import TokenTrie, allowed_next
from coars_fast.models.packed_attention import switched_attention
from coars_fast.models.prefill import decoder_of

DECODE = "coars_decode"  # our name in transformers' AttentionInterface


@dataclass(frozen=True)
class Rules:
    """How answers are drawn and end (both generation paths read them)."""

    greedy: bool
    temperature: float  # of sampling and of the recorded log-probs: 1 when greedy
    top_p: float
    max_new_tokens: int  # the settings', raised to fit the longest grounded head
    stops: set[int]
    newlines: frozenset[int]  # end a grounded answer's free line
    free_tokens: int  # at most this many free tokens after a grounded head


@dataclass
class Row:
    tokens: list[int]  # the prompt's last token, then the answer so far
    position: int  # the position of tokens[0] in the sequence
    trie: TokenTrie | None
    fed: int = 0  # tokens[:fed] are in the KV cache
    logprobs: list[float] = field(default_factory=list)  # of tokens[1:], as they become known
    done: bool = False  # the answer has its last token (a stop, or max_new_tokens reached)

    @property
    def answer(self) -> list[int]:
        return self.tokens[1:]

    def to_feed(self) -> list[int]:
        """The tokens the next step feeds: those not in the cache yet, but for a done answer's last
        token (its log-prob comes from the token before it, nothing comes after it)."""
        return self.tokens[self.fed : len(self.tokens) - 1 if self.done else len(self.tokens)]


class RaggedKV:
    """The decode loop's KV: per layer a keys and a values buffer [rows, Hkv, room, D], row r's first
    lengths[r] positions filled (left-aligned, the rest zeros: a masked NaN would still poison
    attention's weighted sum). A step writes each row's real new tokens after its own, so the pads of
    a step whose rows feed different numbers of tokens never take a position."""

    def __init__(self, model, kvs: Sequence[list | None], lengths: Sequence[int], room: int):
        config, weight = model.config, next(model.parameters())
        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        self.groups = config.num_attention_heads // heads
        dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.lengths = list(lengths)
        self.layers = []
        for layer in range(config.num_hidden_layers):
            pair = []
            for which in (0, 1):
                buffer = weight.new_empty((len(kvs), heads, room, dim))
                for row, (kv, n) in enumerate(zip(kvs, lengths)):
                    if n:
                        buffer[row, :, :n] = kv[layer][which][:, :n]
                    buffer[row, :, n:] = 0
                pair.append(buffer)
            self.layers.append(tuple(pair))
        self.step = None

    def plan(self, counts: Sequence[int], k: int) -> None:
        """The next step feeds counts[r] real tokens of row r, then pads to k: row r's k new keys go to
        positions lengths[r], lengths[r] + 1, ... (a pad's lands beyond the row's end, where a later
        real token overwrites it or nothing ever reads it), and each query sees its row's filled
        positions and its own new ones up to itself (a pad query: what its row's last real one does),
        as an additive [rows, 1, groups * k, seen] mask (query heads that share a key head stacked)."""
        device = self.layers[0][0].device
        room = self.layers[0][0].shape[2]
        lengths = torch.tensor(self.lengths)
        targets = (lengths[:, None] + torch.arange(k)[None, :]).clamp(max=room - 1)
        _, heads, _, dim = self.layers[0][0].shape
        index = targets[:, None, :, None].expand(len(counts), heads, k, dim)
        ends = [n + c for n, c in zip(self.lengths, counts)]
        seen = max(ends)
        last = torch.tensor([max(c, 1) - 1 for c in counts])[:, None]
        limits = lengths[:, None] + torch.minimum(torch.arange(k)[None, :], last) + 1
        visible = torch.arange(seen)[None, None, :] < limits[:, :, None]  # [rows, k, seen]
        mask = torch.zeros(visible.shape).masked_fill_(~visible, float("-inf"))
        mask = mask[:, None, None].expand(len(counts), 1, self.groups, k, seen).reshape(len(counts), 1, -1, seen)
        self.step = (index.to(device), seen, mask.to(device=device, dtype=self.layers[0][0].dtype))
        self.lengths = ends

    def attend(self, layer: int, query, key, value, scaling):
        """Writes this step's keys and values [rows, Hkv, k, D] of `layer`, then attends query
        [rows, Hq, k, D] to everything each row has: [rows, k, Hq, D]. The query heads that share a key
        head are stacked as its queries (no copy of the keys per head)."""
        index, seen, mask = self.step
        keys, values = self.layers[layer]
        keys.scatter_(2, index, key)
        values.scatter_(2, index, value)
        batch, heads, k, dim = query.shape
        query = query.reshape(batch, key.shape[1], -1, dim)
        out = torch.nn.functional.scaled_dot_product_attention(
            query, keys[:, :, :seen], values[:, :, :seen], attn_mask=mask, scale=scaling
        )
        return out.reshape(batch, heads, k, dim).transpose(1, 2)

    def keep(self, rows: Sequence[int]) -> None:
        """Only `rows` go on (one copy of their buffers)."""
        index = torch.tensor(rows, dtype=torch.long, device=self.layers[0][0].device)
        self.layers = [(k.index_select(0, index), v.index_select(0, index)) for k, v in self.layers]
        self.lengths = [self.lengths[r] for r in rows]

    def prompt(self, row: int, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Row `row`'s first n positions, per layer (keys, values) [Hkv, n, D], copied."""
        return [(k[row, :, :n].clone(), v[row, :, :n].clone()) for k, v in self.layers]


def decode_attention_forward(
    module, query, key, value, attention_mask, scaling=None, dropout=0.0, ragged=None, **kwargs
):
    """transformers attention function for the decode loop: the layer's KV lives in `ragged`."""
    if ragged is None:
        raise ValueError(f"{DECODE} attention needs the decode loop's RaggedKV")
    return ragged.attend(module.layer_idx, query, key, value, scaling), None


@functools.cache
def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(DECODE, decode_attention_forward)


def _choose(scores: torch.Tensor, allowed: Sequence[list[int] | None], greedy: bool, temperature: float, top_p: float):
    """One token per row of raw logits [C, V], as transformers' sampling picks it: the grounding mask,
    then temperature and top-p (the smallest set of tokens whose probability reaches top_p), then the
    argmax (greedy) or a draw."""
    if any(a is not None for a in allowed):
        masked = torch.full_like(scores, float("-inf"))
        for row, tokens in enumerate(allowed):
            if tokens is None:
                masked[row] = scores[row]
            else:
                masked[row, tokens] = scores[row, tokens]
        scores = masked
    if greedy:
        return scores.argmax(-1).tolist()
    scores = scores / temperature
    if top_p < 1:
        ordered, order = scores.sort(-1)
        # drop the tokens whose cumulative probability, from the least likely up, stays within 1 - top_p
        drop = ordered.softmax(-1).cumsum(-1) <= 1 - top_p
        drop[:, -1] = False  # always keep the most likely
        scores = scores.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return torch.multinomial(scores.softmax(-1), 1).squeeze(1).tolist()


@torch.no_grad()
def decode(model, kv: RaggedKV, rows: Sequence[Row], rules: Rules, pad: int, prompt_kv: bool = False):
    """Decodes `rows` (each holding its prompt's last token, unfed), whose earlier prompt tokens are
    in `kv` (one buffer row per entry of `rows`). Fills each row's tokens and log-probs (at the
    rules' temperature, of the raw logits: the model's own probability, before any mask) in place. With
    `prompt_kv`, returns per row the KV of its whole prompt (per layer keys and values [Hkv, length,
    D]), else None."""
    _register()
    decoder, head = decoder_of(model), model.get_output_embeddings()
    device = next(model.parameters()).device
    held = list(rows)  # the rows of `kv`, in order
    kept = None
    with switched_attention(decoder.config, DECODE):
        while True:
            feeds = [r.to_feed() for r in held]
            k = max(len(f) for f in feeds)
            ids = torch.full((len(held), k), pad, dtype=torch.long)
            positions = torch.zeros(len(held), k, dtype=torch.long)
            for i, (row, feed) in enumerate(zip(held, feeds)):
                ids[i, : len(feed)] = torch.tensor(feed, dtype=torch.long)
                positions[i] = torch.arange(row.position + row.fed, row.position + row.fed + k)
            kv.plan([len(f) for f in feeds], k)
            hidden = decoder(
                input_ids=ids.to(device), position_ids=positions.to(device), use_cache=False, ragged=kv
            ).last_hidden_state
            if prompt_kv and kept is None:  # after the first step every prompt is in `kv`
                kept = [kv.prompt(i, row.position + 1) for i, row in enumerate(held)]
            real = torch.tensor([j < len(f) for f in feeds for j in range(k)], device=device)
            logits = head(hidden.reshape(-1, hidden.shape[-1])[real]).float()
            logprobs = torch.log_softmax(logits / rules.temperature, dim=-1)
            _advance(held, feeds, logits, logprobs, rules)
            for row, feed in zip(held, feeds):
                row.fed += len(feed)
            alive = [i for i, r in enumerate(held) if r.to_feed()]
            if not alive:
                break
            if len(alive) <= len(held) // 2:  # half the batch is done: drop its KV (a copy of the rest)
                kv.keep(alive)
                held = [held[i] for i in alive]
    return kept


def _advance(held, feeds, logits, logprobs, rules: Rules):
    """After a step: the log-probs of the fed tokens' successors, a choice for each row whose answer
    goes on, and the tokens grounding then forces."""
    choosing, allowed, at = [], [], 0
    for row, feed in zip(held, feeds):
        if not feed:
            continue
        end = at + len(feed)
        known = row.tokens[row.fed + 1 : row.fed + len(feed) + 1]  # the successors already decided
        if known:
            row.logprobs += logprobs[at : at + len(known)].gather(1, torch.tensor(known)[:, None]).squeeze(1).tolist()
        if len(known) < len(feed):  # the last fed token's successor is to be chosen
            choosing.append((row, end - 1))
            allowed.append(allowed_next(row.trie, row.answer, rules.newlines, rules.stops, rules.free_tokens))
        at = end
    if not choosing:
        return
    picks = _choose(logits[[at for _, at in choosing]], allowed, rules.greedy, rules.temperature, rules.top_p)
    for (row, at), token in zip(choosing, picks):
        row.tokens.append(token)
        row.logprobs.append(logprobs[at, token].item())
        while not _finished(row, rules):
            forced = allowed_next(row.trie, row.answer, rules.newlines, rules.stops, rules.free_tokens)
            if forced is None or len(forced) != 1:
                break
            row.tokens.append(forced[0])  # its log-prob comes out of the next step
        row.done = _finished(row, rules)


def _finished(row: Row, rules: Rules) -> bool:
    return row.answer[-1] in rules.stops or len(row.answer) >= rules.max_new_tokens
