"""One chat reply for the API: stop sequences, a seed, the finish reason and token counts,
streamed piece by piece. Built on the shared helpers in tunesmith.model.inference."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tunesmith.data.records import Message
from tunesmith.model.inference import LoadedModel


class StopScanner:
    """Cuts streamed text at the first stop sequence, holding back any tail that could still
    become one, so a client never sees part of a stop sequence.

    One Knuth-Morris-Pratt matcher per stop sequence, fed each new character once: the work
    is linear in the text generated, whatever the stop sequences' lengths (a rescan of the
    held-back tail for every prefix of every stop was quadratic in their length)."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.tables = [_failure(s) for s in self.stops]
        self.states = [0] * len(self.stops)
        """Per stop: how many of its first characters the text now ends with."""
        self.buffer = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        text = self.buffer + piece
        offset = len(self.buffer)
        for index, char in enumerate(piece):
            starts = []
            for j, stop in enumerate(self.stops):
                state, table = self.states[j], self.tables[j]
                while state and stop[state] != char:
                    state = table[state - 1]
                if stop[state] == char:
                    state += 1
                self.states[j] = state
                if state == len(stop):
                    starts.append(offset + index + 1 - len(stop))
            if starts:
                self.stopped = True
                self.buffer = ""
                return text[:min(starts)]
        cut = len(text) - max(self.states, default=0)
        out, self.buffer = text[:cut], text[cut:]
        return out

    def flush(self) -> str:
        out, self.buffer = ("" if self.stopped else self.buffer), ""
        return out


def _failure(pattern: str) -> list[int]:
    """table[i]: the length of the longest proper prefix of pattern[:i + 1] that is also its suffix."""
    table = [0] * len(pattern)
    state = 0
    for i in range(1, len(pattern)):
        while state and pattern[i] != pattern[state]:
            state = table[state - 1]
        if pattern[i] == pattern[state]:
            state += 1
        table[i] = state
    return table


@dataclass(slots=True)
class Reply:
    """Iterate for text pieces; afterwards finish_reason and token counts are set."""

    loaded: LoadedModel
    messages: list[Message]
    max_new_tokens: int
    temperature: float
    top_p: float
    stop: list[str]
    seed: int | None
    adapter: Any = None  # a context manager making the right adapter active (see cache.py)
    prompt_ids: list[int] | None = None
    """Already tokenized by the caller (the length check); rendered here otherwise."""
    abandoned: threading.Event | None = None
    """Set when nobody waits for the reply any more (client gone, server stopping)."""
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    _cancel: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self._cancel.set()

    def __iter__(self) -> Iterator[str]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        from tunesmith.model.inference import _generation_kwargs, _TextStream

        cancel = self._cancel
        abandoned = self.abandoned or threading.Event()

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                stop = cancel.is_set() or abandoned.is_set()
                return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

        prompt = self.prompt_ids if self.prompt_ids is not None \
            else self.loaded.renderer.prompt_ids(self.messages)
        ids = torch.tensor([prompt], device=self.loaded.model.device)
        self.prompt_tokens = int(ids.shape[1])
        stream = _TextStream(self.loaded.tokenizer, ids.shape[1])
        kwargs = _generation_kwargs(self.loaded, self.max_new_tokens, self.temperature, self.top_p)
        if self.temperature > 0:  # sampled with this request's own generator, never the global one
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None,
                          logits_processor=sampler(self.temperature, self.top_p, self.seed,
                                                   self.loaded.model.device))
        scanner = StopScanner(self.stop)
        failure: list[BaseException] = []

        def generate() -> None:
            try:
                criteria = StoppingCriteriaList([Cancelled()])
                self.loaded.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                           streamer=stream, stopping_criteria=criteria, **kwargs)
            except BaseException as exc:  # surfaced in the caller's thread below
                failure.append(exc)
                stream.end()

        worker = threading.Thread(target=generate, daemon=True)
        worker.start()
        try:
            for piece in stream:
                text = scanner.feed(piece)
                if text:
                    yield text
                if scanner.stopped or abandoned.is_set():
                    cancel.set()  # generate() stops at its next token; the stream then ends
            if tail := scanner.flush():
                yield tail
        finally:
            cancel.set()
            worker.join()
        if failure:
            raise failure[0]
        self.completion_tokens = len(stream.ids)
        eos = self.loaded.tokenizer.eos_token_id
        ended = bool(stream.ids) and stream.ids[-1] == eos
        hit_length = self.completion_tokens >= self.max_new_tokens and not ended
        self.finish_reason = "length" if hit_length and not scanner.stopped else "stop"


def sampler(temperature: float, top_p: float, seed: int | None, device: Any) -> Any:
    """A logits processor that draws the next token with its own torch.Generator and leaves
    only that token for greedy search to pick.

    Written here because transformers' sampling draws from the process-wide random state:
    a seed set with torch.manual_seed in one request's thread is consumed by every other
    generation running at the same time, so seeded replies were not reproducible under load.
    Temperature then nucleus (top-p) filtering, as the hosted API defines them (no top-k)."""
    import secrets

    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    generator = torch.Generator(device=device)
    generator.manual_seed(secrets.randbits(63) if seed is None else seed % 2**64)

    class Sample(LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            logits = scores.float() / temperature
            if top_p < 1:
                ordered, order = torch.sort(logits, descending=False, dim=-1)
                cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
                drop = cumulative <= (1 - top_p)
                drop[..., -1:] = False  # the likeliest token always stays
                logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
            chosen = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)
            only = torch.full_like(scores, float("-inf"))
            return only.scatter(-1, chosen, 0.0)

    return LogitsProcessorList([Sample()])
