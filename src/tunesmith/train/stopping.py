"""Stopping a training on a signal without leaving its records half-written.

- `StopOnSignal`, for a single-process training from the command line: the first SIGTERM or
  Ctrl-C asks the loop to stop at its next step boundary (it saves a checkpoint there, and
  the job ends cancelled, resumable); a second one interrupts at once (KeyboardInterrupt).
- `exit_on_sigterm`, for each rank of a multi-process run: torchrun's agent stops the ranks
  with SIGTERM when one fails, so SIGTERM unwinds the rank (SystemExit) and rank 0 records
  the run and its job as interrupted.
- `unwinding()`: while a run records how it ended (run.json, the registry), a signal that
  would raise is held back instead of breaking that write half-way; the run is ending anyway.

Signal handlers can only be installed from the main thread; elsewhere these do nothing.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

_unwinding = [0]  # depth of nested unwinding() blocks in this process, +1 once a signal raised


@contextmanager
def unwinding() -> Iterator[None]:
    _unwinding[0] += 1
    try:
        yield
    finally:
        _unwinding[0] -= 1


def is_unwinding() -> bool:
    return _unwinding[0] > 0


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class StopOnSignal:
    """A `should_stop` callable for the training loop that turns SIGTERM and Ctrl-C into a
    stop at the next step boundary; `on_first(name)` is told of the first signal (the CLI
    says what happens next)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, on_first: Callable[[str], None] | None = None):
        self.received: str | None = None
        self.signal_number: int | None = None
        self.on_first = on_first
        self._previous: dict[int, Any] = {}
        self._raised = False

    def __call__(self) -> bool:
        return self.received is not None

    def __enter__(self) -> StopOnSignal:
        if _main_thread():
            for number in self.SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()
        if self._raised:
            self._raised = False
            _unwinding[0] -= 1

    def _handle(self, number: int, _frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(number).name
            self.signal_number = number
            if self.on_first is not None:
                self.on_first(self.received)
            return
        if not is_unwinding():
            _unwinding[0] += 1  # released in __exit__: a third Ctrl-C must not break the clean-up
            self._raised = True
            raise KeyboardInterrupt


def exit_on_sigterm() -> None:
    """SIGTERM unwinds this process as SystemExit(143), unless it is already unwinding; only
    where SIGTERM still has its default action (a caller's own handler is kept)."""
    if _main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit)


def _exit(number: int, _frame: FrameType | None) -> None:
    if not is_unwinding():
        _unwinding[0] += 1  # this process is ending: a second SIGTERM must not break the clean-up
        sys.exit(128 + number)
