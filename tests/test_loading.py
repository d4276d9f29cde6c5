"""Models whose logits are more than the decoder's last hidden state times the LM head's weight are
refused at load: the fused loss, the decode loop and scoring would otherwise use wrong log-probs."""

import pytest
import torch
from helpers import tiny_llama

from coars_fast.errors import ConfigError
from coars_fast.models import load_model
from coars_fast.models.loading import check_plain_head


def _save_tiny(folder, tokenizer, architecture, **extra):
    """A tiny random model of a transformers architecture ("Gemma3", "Cohere"), saved with the tokenizer."""
    import transformers

    torch.manual_seed(0)
    config_class = getattr(transformers, f"{architecture}TextConfig", None) or getattr(
        transformers, f"{architecture}Config"
    )
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **extra,
    )
    getattr(transformers, f"{architecture}ForCausalLM")(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_a_plain_head_loads(tiny_model_dir):
    model, _ = load_model(str(tiny_model_dir), "cpu")
    check_plain_head(model, "tiny")  # and again, explicitly: no error


def test_final_logit_softcapping_is_refused(smol_tokenizer, tmp_path):
    folder = _save_tiny(tmp_path / "gemma3", smol_tokenizer, "Gemma3", final_logit_softcapping=30.0)
    with pytest.raises(ConfigError, match=r"final-logit softcapping \(final_logit_softcapping=30.0\)"):
        load_model(folder, "cpu")


def test_the_same_architecture_without_softcapping_loads(smol_tokenizer, tmp_path):
    load_model(_save_tiny(tmp_path / "gemma3", smol_tokenizer, "Gemma3", final_logit_softcapping=None), "cpu")


def test_a_logit_scale_is_refused_and_a_neutral_one_loads(smol_tokenizer, tmp_path):
    with pytest.raises(ConfigError, match=r"a logit scale \(logit_scale=0.0625\)"):
        load_model(_save_tiny(tmp_path / "cohere", smol_tokenizer, "Cohere", logit_scale=0.0625), "cpu")
    load_model(_save_tiny(tmp_path / "cohere-1", smol_tokenizer, "Cohere", logit_scale=1.0), "cpu")


def test_a_head_bias_is_refused():
    model = tiny_llama(vocab=97)
    head = torch.nn.Linear(64, 97, bias=True)
    head.weight.data.copy_(model.lm_head.weight)
    model.lm_head = head
    with pytest.raises(ConfigError, match="a bias on its LM head"):
        check_plain_head(model, "biased")


def test_logits_changed_where_no_config_says_so_are_found_by_comparison():
    """A head whose output is rescaled by code (a hook here), with no config field naming it."""
    model = tiny_llama(vocab=97)
    model.lm_head.register_forward_hook(lambda module, inputs, output: output * 1.01)
    with pytest.raises(ConfigError, match=r"logits are not its LM head's weight times .* \(max \|difference\| "):
        check_plain_head(model, "rescaled")
