"""Dataset versions: one canonical JSONL per content, so the same data is one version.

Each record that parses is written back in its format's canonical row shape (chat,
prompt/completion, text, OpenAI preference, reinforcement) as JSON with sorted keys
and no whitespace. Whitespace, key order, CRLF, a BOM or CSV-vs-JSONL therefore do not
change the hash; the order of examples does (it changes training). The canonical file
is loadable by tunesmith.data.load, so a version can be trained or evaluated on after
its original file has moved or changed.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.data.records import (
    ChatRecord,
    CompletionRecord,
    PreferenceRecord,
    Record,
    ReinforcementRecord,
    TextRecord,
)


def canonical_row(record: Record) -> dict[str, Any]:
    """The record's fields in the row shape its format is read from (source line dropped)."""
    if isinstance(record, ChatRecord):
        return {"messages": record.messages, **({"tools": record.tools} if record.tools else {})}
    if isinstance(record, CompletionRecord):
        return {"prompt": record.prompt, "completion": record.completion}
    if isinstance(record, TextRecord):
        return {"text": record.text}
    if isinstance(record, PreferenceRecord):
        prompt: dict[str, Any] = {"messages": record.prompt}
        if record.tools:
            prompt["tools"] = record.tools
        return {"input": prompt, "preferred_output": record.chosen,
                "non_preferred_output": record.rejected}
    if isinstance(record, ReinforcementRecord):
        row = {**record.fields, "messages": record.messages}
        if record.tools:
            row["tools"] = record.tools
        return row
    raise TypeError(f"unknown record type {type(record).__name__}")


def canonical_line(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def example_hash(line: str) -> str:
    return hashlib.sha256(line.encode("utf-8")).hexdigest()


@dataclass(slots=True)
class Canonical:
    """A dataset reduced to its canonical lines, with what parsing found on the way."""

    lines: list[str]
    format: str | None
    errors: int = 0
    warnings: int = 0
    finding_codes: dict[str, int] = field(default_factory=dict)

    @property
    def content(self) -> bytes:
        return "".join(line + "\n" for line in self.lines).encode("utf-8")

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


def canonicalise(path: str | Path, fmt: str = "auto") -> Canonical:
    from tunesmith.data.load import iter_parsed

    lines: list[str] = []
    formats: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    errors = warnings = 0
    for parsed in iter_parsed(path, fmt):
        for finding in parsed.findings:
            codes[finding.code] += 1
            errors += finding.severity == "error"
            warnings += finding.severity == "warning"
        if parsed.record is not None:
            lines.append(canonical_line(canonical_row(parsed.record)))
            formats[str(parsed.record.format)] += 1
    fmt_name = formats.most_common(1)[0][0] if formats else None
    return Canonical(lines, fmt_name, errors, warnings, dict(codes))


# --- diff -----------------------------------------------------------------------------


def prompt_key(row: dict[str, Any]) -> str | None:
    """What identifies "the same question": the first user message, or the prompt.

    Text examples have no question, so they are only ever added or removed.
    """
    if "prompt" in row and isinstance(row["prompt"], str):
        return row["prompt"]
    messages = row.get("messages") or (row.get("input") or {}).get("messages") or []
    for message in messages:
        if message.get("role") == "user":
            return json.dumps(message.get("content"), sort_keys=True, ensure_ascii=False)
    return None


@dataclass(slots=True)
class DatasetDiff:
    added: list[dict[str, Any]]
    removed: list[dict[str, Any]]
    changed: list[tuple[dict[str, Any], dict[str, Any]]]
    unchanged: int

    def to_dict(self) -> dict[str, Any]:
        return {"added": self.added, "removed": self.removed, "unchanged": self.unchanged,
                "changed": [{"before": a, "after": b} for a, b in self.changed]}


def diff_lines(old: Iterable[str], new: Iterable[str]) -> DatasetDiff:
    """Examples by content hash; a removed and an added example with the same prompt
    key are one "changed" example (same question, different answer)."""
    old_by_hash = {example_hash(line): line for line in old}
    new_by_hash = {example_hash(line): line for line in new}
    removed = [json.loads(old_by_hash[h]) for h in old_by_hash if h not in new_by_hash]
    added = [json.loads(new_by_hash[h]) for h in new_by_hash if h not in old_by_hash]
    unchanged = sum(1 for h in new_by_hash if h in old_by_hash)
    removed_by_key: dict[str, list[dict[str, Any]]] = {}
    for row in removed:
        key = prompt_key(row)
        if key is not None:
            removed_by_key.setdefault(key, []).append(row)
    changed: list[tuple[dict[str, Any], dict[str, Any]]] = []
    still_added: list[dict[str, Any]] = []
    paired: set[int] = set()
    for row in added:
        key = prompt_key(row)
        candidates = removed_by_key.get(key, []) if key is not None else []
        if candidates:
            before = candidates.pop(0)
            paired.add(id(before))
            changed.append((before, row))
        else:
            still_added.append(row)
    still_removed = [row for row in removed if id(row) not in paired]
    return DatasetDiff(still_added, still_removed, changed, unchanged)


def read_lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield line.rstrip("\n")
