"""Load a trained model for use. Shared by `tunesmith chat`, evaluation and the server so
all three see the same model; they generate through tunesmith.model.generation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunesmith.data.render import Renderer
from tunesmith.errors import ModelError
from tunesmith.model.loading import ModelRef, load_model, load_tokenizer, resolve_model


@dataclass(slots=True)
class LoadedModel:
    model: Any
    tokenizer: Any
    renderer: Renderer
    name: str


def load_trained(target: str | Path, device: str = "cpu") -> LoadedModel:
    """A run directory (its final model), a PEFT adapter folder, or any base model."""
    path = Path(target)
    base_name: str | None = None
    trust = False
    if (path / "recipe.yaml").exists():
        from tunesmith.train.run import RunDir

        run = RunDir(path)
        recipe = run.read_recipe()
        base_name, trust = recipe.base_model, recipe.trust_remote_code
        if not run.final.exists():
            raise ModelError(f"run {path} has no final model yet (status: {run.info().get('status')})",
                             fix=f"finish it with `tunesmith train --resume {path}`")
        path = run.final
    if (path / "adapter_config.json").exists():
        from peft import PeftModel

        if base_name is None:
            base_name = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
        base_ref = resolve_model(base_name)
        # The adapter folder carries the tokenizer (and chat template) it was trained with.
        has_tokenizer = (path / "tokenizer_config.json").exists()
        tokenizer = load_tokenizer(ModelRef(str(path), str(path)) if has_tokenizer else base_ref, trust)
        base = load_model(base_ref, trust, torch.float32)
        model = PeftModel.from_pretrained(base, str(path))
    else:
        ref = resolve_model(str(path) if path.exists() else str(target))
        tokenizer = load_tokenizer(ref, trust)
        model = load_model(ref, trust, torch.float32)
    model.to(device).eval()
    return LoadedModel(model, tokenizer, Renderer(tokenizer), str(target))
