"""Two small tasks for advise on the bundled tiny model (seeded, built in the test):

- pets: each held-out question asks a fact (the name of someone's pet) that only the training
  examples about the same owner hold: retrieval finds them, a random few-shot draw does not.
- support: Brightloom's bundled support chats, where every reply is in the house voice of
  "Wren": a behaviour that random and retrieved examples show alike.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OWNERS = ("Lily", "Tim", "Sue", "Ben", "Anna", "Max", "Mia", "Sam", "Lucy", "Jack", "Zoe", "Tom", "Emma",
          "Leo", "Ella", "Jake")
PETS = ("Spot", "Fluffy", "Rex", "Bella", "Coco", "Pip", "Bubbles", "Ziggy", "Daisy", "Buddy", "Mittens",
        "Rocky", "Sunny", "Shadow", "Peanut", "Snowy")
KINDS = ("dog", "cat", "bird", "fish")
QUESTIONS = ("What is the name of {o}'s {k}?", "What did {o} call the {k}?",
             "Tell me the name of the {k} of {o}.", "{o} has a {k}. What is its name?")


def pets(seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, heldout): three phrasings of each owner's question in training, the fourth held out."""
    rng = random.Random(seed)
    names = list(PETS)
    rng.shuffle(names)
    train, heldout = [], []
    for owner, pet in zip(OWNERS, names, strict=True):
        kind = rng.choice(KINDS)
        rows = [{"messages": [{"role": "user", "content": q.format(o=owner, k=kind)},
                              {"role": "assistant", "content": f"{owner}'s {kind} is named {pet}."}]}
                for q in QUESTIONS]
        train += rows[:3]
        heldout.append(rows[3])
    rng.shuffle(train)
    return train, heldout


def support(assets: Path, train: int = 60, heldout: int = 10) -> tuple[list[dict], list[dict]]:
    def rows(name: str, count: int) -> list[dict]:
        lines = (assets / "data" / "support" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines[:count]]
    return rows("train", train), rows("validation", heldout)
