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
    become one, so a client never sees part of a stop sequence."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.buffer = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.buffer += piece
        hits = [i for i in (self.buffer.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self.buffer = self.buffer[: min(hits)], ""
            return out
        keep = max((k for s in self.stops for k in range(1, len(s)) if self.buffer.endswith(s[:k])),
                   default=0)
        out = self.buffer[: len(self.buffer) - keep]
        self.buffer = self.buffer[len(out):]
        return out

    def flush(self) -> str:
        out, self.buffer = ("" if self.stopped else self.buffer), ""
        return out


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

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool,
                                  device=input_ids.device)

        ids = torch.tensor([self.loaded.renderer.prompt_ids(self.messages)], device=self.loaded.model.device)
        self.prompt_tokens = int(ids.shape[1])
        stream = _TextStream(self.loaded.tokenizer, ids.shape[1])
        kwargs = _generation_kwargs(self.loaded, self.max_new_tokens, self.temperature, self.top_p)
        scanner = StopScanner(self.stop)
        failure: list[BaseException] = []

        def generate() -> None:
            try:
                if self.seed is not None:
                    torch.manual_seed(self.seed)
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
                if scanner.stopped:
                    cancel.set()
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
