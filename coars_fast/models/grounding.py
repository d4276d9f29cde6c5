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


def forced_steps(
    trie: TokenTrie | None, ids: Sequence[int], newlines: frozenset[int], stops: set[int], free_tokens: int
) -> tuple[bool, ...]:
    """Per generated token: True where GroundedLogits left exactly one choice (a head token that
    continues a single allowed string, or the stop that ends the free line). Under the masked policy
    that sampled it such a token has probability 1, so it carries no learning signal."""
    if trie is None:
        return (False,) * len(ids)
    forced = []
    for t in range(len(ids)):
        node, n = trie.walk(ids[:t])
        if node:
            forced.append(len(node) == 1)
        elif node is not None and (t - n >= free_tokens or any(x in newlines for x in ids[n:t])):
            forced.append(True)  # only a stop token was allowed (several stop ids mean the same)
        else:
            forced.append(False)
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
        self.newlines, self.stops, self.free_tokens = newlines, sorted(stops), free_tokens

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.start :].tolist()
        scores = scores.clone()  # never in place: the caller may hold these logits
        for row, (trie, tokens) in enumerate(zip(self.tries, generated)):
            if trie is None:
                continue
            node, n = trie.walk(tokens)
            if node:  # inside the trie: only its children
                allowed = list(node)
            elif node is not None and (
                len(tokens) - n >= self.free_tokens or any(t in self.newlines for t in tokens[n:])
            ):
                allowed = self.stops  # the free line has ended (or is long enough): stop
            else:
                continue  # free text (or a row that already stopped)
            keep = scores[row, allowed]
            scores[row] = float("-inf")
            scores[row, allowed] = keep
        return scores
