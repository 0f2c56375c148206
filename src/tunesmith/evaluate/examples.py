"""Held-out items: what a model is asked (the prompt), what it should answer (the
reference) and what graders may read (the item), plus the prompts of the few-shot and
retrieval baselines built from training examples."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.data.load import load_dataset
from tunesmith.data.records import (
    ChatRecord,
    CompletionRecord,
    Message,
    Record,
    ReinforcementRecord,
    TextRecord,
)
from tunesmith.errors import DataError
from tunesmith.evaluate.bm25 import BM25

ASSETS = Path(__file__).resolve().parent.parent / "assets"
BUNDLED_DATA = {"tunesmith/general": ASSETS / "data" / "general_reference.jsonl"}


def resolve_data(path: str) -> Path:
    """A data path, or the name of a bundled set such as tunesmith/general."""
    if path in BUNDLED_DATA:
        return BUNDLED_DATA[path]
    found = Path(path).expanduser().resolve()
    if not found.exists():
        raise DataError(f"file not found: {path}",
                        fix=f"give a JSONL/CSV/Parquet file, or one of: {', '.join(BUNDLED_DATA)}")
    return found


@dataclass(slots=True)
class Item:
    """One held-out example."""

    index: int
    source: str
    record: Record
    prompt: list[Message] | None  # None: nothing to generate (raw text or completion data)
    reference: str | None
    fields: dict[str, Any] = field(default_factory=dict)
    tool_calls: list[dict[str, Any]] | None = None
    """The reference reply's tool calls (OpenAI's shape), for the tool-call graders."""

    @property
    def tools(self) -> list[dict[str, Any]] | None:
        """The tools the example's conversation declares, given to the template when it is asked."""
        return getattr(self.record, "tools", None) or None

    @property
    def grader_item(self) -> dict[str, Any]:
        """What graders see as `item`: the extra fields, the prompt, the reference reply's text
        and its tool calls."""
        return {**self.fields, "messages": self.prompt or [], "reference": self.reference,
                "tool_calls": self.tool_calls or []}

    @property
    def has_reference_text(self) -> bool:
        return self.prompt is not None and bool((self.reference or "").strip())

    @property
    def has_reference_calls(self) -> bool:
        return self.prompt is not None and bool(self.tool_calls)

    @property
    def has_loss(self) -> bool:
        return not isinstance(self.record, ReinforcementRecord)

    def question(self) -> str:
        """The last user turn (or the text), for previews and retrieval."""
        if self.prompt:
            return user_text(self.prompt[-1:]) or user_text(self.prompt)
        if isinstance(self.record, CompletionRecord):
            return self.record.prompt
        return self.record.text if isinstance(self.record, TextRecord) else ""


def user_text(messages: list[Message]) -> str:
    return "\n".join(_content(m) for m in messages if m.get("role") == "user")


def _content(message: Message) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def to_item(index: int, record: Record) -> Item:
    if isinstance(record, ChatRecord):
        messages = [{k: v for k, v in m.items() if k != "weight"} for m in record.messages]
        if messages[-1]["role"] == "assistant" and record.messages[-1].get("weight", 1):
            return Item(index, str(record.source), record, messages[:-1], _content(messages[-1]),
                        tool_calls=messages[-1].get("tool_calls") or None)
        return Item(index, str(record.source), record, messages, None)
    if isinstance(record, ReinforcementRecord):
        reference = record.fields.get("reference")
        return Item(index, str(record.source), record, list(record.messages),
                    reference if isinstance(reference, str) else None, dict(record.fields))
    if isinstance(record, CompletionRecord):
        return Item(index, str(record.source), record, None, record.completion)
    if isinstance(record, TextRecord):
        return Item(index, str(record.source), record, None, None)
    raise DataError(f"{record.format} examples cannot be evaluated yet", where=str(record.source),
                    fix="evaluate chat, completion, text or reinforcement data")


def load_items(path: str | Path | list[Record], fmt: str = "auto", limit: int | None = None,
               seed: int = 0) -> list[Item]:
    """Items of a dataset (a path, or records already loaded); at most `limit`, a seeded
    sample kept in file order."""
    records = path if isinstance(path, list) else load_dataset(str(path), fmt).records
    indices = list(range(len(records)))
    if limit is not None and len(indices) > limit:
        indices = sorted(random.Random(seed).sample(indices, limit))
    return [to_item(i, records[i]) for i in indices]


# --- baselines built from training examples ---------------------------------------------------


def shot_messages(record: Record) -> list[Message]:
    """A training example as demonstration turns (no system message, nothing trained)."""
    if isinstance(record, ChatRecord):
        return [{"role": m["role"], "content": m.get("content") or ""} for m in record.messages
                if m["role"] in ("user", "assistant") and m.get("content")]
    if isinstance(record, CompletionRecord):
        return [{"role": "user", "content": record.prompt},
                {"role": "assistant", "content": record.completion}]
    return []


def with_shots(prompt: list[Message], shots: list[list[Message]]) -> list[Message]:
    """The prompt with demonstration turns placed after its leading system messages."""
    lead = 0
    while lead < len(prompt) and prompt[lead]["role"] in ("system", "developer"):
        lead += 1
    return [*prompt[:lead], *(m for shot in shots for m in shot), *prompt[lead:]]


class ShotPicker:
    """Demonstrations for the few-shot (seeded draw) and retrieval (BM25) baselines."""

    def __init__(self, train: list[Record], seed: int = 0):
        self.shots = [s for s in (shot_messages(r) for r in train) if s]
        self.seed = seed
        self._index: BM25 | None = None

    def fewshot(self, k: int) -> list[list[Message]]:
        """The same k examples for every item, as one would write a few-shot prompt."""
        rng = random.Random(self.seed)
        return rng.sample(self.shots, min(k, len(self.shots)))

    def retrieved(self, query: str, k: int) -> list[list[Message]]:
        """The k most similar training examples by their user turns, the most similar last
        (closest to the question)."""
        if self._index is None:
            self._index = BM25([user_text(s) for s in self.shots])
        return [self.shots[i] for i in reversed(self._index.top(query, k))]
