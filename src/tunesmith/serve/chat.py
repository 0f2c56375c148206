"""/v1/chat/completions for base and tuned models, streamed (server-sent events) or not."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import iterate_in_threadpool, run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tunesmith.serve.errors import APIError
from tunesmith.serve.models import resolve_target
from tunesmith.serve.state import ServerState, server

router = APIRouter()
log = logging.getLogger(__name__)
MAX_STOPS = 4
MAX_STOP_CHARS = 256
"""Like the hosted API: at most 4 stop sequences; each of bounded length."""
MIN_TEMPERATURE = 0.01
MAX_TOOLS = 128
MAX_TOOL_TEXT = 8192
"""As the hosted API: at most 128 tools; a function's description is bounded."""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class ToolFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: Annotated[str, Field(max_length=MAX_TOOL_TEXT)] | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: ToolFunction


class ChatRequest(BaseModel):
    """Every number range-checked, as the hosted API does: a value outside its range is a 400
    naming the parameter, never a failure inside generation. Parameters this server does not
    honour are kept aside (extra) and refused by `refuse_unhonoured`, never ignored."""

    model_config = ConfigDict(extra="allow")
    model: Annotated[str, Field(max_length=256)]
    messages: Annotated[list[dict[str, Any]], Field(min_length=1)]
    temperature: Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)] | None = 1.0
    top_p: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] | None = 1.0
    max_tokens: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    stop: str | list[str] | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = 1
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    tools: Annotated[list[Tool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None

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
    def _not_vanishing(cls, value: float | None) -> float | None:
        if value is not None and 0 < value < MIN_TEMPERATURE:  # logits / 1e-300 overflow: say so
            raise ValueError(f"must be 0 (greedy) or at least {MIN_TEMPERATURE}")
        return value


NEUTRAL: dict[str, tuple[Any, ...]] = {
    "frequency_penalty": (0, 0.0), "presence_penalty": (0, 0.0), "logprobs": (False,),
    "top_logprobs": (0,), "logit_bias": ({},), "store": (False,), "service_tier": ("auto", "default"),
    "metadata": ({},), "modalities": (["text"],), "user": (), "prediction": (), "audio": (),
    "reasoning_effort": (), "web_search_options": (), "functions": (), "function_call": (),
    "verbosity": (), "prompt_cache_key": (), "safety_identifier": ()}
"""Hosted-API parameters this server does not implement, with the values that ask for
nothing (so a client sending the default is served); null always asks for nothing."""


def refuse_unhonoured(request: ChatRequest) -> None:
    """A 400 naming the first parameter that would change the reply and is not honoured here."""
    for name, value in (request.model_extra or {}).items():
        if name not in NEUTRAL:
            raise APIError(400, f"Unrecognized request argument supplied: {name}", param=name,
                           code="unknown_parameter")
        if value is not None and value not in NEUTRAL[name]:
            raise APIError(400, f"'{name}' is not supported by this server; leave it out (see the server "
                                "documentation for the supported parameters)", param=name,
                           code="unsupported_parameter")
    response_schema(request)
    if request.tool_choice is not None and not request.tools:
        raise APIError(400, "tool_choice is only allowed when tools are specified", param="tool_choice",
                       code="invalid_value")
    if request.tool_choice not in (None, "auto", "none"):
        raise APIError(400, "tool_choice 'required' and a named function are not supported by this server: "
                            "it cannot force the model to call a tool. Use 'auto' or 'none'",
                       param="tool_choice", code="unsupported_parameter")
    for index, tool in enumerate(request.tools or []):
        if tool.function.strict:
            raise APIError(400, "strict function calling is not supported by this server (it has no "
                                "constrained decoding); leave 'strict' out",
                           param=f"tools[{index}].function.strict", code="unsupported_parameter")


JSON_SCHEMA_KEYS = {"name", "description", "schema", "strict"}


def response_schema(request: ChatRequest) -> tuple[str, dict[str, Any] | None]:
    """What response_format asks for: ("text", None), ("json_object", None) or ("json_schema",
    SCHEMA or None); a 400 naming the key for anything this server cannot hold a reply to."""
    from tunesmith.model import structured

    value = request.response_format
    if value is None:
        return "text", None
    kind = value.get("type")
    expected = {"text": {"type"}, "json_object": {"type"}, "json_schema": {"type", "json_schema"}}
    if kind not in expected:
        raise APIError(400, "response_format.type must be 'text', 'json_object' or 'json_schema' "
                            f"(got {kind!r})", param="response_format.type", code="invalid_value")
    extra = sorted(set(value) - expected[kind])
    if extra:
        raise APIError(400, f"Unrecognized key in response_format: {extra[0]}",
                       param=f"response_format.{extra[0]}", code="unknown_parameter")
    if kind == "text":
        return kind, None
    if not structured.available():
        raise APIError(400, f"response_format {kind!r} needs lm-format-enforcer, which is not installed on "
                            "this server; leave response_format out or install it", param="response_format",
                       code="unsupported_parameter")
    if request.tools and request.tool_choice != "none":
        raise APIError(400, f"response_format {kind!r} cannot be combined with tools here: the reply is held "
                            "to JSON, so the model could not write a tool call", param="response_format",
                       code="unsupported_parameter")
    if kind == "json_object":
        return kind, None
    spec = value.get("json_schema")
    where = "response_format.json_schema"
    if not isinstance(spec, dict):
        raise APIError(400, f"{where} must be an object with 'name' and 'schema'", param=where,
                       code="invalid_value")
    unknown = sorted(set(spec) - JSON_SCHEMA_KEYS)
    if unknown:
        raise APIError(400, f"Unrecognized key in {where}: {unknown[0]}", param=f"{where}.{unknown[0]}",
                       code="unknown_parameter")
    name = spec.get("name")
    if not (isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name)):
        raise APIError(400, f"{where}.name must be 1-64 letters, digits, '_' or '-'", param=f"{where}.name",
                       code="invalid_value")
    if "schema" not in spec or spec["schema"] is None:
        return kind, None
    try:
        return kind, structured.check_schema(spec["schema"])
    except structured.SchemaError as exc:
        raise APIError(400, str(exc), param=f"{where}.schema", code="invalid_value") from None


def _tools(request: ChatRequest) -> list[dict[str, Any]] | None:
    """The tools the template is given: none when the request turned them off."""
    if not request.tools or request.tool_choice == "none":
        return None
    return [tool.model_dump(exclude_none=True) for tool in request.tools]


def _messages(request: ChatRequest) -> list[dict[str, Any]]:
    """The request's messages prepared as training prepares a chat file's (data/prompt.py)."""
    from tunesmith.data.prompt import request_messages

    messages, findings = request_messages(request.messages)
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        raise APIError(400, errors[0].message, param="messages", code="invalid_value")
    for index, message in enumerate(messages):
        for position, call in enumerate(message.get("tool_calls") or []):
            function = call.get("function") if isinstance(call, dict) else None
            if not (isinstance(function, dict) and isinstance(function.get("name"), str)
                    and isinstance(function.get("arguments"), str) and isinstance(call.get("id"), str)):
                raise APIError(400, f"messages[{index}].tool_calls[{position}] must be {{'id', 'type': "
                                    "'function', 'function': {'name', 'arguments' (a JSON string)}}",
                               param=f"messages[{index}].tool_calls[{position}]", code="invalid_value")
    _check_tool_replies(messages)
    return messages


def _check_tool_replies(messages: list[dict[str, Any]]) -> None:
    """A tool message answers a call of the assistant message just before it (other tool
    replies may come between), as the hosted API requires: a template would otherwise render a
    reply to nothing, or to a call the model never made."""
    calls: set[str] = set()  # the ids the assistant turn just before called
    for index, message in enumerate(messages):
        if message["role"] == "assistant":
            calls = {call["id"] for call in message.get("tool_calls") or []}
        elif message["role"] != "tool":
            calls = set()
        elif not calls:
            raise APIError(400, f"messages[{index}] has role 'tool' but is not a reply to an assistant "
                                "message with tool_calls just before it", param=f"messages[{index}]",
                           code="invalid_value")
        elif (answered := message.get("tool_call_id", None)) is not None and answered not in calls:
            raise APIError(400, f"messages[{index}].tool_call_id {answered!r} names no call of the "
                                f"assistant message before it (its calls: {', '.join(sorted(calls))})",
                           param=f"messages[{index}].tool_call_id", code="invalid_value")


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
        from tunesmith.serve.engine import EngineClient

        state.cache = EngineClient(state.limits.max_loaded_bases, threads=state.limits.engine_threads)
    return state.cache


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(request: ChatRequest, http: Request, state: Annotated[ServerState, Depends(server)]
                           ) -> dict[str, Any] | StreamingResponse:
    limits = state.limits
    refuse_unhonoured(request)
    n = request.n or 1
    asked = request.max_completion_tokens or request.max_tokens
    max_tokens = asked or min(256, limits.max_tokens)
    if max_tokens > limits.max_tokens:
        raise APIError(400, f"max_tokens is {max_tokens}; this server allows at most {limits.max_tokens}",
                       param="max_tokens", code="invalid_value")
    if n > limits.max_n:
        raise APIError(400, f"n is {n}; this server allows at most {limits.max_n}", param="n",
                       code="invalid_value")
    messages = _messages(request)
    tools = _tools(request)
    target = await run_in_threadpool(resolve_target, state, request.model)
    stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    # Measured before any slot is taken or any header sent: an over-long prompt is a 400 at once.
    prompt_ids, max_tokens = await run_in_threadpool(_measure, state, target, messages, max_tokens,
                                                     asked is not None, tools)
    abandoned = threading.Event()
    temperature = 1.0 if request.temperature is None else request.temperature
    settings = {"max_new_tokens": max_tokens, "temperature": temperature, "top_p": request.top_p or 1.0,
                "stop": stops, "seed": request.seed, "prompt_ids": prompt_ids, "abandoned": abandoned,
                "response_format": response_schema(request)}
    calls = _Calls({t["function"]["name"] for t in tools}, request.parallel_tool_calls is not False) \
        if tools else None
    slot = _Slot(state)
    await run_in_threadpool(slot.acquire)
    state.running.add(abandoned)
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    if not request.stream:
        work = asyncio.ensure_future(run_in_threadpool(_complete, state, target, messages, settings, n,
                                                       calls))
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
    chunks = _stream(state, target, messages, settings, n, completion_id, created, request.model,
                     include_usage, calls)
    return StreamingResponse(_released(chunks, slot, abandoned, state), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


@dataclass(frozen=True, slots=True)
class _Calls:
    """How a reply's tool calls are read: the declared functions; several calls or only one."""

    names: set[str]
    parallel: bool

    def kept(self, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # parallel_tool_calls=false asks for at most one call, as the hosted API gives
        return calls if self.parallel else calls[:1]


def _measure(state: ServerState, target: Any, messages: list[dict[str, Any]], max_tokens: int,
             asked: bool, tools: list[dict[str, Any]] | None = None) -> tuple[list[int], int]:
    """The prompt's token ids and the tokens left to generate, or a 400 naming the model's
    context. A prompt far too long is refused before it is tokenized at all: no token is
    longer than the vocabulary's longest, which bounds the count from below. Tools a chat
    template would not render are refused: the model would never see them."""
    loaded = _cache(state).loaded(target)
    context = context_length(loaded)
    characters = sum(len(str(m.get("content") or "")) for m in messages) + len(json.dumps(tools or []))
    if context is not None and characters > context * longest_token(loaded.tokenizer):
        raise _too_long(f"more than {context}", context)
    from jinja2 import TemplateError

    try:
        if tools and loaded.renderer.chat_text(messages, tools, True) == loaded.renderer.chat_text(
                messages, None, True):
            raise APIError(400, f"the chat template of {target.name} does not render tools, so the model "
                                "would never see them; leave tools out or serve a model whose template "
                                "renders them", param="tools", code="unsupported_parameter")
        ids = loaded.renderer.prompt_ids(messages, tools)
    except TemplateError as exc:  # e.g. a template that insists on alternating user/assistant turns
        raise APIError(400, f"the chat template of {target.name} cannot render these messages: {exc}",
                       param="messages", code="invalid_value") from None
    if context is None:
        return ids, max_tokens
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
    config = loaded.config
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


def _completions(state: ServerState, target: Any, settings: dict[str, Any], n: int) -> list[Any]:
    """The request's n completions, queued together on the target's base in the engine (so they
    and any concurrent requests on that base are generated as one batch)."""
    from tunesmith.model.generation import Completion, Sampling, choice

    cache = _cache(state)
    loaded = cache.loaded(target)
    sampling = Sampling(settings["max_new_tokens"], settings["temperature"], settings["top_p"],
                        tuple(settings["stop"]), settings["seed"])
    completions = [Completion(loaded.tokenizer, settings["prompt_ids"], choice(sampling, index),
                              settings["abandoned"]) for index in range(n)]
    cache.submit(target, completions, settings["response_format"])
    return completions


def _complete(state: ServerState, target: Any, messages: list[dict[str, Any]], settings: dict[str, Any],
              n: int, calls: _Calls | None = None) -> tuple[list[dict[str, Any]], dict[str, int]]:
    from tunesmith.model.tool_calls import parse_tool_calls

    choices, prompt, completion = [], 0, 0
    for index, reply in enumerate(_completions(state, target, settings, n)):
        text = reply.result()
        prompt, completion = reply.prompt_tokens, completion + reply.completion_tokens
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        finish = reply.finish_reason
        if calls is not None:
            content, found = parse_tool_calls(text, calls.names)
            if found:
                message.update(content=content, tool_calls=calls.kept(found))
                finish = "tool_calls" if finish == "stop" else finish
        choices.append({"index": index, "message": message, "finish_reason": finish, "logprobs": None})
    return choices, {"prompt_tokens": prompt, "completion_tokens": completion,
                     "total_tokens": prompt + completion}


def _call_deltas(calls: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Each call as the hosted API streams it: id, type and name first, then the arguments."""
    for position, call in enumerate(calls):
        yield {"tool_calls": [{"index": position, "id": call["id"], "type": "function",
                               "function": {"name": call["function"]["name"], "arguments": ""}}]}
        yield {"tool_calls": [{"index": position, "function": {"arguments": call["function"]["arguments"]}}]}


def _stream(state: ServerState, target: Any, messages: list[dict[str, Any]], settings: dict[str, Any], n: int,
            completion_id: str, created: int, model: str, include_usage: bool,
            calls: _Calls | None = None) -> Iterator[str]:
    from tunesmith.model.tool_calls import ToolCallStream

    def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> str:
        body = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": choices, "system_fingerprint": None}
        if include_usage:
            body["usage"] = usage
        return f"data: {json.dumps(body)}\n\n"

    def delta(index: int, value: dict[str, Any], finish: str | None = None) -> str:
        return chunk([{"index": index, "delta": value, "finish_reason": finish, "logprobs": None}])

    prompt = completion = 0
    try:
        replies = _completions(state, target, settings, n)
        try:
            for index, reply in enumerate(replies):
                reading = ToolCallStream(calls.names) if calls is not None else None
                yield delta(index, {"role": "assistant", "content": ""})
                for piece in reply:
                    text = reading.feed(piece) if reading is not None else piece
                    if text:
                        yield delta(index, {"content": text})
                prompt, completion = reply.prompt_tokens, completion + reply.completion_tokens
                finish = reply.finish_reason
                if reading is not None and calls is not None:
                    rest, found = reading.finish()
                    if rest:
                        yield delta(index, {"content": rest})
                    for value in _call_deltas(calls.kept(found)):
                        yield delta(index, value)
                    if found and finish == "stop":
                        finish = "tool_calls"
                yield delta(index, {}, finish)
        finally:
            for reply in replies:
                reply.cancel()
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
