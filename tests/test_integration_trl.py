"""coars-fast's kernels inside TRL (coars_fast.integrations.trl): the fused LM head's per-token
log-probs, entropies and gradients, and one GRPO optimisation step, equal TRL's own (fp32)."""

import pytest
import torch
import trl  # a dev dependency (scripts/setup.sh --dev): missing it fails here, never skips
from helpers import tiny_llama

import coars_fast.kernels
from coars_fast.integrations.trl import TESTED_TRL, use_coars_kernels


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts the calls that reach coars_fast.kernels.token_logprobs."""
    calls = []
    original = coars_fast.kernels.token_logprobs

    def counted(*args, **kwargs):
        calls.append(kwargs.get("return_entropy", False))
        return original(*args, **kwargs)

    monkeypatch.setattr(coars_fast.kernels, "token_logprobs", counted)
    return calls


def test_trl_version_is_the_tested_one():
    assert trl.__version__ == TESTED_TRL


def _forward(model, ids, labels):
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels, fused_lm_head=True)
    loss = (out.log_probs * torch.linspace(-1, 1, out.log_probs.numel()).view_as(out.log_probs)).sum()
    (loss + 0.1 * out.entropy.sum()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out.log_probs.detach(), out.entropy.detach(), grads


def test_fused_head_logprobs_entropy_and_gradients_match_trl(smol_tokenizer, kernel_calls):
    from trl.trainer.utils import add_fused_lm_head

    model = tiny_llama(smol_tokenizer).requires_grad_(True)
    temperature = 0.7
    add_fused_lm_head(model, temperature=temperature, outputs=("log_probs", "entropy"))
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, len(smol_tokenizer), (3, 21), generator=generator)
    labels = ids.clone()
    labels[:, :9] = -100  # the prompt is not scored
    labels[2, 15:] = -100  # a shorter completion
    theirs = _forward(model, ids, labels)
    assert kernel_calls == []
    with use_coars_kernels():
        ours = _forward(model, ids, labels)
    assert kernel_calls == [True]  # one call, log-probs with entropy, through our kernel
    # independent: the model's own logits, log_softmax at temperature, at the scored positions
    with torch.no_grad():
        logits = model(input_ids=ids).logits[:, :-1] / temperature
    logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None].clamp(min=0))[..., 0]
    mask = labels[:, 1:] != -100
    expected = torch.where(mask, logp, torch.zeros_like(logp))
    for name, got in (("TRL", theirs[0]), ("coars-fast", ours[0])):
        assert (got - expected).abs().max() < 1e-5, name
    assert (ours[1] - theirs[1]).abs().max() < 1e-5
    for name, grad in theirs[2].items():
        rel = (ours[2][name] - grad).norm() / grad.norm().clamp(min=1e-12)
        assert rel < 1e-4, (name, rel.item())


def test_unsupported_heads_fall_back_to_trl(smol_tokenizer, kernel_calls):
    from trl.trainer.utils import add_fused_lm_head

    model = tiny_llama(smol_tokenizer)
    add_fused_lm_head(model, outputs=("log_probs", "is_top1"))  # a field our kernel does not compute
    ids = torch.randint(0, len(smol_tokenizer), (1, 8), generator=torch.Generator().manual_seed(1))
    with use_coars_kernels():
        out = model(input_ids=ids, labels=ids, fused_lm_head=True)
    assert kernel_calls == [] and out.is_top1 is not None


def _grpo_step(smol_tokenizer, tmp_path, ours: bool) -> dict:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    model = tiny_llama(smol_tokenizer).requires_grad_(True).train()
    config = GRPOConfig(
        output_dir=str(tmp_path / ("ours" if ours else "trl")),
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=6,
        max_steps=1,
        learning_rate=0.1,
        optim="sgd",
        report_to="none",
        use_cpu=True,
        seed=0,
        save_strategy="no",
        bf16=False,
    )
    prompts = Dataset.from_list([{"prompt": f"Name a number, {i}:"} for i in range(4)])

    def reward(completions, **kwargs):
        return [float(len(c)) for c in completions]

    if ours:
        with use_coars_kernels():
            GRPOTrainer(
                model=model, reward_funcs=reward, args=config, train_dataset=prompts, processing_class=smol_tokenizer
            ).train()
    else:
        GRPOTrainer(
            model=model, reward_funcs=reward, args=config, train_dataset=prompts, processing_class=smol_tokenizer
        ).train()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_one_grpo_step_equals_trls_own(smol_tokenizer, tmp_path, kernel_calls):
    before = {n: p.detach().clone() for n, p in tiny_llama(smol_tokenizer).named_parameters()}
    theirs = _grpo_step(smol_tokenizer, tmp_path, ours=False)
    assert kernel_calls == []
    ours = _grpo_step(smol_tokenizer, tmp_path, ours=True)
    assert kernel_calls  # the step's log-probs went through coars-fast
    moved = max((theirs[n] - before[n]).abs().max() for n in before)
    assert moved > 1e-4  # the step changed the weights
    for name in before:
        update = theirs[name] - before[name]
        diff = (ours[name] - theirs[name]).norm() / update.norm().clamp(min=1e-12)
        assert update.norm() == 0 or diff < 1e-4, (name, diff.item())
