"""The quickstart's bundled task: every routing slip follows the house rules the README states,
so a model can learn them from the examples; three of its four fields come from the customer's
own message, so a neighbour's slip is wrong on them; validation shares no ticket with training;
the files are what the seeded script writes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tunesmith

DATA = Path(tunesmith.__file__).parent / "assets" / "data"
DESKS = {"postroom", "ledger", "keyring", "mending", "skein"}
ROOT = Path(__file__).resolve().parents[2]
YARNS = {"Harbour Merino": "HM-DK", "Fellside Aran": "FA-AR", "Moss Stitch DK": "MS-DK",
         "Cloud Alpaca": "CA-LA", "Kelpie Sock": "KS-4P", "Meadow Cotton": "MC-DK",
         "Brambleberry Chunky": "BC-CH", "Saltmarsh Linen": "SL-4P"}


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / "routing" / name).read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("name", ["train.jsonl", "validation.jsonl"])
def test_every_slip_follows_the_house_rules(name: str) -> None:
    desks = set()
    for n, row in enumerate(rows(name), 1):
        _system, user, assistant = row["messages"]
        slip = json.loads(assistant["content"])
        assert list(slip) == ["desk", "urgency", "order", "yarn"], f"{name}:{n}"
        assert slip["desk"] in DESKS and slip["urgency"] in ("rush", "normal"), f"{name}:{n}"
        assert (slip["urgency"] == "rush") == ("I need it" in user["content"]), f"{name}:{n}"
        digits = re.findall(r"\d{5}", user["content"])
        assert slip["order"] == (f"BL-{digits[0]}" if digits else None), f"{name}:{n}"
        named = [code for yarn, code in YARNS.items() if yarn in user["content"]]
        assert slip["yarn"] == (named[0] if named else None), f"{name}:{n}"
        desks.add(slip["desk"])
    assert desks == DESKS


def test_a_neighbours_slip_is_mostly_wrong() -> None:
    # What retrieval copies: the slip of the most similar training ticket (here, the one sharing
    # the most words). Its urgency, order and yarn come from another customer's message, and
    # held-out tickets are worded in phrasings training never uses, so its desk is often wrong too.
    train = rows("train.jsonl")

    def words(row: dict) -> set[str]:
        return set(re.findall(r"[a-z]+", row["messages"][1]["content"].lower()))

    values = desks = 0
    held_out = rows("validation.jsonl")
    for row in held_out:
        want = json.loads(row["messages"][2]["content"])
        near = max(train, key=lambda t: len(words(t) & words(row)))
        got = json.loads(near["messages"][2]["content"])
        values += all(got[k] == want[k] for k in ("urgency", "order", "yarn"))
        desks += got["desk"] == want["desk"]
    assert values < len(held_out) / 2 and desks < len(held_out) * 2 / 3


def test_the_files_are_what_the_seeded_script_writes(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "build_routing_task.py"
    subprocess.run([sys.executable, str(script), "--assets", str(tmp_path)], check=True)
    for name in ("routing/train.jsonl", "routing/validation.jsonl", "general_chat.jsonl"):
        assert (tmp_path / "data" / name).read_bytes() == (DATA / name).read_bytes(), name


def phrasing(message: str, templates: dict[str, list[str]]) -> str | None:
    """The template a ticket was written from, or None."""
    for desk, texts in templates.items():
        for text in texts:
            fixed = [re.escape(part) for part in re.split(r"\{\w+\}", text)]
            if re.search("(?i)" + ".*".join(part for part in fixed if part), message):
                return f"{desk}: {text}"
    return None


def test_held_out_tickets_are_worded_in_phrasings_training_never_uses() -> None:
    # A held-out ticket shares no template with training, so the taxonomy has to be learnt:
    # looking up the most similar past ticket cannot find the desk by its wording.
    sys.path.insert(0, str(ROOT / "scripts"))
    from build_routing_task import NEW_PHRASINGS, TEMPLATES

    for n, row in enumerate(rows("validation.jsonl"), 1):
        message = row["messages"][1]["content"]
        assert phrasing(message, TEMPLATES) is None, f"validation.jsonl:{n}"
        found = phrasing(message, NEW_PHRASINGS)
        assert found and found.startswith(json.loads(row["messages"][2]["content"])["desk"]), n
    assert all(phrasing(r["messages"][1]["content"], TEMPLATES) for r in rows("train.jsonl"))


def test_validation_tickets_are_not_in_training() -> None:
    train = {r["messages"][1]["content"] for r in rows("train.jsonl")}
    assert not [r for r in rows("validation.jsonl") if r["messages"][1]["content"] in train]


def test_the_forgetting_set_is_general_chat_without_a_system_prompt() -> None:
    chats = [json.loads(line) for line in (DATA / "general_chat.jsonl").read_text().splitlines()]
    assert len(chats) >= 20
    assert all([m["role"] for m in c["messages"]] == ["user", "assistant"] for c in chats)
    assert not any("Brightloom" in m["content"] for c in chats for m in c["messages"])


def test_replay_is_the_scripts_prompts_and_none_is_in_the_forgetting_set() -> None:
    # The replayed chats hold the base model's everyday behaviour in place; a prompt shared with
    # the forgetting probe's reference set would train on what the probe measures.
    sys.path.insert(0, str(ROOT / "scripts"))
    from build_replay import EVERYDAY

    replay = rows("replay.jsonl")
    assert [r["messages"][0]["content"] for r in replay] == EVERYDAY
    assert all([m["role"] for m in r["messages"]] == ["user", "assistant"] for r in replay)
    assert all(r["messages"][1]["content"].strip() for r in replay)

    def words(text: str) -> str:
        return " ".join(re.findall(r"[a-z0-9]+", text.lower()))

    probed = {words(json.loads(line)["messages"][0]["content"])
              for name in ("general_chat.jsonl", "general_reference.jsonl")
              for line in (DATA / name).read_text().splitlines() if "messages" in json.loads(line)}
    assert probed and not probed & {words(p) for p in EVERYDAY}
