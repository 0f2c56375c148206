"""Generation in a process of its own, so that the server's other routes cannot slow it down.

Why a process: every torch call of a decode step lets go of the GIL and has to win it back,
and a route running Python meanwhile (job listings, uploads) keeps it for up to the
interpreter's switch interval each time. On 2 cores, SmolLM2-135M decoding a batch of 8 took
64 ms a step alone and 5.8 s beside two busy Python threads; 8 job-listing clients halved the
server's chat throughput (bench/serve_load.py). In a process of its own the engine has its own
GIL and shares only the cores.

The server keeps what a request needs before it is generated (tokenizer, chat template,
config: `loaded`), so prompts are measured and refused there; the engine process holds the
weights (serve/cache.py's InferenceCache and its batchers). A request's completions are
Completion objects on both sides: the engine's relay their text pieces and their end over a
pipe, and the server's are fed them, so callers read them as they read local ones. Cancelling
one (or setting its `abandoned`) reaches the engine within CANCEL_POLL_SECONDS. The engine
starts with the first generation (torch loads only then), ends with the server or when its
pipe closes, and starts again if it died; requests in flight when it died fail.

On a CPU the engine's torch uses all cores but one (`engine_threads`): the server's own process
(HTTP, tokenizing, listings) and its clients need a core, and a torch thread that shares a core
with them stalls every matmul it takes part in. On a 2-core AMD EPYC, SmolLM2-135M served 8
clients at 1.4 chats/s with 2 threads and 2.5 with 1 (bench/serve_load.py, bench/README.md).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing
import os
import pickle
import signal
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tunesmith.model.generation import Completion, Sampling
from tunesmith.serve.cache import Target

log = logging.getLogger(__name__)
CANCEL_POLL_SECONDS = 0.05
"""How often the server looks for completions cancelled or abandoned, to stop them in the engine."""
MAX_DESCRIBED = 32
"""Models whose tokenizer and config the server keeps (they hold no weights)."""
Format = tuple[str, Any]
"""A request's response format: ("text", None), or ("json_object" | "json_schema", schema)."""


@dataclass(frozen=True, slots=True)
class Described:
    """What the server knows of a model without loading its weights."""

    name: str
    tokenizer: Any
    renderer: Any
    config: Any


class EngineClient:
    """The server's side: describes models and hands completions to the engine process."""

    def __init__(self, max_bases: int = 2, max_batch: int = 16, window_seconds: float = 0.005,
                 threads: int | None = None):
        self._settings = (max_bases, max_batch, window_seconds, threads)
        self._described: OrderedDict[tuple[str, str | None], Described] = OrderedDict()
        self._lock = threading.Lock()
        self._engine: _Engine | None = None

    def loaded(self, target: Target) -> Described:
        key = (target.base, target.adapter_path)
        with self._lock:
            if key in self._described:
                self._described.move_to_end(key)
                return self._described[key]
        described = describe(target)
        with self._lock:
            self._described[key] = described
            while len(self._described) > MAX_DESCRIBED:
                self._described.popitem(last=False)
        return described

    def submit(self, target: Target, completions: Sequence[Completion],
               response_format: Format = ("text", None)) -> None:
        """Generate `completions` (made with this target's tokenizer) in the engine, as one batch."""
        with self._lock:
            if self._engine is None or not self._engine.alive:
                self._engine = _Engine(self._settings)
            engine = self._engine
        engine.submit(target, completions, response_format)

    def close(self) -> None:
        with self._lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()


def describe(target: Target) -> Described:
    """The tokenizer, chat template and config of `target`, as the engine loads them."""
    from tunesmith.data.render import Renderer
    from tunesmith.model.loading import load_config, load_tokenizer
    from tunesmith.serve.cache import adapter_tokenizer, served_ref

    ref = served_ref(target.base)
    tokenizer = load_tokenizer(ref, False)
    if target.adapter_path is not None:
        tokenizer = adapter_tokenizer(target.adapter_path, tokenizer)
    return Described(target.name, tokenizer, Renderer(tokenizer), load_config(ref))


class _Engine:
    """One engine process, its pipe, and the server's completions waiting on it."""

    def __init__(self, settings: tuple[int, int, float, int | None]):
        context = multiprocessing.get_context("spawn")  # never fork a process that runs threads
        self._conn, theirs = context.Pipe()
        self._process = context.Process(target=_serve, args=(theirs, *settings), name="tunesmith-engine",
                                        daemon=True)
        self._process.start()
        theirs.close()
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._waiting: dict[int, Completion] = {}
        self._cancelled: set[int] = set()
        self._ids = itertools.count()
        self._gone = threading.Event()
        threading.Thread(target=self._read, name="tunesmith-engine-reader", daemon=True).start()
        threading.Thread(target=self._watch, name="tunesmith-engine-cancels", daemon=True).start()

    @property
    def alive(self) -> bool:
        return not self._gone.is_set()

    def submit(self, target: Target, completions: Sequence[Completion], response_format: Format) -> None:
        with self._lock:
            rows = []
            for completion in completions:
                rid = next(self._ids)
                self._waiting[rid] = completion
                rows.append((rid, completion.prompt_ids, completion.sampling))
        try:
            self._send(("submit", target, rows, response_format))
        except (OSError, ValueError) as exc:  # the engine died just now
            self._lost(RuntimeError(f"the generation process is gone ({exc})"))

    def close(self) -> None:
        """Ask the engine to stop, and wait for it. Closing the pipe alone would not do: the
        reader thread's recv holds the socket open until it returns, so no EOF reaches the engine."""
        self._gone.set()
        with contextlib.suppress(OSError, ValueError):  # already gone
            self._send(("stop",))
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
        self._conn.close()

    def _send(self, message: Any) -> None:
        with self._send_lock:
            self._conn.send(message)

    def _read(self) -> None:
        while True:
            try:
                kind, rid, *rest = self._conn.recv()
            except (EOFError, OSError):
                break
            with self._lock:
                if kind == "piece":
                    completion = self._waiting.get(rid)
                else:  # "end": nothing more comes for it
                    completion = self._waiting.pop(rid, None)
                    self._cancelled.discard(rid)
            if completion is None:
                continue
            if kind == "piece":
                completion._relayed(rest[0])
            else:
                completion._relayed_end(*rest)
        code = self._process.exitcode
        self._lost(RuntimeError("the generation process ended" + (f" (exit code {code})" if code else "")))

    def _lost(self, failure: BaseException) -> None:
        self._gone.set()
        with self._lock:
            lost, self._waiting = list(self._waiting.values()), {}
        for completion in lost:
            completion._relayed_end("error", [], failure)

    def _watch(self) -> None:
        """Tell the engine of completions the server stopped (cancelled, or their client left)."""
        while not self._gone.wait(CANCEL_POLL_SECONDS):
            with self._lock:
                stopped = [rid for rid, c in self._waiting.items()
                           if c.finished and rid not in self._cancelled]
                self._cancelled.update(stopped)
            for rid in stopped:
                try:
                    self._send(("cancel", rid))
                except (OSError, ValueError):
                    return


# --- the engine process ---------------------------------------------------------------------


class _Relayed(Completion):
    """A completion generated here whose pieces and end go to the server's twin over the pipe."""

    def __init__(self, send: Callable[[Any], None], rid: int, tokenizer: Any, prompt_ids: list[int],
                 sampling: Sampling, constraint: Any):
        super().__init__(tokenizer, prompt_ids, sampling, constraint=constraint)
        self._pieces = _Relay(self, send, rid)  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class _Relay:
    """Stands in for a completion's queue of pieces: None (the end) sends how it ended."""

    completion: Completion
    send: Callable[[Any], None]
    rid: int

    def put(self, piece: str | None) -> None:
        c = self.completion
        self.send(("piece", self.rid, piece) if piece is not None else
                  ("end", self.rid, c.finish_reason, c.ids, portable(c.failure)))


def portable(failure: BaseException | None) -> BaseException | None:
    """The failure itself when it survives the pipe, else a RuntimeError with its text."""
    if failure is None:
        return None
    try:
        pickle.loads(pickle.dumps(failure))
        return failure
    except Exception:
        return RuntimeError(f"{type(failure).__name__}: {failure}")


def engine_threads(requested: int | None = None) -> int:
    """The torch threads of the engine process: `requested`, else all usable cores but one."""
    if requested is not None:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores - 1)


def _serve(conn: Any, max_bases: int, max_batch: int, window_seconds: float, threads: int | None) -> None:
    """The engine process's main loop: submissions start in threads of their own (a base may
    take seconds to load; cancels must not wait for it)."""
    import torch

    from tunesmith.serve.cache import InferenceCache

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the server, which ends this process
    torch.set_num_threads(engine_threads(threads))
    log.info("engine: %d torch threads", torch.get_num_threads())
    cache = InferenceCache(max_bases, max_batch=max_batch, window_seconds=window_seconds)
    send_lock = threading.Lock()
    lock = threading.Lock()
    live: dict[int, Completion] = {}
    cancelled: set[int] = set()

    def send(message: Any) -> None:
        if message[0] == "end":
            with lock:
                live.pop(message[1], None)
                cancelled.discard(message[1])
        try:
            with send_lock:
                conn.send(message)
        except (OSError, ValueError):  # the server is gone; the loop below ends on its EOF
            pass

    def start(target: Target, rows: list[tuple[int, list[int], Sampling]], response_format: Format) -> None:
        try:
            loaded = cache.loaded(target)
            completions = [_Relayed(send, rid, loaded.tokenizer, ids, sampling,
                                    _constraint(loaded, response_format)) for rid, ids, sampling in rows]
            with lock:
                for completion, (rid, _, _) in zip(completions, rows, strict=True):
                    live[rid] = completion
                    if rid in cancelled:
                        completion.cancel()
            cache.submit(target, completions)
        except Exception as exc:
            log.exception("starting a generation failed")
            for rid, _, _ in rows:
                with lock:
                    made = live.get(rid)
                if made is not None:
                    made._fail(exc)  # its relay sends the end
                else:
                    send(("end", rid, "error", [], portable(exc)))

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            os._exit(0)  # the server is gone: no generation is wanted any more
        if message[0] == "stop":
            os._exit(0)
        if message[0] == "cancel":
            with lock:
                cancelled.add(message[1])
                completion = live.get(message[1])
            if completion is not None:
                completion.cancel()
        else:
            threading.Thread(target=start, args=message[1:], name="tunesmith-engine-start",
                             daemon=True).start()


def _constraint(loaded: Any, response_format: Format) -> Any:
    """The constrained decoding a response format asks for (model/structured.py), or None."""
    kind, schema = response_format
    if kind == "text":
        return None
    from tunesmith.model.generation import stop_token_ids
    from tunesmith.model.structured import json_constraint

    return json_constraint(loaded.tokenizer, schema, sorted(stop_token_ids(loaded.tokenizer, loaded.model)))
