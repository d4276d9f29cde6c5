"""One agent's adapter merged into the base: a standalone Hugging Face model folder (`coars-fast export`)."""

from __future__ import annotations

import shutil
from pathlib import Path

from coars_fast.errors import ConfigError


def export_agent(model, tokenizer, adapters: Path, agent: str, out: Path) -> Path:
    """Merge `adapters/agent` into `model` and save model and tokenizer to `out`, written beside it
    first and renamed into place (a failed export leaves no half folder)."""
    from peft import PeftModel

    source = Path(adapters) / agent
    if not (source / "adapter_config.json").is_file():
        raise ConfigError(f"--adapters {adapters}: no {agent}/adapter_config.json there")
    out = Path(out)
    if out.exists():
        raise ConfigError(f"--out {out} exists; name a new folder")
    merged = PeftModel.from_pretrained(model, source).merge_and_unload()
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)
    return out
