"""Packing turn samples into padding-free token streams for the student and teacher forwards.

A micro-batch holds turns of one agent, chosen first-fit-decreasing under a token budget. It has two
streams over the same turns in the same order: student sequences (prompt + response) and teacher
sequences (teacher prompt + the same response). Position ids restart at every sequence start, which
keeps attention inside a sequence (coars_fast/models/packed_attention.py says how, per device). `rows` are the
stream positions whose hidden state predicts a response token: row j of both streams is the same
(turn, token), and no label crosses a sequence boundary (the response's last token is never input).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from coars_fast.rollout.collector import TurnSample


@dataclass
class PackedStream:
    input_ids: torch.Tensor  # [T]
    position_ids: torch.Tensor  # [T], restarting at 0 per sequence
    cu_seqlens: torch.Tensor  # [S + 1] int32, sequence starts (flash-attn varlen convention)
    rows: torch.Tensor  # [R] positions whose hidden state predicts targets[r]
    max_seqlen: int  # the longest sequence (varlen attention kernels take it)
    # A token tree (coars_fast/rollout/tree_packing.py): per node, one past its last descendant. None
    # for flat streams, whose sequences are the cu_seqlens ranges.
    subtree_end: torch.Tensor | None = None
    sequence_lengths: tuple[int, ...] | None = None  # of the sequences it holds (trees only)

    @property
    def tokens(self) -> int:
        """Tokens the forward computes."""
        return self.input_ids.numel()

    @property
    def lengths(self) -> list[int]:
        """The lengths of the sequences it holds: what a flat packing computes for them."""
        if self.sequence_lengths is not None:
            return list(self.sequence_lengths)
        return (self.cu_seqlens[1:] - self.cu_seqlens[:-1]).tolist()

    def to(self, device) -> PackedStream:
        move = lambda t: None if t is None else t.to(device)
        return PackedStream(
            move(self.input_ids),
            move(self.position_ids),
            move(self.cu_seqlens),
            move(self.rows),
            self.max_seqlen,
            move(self.subtree_end),
            self.sequence_lengths,
        )


@dataclass
class PackedBatch:
    agent: str
    student: PackedStream
    teacher: PackedStream
    targets: torch.Tensor  # [R] response token ids
    rewards: torch.Tensor  # [R] the turn's reward, broadcast to its tokens
    token_weights: torch.Tensor  # [R] 1 / (|y_t| * turns of this agent in the whole batch); 0 on forced tokens
    old_logprobs: torch.Tensor  # [R] behaviour log-probs
    turns: int

    def to(self, device) -> PackedBatch:
        return PackedBatch(
            self.agent,
            self.student.to(device),
            self.teacher.to(device),
            self.targets.to(device),
            self.rewards.to(device),
            self.token_weights.to(device),
            self.old_logprobs.to(device),
            self.turns,
        )


def _stream(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]]) -> PackedStream:
    ids, positions, starts, rows = [], [], [0], []
    for prompt, response in zip(prompts, responses):
        sequence = list(prompt) + list(response[:-1])  # the last token predicts nothing we train on
        offset = len(ids)
        rows.extend(range(offset + len(prompt) - 1, offset + len(prompt) - 1 + len(response)))
        ids.extend(sequence)
        positions.extend(range(len(sequence)))
        starts.append(len(ids))
    return PackedStream(
        torch.tensor(ids, dtype=torch.long),
        torch.tensor(positions, dtype=torch.long),
        torch.tensor(starts, dtype=torch.int32),
        torch.tensor(rows, dtype=torch.long),
        max(b - a for a, b in zip(starts, starts[1:])),
    )


def sequence_tokens(sample: TurnSample) -> int:
    """Tokens the larger (teacher) stream spends on this sample."""
    return max(len(sample.prompt_ids), len(sample.teacher_prompt_ids)) + len(sample.response_ids) - 1


def first_fit_decreasing(sizes: Sequence[int], budget: int) -> list[list[int]]:
    """Bins of indices whose sizes sum to at most `budget` (an oversized item gets a bin alone)."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        for b, free in enumerate(room):
            if sizes[i] <= free:
                bins[b].append(i)
                room[b] -= sizes[i]
                break
        else:
            bins.append([i])
            room.append(budget - sizes[i])
    return bins


def flat_bins(samples: Sequence[TurnSample], token_budget: int) -> list[list[int]]:
    return first_fit_decreasing([sequence_tokens(s) for s in samples], token_budget)


def pack(
    samples: Sequence[TurnSample],
    token_budget: int,
    bins=flat_bins,
    stream=_stream,
    turns: Mapping[str, int] | None = None,
) -> list[PackedBatch]:
    """Micro-batches per agent; token weights make each agent's loss a mean over its turns.
    `bins` groups an agent's turns under the budget and `stream` lays a group's sequences out: flat
    here, token trees in tree_packing.pack_trees. `turns`: each agent's turns in the whole step when
    `samples` is one rank's share of it (default: those of `samples`)."""
    batches = []
    for agent in sorted({s.agent for s in samples}):
        mine = [s for s in samples if s.agent == agent]
        total = len(mine) if turns is None else turns[agent]
        for members in bins(mine, token_budget):
            chosen = [mine[i] for i in members]
            responses = [s.response_ids for s in chosen]
            batches.append(
                PackedBatch(
                    agent=agent,
                    student=stream([s.prompt_ids for s in chosen], responses),
                    teacher=stream([s.teacher_prompt_ids for s in chosen], responses),
                    **batch_labels(chosen, total),
                )
            )
    return batches


def batch_labels(chosen: Sequence[TurnSample], agent_turns: int) -> dict:
    """The per-row tensors of a micro-batch of `chosen` turns, in their order; `agent_turns` is the
    number of this agent's turns in the whole step (the loss is a mean over them)."""
    responses = [s.response_ids for s in chosen]
    return dict(
        targets=torch.tensor([t for r in responses for t in r], dtype=torch.long),
        rewards=torch.tensor([s.reward for s in chosen for _ in s.response_ids], dtype=torch.float32),
        token_weights=torch.tensor(
            [
                0.0 if s.forced and s.forced[n] else 1.0 / (len(s.response_ids) * agent_turns)
                for s in chosen
                for n in range(len(s.response_ids))
            ],
            dtype=torch.float32,
        ),
        old_logprobs=torch.tensor([lp for s in chosen for lp in s.old_logprobs], dtype=torch.float32),
        turns=len(chosen),
    )


def padding_report(batches: Sequence[PackedBatch], token_budget: int) -> dict:
    """Tokens computed against those a flat packing of the same turns computes (`token_ratio`: 1.0
    for flat packing, below it for token trees), how full the micro-batches are, and what
    right-padding the same turns would waste."""
    packed = sum(b.student.tokens + b.teacher.tokens for b in batches)
    flat = sum(sum(stream.lengths) for b in batches for stream in (b.student, b.teacher))
    capacity = 2 * token_budget * len(batches)
    padded = 0
    for b in batches:  # a padded batch of the same turns: every sequence as long as the longest
        for stream in (b.student, b.teacher):
            lengths = stream.lengths
            padded += max(lengths) * len(lengths)
    return {
        "tokens": packed,
        "tokens_flat": flat,
        "token_ratio": packed / flat if flat else 1.0,
        "packed_fill": packed / capacity if capacity else 0.0,
        "padded_waste": 1 - flat / padded if padded else 0.0,
    }
