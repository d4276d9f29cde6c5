"""Batched generation that keeps the exact token ids (token-in, token-out) and their log-probs."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch

from coars_fast.errors import ConfigError
from coars_fast.kernels.validation import MIN_TEMPERATURE
from coars_fast.models.decode import RaggedKV, Row, Rules, decode
from coars_fast.models.grounding import GroundedLogits, TokenTrie, forced_steps, newline_token_ids
from coars_fast.models.prefill import prefill
from coars_fast.models.prompt_cache import PromptCache, prefill_shared, rows_of, stack_left_padded
from coars_fast.models.small_batch import small_batch_linears

STATIC_CACHE_STEP = 1024  # static KV caches are sized in multiples of this many positions


@dataclass(frozen=True)
class GenerationSettings:
    greedy: bool = True
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    batch_size: int = 16  # sequences per generate() call; bounds the KV cache
    grounded: bool = True  # answer heads decoded under a trie of the allowed choices (see grounding.py)
    reason_tokens: int = 32  # grounded answers: at most this many free tokens (the reason) after the head
    # Decode into a preallocated KV cache, which transformers compiles on CUDA (CUDA graphs): the
    # per-token launch overhead goes, but each call prefills its whole prompts (no prompt-KV reuse
    # across turns, which pays on CPUs where prefill is the cost). Shapes are bucketed so that the
    # compiled step is reused: rows padded to one of four batch sizes, the cache to STATIC_CACHE_STEP.
    static_cache: bool = False

    def __post_init__(self):
        if (
            not self.temperature >= MIN_TEMPERATURE  # the loss divides logits by it in fp32
            or not 0 < self.top_p <= 1
            or self.max_new_tokens < 1
            or self.batch_size < 1
            or self.reason_tokens < 1
        ):
            raise ConfigError(
                f"generation needs temperature >= {MIN_TEMPERATURE:g}, 0 < top_p <= 1, max_new_tokens >= 1, batch_size >= 1 and "
                f"reason_tokens >= 1; got {self.temperature}, {self.top_p}, {self.max_new_tokens}, {self.batch_size}, "
                f"{self.reason_tokens}"
            )


@dataclass(frozen=True)
class Generated:
    prompt_ids: tuple[int, ...]
    ids: tuple[int, ...]  # the response as sampled, ending with the stop token when one came
    # log pi(token) at the sampling temperature, before top-p and before any grounding mask: the
    # model's own probability, the quantity the loss recomputes (and a PPO ratio compares)
    logprobs: tuple[float, ...]
    text: str  # `ids` decoded without special tokens
    finished: bool  # False when max_new_tokens cut the response
    # per token: grounding allowed only this token (grounding.forced_steps); () when decoded free
    forced: tuple[bool, ...] = ()


class StepLogprobs:
    """Records, per generated token, its log-prob under the model's raw logits at `temperature` (the
    model's own probability, before any logits processor, top-p or grounding mask: what the loss
    recomputes), keeping one step's [batch, vocab] log-softmax at a time instead of every step's
    logits. `hook` (a forward hook on the LM head) sees each step's raw logits; as a logits
    processor it is called after that forward, when the previous step's token is the last of
    `input_ids`. `finish` takes the final step's tokens and returns [batch, steps]."""

    def __init__(self, temperature: float):
        self.temperature, self.raw, self.previous, self.steps = temperature, None, None, []

    def hook(self, module, inputs, output) -> None:
        self.raw = output[:, -1, :]

    def _take(self, tokens: torch.Tensor) -> None:
        self.steps.append(self.previous.gather(1, tokens[:, None].to(self.previous.device)).squeeze(1))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.previous is not None:
            self._take(input_ids[:, -1])
        if self.raw is None:
            raise RuntimeError("StepLogprobs saw no LM-head output for this step (is its hook registered?)")
        self.previous = torch.log_softmax(self.raw.float() / self.temperature, dim=-1)
        self.raw = None
        return scores

    def finish(self, last_tokens: torch.Tensor) -> torch.Tensor:
        if self.previous is not None:
            self._take(last_tokens)
            self.previous = None
        return torch.stack(self.steps, dim=1) if self.steps else torch.zeros(len(last_tokens), 0)


def encode_chat(tokenizer, messages: Sequence[dict]) -> list[int]:
    """Token ids of a chat through the model's own template, ready for the assistant's answer.

    A final assistant message is an answer already begun: it stays open for the model to continue.
    """
    begun = bool(messages) and messages[-1]["role"] == "assistant"
    ids = tokenizer.apply_chat_template(
        list(messages), add_generation_prompt=not begun, continue_final_message=begun, tokenize=True, return_dict=False
    )
    return list(ids)


def stop_token_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id
    stops = set(ids if isinstance(ids, (list, tuple)) else [ids] if ids is not None else [])
    stops.add(tokenizer.eos_token_id)
    return stops


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    settings: GenerationSettings = GenerationSettings(),
    adapter: str | None = None,
    cache: PromptCache | None = None,
    keys: Sequence[Hashable] | None = None,
    choices: Sequence[Sequence[str] | None] | None = None,
) -> list[Generated]:
    """Generate a response for each tokenised prompt, with `adapter` active (a PeftModel's).

    With a `cache` and one key per prompt, each prompt's longest common prefix with the last prompt
    stored under its key is not recomputed, and the prompt's KV is stored for the next call.
    With `choices` (one list of allowed answer heads per prompt, or None for a free prompt) and
    `settings.grounded`, each answer starts with one of its prompt's choices (grounding.py).
    """
    if adapter is not None:
        model.set_adapter(adapter)
    if cache is not None and (keys is None or len(keys) != len(prompts)):
        raise ValueError("a prompt cache needs one key per prompt")
    if choices is not None and len(choices) != len(prompts):
        raise ValueError("choices needs one entry (a list of answer heads, or None) per prompt")
    stops = stop_token_ids(model, tokenizer)
    if settings.static_cache:
        cache = keys = None  # a static cache is sized per call; see GenerationSettings.static_cache
    if cache is not None:
        prefill_shared(model, prompts, keys, cache)  # the G copies of a training prompt: one prefill
    tries: list[TokenTrie | None] = [None] * len(prompts)
    if settings.grounded and choices is not None:
        tries = [TokenTrie.of_strings(tokenizer, c) if c else None for c in choices]
    results: list[Generated | None] = [None] * len(prompts)
    # Similar lengths together: less padding per batch.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    for start in range(0, len(order), settings.batch_size):
        chunk = order[start : start + settings.batch_size]
        chunk_keys = [keys[i] for i in chunk] if cache is not None else None
        padded = _static_rows(len(chunk), settings.batch_size) if settings.static_cache else len(chunk)
        rows = chunk + [chunk[0]] * (padded - len(chunk))
        batch = _generate_batch(
            model, tokenizer, [prompts[i] for i in rows], settings, stops, cache, chunk_keys, [tries[i] for i in rows]
        )
        for i, generated in zip(chunk, batch):  # the padding rows' answers are dropped
            results[i] = generated
    return results


def _static_rows(rows: int, batch_size: int) -> int:
    """Rows of a static-cache call: the smallest of batch_size / 8, / 4, / 2 and batch_size that holds
    them (few shapes: a compiled decode step is recompiled for each new one, and per adapter)."""
    for size in (max(1, batch_size // 8), max(1, batch_size // 4), max(1, batch_size // 2), batch_size):
        if rows <= size:
            return size
    return rows


def _generate_batch(
    model, tokenizer, prompts, settings: GenerationSettings, stops: set[int], cache, keys, tries
) -> list[Generated]:
    device = next(model.parameters()).device
    reuse = (
        [cache.reusable(key, p) for key, p in zip(keys, prompts)] if cache is not None else [(0, None)] * len(prompts)
    )
    max_new_tokens = settings.max_new_tokens
    if any(tries):  # a head is never cut short: room for the longest head plus a few tokens of reason
        max_new_tokens = max(max_new_tokens, max(t.depth for t in tries if t) + 8)
    newlines = newline_token_ids(tokenizer) if any(tries) else frozenset()
    rules = Rules(
        greedy=settings.greedy,
        temperature=1.0 if settings.greedy else settings.temperature,
        top_p=settings.top_p,
        max_new_tokens=max_new_tokens,
        stops=stops,
        newlines=newlines,
        free_tokens=settings.reason_tokens,
    )
    # CPU: every prompt token but the last computed without padding (prefill.py), then our own
    # decode loop (decode.py), its linear layers through oneDNN (small_batch.py). CUDA keeps
    # transformers' generate over a padded batch (one kernel per layer beats per-row work there).
    own_loop = device.type == "cpu" and not settings.static_cache and _plain_generation_config(model)
    run = _decode_cpu if own_loop else _generate_hf
    answers, prompt_kv = run(model, tokenizer, prompts, reuse, tries, settings, rules, keep=cache is not None)
    if cache is not None:
        for key, prompt, kv in zip(keys, prompts, prompt_kv):
            cache.store(key, prompt, kv)
    results = []
    for prompt, trie, (ids, logprobs) in zip(prompts, tries, answers):
        end = next((t + 1 for t, token in enumerate(ids) if token in stops), None)
        ids = ids[:end] if end else ids
        results.append(
            Generated(
                prompt_ids=tuple(prompt),
                ids=tuple(ids),
                logprobs=tuple(logprobs[: len(ids)]),
                text=tokenizer.decode(ids, skip_special_tokens=True),
                finished=end is not None,
                forced=forced_steps(trie, ids, newlines, stops, rules.free_tokens) if trie else (),
            )
        )
    return results


# Generation-config fields that change no token choice, or that generate() sets itself; any other
# one (a repetition penalty, suppressed tokens, min_p, ...) asks for logits processors that only
# transformers' generate applies, so generation goes through it.
_PLAIN_CONFIG = frozenset(
    {
        "bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "use_cache", "cache_implementation",
        "output_attentions", "output_hidden_states", "output_scores", "output_logits", "return_dict_in_generate",
        "transformers_version", "_from_model_config", "do_sample", "temperature", "top_p", "top_k", "max_length",
        "max_new_tokens",
    }
)  # fmt: skip


def _plain_generation_config(model) -> bool:
    config = getattr(model, "generation_config", None)
    return config is None or set(config.to_diff_dict()) <= _PLAIN_CONFIG


def _decode_cpu(model, tokenizer, prompts, reuse, tries, settings, rules: Rules, keep: bool):
    """(per row (answer ids, log-probs), per row its prompt KV when `keep`)."""
    reuse = prefill(model, prompts, reuse)  # now every prompt but its last token is cached
    # room for the prompt and every answer token (the prompt's last token, then the answer)
    room = max(len(p) for p in prompts) + rules.max_new_tokens
    kv = RaggedKV(model, [kv for _, kv in reuse], [n for n, _ in reuse], room)
    rows = [Row([prompt[-1]], len(prompt) - 1, trie) for prompt, trie in zip(prompts, tries)]
    with small_batch_linears(model):
        prompt_kv = decode(model, kv, rows, rules, tokenizer.pad_token_id, prompt_kv=keep)
    return [(row.answer, row.logprobs) for row in rows], prompt_kv


def _generate_hf(model, tokenizer, prompts, reuse, tries, settings, rules: Rules, keep: bool):
    """transformers' generate over a padded batch. Rows are laid out as [pad | cached prefix | pad |
    new prompt tokens]: the attention mask hides the pads, and positions (from the mask's running
    sum) stay those of the unpadded prompt."""
    device = next(model.parameters()).device
    cached = max(n for n, _ in reuse)
    width = max(len(p) - n for p, (n, _) in zip(prompts, reuse))
    pad = tokenizer.pad_token_id
    input_ids = torch.full((len(prompts), cached + width), pad, dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    for row, (prompt, (n, _)) in enumerate(zip(prompts, reuse)):
        input_ids[row, cached - n : cached] = torch.tensor(prompt[:n], dtype=torch.long)
        input_ids[row, cached + width - (len(prompt) - n) :] = torch.tensor(prompt[n:], dtype=torch.long)
        attention[row, cached - n : cached] = 1
        attention[row, cached + width - (len(prompt) - n) :] = 1
    options = {} if settings.greedy else {"temperature": settings.temperature, "top_p": settings.top_p, "top_k": 0}
    past = stack_left_padded([kv for _, kv in reuse], [n for n, _ in reuse], cached, model.config) if cached else None
    recorder = StepLogprobs(rules.temperature)
    processors = [recorder]
    if any(tries):
        processors.append(GroundedLogits(tries, cached + width, rules.newlines, rules.stops, rules.free_tokens))
    if settings.static_cache:
        options["cache_implementation"] = "static"
        # a compiled decode graph per row count and adapter: 8, more than dynamo's default limit per frame
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 32)
        options["max_cache_len"] = -(-(cached + width + rules.max_new_tokens) // STATIC_CACHE_STEP) * STATIC_CACHE_STEP
    from transformers import LogitsProcessorList

    hook = model.get_output_embeddings().register_forward_hook(recorder.hook)
    try:
        out = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            cache=past,
            max_new_tokens=rules.max_new_tokens,
            do_sample=not settings.greedy,
            pad_token_id=pad,
            eos_token_id=sorted(rules.stops),
            return_dict_in_generate=True,
            logits_processor=LogitsProcessorList(processors),
            **options,
        )
    finally:
        hook.remove()
    prompt_kv = rows_of(out.cache, attention, [len(p) for p in prompts]) if keep else None
    new = out.sequences[:, cached + width :].cpu().tolist()
    logprobs = recorder.finish(out.sequences[:, -1]).cpu().tolist()
    return list(zip(new, logprobs)), prompt_kv
