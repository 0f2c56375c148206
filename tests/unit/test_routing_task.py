"""The quickstart's bundled task: every routing slip follows the house rules the README states,
so a model can learn them from the examples, and validation shares no ticket with training."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import tunesmith

DATA = Path(tunesmith.__file__).parent / "assets" / "data"
DESKS = {"postroom", "ledger", "keyring", "mending", "skein"}


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / "routing" / name).read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("name", ["train.jsonl", "validation.jsonl"])
def test_every_slip_follows_the_house_rules(name: str) -> None:
    desks = set()
    for n, row in enumerate(rows(name), 1):
        _system, user, assistant = row["messages"]
        slip = json.loads(assistant["content"])
        assert list(slip) == ["desk", "urgency", "order"], f"{name}:{n}"
        assert slip["desk"] in DESKS and slip["urgency"] in ("rush", "normal"), f"{name}:{n}"
        assert (slip["urgency"] == "rush") == ("I need it" in user["content"]), f"{name}:{n}"
        digits = re.findall(r"\d{5}", user["content"])
        assert slip["order"] == (f"BL-{digits[0]}" if digits else None), f"{name}:{n}"
        desks.add(slip["desk"])
    assert desks == DESKS


def test_validation_tickets_are_not_in_training() -> None:
    train = {r["messages"][1]["content"] for r in rows("train.jsonl")}
    assert not [r for r in rows("validation.jsonl") if r["messages"][1]["content"] in train]


def test_the_forgetting_set_is_general_chat_without_a_system_prompt() -> None:
    chats = [json.loads(line) for line in (DATA / "general_chat.jsonl").read_text().splitlines()]
    assert len(chats) >= 20
    assert all([m["role"] for m in c["messages"]] == ["user", "assistant"] for c in chats)
    assert not any("Brightloom" in m["content"] for c in chats for m in c["messages"])
