"""One optimisation step over packed rollouts: teacher and student hidden states of the response
rows, the fused CoARS loss, backward per agent, then one optimizer step over both adapters."""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Sequence

import torch

from coars_fast.distributed import SINGLE, World, gather, sum_counts, sum_gradients
from coars_fast.distributed.fsdp import is_sharded, local, whole
from coars_fast.errors import ConfigError
from coars_fast.kernels import coars_loss
from coars_fast.models.lora import head_has_lora
from coars_fast.models.packed_attention import packed_attention, tree_attention
from coars_fast.models.prefill import decoder_of
from coars_fast.rollout.collector import TurnSample
from coars_fast.rollout.packing import PackedBatch, PackedStream
from coars_fast.train.config import LossConfig


def decoder_and_head(model):
    """The transformer stack (final hidden states, no LM head) and the LM head weight [V, D]."""
    if head_has_lora(model):  # its adapter would be silently ignored: the loss reads the base weight
        raise ConfigError("a LoRA adapter on the LM head is not supported: the fused loss reads the frozen head weight")
    return decoder_of(model), model.get_output_embeddings().weight


def response_hidden(decoder, stream: PackedStream) -> torch.Tensor:
    """Hidden states [R, D] at the stream's response rows. A flat stream has no attention mask and
    position ids that restart per sequence: sequences attend only within themselves (see
    packed_attention). A token tree attends along its branches (tree_attention)."""
    if stream.subtree_end is not None:
        attention = tree_attention(decoder, stream.subtree_end)
    else:
        attention = packed_attention(decoder, stream.cu_seqlens, stream.max_seqlen)
    with attention as attention_kwargs:
        out = decoder(
            input_ids=stream.input_ids[None],
            position_ids=stream.position_ids[None],
            use_cache=False,
            **attention_kwargs,
        )
    return out.last_hidden_state[0, stream.rows]


def accumulate_gradients(
    model,
    batches: Sequence[PackedBatch],
    loss_cfg: LossConfig,
    temperature: float,
    device,
    padding: Sequence[PackedBatch] = (),
) -> dict:
    """Forward + backward over every micro-batch, agent by agent; returns per-agent statistics and
    timings. `padding`: zero-weight micro-batches run in their agent's turn and left out of the
    statistics (they keep sharded ranks in step: `padding_batches`)."""
    decoder, head = decoder_and_head(model)
    totals = defaultdict(float)
    credit_abs, clipped, tokens = defaultdict(float), defaultdict(float), defaultdict(int)
    pads = {id(b) for b in padding}
    for batch in sorted([*batches, *padding], key=lambda b: b.agent):
        is_pad, batch = id(batch) in pads, batch.to(device)
        model.set_adapter(batch.agent)
        started = time.perf_counter()
        with torch.no_grad():
            teacher = response_hidden(decoder, batch.teacher)
        between = time.perf_counter()
        student = response_hidden(decoder, batch.student)
        loss, stats = coars_loss(
            student,
            teacher,
            head,
            batch.targets,
            batch.rewards,
            batch.token_weights,
            distill_coef=loss_cfg.distill_coef,
            credit_clip=loss_cfg.credit_clip,
            temperature=temperature,
            old_logprobs=batch.old_logprobs if loss_cfg.ppo_clip is not None else None,
            ppo_clip=loss_cfg.ppo_clip,
        )
        loss.backward()
        if is_pad:
            continue
        totals["time_teacher"] += between - started
        totals["time_student"] += time.perf_counter() - between
        totals[f"loss_{batch.agent}"] += loss.item()
        credit = stats["credit"]
        credit_abs[batch.agent] += credit.abs().sum().item()
        clipped[batch.agent] += (credit.abs() >= loss_cfg.credit_clip).sum().item()
        tokens[batch.agent] += credit.numel()
        totals["tokens"] += batch.student.tokens + batch.teacher.tokens
    for agent, n in tokens.items():
        totals[f"credit_abs_{agent}"] = credit_abs[agent] / n
        totals[f"credit_clip_frac_{agent}"] = clipped[agent] / n
    return dict(totals)


def gradients_of_step(
    model,
    samples: Sequence[TurnSample],
    pack,
    token_budget: int,
    loss_cfg: LossConfig,
    temperature: float,
    device,
    params: Sequence[torch.nn.Parameter],
    world: World = SINGLE,
    lockstep: bool = False,
) -> tuple[list[PackedBatch], dict]:
    """Pack this rank's turns and accumulate their gradients; across ranks the token weights divide by
    the whole step's turns per agent and the gradients are summed, so N ranks x k users give the
    gradient of one process with all N k users. `lockstep` (sharded layers): every rank runs as many
    micro-batches of each agent as the rank with most. Returns this rank's batches and statistics."""
    turns = sum_counts(Counter(s.agent for s in samples), world)
    batches = pack(samples, token_budget, turns=turns)
    padding = padding_batches(batches, pack, world) if lockstep else []
    stats = accumulate_gradients(model, batches, loss_cfg, temperature, device, padding) if batches or padding else {}
    # sharded parameters were summed by their reduce-scatter; the rest here
    sum_gradients([p for p in params if not is_sharded(p)], world)
    return batches, stats


def padding_batches(batches: Sequence[PackedBatch], pack, world: World) -> list[PackedBatch]:
    """Zero-weight micro-batches (one token of prompt and response) that bring this rank's count of
    each agent's micro-batches up to the largest on any rank: with sharded layers every forward and
    backward is a collective, and a backward reduce-scatters the gradients of its agent's adapter."""
    counts = gather(Counter(b.agent for b in batches), world)
    mine = counts[world.rank]
    out = []
    for agent in sorted({a for c in counts for a in c}):
        missing = max(c.get(agent, 0) for c in counts) - mine.get(agent, 0)
        turn = TurnSample(agent, (0,), (0,), (0,), (0.0,), 0.0, "padding")
        for _ in range(missing):
            (pad,) = pack([turn], 1 << 30, turns={agent: 1})
            pad.token_weights.zero_()
            out.append(pad)
    return out


def adapter_parameters(model, agents: Sequence[str]) -> dict[str, list[torch.nn.Parameter]]:
    """Per agent, the LoRA weights of its adapter (named `...lora_A.<agent>.weight` by PEFT)."""
    groups = {a: [p for name, p in model.named_parameters() if f".{a}." in name and "lora_" in name] for a in agents}
    for params in groups.values():
        for p in params:
            p.requires_grad_(True)
    return groups


def finite_gradients(params: Sequence[torch.nn.Parameter]) -> bool:
    # this rank's shards only: clip_and_step asks this after the (global) norms were found finite
    return all(p.grad is None or torch.isfinite(local(p.grad)).all() for p in params)


def _clip(params: Sequence[torch.nn.Parameter], max_norm: float) -> float:
    """clip_grad_norm_, with the norm of sharded gradients summed over ranks before the clip."""
    grads = [p.grad for p in params if p.grad is not None]
    norm = whole(torch.nn.utils.get_total_norm(grads)) if grads else torch.tensor(0.0)
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm.item()


def clip_and_step(groups: dict[str, list[torch.nn.Parameter]], optimizer, scheduler, grad_clip: float) -> dict | None:
    """Clip each adapter's gradient norm on its own (so training one agent or both does not change how
    the other is clipped), step, zero. Returns the pre-clip norm per agent, or None (and no step) when
    any gradient or norm is not finite."""
    norms = {
        agent: _clip(params, grad_clip if grad_clip > 0 else math.inf) for agent, params in groups.items() if params
    }
    params = [p for group in groups.values() for p in group]
    if not all(math.isfinite(n) for n in norms.values()) or not finite_gradients(params):
        optimizer.zero_grad(set_to_none=True)
        return None
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return norms
