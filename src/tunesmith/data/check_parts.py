"""The bounded containers one pass of the dataset check keeps (a finding log, integer columns,
sources, the trained-token sample) and the texts of a record it fingerprints and scans."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from tunesmith.data.findings import Finding
from tunesmith.data.records import (
    ChatRecord,
    CompletionRecord,
    PreferenceRecord,
    Record,
    ReinforcementRecord,
    Source,
    TextRecord,
)

MAX_LOCATIONS = 20
"""Findings kept per code; the rest are counted."""


class FindingLog:
    """Keeps the first MAX_LOCATIONS findings of each code and counts all of them."""

    def __init__(self, keep: int = MAX_LOCATIONS):
        self.keep = keep
        self.kept: dict[str, list[Finding]] = {}
        self.counts: Counter[str] = Counter()

    def add(self, finding: Finding) -> None:
        self.counts[finding.code] += 1
        kept = self.kept.setdefault(finding.code, [])
        if len(kept) < self.keep:
            kept.append(finding)

    def add_many(self, code: str, total: int, make: Callable[[int], Finding]) -> None:
        """`total` findings of one code, building only the ones kept."""
        if total <= 0:
            return
        for index in range(min(total, self.keep)):
            self.add(make(index))
        self.counts[code] += max(0, total - self.keep)

    def extend(self, other: FindingLog) -> None:
        for code, kept in other.kept.items():
            for finding in kept:
                self.add(finding)
            self.counts[code] += other.counts[code] - len(kept)

    def findings(self) -> list[Finding]:
        return [finding for kept in self.kept.values() for finding in kept]


class IntColumn:
    """A growing column of integers stored as numpy chunks (8 bytes a value, not ~36)."""

    def __init__(self, flush_at: int = 65_536):
        self._flush_at = flush_at
        self._buffer: list[int] = []
        self._chunks: list[np.ndarray] = []

    def append(self, value: int) -> None:
        self._buffer.append(value)
        if len(self._buffer) >= self._flush_at:
            self._chunks.append(np.asarray(self._buffer, dtype=np.int64))
            self._buffer = []

    def array(self) -> np.ndarray:
        if self._buffer:
            self._chunks.append(np.asarray(self._buffer, dtype=np.int64))
            self._buffer = []
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0] if self._chunks else np.zeros(0, dtype=np.int64)


class Sources:
    """file:line of every example, as two integer columns and a short list of paths."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self._ids: dict[str, int] = {}
        self._files = IntColumn()
        self._lines = IntColumn()
        self._frozen: tuple[np.ndarray, np.ndarray] | None = None

    def add(self, source: Source) -> None:
        file_id = self._ids.setdefault(source.path, len(self.paths))
        if file_id == len(self.paths):
            self.paths.append(source.path)
        self._files.append(file_id)
        self._lines.append(source.line)

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._frozen is None:
            self._frozen = (self._files.array(), self._lines.array())
        return self._frozen

    def where(self, index: int) -> str:
        files, lines = self._arrays()
        return f"{self.paths[files[index]]}:{lines[index]}"

    def ref(self, index: int, seen_from: int) -> str:
        """'line N' when in the same file as example `seen_from`, else file:line."""
        files, lines = self._arrays()
        if files[index] == files[seen_from]:
            return f"line {lines[index]}"
        return self.where(index)


class TrainedSample:
    """Exact trained-token counts for an evenly spread, bounded sample of examples.

    Every example is taken until `limit` are held; then the stride doubles and only
    examples at multiples of it are kept, so the sample always spans the whole file.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.stride = 1
        self._index: list[int] = []
        self._tokens: list[int] = []
        self._trained: list[int] = []

    def wants(self, index: int) -> bool:
        return index % self.stride == 0

    def add(self, index: int, tokens: int, trained: int) -> None:
        self._index.append(index)
        self._tokens.append(tokens)
        self._trained.append(trained)
        if len(self._index) > self.limit:
            self.stride *= 2
            keep = [k for k, i in enumerate(self._index) if i % self.stride == 0]
            self._index = [self._index[k] for k in keep]
            self._tokens = [self._tokens[k] for k in keep]
            self._trained = [self._trained[k] for k in keep]

    @property
    def exact(self) -> bool:
        return self.stride == 1

    def trained(self, total_tokens: int) -> int:
        if self.exact:
            return sum(self._trained)
        sampled = sum(self._tokens)
        return round(total_tokens * sum(self._trained) / sampled) if sampled else 0


# --- what is in a record -------------------------------------------------------------


def record_texts(record: Record) -> Iterator[tuple[str, str, str]]:
    """(field path, role or field name, text) for every piece of text in a record."""
    if isinstance(record, CompletionRecord):
        yield "prompt", "prompt", record.prompt
        yield "completion", "completion", record.completion
    elif isinstance(record, TextRecord):
        yield "text", "text", record.text
    elif isinstance(record, PreferenceRecord):
        yield from _message_texts(record.prompt, "prompt")
        yield from _message_texts(record.chosen, "chosen", tag="chosen")
        yield from _message_texts(record.rejected, "rejected", tag="rejected")
    elif isinstance(record, ChatRecord | ReinforcementRecord):
        yield from _message_texts(record.messages, "messages")
        if isinstance(record, ReinforcementRecord):
            for key, value in record.fields.items():
                text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
                yield key, key, text


def _message_texts(messages: list[dict[str, Any]], key: str,
                   tag: str | None = None) -> Iterator[tuple[str, str, str]]:
    for index, message in enumerate(messages):
        role = tag or message["role"]
        if message.get("content"):
            yield f"{key}[{index}]", role, message["content"]
        if message.get("tool_calls"):
            calls = json.dumps(message["tool_calls"], sort_keys=True)
            yield f"{key}[{index}].tool_calls", role, calls


def fingerprint_texts(texts: list[tuple[str, str, str]]) -> tuple[str, str]:
    """The text compared for exact repeats, and for near repeats the same without system
    prompts (shared by many examples, they would make every pair look alike)."""
    exact = "\n".join(f"{role}: {text}" for _, role, text in texts)
    near = "\n".join(text for _, role, text in texts if role not in ("system", "developer"))
    return exact, near or exact
