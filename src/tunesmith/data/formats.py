"""Dataset shapes: detect which one a row is in, and turn a raw row into a typed record.

The chat shape is exactly OpenAI's fine-tuning JSONL (messages, optional tools and
per-assistant-message weight), so files made for hosted fine-tuning load unchanged.
Parsing never raises on bad data: it returns findings that name the line and key.
"""

from __future__ import annotations

from typing import Any

from tunesmith.data.findings import Finding, error, warning
from tunesmith.data.records import (
    ChatRecord,
    CompletionRecord,
    Format,
    Message,
    PreferenceRecord,
    Record,
    ReinforcementRecord,
    Source,
    TextRecord,
)

ROLES = ("system", "developer", "user", "assistant", "tool")
MESSAGE_KEYS = {"role", "content", "name", "tool_calls", "tool_call_id", "weight"}
CHAT_KEYS = {"messages", "tools", "parallel_tool_calls"}
OPENAI_PREFERENCE_KEYS = {"input", "preferred_output", "non_preferred_output"}
PAIR_PREFERENCE_KEYS = {"prompt", "chosen", "rejected"}
COMPLETION_KEYS = {"prompt", "completion"}
TEXT_KEYS = {"text"}

Parsed = tuple[Record | None, list[Finding]]


def detect_format(data: dict[str, Any]) -> Format | None:
    """The shape a row is written in, from its keys; None when no shape fits."""
    keys = set(data)
    if "messages" in keys:
        return Format.CHAT if keys <= CHAT_KEYS else Format.REINFORCEMENT
    if keys >= OPENAI_PREFERENCE_KEYS or keys >= PAIR_PREFERENCE_KEYS:
        return Format.PREFERENCE
    if keys >= COMPLETION_KEYS:
        return Format.COMPLETION
    if "text" in keys:
        return Format.TEXT
    return None


def describe_shapes() -> str:
    return (
        '{"messages": [...]} (chat), {"prompt", "completion"}, {"text"}, '
        '{"input", "preferred_output", "non_preferred_output"} or {"prompt", "chosen", '
        '"rejected"} (preference), {"messages", ...grader fields} (reinforcement)'
    )


def parse_record(data: dict[str, Any], source: Source, fmt: Format) -> Parsed:
    """Validate one raw row against `fmt` and build its record."""
    return PARSERS[fmt](data, source)


# --- helpers -------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    names = {str: "string", int: "number", float: "number", bool: "boolean", list: "array",
             dict: "object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _unknown_keys(data: dict[str, Any], allowed: set[str], source: Source, what: str) -> list[Finding]:
    return [
        error("unknown_key", f"unknown key '{key}' in {what} (allowed: {', '.join(sorted(allowed))})",
              source, "remove the key or fix its spelling")
        for key in data if key not in allowed
    ]


def _missing(key: str, source: Source, what: str) -> Finding:
    return error("missing_key", f"missing key '{key}' in {what}", source)


def _wrong_type(key: str, expected: str, value: Any, source: Source) -> Finding:
    return error("wrong_type", f"'{key}' must be {expected}, got {_type_name(value)}", source)


def content_text(content: Any) -> str | None:
    """The text of a message's content: a string, or a list of text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        for part in content
    ):
        return "".join(part["text"] for part in content)
    return None


def _parse_messages(
    value: Any, source: Source, key: str = "messages", *, allow_tool_calls: bool = True
) -> tuple[list[Message], list[Finding]]:
    """Validate a list of messages; returns normalised copies (content always a string)."""
    if not isinstance(value, list):
        return [], [_wrong_type(key, "an array of messages", value, source)]
    if not value:
        return [], [error("empty_messages", f"'{key}' is empty", source)]
    messages: list[Message] = []
    findings: list[Finding] = []
    for index, message in enumerate(value):
        path = f"{key}[{index}]"
        if not isinstance(message, dict):
            findings.append(_wrong_type(path, "an object", message, source))
            continue
        findings += _unknown_keys(message, MESSAGE_KEYS, source, path)
        role = message.get("role")
        if role is None:
            findings.append(_missing("role", source, path))
            continue
        if role not in ROLES:
            findings.append(error(
                "unknown_role", f"unrecognized role {role!r} in {path} (allowed: {', '.join(ROLES)})",
                source))
            continue
        normal: Message = {"role": role}
        tool_calls = message.get("tool_calls")
        if tool_calls is not None:
            if role != "assistant" or not allow_tool_calls:
                findings.append(error("bad_tool_calls", f"{path}: only assistant messages carry tool_calls",
                                      source))
            elif not isinstance(tool_calls, list):
                findings.append(_wrong_type(f"{path}.tool_calls", "an array", tool_calls, source))
            else:
                normal["tool_calls"] = tool_calls
        content = message.get("content")
        text = content_text(content) if content is not None else None
        if content is not None and text is None:
            findings.append(_wrong_type(f"{path}.content", "a string or a list of text parts", content,
                                        source))
        elif not (text and text.strip()) and not normal.get("tool_calls"):
            findings.append(error("missing_content", f"{path} ({role}) has no content", source,
                                  "give every message non-empty content"))
        normal["content"] = text or ""
        for optional in ("name", "tool_call_id"):
            if optional in message:
                if not isinstance(message[optional], str):
                    findings.append(_wrong_type(f"{path}.{optional}", "a string", message[optional], source))
                else:
                    normal[optional] = message[optional]
        if "weight" in message:
            weight = message["weight"]
            if role != "assistant":
                findings.append(error("bad_weight", f"{path}: 'weight' is only allowed on assistant messages",
                                      source))
            elif weight not in (0, 1) or isinstance(weight, bool):
                findings.append(error("bad_weight", f"{path}.weight must be 0 or 1, got {weight!r}", source))
            else:
                normal["weight"] = int(weight)
        messages.append(normal)
    return messages, findings


def _role_order_warnings(messages: list[Message], source: Source) -> list[Finding]:
    findings = []
    for index, message in enumerate(messages):
        if message["role"] in ("system", "developer") and index > 0:
            findings.append(warning("system_not_first",
                                    f"messages[{index}] is a system message after the start",
                                    source, "put the system message first"))
    turns = [m["role"] for m in messages if m["role"] in ("user", "assistant")]
    for index in range(1, len(turns)):
        if turns[index] == turns[index - 1]:
            findings.append(warning("roles_not_alternating",
                                    f"two {turns[index]} turns in a row", source,
                                    "alternate user and assistant turns or merge them"))
            break
    return findings


def _tools(data: dict[str, Any], source: Source) -> tuple[list[dict[str, Any]] | None, list[Finding]]:
    tools = data.get("tools")
    if tools is None:
        return None, []
    if not isinstance(tools, list) or not all(isinstance(tool, dict) for tool in tools):
        return None, [_wrong_type("tools", "an array of tool objects", tools, source)]
    return tools, []


# --- one parser per shape --------------------------------------------------------------


def _parse_chat(data: dict[str, Any], source: Source) -> Parsed:
    findings = _unknown_keys(data, CHAT_KEYS, source, "a chat example")
    if "messages" not in data:
        return None, [*findings, _missing("messages", source, "a chat example")]
    messages, message_findings = _parse_messages(data["messages"], source)
    tools, tool_findings = _tools(data, source)
    findings += message_findings + tool_findings
    if messages and not any(m["role"] == "assistant" and m.get("weight", 1) for m in messages):
        findings.append(error("no_assistant", "no assistant message to learn from", source,
                              "add an assistant reply (with weight 1 if weights are used)"))
    if any(f.severity == "error" for f in findings):
        return None, findings
    findings += _role_order_warnings(messages, source)
    return ChatRecord(messages, source, tools), findings


def _parse_reinforcement(data: dict[str, Any], source: Source) -> Parsed:
    if "messages" not in data:
        return None, [_missing("messages", source, "a reinforcement example")]
    messages, findings = _parse_messages(data["messages"], source)
    tools, tool_findings = _tools(data, source)
    findings += tool_findings
    if messages and messages[-1]["role"] == "assistant":
        findings.append(warning("answer_in_prompt", "the last message is an assistant reply; "
                                "reinforcement prompts end with the user turn", source))
    if any(f.severity == "error" for f in findings):
        return None, findings
    fields = {k: v for k, v in data.items() if k not in CHAT_KEYS}
    return ReinforcementRecord(messages, source, fields, tools), findings


def _string_field(data: dict[str, Any], key: str, source: Source, *,
                  allow_empty: bool) -> tuple[str, list[Finding]]:
    if key not in data:
        return "", [_missing(key, source, "this example")]
    value = data[key]
    if not isinstance(value, str):
        return "", [_wrong_type(key, "a string", value, source)]
    if not allow_empty and not value.strip():
        return "", [error("missing_content", f"'{key}' is empty", source)]
    return value, []


def _parse_completion(data: dict[str, Any], source: Source) -> Parsed:
    findings = _unknown_keys(data, COMPLETION_KEYS, source, "a prompt/completion example")
    prompt, prompt_findings = _string_field(data, "prompt", source, allow_empty=True)
    completion, completion_findings = _string_field(data, "completion", source, allow_empty=False)
    findings += prompt_findings + completion_findings
    if findings:
        return None, findings
    return CompletionRecord(prompt, completion, source), []


def _parse_text(data: dict[str, Any], source: Source) -> Parsed:
    findings = _unknown_keys(data, TEXT_KEYS, source, "a text example")
    text, text_findings = _string_field(data, "text", source, allow_empty=False)
    findings += text_findings
    if findings:
        return None, findings
    return TextRecord(text, source), []


def _preference_side(value: Any, key: str, source: Source) -> tuple[list[Message], list[Finding]]:
    """One side of a pair: a string, or a list of assistant messages."""
    if isinstance(value, str):
        if not value.strip():
            return [], [error("empty_preference", f"'{key}' is empty", source,
                              "both sides of a preference pair need an answer")]
        return [{"role": "assistant", "content": value}], []
    if isinstance(value, list) and not value:
        return [], [error("empty_preference", f"'{key}' is empty", source,
                          "both sides of a preference pair need an answer")]
    messages, findings = _parse_messages(value, source, key)
    if messages and any(m["role"] != "assistant" for m in messages):
        findings.append(error("bad_preference", f"'{key}' may only hold assistant messages", source))
    return messages, findings


def _parse_preference(data: dict[str, Any], source: Source) -> Parsed:
    if "input" in data or "preferred_output" in data:
        findings = _unknown_keys(data, OPENAI_PREFERENCE_KEYS, source, "a preference example")
        for key in sorted(OPENAI_PREFERENCE_KEYS - set(data)):
            findings.append(_missing(key, source, "a preference example"))
        if findings:
            return None, findings
        prompt_value = data["input"]
        if not isinstance(prompt_value, dict):
            return None, [_wrong_type("input", "an object with 'messages'", prompt_value, source)]
        findings += _unknown_keys(prompt_value, CHAT_KEYS, source, "'input'")
        if "messages" not in prompt_value:
            return None, [*findings, _missing("messages", source, "'input'")]
        prompt, prompt_findings = _parse_messages(prompt_value["messages"], source, "input.messages")
        tools, tool_findings = _tools(prompt_value, source)
        chosen_key, rejected_key = "preferred_output", "non_preferred_output"
        findings += prompt_findings + tool_findings
    else:
        findings = _unknown_keys(data, PAIR_PREFERENCE_KEYS, source, "a preference example")
        for key in sorted(PAIR_PREFERENCE_KEYS - set(data)):
            findings.append(_missing(key, source, "a preference example"))
        if findings:
            return None, findings
        raw_prompt = data["prompt"]
        if isinstance(raw_prompt, str):
            prompt, prompt_findings = [{"role": "user", "content": raw_prompt}], []
            if not raw_prompt.strip():
                prompt_findings = [error("missing_content", "'prompt' is empty", source)]
        else:
            prompt, prompt_findings = _parse_messages(raw_prompt, source, "prompt")
        tools = None
        chosen_key, rejected_key = "chosen", "rejected"
        findings += prompt_findings
    chosen, chosen_findings = _preference_side(data[chosen_key], chosen_key, source)
    rejected, rejected_findings = _preference_side(data[rejected_key], rejected_key, source)
    findings += chosen_findings + rejected_findings
    if any(f.severity == "error" for f in findings):
        return None, findings
    if chosen == rejected:
        findings.append(warning("identical_pair", "preferred and non-preferred answers are identical",
                                source, "a pair teaches nothing when both sides match"))
    return PreferenceRecord(prompt, chosen, rejected, source, tools), findings


PARSERS = {
    Format.CHAT: _parse_chat,
    Format.COMPLETION: _parse_completion,
    Format.TEXT: _parse_text,
    Format.PREFERENCE: _parse_preference,
    Format.REINFORCEMENT: _parse_reinforcement,
}
