"""The adapter merged into its base, saved as a standard Hugging Face model folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

TORCH_DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def merge(model: Any) -> Any:
    """Fold LoRA/DoRA weights into the base weights (PEFT's merge_and_unload); a plain model as is.

    The merge runs on the float32 model tunesmith loaded, so the rounding to a 16-bit
    dtype happens once, at save time.
    """
    from peft import PeftModel

    return model.merge_and_unload() if isinstance(model, PeftModel) else model


def base_dtype(model: str | Path) -> str:
    """The storage dtype in a model's config.json, as an export --dtype name (f32 when not stated)."""
    import json

    from tunesmith.model.loading import resolve_model

    config = Path(resolve_model(str(model)).location) / "config.json"
    try:
        stated = json.loads(config.read_text())
    except (OSError, ValueError):
        return "f32"
    dtype = stated.get("dtype") or stated.get("torch_dtype")
    return {"float16": "f16", "bfloat16": "bf16"}.get(dtype, "f32")


def save_merged(model: Any, tokenizer: Any, folder: Path, dtype: str, max_shard_size: str) -> None:
    """safetensors (sharded above max_shard_size), config, generation config, tokenizer, chat template."""
    model = model.to(TORCH_DTYPES[dtype])
    # A base loaded from a GGUF file was dequantised on loading but still says it is quantised,
    # which would stop the save and mislead whoever loads the folder: the merged weights are plain.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.use_cache = True
    model.save_pretrained(folder, safe_serialization=True, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(folder)
    model.to(torch.float32)
