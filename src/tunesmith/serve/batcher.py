"""Concurrent chat requests on one base generated together, with continuous batching: one
thread per base runs a live batch of the engine (tunesmith.model.generation.Batch) a step at
a time, and requests that arrive while it runs join it at the next step (and leave it as
soon as they are done) instead of waiting for the batch to end.

Adapters of one base share a batch: each row carries its adapter and PEFT's mixed-adapter
batch inference (`adapter_names`, "__base__" for the bare base) applies each row's own. PEFT
refuses that for DoRA adapters, for LoRA on nn.MultiheadAttention or on parameters
(target_parameters) and for merged adapters; such an adapter's rows run in batches of their
own, with the adapter set active on the whole model (set_adapter) while they do (`lane`).
A batch starting takes every waiting row of its lane; once a request of another lane waits,
the running batch takes no newcomers and that request goes next, when it ends.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

from tunesmith.model.generation import Batch, Completion, mixable

log = logging.getLogger(__name__)
IDLE_SECONDS = 30.0
"""A batcher's thread ends after this long without work; the next request starts another."""
MIXED = "mixed"
"""The lane of rows that can share one batch whatever their adapter (LoRA, or the base)."""


class Batcher:
    def __init__(self, base: Any, max_batch: int = 16, window_seconds: float = 0.005):
        self.base = base
        self.max_batch = max_batch
        self.window = window_seconds
        self._queue: queue.Queue[tuple[str | None, Completion] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lanes: dict[str, str] = {}

    def submit(self, adapter: str | None, completions: Sequence[Completion]) -> None:
        for completion in completions:
            self._queue.put((adapter, completion))
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, daemon=True, name="tunesmith-batcher")
                self._thread.start()

    def close(self) -> None:
        """The base left the cache: the thread finishes what was queued, then ends."""
        self._closed = True
        self._queue.put(None)

    def _work(self) -> None:
        waiting: list[tuple[str | None, Completion]] = []
        """Submitted and not yet in the live batch, oldest first."""
        live: Batch | None = None
        lane: str | None = None
        closing = False
        while True:
            if live is None and not waiting:
                if closing:
                    return
                try:
                    item = self._queue.get(timeout=IDLE_SECONDS)
                except queue.Empty:
                    with self._lock:
                        if self._queue.empty():
                            self._thread = None
                            return
                    continue
                if item is None:
                    closing = True
                    continue
                waiting.append(item)
                closing |= self._collect(waiting, time.monotonic() + self.window)  # others sent with it
            else:
                closing |= self._collect(waiting, None)  # whatever arrived during the last step
            try:
                with self.base.lock:
                    if live is None or lane is None:
                        lane = self.lane(waiting[0][0])
                        live = Batch(self.base.model, waiting[0][1].tokenizer)
                    self._admit(live, lane, waiting)
                    if live.rows:
                        with self._activated(lane):
                            live.step()
            except Exception as exc:  # every row is ended with the failure; its reader raises it
                log.exception("a generation batch failed")
                if live is not None:
                    live.fail(exc)
                elif waiting:  # the batch could not even be made: the oldest request gets the failure
                    waiting.pop(0)[1]._fail(exc)
            if live is not None and not live.rows:
                live, lane = None, None
            self.base.let_waiters_in()  # an adapter loading waits between steps, not for the batch

    def _collect(self, waiting: list[tuple[str | None, Completion]], until: float | None) -> bool:
        """Move what is queued into `waiting`: until the deadline, else what is there now.
        True when the close came (it is kept for after what was queued before it)."""
        while True:
            try:
                item = self._queue.get_nowait() if until is None else \
                    self._queue.get(timeout=max(0.0, until - time.monotonic()))
            except queue.Empty:
                return False
            if item is None:
                return True
            waiting.append(item)

    def _admit(self, live: Batch, lane: str, waiting: list[tuple[str | None, Completion]]) -> None:
        """Add waiting rows of the live batch's lane to it, oldest first, while there is room. A
        batch starting takes every waiting row of its lane; a running one takes only rows older
        than any waiting row of another lane, so that one is not overtaken for long."""
        joining: list[tuple[str | None, Completion]] = []
        starting = not live.rows
        position = 0
        while position < len(waiting) and len(live.rows) + len(joining) < self.max_batch and live.joinable:
            adapter, completion = waiting[position]
            if completion.finished:  # its client left while it waited
                waiting.pop(position)
                completion._finish("stop")
            elif self.lane(adapter) == lane:
                joining.append(waiting.pop(position))
            elif starting:
                position += 1
            else:
                break
        self._prepare(live, lane)
        if not joining:
            return
        try:
            with self._activated(lane):
                live.add([c for _, c in joining], [a for a, _ in joining])
        except Exception as exc:  # these rows end with the failure; the running rows go on
            log.exception("starting a generation failed")
            for _, completion in joining:
                completion._fail(exc)

    def _prepare(self, live: Batch, lane: str) -> None:
        """Point the batch at the base as it is now (a first adapter wraps it in a PeftModel)."""
        live.model = self.base.model
        live.mix = lane == MIXED and _is_peft(self.base.model)

    def _activated(self, lane: str) -> Any:
        return nullcontext() if lane == MIXED else activated(self.base.model, lane)

    def lane(self, adapter: str | None) -> str:
        """MIXED for the base and for adapters PEFT can mix in a batch; else the adapter's name
        (found once per adapter: a loaded adapter does not change)."""
        if adapter is None:
            return MIXED
        if adapter not in self._lanes:
            self._lanes[adapter] = MIXED if mixable(self.base.model, adapter) else adapter
        return self._lanes[adapter]



def activated(model: Any, adapter_name: str | None) -> Any:
    """A context in which `adapter_name` is the active adapter (None: the base, adapters off)."""
    if adapter_name is not None:
        if getattr(model, "active_adapter", None) != adapter_name:  # a batch of its own sets it every step
            model.set_adapter(adapter_name)
        return nullcontext()
    return model.disable_adapter() if _is_peft(model) else nullcontext()


def _is_peft(model: Any) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)
