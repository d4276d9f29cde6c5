"""Activation memory options: checkpointed decoder layers give the training step's gradients with
less kept for backward (flat and tree packing, whose attention switch must hold in the recompute);
Liger's patches are refused where they cannot run and never touch the loss."""

import pytest
import torch
from helpers import tiny_llama
from test_tree_packing import _random_samples, _step

from coars_fast.errors import ConfigError
from coars_fast.models import LoraSettings, add_agent_adapters
from coars_fast.models.memory import checkpoint_activations, liger_patches
from coars_fast.rollout import pack, pack_trees


def _model(tokenizer, checkpointed: bool):
    torch.manual_seed(0)
    peft = add_agent_adapters(tiny_llama(tokenizer, hidden=64, layers=4, seed=0), LoraSettings(rank=4, alpha=8))
    for name, p in peft.named_parameters():  # LoRA B starts at 0; make the adapters matter
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
        p.requires_grad_("lora_" in name)
    if checkpointed:
        checkpoint_activations(peft)
    return peft


def _kept_bytes(model, batches) -> int:
    """Bytes of activations autograd keeps for backward over the step (weights left out; inside a
    checkpointed layer only its inputs are kept)."""
    kept, weights = 0, {p.untyped_storage().data_ptr() for p in model.parameters()}

    def keep(tensor):
        nonlocal kept
        if tensor.untyped_storage().data_ptr() not in weights:
            kept += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        _step(model, batches)
    return kept


@pytest.mark.parametrize("packing", [pack, pack_trees], ids=["flat", "tree"])
def test_checkpointed_layers_give_the_same_gradients_with_less_kept(smol_tokenizer, packing):
    samples = _random_samples(0)  # seeded turns of three users, two agents
    batches = packing(samples, 4096)
    plain, checkpointed = _model(smol_tokenizer, False), _model(smol_tokenizer, True)
    loss_plain, grads_plain = _step(plain, batches)
    loss_checkpointed, grads_checkpointed = _step(checkpointed, batches)
    assert grads_plain.keys() == grads_checkpointed.keys() and grads_plain
    worst = max(
        ((grads_checkpointed[n] - grads_plain[n]).norm() / grads_plain[n].norm().clamp_min(1e-20)).item()
        for n in grads_plain
    )
    kept_plain, kept_checkpointed = _kept_bytes(plain, batches), _kept_bytes(checkpointed, batches)
    print(
        f"loss {loss_plain:.7f} vs {loss_checkpointed:.7f}; worst relative gradient difference {worst:.2e}; "
        f"kept for backward {kept_plain / 2**20:.2f} vs {kept_checkpointed / 2**20:.2f} MiB"
    )
    assert abs(loss_plain - loss_checkpointed) <= 1e-6 * max(1.0, abs(loss_plain))
    assert worst <= 1e-5
    assert kept_checkpointed < 0.5 * kept_plain


def test_liger_patches_need_cuda(smol_tokenizer):
    with pytest.raises(ConfigError, match="needs CUDA and liger-kernel"):
        liger_patches(tiny_llama(smol_tokenizer), torch.device("cpu"))


def test_liger_patches_replace_norm_mlp_and_rope_not_the_loss(smol_tokenizer, monkeypatch):
    """Their Triton kernels do not run on this CPU (not even under the interpreter), so here the call
    is checked: the base model (not the PEFT wrapper) patched with RMSNorm, SwiGLU and RoPE, Liger's
    losses off (the fused CoARS loss reads the hidden states)."""
    import liger_kernel.transformers as liger

    calls = []
    monkeypatch.setattr(liger, "_apply_liger_kernel_to_instance", lambda **kw: calls.append(kw))
    model = add_agent_adapters(tiny_llama(smol_tokenizer))
    liger_patches(model, torch.device("cuda"))  # a device name only: nothing runs on it
    assert len(calls) == 1 and calls[0]["model"] is model.get_base_model()
    assert {k: v for k, v in calls[0].items() if k != "model"} == dict(
        rope=True, rms_norm=True, swiglu=True, cross_entropy=False, fused_linear_cross_entropy=False
    )
