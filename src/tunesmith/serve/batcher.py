"""Concurrent chat requests on one base generated together: a small batcher per base collects
the completions submitted within a few milliseconds (or while the previous batch ran) and
generates them as one left-padded batch per adapter (tunesmith.model.generation.run_batch).

Requests of different adapters are not mixed in one batch: the active adapter is state of
the whole model (PEFT's set_adapter), so each adapter's rows run as their own batch, one
after the other, under the base's lock.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

from tunesmith.model.generation import Completion, run_batch

log = logging.getLogger(__name__)
IDLE_SECONDS = 30.0
"""A batcher's thread ends after this long without work; the next request starts another."""


class Batcher:
    def __init__(self, base: Any, max_batch: int = 16, window_seconds: float = 0.005):
        self.base = base
        self.max_batch = max_batch
        self.window = window_seconds
        self._queue: queue.Queue[tuple[str | None, Completion] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

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
        while True:
            try:
                first = self._queue.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            if first is None:
                if self._queue.empty():
                    return
                continue
            batch = [first]
            deadline = time.monotonic() + self.window
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # keep the close for after this batch
                    break
                batch.append(item)
            self._run(batch)

    def _run(self, batch: list[tuple[str | None, Completion]]) -> None:
        groups: dict[str | None, list[Completion]] = {}
        for adapter, completion in batch:
            groups.setdefault(adapter, []).append(completion)
        for adapter, completions in groups.items():
            # one tokenizer per adapter group: an adapter folder may carry its own
            by_tokenizer: dict[int, list[Completion]] = {}
            for completion in completions:
                by_tokenizer.setdefault(id(completion.tokenizer), []).append(completion)
            for rows in by_tokenizer.values():
                try:
                    with self.base.lock, activated(self.base.model, adapter):
                        run_batch(self.base.model, rows[0].tokenizer, rows)
                except Exception:  # every row was ended with the failure; its reader raises it
                    log.exception("a generation batch failed")


def activated(model: Any, adapter_name: str | None) -> Any:
    """A context in which `adapter_name` is the active adapter (None: the base, adapters off)."""
    if adapter_name is not None:
        model.set_adapter(adapter_name)
        return nullcontext()
    return model.disable_adapter() if _is_peft(model) else nullcontext()


def _is_peft(model: Any) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)
