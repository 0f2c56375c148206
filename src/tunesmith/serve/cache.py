"""Loaded models for inference: tuned models load on first use, LoRA/DoRA adapters of one
base share that base in memory (PEFT load_adapter/set_adapter), and at most
`max_bases` bases stay loaded (least recently used goes first).

One generation at a time per base: the active adapter is state of the whole model.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.model.inference import LoadedModel


@dataclass(frozen=True, slots=True)
class Target:
    """What a request's model name resolves to: a base, plus an adapter folder if tuned."""

    name: str
    base: str
    adapter_path: str | None = None
    adapter_name: str | None = None


@dataclass(slots=True)
class _Base:
    model: Any
    tokenizer: Any
    renderer: Any
    adapters: dict[str, LoadedModel] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class InferenceCache:
    def __init__(self, max_bases: int = 2, device: str = "cpu"):
        self.max_bases = max_bases
        self.device = device
        self._bases: OrderedDict[str, _Base] = OrderedDict()
        self._lock = threading.Lock()  # guards loading and the LRU order

    @contextmanager
    def use(self, target: Target) -> Iterator[LoadedModel]:
        """The model for `target`, with its adapter active, held exclusively while in use."""
        base, loaded = self._get(target)
        with base.lock:
            model = base.model
            if target.adapter_name is not None:
                model.set_adapter(target.adapter_name)
                context: Any = nullcontext()
            else:
                context = model.disable_adapter() if _is_peft(model) else nullcontext()
            with context:
                yield loaded

    def loaded(self, target: Target) -> LoadedModel:
        """The model for `target` without taking it: for its tokenizer and config only."""
        return self._get(target)[1]

    def loaded_bases(self) -> list[str]:
        with self._lock:
            return list(self._bases)

    def _get(self, target: Target) -> tuple[_Base, LoadedModel]:
        with self._lock:
            base = self._bases.get(target.base)
            if base is None:
                base = self._load_base(target.base)
                self._bases[target.base] = base
                while len(self._bases) > self.max_bases:
                    self._bases.popitem(last=False)  # in-flight requests keep their own reference
            self._bases.move_to_end(target.base)
            if target.adapter_name is None:
                return base, LoadedModel(base.model, base.tokenizer, base.renderer, target.name)
            if target.adapter_name not in base.adapters:
                with base.lock:
                    base.adapters[target.adapter_name] = self._load_adapter(base, target)
            return base, base.adapters[target.adapter_name]

    def _load_base(self, name: str) -> _Base:
        import torch

        from tunesmith.data.render import Renderer
        from tunesmith.model.loading import check_remote_code, load_model, load_tokenizer, resolve_model

        ref = resolve_model(name)
        check_remote_code(ref, False)  # trust_remote_code stays off for anything served
        tokenizer = load_tokenizer(ref, False)
        model = load_model(ref, False, torch.float32).to(self.device).eval()
        return _Base(model, tokenizer, Renderer(tokenizer))

    def _load_adapter(self, base: _Base, target: Target) -> LoadedModel:
        from peft import PeftModel

        from tunesmith.data.render import Renderer
        from tunesmith.model.loading import ModelRef, load_tokenizer

        assert target.adapter_path is not None and target.adapter_name is not None
        if isinstance(base.model, PeftModel):
            base.model.load_adapter(target.adapter_path, adapter_name=target.adapter_name)
        else:
            base.model = PeftModel.from_pretrained(base.model, target.adapter_path,
                                                   adapter_name=target.adapter_name).eval()
        path = Path(target.adapter_path)
        tokenizer = load_tokenizer(ModelRef(str(path), str(path)), False) \
            if (path / "tokenizer_config.json").exists() else base.tokenizer
        return LoadedModel(base.model, tokenizer, Renderer(tokenizer), target.name)


def _is_peft(model: Any) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)
