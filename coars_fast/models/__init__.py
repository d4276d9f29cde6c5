"""The base model (embedded SmolLM2 or any HF id / path), the two LoRA agents, and generation."""

from coars_fast.models.generation import Generated, GenerationSettings, encode_chat, generate
from coars_fast.models.loading import DEFAULT_MODEL, load_model
from coars_fast.models.lora import AGENTS, LoraSettings, add_agent_adapters, load_agent_adapters, save_agent_adapters

__all__ = [
    "AGENTS",
    "DEFAULT_MODEL",
    "Generated",
    "encode_chat",
    "GenerationSettings",
    "LoraSettings",
    "add_agent_adapters",
    "generate",
    "load_agent_adapters",
    "load_model",
    "save_agent_adapters",
]
