"""/v1/chat/completions for base and tuned models, streamed (server-sent events) or not."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from fastapi.concurrency import iterate_in_threadpool, run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from tunesmith.serve.errors import APIError
from tunesmith.serve.generation import Reply
from tunesmith.serve.models import resolve_target
from tunesmith.serve.state import ServerState, server

router = APIRouter()


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # accepted and unused: logprobs, user, response_format...
    model: str
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    temperature: Annotated[float, Field(ge=0, le=2)] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    n: Annotated[int, Field(ge=1)] = 1
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None


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
async def chat_completions(request: ChatRequest, state: Annotated[ServerState, Depends(server)]
                           ) -> dict[str, Any] | StreamingResponse:
    limits = state.limits
    max_tokens = request.max_completion_tokens or request.max_tokens or min(256, limits.max_tokens)
    if max_tokens > limits.max_tokens:
        raise APIError(400, f"max_tokens is {max_tokens}; this server allows at most {limits.max_tokens}",
                       param="max_tokens", code="invalid_value")
    if request.n > limits.max_n:
        raise APIError(400, f"n is {request.n}; this server allows at most {limits.max_n}", param="n",
                       code="invalid_value")
    target = await run_in_threadpool(resolve_target, state, request.model)
    stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    messages = [_text(m) for m in request.messages]
    settings = {"max_new_tokens": max_tokens, "temperature": request.temperature, "top_p": request.top_p,
                "stop": stops, "seed": request.seed}
    slot = _Slot(state)
    await run_in_threadpool(slot.acquire)
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    if not request.stream:
        try:
            choices, usage = await run_in_threadpool(_complete, state, target, messages, settings, request.n)
        finally:
            slot.release()
        return {"id": completion_id, "object": "chat.completion", "created": created, "model": request.model,
                "choices": choices, "usage": usage, "system_fingerprint": None, "service_tier": None}
    include_usage = bool(request.stream_options and request.stream_options.include_usage)
    chunks = _stream(state, target, messages, settings, request.n, completion_id, created, request.model,
                     include_usage)
    return StreamingResponse(_released(chunks, slot), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


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
    except Exception as exc:  # headers are sent: report the failure inside the stream
        error = {"error": {"message": str(exc), "type": "server_error", "param": None, "code": None}}
        yield f"data: {json.dumps(error)}\n\n"
        return
    if include_usage:
        yield chunk([], {"prompt_tokens": prompt, "completion_tokens": completion,
                         "total_tokens": prompt + completion})
    yield "data: [DONE]\n\n"


async def _released(chunks: Iterator[str], slot: _Slot) -> AsyncIterator[str]:
    """Runs the generation off the event loop; the slot is freed however the stream ends
    (finished, failed, or the client went away)."""
    try:
        async for item in iterate_in_threadpool(chunks):
            yield item
    finally:
        await run_in_threadpool(_close, chunks)
        slot.release()


def _close(chunks: Iterator[str]) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        # still running in its thread: then it is closed when that thread lets go of it
        with contextlib.suppress(ValueError):
            close()
