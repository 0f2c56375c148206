"""Tool calls in a model's reply, as OpenAI `tool_calls`.

Written here because each model family writes calls in its own text format and no
well-kept library reads them outside a serving engine. Read:
- Hermes / Qwen: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, one or more;
- Llama 3: the whole reply one JSON call `{"name": ..., "parameters": {...}}` (or a list);
- Mistral: `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`.
Only functions the request declared are calls; anything else stays the reply's text.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"
_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
_JSON_PREFIXES = ("<|python_tag|>", "[TOOL_CALLS]")


def call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _call(value: Any, names: set[str]) -> dict[str, Any] | None:
    """One OpenAI tool call from a parsed {"name", "arguments"|"parameters"} object."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or value["name"] not in names:
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):  # already JSON text (templates that write it unchanged)
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    return {"id": call_id(), "type": "function",
            "function": {"name": value["name"], "arguments": json.dumps(arguments, ensure_ascii=False)}}


def _json_calls(text: str, names: set[str]) -> list[dict[str, Any]] | None:
    """The reply as a whole as JSON calls (Llama 3, Mistral); None unless every item is a call."""
    body = text.strip()
    for prefix in _JSON_PREFIXES:
        body = body.removeprefix(prefix).strip()
    if not body.startswith(("{", "[")):
        return None
    try:
        value = json.loads(body)
    except json.JSONDecodeError:
        return None
    items = value if isinstance(value, list) else [value]
    calls = [_call(item, names) for item in items]
    if not calls or any(c is None for c in calls):
        return None
    return [c for c in calls if c is not None]


def parse_tool_calls(text: str, names: set[str]) -> tuple[str | None, list[dict[str, Any]]]:
    """The reply's remaining text (None when nothing is left) and its tool calls."""
    calls = _json_calls(text, names)
    if calls is not None:
        return None, calls
    calls, kept, cursor = [], [], 0
    for match in _HERMES.finditer(text):
        try:
            call = _call(json.loads(match.group(1)), names)
        except json.JSONDecodeError:
            call = None
        if call is None:
            continue  # not a call of a declared function: it stays in the text
        kept.append(text[cursor:match.start()])
        cursor = match.end()
        calls.append(call)
    kept.append(text[cursor:])
    content = "".join(kept).strip() if calls else text
    return (content or None), calls


@dataclass(slots=True)
class ToolCallStream:
    """Streams a reply's text while holding back whatever may be a tool call, so a client
    never sees half a call as content; the calls are read once the reply is complete.

    A reply that starts (after whitespace) like a JSON call is held whole; otherwise text
    is sent up to any `<tool_call>` (or the start of one at the end of what came so far)."""

    names: set[str]
    text: str = ""
    sent: int = 0
    held: bool = False
    started: bool = False

    def feed(self, piece: str) -> str:
        self.text += piece
        if self.held:
            return ""
        if not self.started:
            head = self.text.lstrip()
            if head.startswith(("{", "[", *_JSON_PREFIXES)):
                self.held = True
                return ""
            if not head or any(p.startswith(head) for p in _JSON_PREFIXES):
                return ""  # too short yet to tell a call from text
            self.started = True
        start = self.text.find(HERMES_OPEN, self.sent)
        if start >= 0:
            self.held = True
            return self._send(start)
        return self._send(len(self.text) - _partial(self.text, HERMES_OPEN))

    def _send(self, end: int) -> str:
        out = self.text[self.sent:end] if end > self.sent else ""
        self.sent = max(self.sent, end)
        return out

    def finish(self) -> tuple[str, list[dict[str, Any]]]:
        """The text not sent yet, and the calls. What was sent is never part of a call (sending
        stops where one may start), so only the rest is read for calls."""
        content, calls = parse_tool_calls(self.text[self.sent:], self.names)
        if not calls:
            return self._send(len(self.text)), []
        self.sent = len(self.text)
        return content or "", calls


def _partial(text: str, marker: str) -> int:
    """Length of the longest tail of `text` that is a proper prefix of `marker`."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0
