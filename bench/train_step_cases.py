"""The training step, ours against the way a padded RL trainer (TRL, verl without remove-padding)
does it, on the same trajectories and model. Also a command line
(`python bench/train_step_cases.py train-step IMPL SIZE float32`) that runs one implementation in a
fresh process and prints its peak extra resident memory (see measure.py).

- "ours": first-fit-decreasing packing into padding-free student and teacher streams (each sequence
  attends to itself only: per-sequence sdpa on CPU, varlen flash attention on CUDA), hidden states
  of the response rows only, the fused `coars_loss` (no [tokens x vocab] logits).
- "packed-materialised": ours with the fused loss swapped for materialised fp32 logits of the
  response rows (kernels/reference.py), so the packing gain and the kernel gain read separately.
- "padded": per agent, micro-batches of the same number of turns right-padded to their longest
  sequence with an attention mask, the decoder over every position, the LM head over the response
  positions only (what TRL's `logits_to_keep` buys a real trainer), fp32 log_softmax + gather, the
  same CoARS loss, autograd. (Before 2026-12-04 the baseline computed the head over every position:
  a handicap no real trainer pays; its figures in bench/RESULTS.md are labelled so.)

All run every turn of both agents forward and backward through the LoRA adapters of one model.
"""

import json
import random
import sys

import torch
from measure import rss_high_water

from coars_fast.kernels import reference
from coars_fast.models.lora import add_agent_adapters
from coars_fast.rollout import TurnSample, pack
from coars_fast.train import step
from coars_fast.train.config import LossConfig
from coars_fast.train.step import accumulate_gradients, decoder_and_head

SIZES = {
    # SmolLM2-135M's width, heads and vocabulary (the embedded model) with 6 of its 30 layers, so a
    # round takes seconds on 2 CPU cores; turns as the CPU preset produces them. Both sides hold the
    # same 8 turns per agent in one micro-batch (ours: one packed stream within `budget` tokens).
    "cpu": dict(
        hidden=576,
        layers=6,
        heads=9,
        kv_heads=3,
        intermediate=1536,
        vocab=49152,
        turns=16,
        prompt=(240, 340),
        hindsight=(50, 80),
        response=(12, 40),
        budget=4096,
        padded_batch=8,
    ),
    "smoke": dict(
        hidden=64,
        layers=2,
        heads=4,
        kv_heads=2,
        intermediate=128,
        vocab=1031,
        turns=8,
        prompt=(20, 40),
        hindsight=(5, 10),
        response=(3, 9),
        budget=256,
        padded_batch=4,
    ),
    # Qwen2.5-0.5B's shape (all 24 layers, 151,936-token tied head) in bf16, with the GPU preset's
    # token budget; the padded side runs TRL-sized micro-batches of 16 turns.
    "gpu": dict(
        hidden=896,
        layers=24,
        heads=14,
        kv_heads=2,
        intermediate=4864,
        vocab=151936,
        turns=64,
        prompt=(400, 700),
        hindsight=(50, 120),
        response=(16, 64),
        budget=32768,
        padded_batch=16,
        device="cuda",
        dtype=torch.bfloat16,
    ),
}
LOSS = LossConfig()


def make_inputs(size):
    from transformers import LlamaConfig, LlamaForCausalLM

    s = SIZES[size]
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=s["vocab"],
        hidden_size=s["hidden"],
        intermediate_size=s["intermediate"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"],
        num_key_value_heads=s["kv_heads"],
        tie_word_embeddings=True,
        attn_implementation="sdpa",
    )
    device, dtype = torch.device(s.get("device", "cpu")), s.get("dtype", torch.float32)
    model = add_agent_adapters(LlamaForCausalLM(config).to(device=device, dtype=dtype).requires_grad_(False))
    for name, p in model.named_parameters():  # LoRA B starts at 0; make the adapters non-trivial
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    rng = random.Random(0)
    ids = lambda n: tuple(rng.randrange(3, s["vocab"]) for _ in range(n))
    samples = []
    for i in range(s["turns"]):
        prompt = ids(rng.randint(*s["prompt"]))
        teacher = prompt[:-4] + ids(rng.randint(*s["hindsight"])) + prompt[-4:]
        response = ids(rng.randint(*s["response"]))
        samples.append(
            TurnSample(
                "rec" if i % 2 == 0 else "user",
                prompt,
                teacher,
                response,
                tuple(-rng.random() for _ in response),
                rng.uniform(-1, 1),
                f"u{i // 4}",
            )
        )
    return {"model": model, "samples": samples, "size": s, "device": device}


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def train_step_ours(x):
    model = x["model"]
    model.zero_grad(set_to_none=True)
    stats = accumulate_gradients(model, pack(x["samples"], x["size"]["budget"]), LOSS, 1.0, x["device"])
    return sum(v for k, v in stats.items() if k.startswith("loss_")), _grads(model)


def train_step_packed_materialised(x):
    """Ours with materialised [response rows x vocab] fp32 logits instead of the fused loss."""
    fused = step.coars_loss
    step.coars_loss = reference.coars_loss
    try:
        return train_step_ours(x)
    finally:
        step.coars_loss = fused


def train_step_ours_sdpa(x):
    """Ours with the CPU attention on CUDA: a block-diagonal sdpa mask over each whole stream, i.e.
    what the step costs without a varlen attention kernel."""
    from coars_fast.models import packed_attention

    original = packed_attention.varlen_kernel
    packed_attention.varlen_kernel = lambda device: None
    try:
        return train_step_ours(x)
    finally:
        packed_attention.varlen_kernel = original


def _padded(samples, prompts):
    width = max(len(p) + len(s.response_ids) - 1 for p, s in zip(prompts, samples))
    ids = torch.zeros(len(samples), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, (p, s) in enumerate(zip(prompts, samples)):
        seq = list(p) + list(s.response_ids[:-1])
        ids[i, : len(seq)], mask[i, : len(seq)] = torch.tensor(seq), 1
    return ids, mask


def _response_logprobs(model, samples, prompts):
    device = model.device
    ids, mask = _padded(samples, prompts)
    ids, mask = ids.to(device), mask.to(device)
    spans = [slice(len(p) - 1, len(p) - 1 + len(s.response_ids)) for p, s in zip(prompts, samples)]
    targets = torch.tensor([t for s in samples for t in s.response_ids], device=device)
    decoder, head = decoder_and_head(model)
    hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state
    rows = torch.cat([hidden[i, span] for i, span in enumerate(spans)])
    logp = (rows @ head.t()).float().log_softmax(-1)
    return logp.gather(1, targets[:, None]).squeeze(1)


def train_step_padded(x):
    model, batch = x["model"], x["size"]["padded_batch"]
    model.zero_grad(set_to_none=True)
    total = 0.0
    for agent in ("rec", "user"):
        mine = [s for s in x["samples"] if s.agent == agent]
        model.set_adapter(agent)
        for start in range(0, len(mine), batch):
            chunk = mine[start : start + batch]
            with torch.no_grad():
                teacher = _response_logprobs(model, chunk, [s.teacher_prompt_ids for s in chunk])
            student = _response_logprobs(model, chunk, [s.prompt_ids for s in chunk])
            rewards = torch.tensor([s.reward for s in chunk for _ in s.response_ids], device=x["device"])
            weights = torch.tensor(
                [1 / (len(s.response_ids) * len(mine)) for s in chunk for _ in s.response_ids], device=x["device"]
            )
            credit = (teacher - student.detach()).clamp(-LOSS.credit_clip, LOSS.credit_clip)
            loss = -(weights * (rewards + LOSS.distill_coef * credit) * student).sum()
            loss.backward()
            total += loss.item()
    return total, _grads(model)


IMPLEMENTATIONS = {
    "train-step": {
        "ours": train_step_ours,
        "packed-materialised": train_step_packed_materialised,
        "padded": train_step_padded,
    }
}
# On CUDA, also ours without the varlen kernel, to show what it buys.
CUDA_IMPLEMENTATIONS = {"train-step": dict(IMPLEMENTATIONS["train-step"], **{"ours-sdpa-mask": train_step_ours_sdpa})}


if __name__ == "__main__":
    case, impl, size, _dtype = sys.argv[1:5]
    print(json.dumps({"peak_extra_bytes": rss_high_water(IMPLEMENTATIONS[case][impl], make_inputs(size))}))
