"""Write the quickstart's replay set: SmolLM2-135M-Instruct's own replies to everyday prompts.

    .venv/bin/tunesmith models pull smollm2-135m-instruct      # once
    .venv/bin/python scripts/build_replay.py                   # rewrites assets/data/routing/replay.jsonl

Tuning on routing slips alone teaches the model to answer everything with a slip, and its
loss on everyday answers (the forgetting probe) rises. Mixing these chats into training
(the recipe's data.replay) keeps its everyday behaviour where it was: on their tokens the
tuned model is trained towards the base model's own next-token distribution (KL, see
train/objectives/sft.py), so the replies are only the contexts where that is measured. They
are the base model's greedy replies, cut to whole sentences within 48 tokens: short, like the
answers the probe reads, and cheap to train on. None of these prompts is in the forgetting
probe's reference set (tests/unit/test_routing_task.py checks).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "src" / "tunesmith" / "assets" / "data" / "routing" / "replay.jsonl"
MODEL = "smollm2-135m-instruct"
MAX_NEW_TOKENS = 48
SEED = 0
EVERYDAY = [
    "What is the capital of Japan?", "How many hours are in a day?", "What do cows eat?",
    "Why do leaves change colour in autumn?", "How many sides does a hexagon have?",
    "What is the largest ocean on Earth?", "Can you suggest a quick lunch idea?",
    "Who painted the Mona Lisa?", "What is 7 times 8?", "How do I make a cup of tea?",
    "What is the smallest planet in our solar system?", "Give me a tip for staying focused while studying.",
    "What is the opposite of early?", "How many weeks are in a year?", "Why do birds migrate?",
    "What is the main ingredient in guacamole?", "Name an animal that lives in the Arctic.",
    "How does a rainbow form?", "What is the chemical symbol for water?", "Write one sentence about the sea.",
    "What is a synonym for happy?", "How do I keep a houseplant healthy?",
    "What is the longest river in Africa?", "Why do we need sleep?", "What is the speed of sound roughly?",
    "Suggest a name for a pet rabbit.", "How many players are on a football team?",
    "What does a compass show?", "What language is spoken in Mexico?",
    "How can I save money on groceries?", "What is the square root of 81?", "Who discovered penicillin?",
    "What do caterpillars turn into?", "How many strings does a violin have?", "What causes thunder?",
    "Give me an idea for a rainy afternoon.", "What is the capital of Canada?", "How do magnets work?",
    "What is the hottest planet?", "Write a short greeting for a birthday card.", "What are clouds made of?",
    "How many bones are in the human body?", "What is the currency of the United Kingdom?",
    "How do I make my bike chain last longer?", "What is photosynthesis in one sentence?",
    "Which fruit is known for having its seeds on the outside?", "How do I remove a coffee stain?",
    "What is the tallest mountain in the world?",
]


def whole_sentences(text: str, finished: bool) -> str:
    """A reply cut off at the token limit ends at its last full sentence (not mid-word)."""
    text = text.strip()
    if finished:
        return text
    ends = list(re.finditer(r"[.!?](?=\s|$)", text))
    return text[: ends[-1].end()] if ends else text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    from tunesmith.model.generation import Sampling, generate
    from tunesmith.model.inference import load_trained

    loaded = load_trained(MODEL)
    done = generate(loaded, [[{"role": "user", "content": p}] for p in EVERYDAY],
                    Sampling(max_new_tokens=MAX_NEW_TOKENS))
    with args.out.open("w", encoding="utf-8") as out:
        for prompt, [reply] in zip(EVERYDAY, done, strict=True):
            answer = whole_sentences(reply.text, reply.finish_reason == "stop")
            out.write(json.dumps({"messages": [{"role": "user", "content": prompt},
                                               {"role": "assistant", "content": answer}]}) + "\n")
    print(f"wrote {len(EVERYDAY)} chats to {args.out}")


if __name__ == "__main__":
    main()
