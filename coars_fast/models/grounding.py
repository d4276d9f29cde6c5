"""Grounded decoding: an answer's head is drawn from a fixed set of token sequences (a prefix trie),
the rest is free text that ends at its first line break or after a bounded number of tokens.

A Recommender answer's head is " <candidate title>\\nReason:", a User answer's " <action>\\nScore:
<number>\\nReason:" (the allowed strings come from coars_fast.env.prompts). Under the trie the model
samples from its own distribution renormalised over the allowed next tokens, so every answer names
exactly one allowed choice. Only the sampling is masked: the log-probs kept for training are the
model's own, unmasked ones (see generation.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class TokenTrie:
    """The token sequences of a set of strings, merged by common prefix."""

    def __init__(self, sequences: Sequence[Sequence[int]]):
        if not sequences or any(len(s) == 0 for s in sequences):
            raise ValueError("a token trie needs at least one non-empty sequence")
        self.root: dict = {}
        self.depth = max(len(s) for s in sequences)
        for seq in sequences:
            node = self.root
            for token in seq:
                node = node.setdefault(int(token), {})

    @classmethod
    def of_strings(cls, tokenizer, strings: Sequence[str]) -> TokenTrie:
        return cls([tokenizer.encode(s, add_special_tokens=False) for s in strings])

    def walk(self, tokens: Sequence[int]) -> tuple[dict | None, int]:
        """(node, n): the node reached after the first n tokens; node is None once a token leaves
        the trie, {} once a whole sequence has been consumed (the free part begins at n)."""
        node = self.root
        for n, token in enumerate(tokens):
            if not node:
                return node, n
            node = node.get(int(token))
            if node is None:
                return None, n
        return node, len(tokens)


def newline_token_ids(tokenizer) -> frozenset[int]:
    """Ids whose text holds a line break (they end the free part of a grounded answer)."""
    cached = getattr(tokenizer, "_coars_newline_ids", None)
    if cached is None:
        cached = frozenset(
            i
            for i, piece in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))))
            if piece is not None and ("\n" in piece or "Ċ" in piece or "<0x0A>" in piece)
        )
        try:
            tokenizer._coars_newline_ids = cached
        except AttributeError:
            pass
    return cached


def allowed_next(
    trie: TokenTrie | None, tokens: Sequence[int], newlines: frozenset[int], stops: set[int], free_tokens: int
) -> list[int] | None:
    """The tokens grounding allows after `tokens` (a row's answer so far): the children of its trie
    node inside the head, only the stops once the free line has ended (a line break, or `free_tokens`
    tokens), None where any token may come (free text, a row that left the trie, or no trie)."""
    if trie is None:
        return None
    node, n = trie.walk(tokens)
    if node:
        return list(node)
    if node is not None and (len(tokens) - n >= free_tokens or any(t in newlines for t in tokens[n:])):
        return sorted(stops)
    return None


def forced_steps(
    trie: TokenTrie | None, ids: Sequence[int], newlines: frozenset[int], stops: set[int], free_tokens: int
) -> tuple[bool, ...]:
    """Per generated token: True where grounding left exactly one choice (a head token that continues a
    single allowed string, or the stop that ends the free line: several stop ids mean the same). Under
    the masked policy that sampled it such a token has probability 1, so it carries no learning signal."""
    stop_list = sorted(stops)
    forced = []
    for t in range(len(ids)):
        allowed = allowed_next(trie, ids[:t], newlines, stops, free_tokens)
        forced.append(allowed is not None and (len(allowed) == 1 or allowed == stop_list))
    return tuple(forced)


class GroundedLogits:
    """A logits processor (HF `generate` protocol): row i's answer starts with one of tries[i]'s
    sequences (None: free row); after that its free part ends at the first line break.

    `start` is the column where generated tokens begin in `input_ids`; the free part is cut after
    `free_tokens` tokens.
    """

    def __init__(
        self, tries: Sequence[TokenTrie | None], start: int, newlines: frozenset[int], stops: set[int], free_tokens: int
    ):
        self.tries, self.start = list(tries), start
        self.newlines, self.stops, self.free_tokens = newlines, set(stops), free_tokens

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.start :].tolist()
        scores = scores.clone()  # never in place: the caller may hold these logits
        for row, (trie, tokens) in enumerate(zip(self.tries, generated)):
            allowed = allowed_next(trie, tokens, self.newlines, self.stops, self.free_tokens)
            if allowed is None:
                continue  # free text (or a row that already stopped)
            keep = scores[row, allowed]
            scores[row] = float("-inf")
            scores[row, allowed] = keep
        return scores
