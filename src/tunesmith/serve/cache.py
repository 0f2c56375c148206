"""Loaded models for inference: tuned models load on first use, LoRA/DoRA adapters of one
base share that base in memory (PEFT load_adapter/set_adapter), and at most
`max_bases` bases stay loaded (least recently used goes first). Bases load on the device
and in the dtype training would pick (tunesmith.hardware): a GPU in bf16 where there is one.

Generation goes through one batcher per base (serve/batcher.py): concurrent requests on a
base are generated together, rows of its LoRA adapters and of the bare base in one batch
(PEFT's mixed-adapter batches). The base's lock is held for each step of a batch and while
an adapter loads, which waits for the step running, not for the batch.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.model.generation import Completion
from tunesmith.model.inference import LoadedModel
from tunesmith.serve.batcher import activated


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
    """Held while the model is used or changed (a batch's step, an adapter loading)."""
    batcher: Any = None  # serve.batcher.Batcher, made with the base
    waiters: int = 0
    _count: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def taken(self) -> Iterator[None]:
        """The lock, for anyone but the batcher, whose steps let waiters in first: a lock is not
        fair, and a batch steps again the moment it lets go."""
        with self._count:
            self.waiters += 1
        try:
            self.lock.acquire()
        finally:
            with self._count:
                self.waiters -= 1
        try:
            yield
        finally:
            self.lock.release()

    def let_waiters_in(self) -> None:
        """Called by the batcher between steps: wait until whoever waits for the lock has it."""
        while self.waiters:
            time.sleep(0.001)


# Building a model in transformers is not thread-safe (weights are first made on the meta device
# through process-wide hooks), so two loads at once can leave one model without data. Loads take
# turns; requests for models already loaded never wait on this.
_BUILD_LOCK = threading.Lock()


class InferenceCache:
    def __init__(self, max_bases: int = 2, device: str = "auto", dtype: str = "auto",
                 max_batch: int = 16, window_seconds: float = 0.005):
        from tunesmith.hardware import pick_device, pick_dtype

        self.max_bases = max_bases
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.max_batch = max_batch
        self.window_seconds = window_seconds
        self._bases: OrderedDict[str, _Base] = OrderedDict()
        self._lock = threading.Lock()  # guards the table and the LRU order only, never held while loading
        self._loading: dict[str, threading.Lock] = {}

    def submit(self, target: Target, completions: Sequence[Completion]) -> None:
        """Queue completions on the target's base; they are generated with the next batch
        (iterate them, or wait on `result()`)."""
        base, _ = self._get(target)
        base.batcher.submit(target.adapter_name, completions)

    @contextmanager
    def use(self, target: Target) -> Iterator[LoadedModel]:
        """The model for `target`, with its adapter active, held exclusively while in use."""
        base, loaded = self._get(target)
        with base.taken(), activated(base.model, target.adapter_name):
            yield loaded

    def loaded(self, target: Target) -> LoadedModel:
        """The model for `target` without taking it: for its tokenizer and config only."""
        return self._get(target)[1]

    def loaded_bases(self) -> list[str]:
        with self._lock:
            return list(self._bases)

    def _get(self, target: Target) -> tuple[_Base, LoadedModel]:
        base = self._base(target.base)
        if target.adapter_name is None:
            return base, LoadedModel(base.model, base.tokenizer, base.renderer, target.name)
        if target.adapter_name not in base.adapters:
            with base.taken():  # waits for a running step of this base only
                if target.adapter_name not in base.adapters:
                    base.adapters[target.adapter_name] = self._load_adapter(base, target)
        return base, base.adapters[target.adapter_name]

    def _base(self, name: str) -> _Base:
        with self._lock:
            base = self._bases.get(name)
            if base is not None:
                self._bases.move_to_end(name)
                return base
            loading = self._loading.setdefault(name, threading.Lock())
        with loading:  # one load per base; requests for other bases are not held up
            with self._lock:
                base = self._bases.get(name)
            if base is None:
                base = self._load_base(name)
            with self._lock:
                self._bases[name] = base
                self._bases.move_to_end(name)
                while len(self._bases) > self.max_bases:
                    _, gone = self._bases.popitem(last=False)  # in-flight requests keep their reference
                    gone.batcher.close()
                self._loading.pop(name, None)
            return base

    def _load_base(self, name: str) -> _Base:
        from tunesmith.data.render import Renderer
        from tunesmith.model.loading import load_model, load_tokenizer
        from tunesmith.serve.batcher import Batcher

        ref = served_ref(name)
        tokenizer = load_tokenizer(ref, False)
        with _BUILD_LOCK:
            model = load_model(ref, False, self.dtype).to(self.device).eval()
        base = _Base(model, tokenizer, Renderer(tokenizer))
        base.batcher = Batcher(base, self.max_batch, self.window_seconds)
        return base

    def _load_adapter(self, base: _Base, target: Target) -> LoadedModel:
        from peft import PeftModel

        from tunesmith.data.render import Renderer

        assert target.adapter_path is not None and target.adapter_name is not None
        with _BUILD_LOCK:
            if isinstance(base.model, PeftModel):
                base.model.load_adapter(target.adapter_path, adapter_name=target.adapter_name)
            else:
                base.model = PeftModel.from_pretrained(base.model, target.adapter_path,
                                                       adapter_name=target.adapter_name).eval()
        base.model.to(self.device)
        tokenizer = adapter_tokenizer(target.adapter_path, base.tokenizer)
        return LoadedModel(base.model, tokenizer, Renderer(tokenizer), target.name)


def served_ref(name: str) -> Any:
    """Where a served base loads from; trust_remote_code stays off for anything served."""
    from tunesmith.model.loading import check_remote_code, resolve_model

    ref = resolve_model(name)
    check_remote_code(ref, False)
    return ref


def adapter_tokenizer(adapter_path: str, base_tokenizer: Any) -> Any:
    """The tokenizer an adapter was saved with, else its base's: the server measures prompts
    and the engine decodes replies with this same one."""
    from tunesmith.model.loading import ModelRef, load_tokenizer

    path = Path(adapter_path)
    if not (path / "tokenizer_config.json").exists():
        return base_tokenizer
    return load_tokenizer(ModelRef(str(path), str(path)), False)
