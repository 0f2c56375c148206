"""Typed records: what every supported dataset shape becomes after loading.

Each record keeps its `Source` (file and line) so any later finding, error or
per-example metric can point the user back at the exact line they wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

Message = dict[str, Any]
"""One chat message in OpenAI's shape: role, content, and optional name, tool_calls,
tool_call_id and weight (0 or 1, assistant messages only)."""


class Format(StrEnum):
    CHAT = "chat"
    COMPLETION = "completion"
    TEXT = "text"
    PREFERENCE = "preference"
    REINFORCEMENT = "reinforcement"


@dataclass(frozen=True, slots=True)
class Source:
    """Where a record came from: a file and a 1-based line (or row) number."""

    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(slots=True)
class ChatRecord:
    messages: list[Message]
    source: Source
    tools: list[dict[str, Any]] | None = None
    format: Format = Format.CHAT


@dataclass(slots=True)
class CompletionRecord:
    prompt: str
    completion: str
    source: Source
    format: Format = Format.COMPLETION


@dataclass(slots=True)
class TextRecord:
    text: str
    source: Source
    format: Format = Format.TEXT


@dataclass(slots=True)
class PreferenceRecord:
    """A prompt (as messages) with a preferred and a non-preferred assistant answer."""

    prompt: list[Message]
    chosen: list[Message]
    rejected: list[Message]
    source: Source
    tools: list[dict[str, Any]] | None = None
    format: Format = Format.PREFERENCE


@dataclass(slots=True)
class ReinforcementRecord:
    """Prompt messages plus free-form fields (reference answers, labels) that graders read."""

    messages: list[Message]
    source: Source
    fields: dict[str, Any] = field(default_factory=dict)
    tools: list[dict[str, Any]] | None = None
    format: Format = Format.REINFORCEMENT


Record = ChatRecord | CompletionRecord | TextRecord | PreferenceRecord | ReinforcementRecord
