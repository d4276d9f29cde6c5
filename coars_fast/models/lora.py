"""The two agents as named LoRA adapters, `rec` and `user`, on one frozen base model.

Saved in the standard PEFT layout: `<folder>/rec/` and `<folder>/user/`, each loadable on its own
with `PeftModel.from_pretrained(base, "<folder>/rec")`.
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

from coars_fast.errors import ConfigError

AGENTS = ("rec", "user")


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

    def peft_config(self):
        from peft import LoraConfig

        return LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.target_modules),
            task_type="CAUSAL_LM",
        )


@contextlib.contextmanager
def _quiet_peft():
    """PEFT 0.21 reads transformers' deprecated `is_gradient_checkpointing` when it wraps a model: a
    FutureWarning on every run that is not ours to act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def add_agent_adapters(model, settings: LoraSettings = LoraSettings()):
    """Wrap `model` in a PeftModel holding fresh `rec` and `user` adapters (LoRA B = 0: the base)."""
    from peft import get_peft_model

    try:
        with _quiet_peft():
            peft_model = get_peft_model(model, settings.peft_config(), adapter_name=AGENTS[0])
    except ValueError as err:
        raise ConfigError(f"LoRA target modules {settings.target_modules} do not fit this model: {err}") from None
    if head_has_lora(peft_model):
        raise ConfigError(
            f"LoRA target modules {settings.target_modules} include the LM head: the fused loss reads the frozen "
            "head weight, so its adapter would never train; leave the head out of lora.target_modules"
        )
    for name in AGENTS[1:]:
        peft_model.add_adapter(name, settings.peft_config())
    return peft_model


def head_has_lora(model) -> bool:
    """Whether the model's output embeddings (LM head) carry LoRA layers."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return head is not None and any(hasattr(m, "lora_A") for m in head.modules())


def save_agent_adapters(peft_model, folder: str | Path, state_dict: dict | None = None) -> None:
    """PEFT writes each adapter not named "default" to <folder>/<name>/. `state_dict`: the LoRA
    weights to write instead of the model's own (sharded models: their gathered whole values)."""
    kwargs = {"state_dict": state_dict} if state_dict is not None else {}
    peft_model.save_pretrained(Path(folder), selected_adapters=list(AGENTS), **kwargs)


def adapter_fingerprint(folder: str | Path) -> str:
    """sha256 over the files of <folder>/rec/ and <folder>/user/ (names and bytes): names the adapters'
    content, so that adapters retrained in place are not taken for the old ones."""
    digest = hashlib.sha256()
    for name in AGENTS:
        for path in sorted(p for p in (Path(folder) / name).rglob("*") if p.is_file()):
            digest.update(f"{path.relative_to(folder).as_posix()}\0{path.stat().st_size}\0".encode())
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def load_agent_adapters(model, folder: str | Path, trainable: bool = False):
    """A PeftModel with the `rec` and `user` adapters saved by `save_agent_adapters`."""
    from peft import PeftModel

    folder = Path(folder)
    missing = [name for name in AGENTS if not (folder / name / "adapter_config.json").is_file()]
    if missing:
        raise ConfigError(f"adapter folder {folder} lacks {', '.join(f'{m}/adapter_config.json' for m in missing)}")
    with _quiet_peft():
        peft_model = PeftModel.from_pretrained(
            model, folder / AGENTS[0], adapter_name=AGENTS[0], is_trainable=trainable
        )
    for name in AGENTS[1:]:
        peft_model.load_adapter(folder / name, adapter_name=name, is_trainable=trainable)
    return peft_model
