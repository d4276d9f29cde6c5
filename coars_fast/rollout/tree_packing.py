"""Shared-prefix packing: the sequences of a micro-batch merged into one token tree.

The turns of a step repeat most of their tokens: the turns of an episode share the system prompt,
history and candidates (each turn's memory extends the previous one's), and the G episodes of a user
share all of that. A token tree (trie) lays each shared prefix out once:

- nodes in depth-first pre-order, so a node's subtree is the contiguous range [node, subtree_end);
- a node's position id is its depth in its own sequences (every sequence through it has the same
  prefix, so the same depth);
- a node attends to its ancestors and itself: key j is visible to query i iff j <= i < subtree_end[j].

Causal attention makes a prefix's hidden states independent of what follows it, so every sequence's
hidden states equal those of its flat packing, and autograd sums what the branches send back into a
shared prefix: the gradients are exact. Response rows are gathered per original sequence, so the
loss sees the same rows, in the same order, as with flat packing (coars_fast/rollout/packing.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from coars_fast.rollout.collector import TurnSample
from coars_fast.rollout.packing import PackedBatch, PackedStream, first_fit_decreasing, pack


@dataclass
class TokenTree:
    input_ids: list[int]  # node tokens, depth-first pre-order
    depths: list[int]  # per node, its position in the sequences through it
    subtree_end: list[int]  # per node, one past its last descendant
    paths: list[list[int]]  # per input sequence (input order), the node of each of its positions


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def token_tree(sequences: Sequence[Sequence[int]]) -> TokenTree:
    """The trie of `sequences`. In lexicographic order a sequence shares with its predecessor the
    longest prefix it shares with any earlier one, and appending each one's new suffix in that
    order is a pre-order walk of the trie."""
    order = sorted(range(len(sequences)), key=lambda i: tuple(sequences[i]))
    ids: list[int] = []
    depths: list[int] = []
    parents: list[int] = []
    paths: list[list[int]] = [[] for _ in sequences]
    previous: Sequence[int] = ()
    previous_path: list[int] = []
    for i in order:
        sequence = sequences[i]
        shared = _common_prefix(previous, sequence)
        path = previous_path[:shared]
        for depth in range(shared, len(sequence)):
            parents.append(path[-1] if path else -1)
            path.append(len(ids))
            ids.append(sequence[depth])
            depths.append(depth)
        paths[i] = path
        previous, previous_path = sequence, path
    size = [1] * len(ids)
    for node in range(len(ids) - 1, -1, -1):  # children come after their parent in pre-order
        if parents[node] >= 0:
            size[parents[node]] += size[node]
    return TokenTree(ids, depths, [node + size[node] for node in range(len(ids))], paths)


def tree_stream(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]]) -> PackedStream:
    """The tree of the sequences prompt + response[:-1]; `rows` in input order, as flat packing has them."""
    sequences = [tuple(p) + tuple(r[:-1]) for p, r in zip(prompts, responses)]
    tree = token_tree(sequences)
    rows = [tree.paths[k][len(p) - 1 + j] for k, (p, r) in enumerate(zip(prompts, responses)) for j in range(len(r))]
    total = len(tree.input_ids)
    return PackedStream(
        torch.tensor(tree.input_ids, dtype=torch.long),
        torch.tensor(tree.depths, dtype=torch.long),
        torch.tensor([0, total], dtype=torch.int32),  # one attention unit: the tree mask says who sees whom
        torch.tensor(rows, dtype=torch.long),
        total,
        subtree_end=torch.tensor(tree.subtree_end, dtype=torch.long),
        sequence_lengths=tuple(len(s) for s in sequences),
    )


def _bins(samples: Sequence[TurnSample], budget: int) -> list[list[int]]:
    """Groups of sample indices whose student and teacher trees each hold at most `budget` tokens
    (a lone sample larger than that gets a group alone).

    Samples are taken in lexicographic order of their student sequence (turns that share prefixes
    end up next to each other) and cut into runs; a run's size is counted by what each sample adds to
    its predecessor's prefix (exact for the student tree, an upper bound for the teacher's). The runs
    are then merged first-fit-decreasing by their larger tree's size: a tree larger than the budget
    is split at branch points, and each part keeps its whole prefix."""
    student = [s.prompt_ids + s.response_ids[:-1] for s in samples]
    teacher = [s.teacher_prompt_ids + s.response_ids[:-1] for s in samples]
    order = sorted(range(len(samples)), key=lambda i: student[i])
    runs: list[list[int]] = []
    sizes: list[int] = []
    used = (0, 0)
    for i in order:
        if runs and runs[-1]:
            last = runs[-1][-1]
            add = (
                len(student[i]) - _common_prefix(student[last], student[i]),
                len(teacher[i]) - _common_prefix(teacher[last], teacher[i]),
            )
            if max(used[0] + add[0], used[1] + add[1]) <= budget:
                runs[-1].append(i)
                used = (used[0] + add[0], used[1] + add[1])
                sizes[-1] = max(used)
                continue
        runs.append([i])
        used = (len(student[i]), len(teacher[i]))
        sizes.append(max(used))
    return [[i for run in group for i in runs[run]] for group in first_fit_decreasing(sizes, budget)]


def pack_trees(
    samples: Sequence[TurnSample], token_budget: int, turns: Mapping[str, int] | None = None
) -> list[PackedBatch]:
    """Like `pack`, with each stream a token tree of at most `token_budget` unique tokens."""
    return pack(
        samples,
        token_budget,
        bins=lambda mine, budget: [sorted(b) for b in _bins(mine, budget)],
        stream=tree_stream,
        turns=turns,
    )
