"""Findings about what is inside an example, beyond its shape: a conversation without a
user turn, a reply that is one phrase repeated, and tool calls that are not what the tools
define (arguments that are not JSON, JSON encoded twice, undefined functions, arguments
that break the function's parameter schema).

These are the faults that pass a shape check and still teach a model the wrong thing.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

from tunesmith.data.findings import Finding, error, warning
from tunesmith.data.formats import content_text
from tunesmith.data.records import ChatRecord, Message, PreferenceRecord, Record, ReinforcementRecord

REPEAT_MIN_WORDS = 40
"""Replies shorter than this are never called repetitive."""
REPEAT_GRAM = 3
REPEAT_MIN_COUNT = 10
REPEAT_MAX_DISTINCT = 0.2
"""A reply is degenerate when under 20% of its word trigrams are distinct and one of them
occurs at least REPEAT_MIN_COUNT times (a phrase repeated, the failure of a looping model)."""


def content_findings(record: Record) -> list[Finding]:
    """Every content finding of one record, each at its file:line with a fix."""
    out: list[Finding] = []
    if isinstance(record, ChatRecord):
        out += _no_user_turn(record.messages, record)
        out += _repetition(record.messages, record, "messages")
        out += _tool_calls(record.messages, record.tools, record, "messages")
    elif isinstance(record, PreferenceRecord):
        for key, messages in (("preferred_output", record.chosen), ("non_preferred_output", record.rejected)):
            out += _repetition(messages, record, key)
            out += _tool_calls(messages, record.tools, record, key)
    elif isinstance(record, ReinforcementRecord):
        out += _no_user_turn(record.messages, record)
    return out


def _no_user_turn(messages: list[Message], record: Record) -> list[Finding]:
    if any(m["role"] == "user" for m in messages):
        return []
    roles = " + ".join(dict.fromkeys(m["role"] for m in messages))
    return [warning("no_user_turn", f"the conversation has no user turn ({roles})", record.source,
                    "add the user message the reply answers, or remove the example")]


def _repetition(messages: list[Message], record: Record, key: str) -> list[Finding]:
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        phrase, count = repeated_phrase(content_text(message.get("content")) or "")
        if phrase:
            return [warning(
                "degenerate_repetition", f"{key}[{index}] repeats {phrase!r} {count:,} times",
                record.source, "remove or rewrite the reply: the model would learn to loop")]
    return []


def repeated_phrase(text: str) -> tuple[str | None, int]:
    """The phrase a degenerate text repeats and how often, or (None, 0)."""
    words = text.split()
    if len(words) < REPEAT_MIN_WORDS:
        return None, 0
    grams = Counter(tuple(words[i:i + REPEAT_GRAM]) for i in range(len(words) - REPEAT_GRAM + 1))
    total = sum(grams.values())
    gram, count = grams.most_common(1)[0]
    if len(grams) / total > REPEAT_MAX_DISTINCT or count < REPEAT_MIN_COUNT:
        return None, 0
    return " ".join(gram), count


# --- tool calls -------------------------------------------------------------------------------


def _tool_calls(messages: list[Message], tools: list[dict[str, Any]] | None, record: Record,
                key: str) -> list[Finding]:
    defined = _defined_functions(tools)
    out: list[Finding] = []
    for index, message in enumerate(messages):
        for number, call in enumerate(message.get("tool_calls") or []):
            where = f"{key}[{index}].tool_calls[{number}]"
            out += _one_call(call, where, defined, tools is not None, record)
    return out


def _defined_functions(tools: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Function name -> its parameter schema (None when it declares none)."""
    out: dict[str, Any] = {}
    for tool in tools or []:
        function = tool.get("function", tool) if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            out[function["name"]] = function.get("parameters")
    return out


def _one_call(call: Any, where: str, defined: dict[str, Any], has_tools: bool,
              record: Record) -> Iterator[Finding]:
    function = call.get("function", call) if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        yield error("bad_tool_call", f"{where} has no function name", record.source,
                    'write it as {"type": "function", "function": {"name": ..., "arguments": "{...}"}}')
        return
    name = function["name"]
    if name not in defined:
        if has_tools:
            known = ", ".join(sorted(defined)) or "none"
            yield error("undefined_tool", f"{where} calls {name!r}, which is not in tools (defined: {known})",
                        record.source, f"add {name!r} to the example's tools or correct the name")
        else:
            yield warning("undefined_tool", f"{where} calls {name!r} but the example defines no tools",
                          record.source, "add a top-level tools list that defines the function")
    arguments, finding = _arguments(function.get("arguments"), where, name, record)
    if finding is not None:
        yield finding
        return
    schema = defined.get(name)
    if isinstance(arguments, dict) and isinstance(schema, dict):
        problem = schema_problem(arguments, schema)
        if problem:
            yield warning("tool_arguments_schema", f"{where}: arguments of {name!r} do not match its "
                          f"parameters: {problem}", record.source,
                          "correct the arguments (or the tool's parameters schema)")


def _arguments(value: Any, where: str, name: str, record: Record) -> tuple[Any, Finding | None]:
    if value is None or isinstance(value, dict):
        return value, None
    if not isinstance(value, str):
        return None, error("tool_arguments_invalid", f"{where}: arguments of {name!r} are a "
                           f"{type(value).__name__}, not a JSON object string", record.source,
                           'write arguments as a JSON object string, e.g. "{\\"city\\": \\"Oslo\\"}"')
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        return None, error("tool_arguments_invalid", f"{where}: arguments of {name!r} are not valid "
                           f"JSON ({exc.msg} at character {exc.pos})", record.source,
                           "write arguments as one JSON object string")
    if isinstance(parsed, str):
        try:
            inner = json.loads(parsed)
        except json.JSONDecodeError:
            inner = None
        if isinstance(inner, dict | list):
            return None, error("tool_arguments_double_encoded", f"{where}: arguments of {name!r} are "
                               "JSON encoded twice (a JSON string holding JSON)", record.source,
                               "encode the arguments once: json.dumps(arguments), not "
                               "json.dumps(json.dumps(arguments))")
    if not isinstance(parsed, dict):
        return None, error("tool_arguments_invalid", f"{where}: arguments of {name!r} are JSON "
                           f"{type(parsed).__name__}, not an object", record.source,
                           "write arguments as a JSON object of parameter names to values")
    return parsed, None


def schema_problem(arguments: dict[str, Any], schema: dict[str, Any]) -> str | None:
    """Why arguments break a JSON Schema (the most relevant error), or None."""
    from jsonschema import exceptions, validators

    try:
        cls = validators.validator_for(schema)
        cls.check_schema(schema)
    except exceptions.SchemaError as exc:
        return f"the tool's parameters are not a valid JSON Schema ({exc.message})"
    best = exceptions.best_match(cls(schema).iter_errors(arguments))
    if best is None:
        return None
    path = ".".join(str(p) for p in best.absolute_path)
    return f"{path}: {best.message}" if path else best.message
