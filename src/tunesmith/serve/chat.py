"""/v1/chat/completions for base and tuned models, streamed (server-sent events) or not."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import iterate_in_threadpool, run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tunesmith.serve.errors import APIError
from tunesmith.serve.generation import Reply
from tunesmith.serve.models import resolve_target
from tunesmith.serve.state import ServerState, server

router = APIRouter()
log = logging.getLogger(__name__)
MAX_STOPS = 4
MAX_STOP_CHARS = 256
"""Like the hosted API: at most 4 stop sequences; each of bounded length."""
MIN_TEMPERATURE = 0.01


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    """Every number range-checked, as the hosted API does: a value outside its range is a 400
    naming the parameter, never a failure inside generation."""

    model_config = ConfigDict(extra="ignore")  # accepted and unused: logprobs, user, response_format...
    model: Annotated[str, Field(max_length=256)]
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    temperature: Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 1.0
    max_tokens: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    stop: str | list[str] | None = None
    n: Annotated[int, Field(ge=1, le=128)] = 1
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("stop")
    @classmethod
    def _bounded_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop sequences are allowed (got {len(stops)})")
        if any(len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"a stop sequence may be at most {MAX_STOP_CHARS} characters long")
        return value

    @field_validator("temperature")
    @classmethod
    def _not_vanishing(cls, value: float) -> float:
        if 0 < value < MIN_TEMPERATURE:  # logits / 1e-300 overflow: say so instead of failing
            raise ValueError(f"must be 0 (greedy) or at least {MIN_TEMPERATURE}")
        return value


def _text(message: ChatMessage) -> dict[str, Any]:
    content = message.content
    if isinstance(content, list):  # content parts: only text is understood
        content = "".join(str(p.get("text", "")) for p in content if p.get("type") == "text")
    role = "system" if message.role == "developer" else message.role
    return {"role": role, "content": content or ""}


class _Slot:
    """A cap on concurrent generations; a request that waits too long for one gets a 429."""

    def __init__(self, state: ServerState):
        self.semaphore: threading.BoundedSemaphore = state.generations
        self.wait = state.limits.generation_wait_seconds

    def acquire(self) -> None:
        if not self.semaphore.acquire(timeout=self.wait):
            raise APIError(429, "too many generations are running; try again shortly", code="server_busy")

    def release(self) -> None:
        self.semaphore.release()


def _cache(state: ServerState) -> Any:
    if state.cache is None:
        from tunesmith.serve.cache import InferenceCache

        state.cache = InferenceCache(state.limits.max_loaded_bases)
    return state.cache


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(request: ChatRequest, http: Request, state: Annotated[ServerState, Depends(server)]
                           ) -> dict[str, Any] | StreamingResponse:
    limits = state.limits
    asked = request.max_completion_tokens or request.max_tokens
    max_tokens = asked or min(256, limits.max_tokens)
    if max_tokens > limits.max_tokens:
        raise APIError(400, f"max_tokens is {max_tokens}; this server allows at most {limits.max_tokens}",
                       param="max_tokens", code="invalid_value")
    if request.n > limits.max_n:
        raise APIError(400, f"n is {request.n}; this server allows at most {limits.max_n}", param="n",
                       code="invalid_value")
    target = await run_in_threadpool(resolve_target, state, request.model)
    stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    messages = [_text(m) for m in request.messages]
    # Measured before any slot is taken or any header sent: an over-long prompt is a 400 at once.
    prompt_ids, max_tokens = await run_in_threadpool(_measure, state, target, messages, max_tokens,
                                                     asked is not None)
    abandoned = threading.Event()
    settings = {"max_new_tokens": max_tokens, "temperature": request.temperature, "top_p": request.top_p,
                "stop": stops, "seed": request.seed, "prompt_ids": prompt_ids, "abandoned": abandoned}
    slot = _Slot(state)
    await run_in_threadpool(slot.acquire)
    state.running.add(abandoned)
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    if not request.stream:
        work = asyncio.ensure_future(run_in_threadpool(_complete, state, target, messages, settings,
                                                       request.n))
        try:
            while not work.done():  # a client that leaves stops its generation
                await asyncio.wait({work}, timeout=0.25)
                if not work.done() and await http.is_disconnected():
                    abandoned.set()
            choices, usage = work.result()
        finally:
            abandoned.set()  # this handler is done (or cancelled): nothing waits for the reply any more
            state.running.discard(abandoned)
            slot.release()
        return {"id": completion_id, "object": "chat.completion", "created": created, "model": request.model,
                "choices": choices, "usage": usage, "system_fingerprint": None, "service_tier": None}
    include_usage = bool(request.stream_options and request.stream_options.include_usage)
    chunks = _stream(state, target, messages, settings, request.n, completion_id, created, request.model,
                     include_usage)
    return StreamingResponse(_released(chunks, slot, abandoned, state), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


def _measure(state: ServerState, target: Any, messages: list[dict[str, Any]], max_tokens: int,
             asked: bool) -> tuple[list[int], int]:
    """The prompt's token ids and the tokens left to generate, or a 400 naming the model's
    context. A prompt far too long is refused before it is tokenized at all: no token is
    longer than the vocabulary's longest, which bounds the count from below."""
    loaded = _cache(state).loaded(target)
    context = context_length(loaded)
    if context is None:
        return loaded.renderer.prompt_ids(messages), max_tokens
    characters = sum(len(str(m.get("content") or "")) for m in messages)
    if characters > context * longest_token(loaded.tokenizer):
        raise _too_long(f"more than {context}", context)
    ids = loaded.renderer.prompt_ids(messages)
    if len(ids) >= context:
        raise _too_long(str(len(ids)), context)
    room = context - len(ids)
    if max_tokens > room:
        if asked:
            raise APIError(400, f"This model's maximum context length is {context} tokens. However, you "
                                f"requested {len(ids) + max_tokens} tokens ({len(ids)} in the messages, "
                                f"{max_tokens} in the completion). Please reduce the length of the "
                                "messages or completion.", param="max_tokens", code="context_length_exceeded")
        max_tokens = room
    return ids, max_tokens


def _too_long(count: str, context: int) -> APIError:
    return APIError(400, f"This model's maximum context length is {context} tokens. However, your messages "
                         f"resulted in {count} tokens. Please reduce the length of the messages.",
                    param="messages", code="context_length_exceeded")


def context_length(loaded: Any) -> int | None:
    """Positions the model can attend to, from its config (or its tokenizer's declared maximum)."""
    config = getattr(loaded.model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    declared = getattr(loaded.tokenizer, "model_max_length", None)
    return declared if isinstance(declared, int) and 0 < declared < 10**7 else None


_LONGEST: dict[int, int] = {}


def longest_token(tokenizer: Any) -> int:
    """Characters in the vocabulary's longest token (at least 1), once per tokenizer."""
    key = id(tokenizer)
    if key not in _LONGEST:
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        _LONGEST[key] = max((len(p) for p in pieces if isinstance(p, str)), default=1) or 1
    return _LONGEST[key]


def _complete(state: ServerState, target: Any, messages: list[dict[str, Any]], settings: dict[str, Any],
              n: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    choices, prompt, completion = [], 0, 0
    with _cache(state).use(target) as loaded:
        for index in range(n):
            seed = None if settings["seed"] is None else settings["seed"] + index
            reply = Reply(loaded, messages, **{**settings, "seed": seed})
            text = "".join(reply)
            prompt, completion = reply.prompt_tokens, completion + reply.completion_tokens
            message = {"role": "assistant", "content": text, "refusal": None}
            choices.append({"index": index, "message": message, "finish_reason": reply.finish_reason,
                            "logprobs": None})
    return choices, {"prompt_tokens": prompt, "completion_tokens": completion,
                     "total_tokens": prompt + completion}


def _stream(state: ServerState, target: Any, messages: list[dict[str, Any]], settings: dict[str, Any], n: int,
            completion_id: str, created: int, model: str, include_usage: bool) -> Iterator[str]:
    def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> str:
        body = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": choices, "system_fingerprint": None}
        if include_usage:
            body["usage"] = usage
        return f"data: {json.dumps(body)}\n\n"

    prompt = completion = 0
    try:
        with _cache(state).use(target) as loaded:
            for index in range(n):
                seed = None if settings["seed"] is None else settings["seed"] + index
                reply = Reply(loaded, messages, **{**settings, "seed": seed})
                yield chunk([{"index": index, "delta": {"role": "assistant", "content": ""},
                              "finish_reason": None, "logprobs": None}])
                try:
                    for piece in reply:
                        yield chunk([{"index": index, "delta": {"content": piece}, "finish_reason": None,
                                      "logprobs": None}])
                finally:
                    reply.cancel()
                prompt, completion = reply.prompt_tokens, completion + reply.completion_tokens
                yield chunk([{"index": index, "delta": {}, "finish_reason": reply.finish_reason,
                              "logprobs": None}])
    except Exception:  # headers are sent: report the failure inside the stream; the trace is logged
        log.exception("generation failed for %s", model)
        error = {"error": {"message": "The server had an error while generating the reply; its log has the "
                                      "details.", "type": "server_error", "param": None, "code": None}}
        yield f"data: {json.dumps(error)}\n\n"
        return
    if include_usage:
        yield chunk([], {"prompt_tokens": prompt, "completion_tokens": completion,
                         "total_tokens": prompt + completion})
    yield "data: [DONE]\n\n"


async def _released(chunks: Iterator[str], slot: _Slot, abandoned: threading.Event,
                    state: ServerState) -> AsyncIterator[str]:
    """Runs the generation off the event loop; the generation is stopped and the slot freed
    however the stream ends (finished, failed, or the client went away)."""
    try:
        async for item in iterate_in_threadpool(chunks):
            yield item
    finally:
        abandoned.set()  # a generation still running in its thread stops at its next token
        state.running.discard(abandoned)
        try:
            with anyio.CancelScope(shield=True):  # the client left: this task is being cancelled
                await run_in_threadpool(_close, chunks)
        finally:
            slot.release()


def _close(chunks: Iterator[str]) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        # still running in its thread: then it is closed when that thread lets go of it
        with contextlib.suppress(ValueError):
            close()
