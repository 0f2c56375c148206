"""Load a trained model for use, and generate replies with its chat template.

Shared by `tunesmith chat`, evaluation and the server so all three see the same model.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunesmith.data.records import Message
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


def _generation_kwargs(loaded: LoadedModel, max_new_tokens: int, temperature: float,
                       top_p: float) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens,
                              "eos_token_id": loaded.tokenizer.eos_token_id,
                              "pad_token_id": loaded.tokenizer.pad_token_id}
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return kwargs


def stream_reply(loaded: LoadedModel, messages: list[Message], max_new_tokens: int = 256,
                 temperature: float = 0.0, top_p: float = 1.0) -> Iterator[str]:
    """Yield the reply's text piece by piece as it is generated."""
    from transformers import TextIteratorStreamer

    ids = torch.tensor([loaded.renderer.prompt_ids(messages)], device=loaded.model.device)
    streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = _generation_kwargs(loaded, max_new_tokens, temperature, top_p)
    worker = threading.Thread(target=loaded.model.generate,
                              kwargs={"input_ids": ids, "streamer": streamer, **kwargs}, daemon=True)
    worker.start()
    yield from streamer
    worker.join()


def reply(loaded: LoadedModel, messages: list[Message], **kwargs: Any) -> str:
    return "".join(stream_reply(loaded, messages, **kwargs))
