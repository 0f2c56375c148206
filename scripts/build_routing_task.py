"""Write the quickstart's task: Brightloom's ticket routing slips, and a general chat
reference set for the forgetting probe.

    .venv/bin/python scripts/build_routing_task.py        # rewrites src/tunesmith/assets/data/routing/

The task is one a prompt cannot give reliably and a fine-tune learns from examples: each
customer message gets a one-line JSON routing slip in the house taxonomy,

    {"desk": "postroom", "urgency": "rush", "order": "BL-40213", "yarn": "HM-DK"}

desk      one of Brightloom's five desks, whose names say little on their own:
          postroom (delivery), ledger (money), keyring (accounts), mending (returns,
          damaged or wrong items), skein (questions about yarn and patterns)
urgency   "rush" when the customer names a date the order is needed by, else "normal"
order     the order number however it was written (#40213, bl40213, order no. 40213),
          in the house form BL-40213, or null
yarn      the stock code of the yarn the message names (initials and weight: Harbour
          Merino is HM-DK), or null

Three of the four fields are read from the customer's own message, so the slip of the most
similar past ticket (what retrieval shows) is wrong on them; the prompt names the fields but
not the house rules behind them, which the examples teach. Held-out tickets use phrasings
training never uses (NEW_PHRASINGS), so the desk has to be learnt, not looked up by wording.

Everything is generated from templates and a seeded random generator, so the files are
reproducible and hold no real customer data. Train and validation never share a message.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path
from typing import Any

ASSETS = Path(__file__).resolve().parent.parent / "src" / "tunesmith" / "assets"
SEED = 20
# The prompt states the slip's shape, so the baselines know what is asked; what it cannot give a
# model is the house rules behind each field, which the examples show.
SYSTEM = ("You are Brightloom's ticket router. Reply with the routing slip only: JSON with desk, "
          "urgency, order and yarn.")

NAMES = ["Amara", "Ben", "Chloe", "Dev", "Elif", "Finn", "Grace", "Hugo", "Ines", "Jonas", "Keiko", "Liam",
         "Maya", "Noor", "Oskar", "Priya", "Quinn", "Rosa", "Sam", "Tomas", "Uma", "Vera", "Wei", "Yara"]
# Brightloom's stock codes: the initials of the yarn's name, then its weight.
YARNS = {"Harbour Merino": "HM-DK", "Fellside Aran": "FA-AR", "Moss Stitch DK": "MS-DK",
         "Cloud Alpaca": "CA-LA", "Kelpie Sock": "KS-4P", "Meadow Cotton": "MC-DK",
         "Brambleberry Chunky": "BC-CH", "Saltmarsh Linen": "SL-4P"}
COLOURS = ["heather", "rust", "sea glass", "oatmeal", "plum", "storm grey", "marigold", "fern"]
WHERE = ["on my phone", "in the app", "on my laptop", "on the tablet", "in Safari", "at work"]
DEADLINES = ["for my sister's wedding on Saturday", "as a birthday present on Friday",
             "for a craft fair this weekend", "before my flight on Thursday", "for a baby shower tomorrow",
             "for a class I teach on Monday", "by the 14th for a gift", "for Christmas Eve"]

TEMPLATES: dict[str, list[str]] = {
    "postroom": [
        "Where is my parcel of {yarn}? It still says dispatched{order}.",
        "My {yarn} hasn't arrived yet{order}. Can you check where it is?",
        "The tracking link for my delivery hasn't moved in four days{order}.",
        "Can I change the delivery address{order}? I've moved house.",
        "The courier left a card but I was home all day{order}.",
        "How long does shipping {yarn} to Canada take{order}?",
        "My box was marked delivered but there's nothing at my door{order}.",
        "Could you send my {yarn} to my office instead{order}?",
    ],
    "ledger": [
        "I was charged twice for the same basket{order}.",
        "My discount code WINTER10 didn't come off the {yarn}{order}.",
        "When will my refund for the {yarn} reach my card{order}?",
        "Can I get an invoice with my company name on it{order}?",
        "The gift card I used shows no balance left, but I only spent half{order}.",
        "Why did my bank show a different amount from the checkout{order}?",
        "My payment for the {yarn} failed but the money left my account{order}.",
        "Can I pay the rest of my basket with a second card{order}?",
    ],
    "keyring": [
        "I can't log in {where}, the password reset email never comes.",
        "How do I change the email address on my account? I'm {where}.",
        "My account got locked {where} after too many tries.",
        "Please delete my account and my saved details, I can't find the button {where}.",
        "I signed up twice by mistake, can you merge the accounts{order}?",
        "The site keeps logging me out {where} when I open my wishlist.",
        "Where do I turn off the marketing emails? I looked {where}.",
        "My saved address disappeared from my profile{order}.",
    ],
    "mending": [
        "Two skeins of {yarn} arrived soaking wet{order}.",
        "You sent {colour} instead of the {yarn} colour I ordered{order}.",
        "I'd like to return the {yarn}, it's not for me{order}.",
        "One ball of {yarn} in my parcel is a different dye lot from the others{order}.",
        "The needles in my kit arrived snapped in half{order}.",
        "How do I get a return label for the {yarn}{order}?",
        "Half of my order is missing from the box{order}.",
        "Can I swap the {yarn} for a different colour{order}?",
    ],
    "skein": [
        "Is {yarn} soft enough for a baby blanket?",
        "Can I machine wash {yarn} in {colour}?",
        "How many skeins of {yarn} do I need for an adult jumper?",
        "Will {yarn} in {colour} be back in stock soon?",
        "What needle size suits {yarn}?",
        "Is {yarn} a good swap for a DK pattern?",
        "Does {yarn} pill much after washing?",
        "Would {yarn} in {colour} work for socks?",
    ],
}
# Held-out tickets are worded with these phrasings only, never seen in training: the same kinds of
# problem said in other words, as new tickets are. Looking up the most similar past ticket gets
# the desk wrong on about half of them (its words are the yarn, the greeting, the order); a model
# has to have learnt what each desk is for.
NEW_PHRASINGS: dict[str, list[str]] = {
    "postroom": [
        "Nothing has turned up yet and it's been two weeks since I paid for the {yarn}{order}.",
        "The parcel tracker says out for delivery since Monday{order}. Is it lost?",
        "Please redirect my package to my neighbour at number 12{order}.",
        "Do you post {yarn} to Ireland, and how quick is it{order}?",
        "The postman says the address label was smudged{order}.",
    ],
    "ledger": [
        "I see two identical payments on my statement for one order{order}.",
        "The promo code at checkout was rejected for the {yarn}{order}.",
        "I returned the {yarn} a month ago and still have no money back{order}.",
        "Could you send me a VAT receipt for my purchase{order}?",
        "My card was declined three times but the bank says it's fine{order}.",
    ],
    "keyring": [
        "I forgot my password and the reset link says it expired {where}.",
        "Can I change the name on my profile? I'm {where}.",
        "Two-step sign-in keeps rejecting my code {where}.",
        "I want to close my customer account for good, I'm {where}.",
        "My wishlist vanished after I signed in {where}.",
    ],
    "mending": [
        "The {yarn} came with a big knot and a cut strand{order}.",
        "I got the wrong yarn entirely, not the {yarn}{order}.",
        "Can I send back the {yarn}? It's unopened{order}.",
        "The box was crushed and two balls of {yarn} are ruined{order}.",
        "The pattern booklet was left out of my kit{order}.",
    ],
    "skein": [
        "Is {yarn} itchy on bare skin?",
        "What tension square should I expect with {yarn}?",
        "Would {yarn} in {colour} suit a summer top?",
        "Is {yarn} vegan, or does it contain wool?",
        "How much does {yarn} shrink in a hot wash?",
    ],
}
OPENERS = ["", "", "Hi, ", "Hello, ", "Hi there! ", "Morning, ", "Quick question: "]
ORDER_FORMS = ["order {n}", "order #{n}", "#{n}", "BL{n}", "bl-{n}", "order no. {n}", "order number {n}"]


def order_phrase(rng: random.Random) -> tuple[str, str | None]:
    """The order as the customer wrote it (for the template's {order}) and its house form."""
    if rng.random() < 0.2:
        return "", None
    n = rng.randint(10000, 99999)
    return f" ({rng.choice(ORDER_FORMS).format(n=n)})", f"BL-{n}"


def ticket(rng: random.Random, desk: str, templates: dict[str, list[str]]) -> tuple[str, dict[str, Any]]:
    template = rng.choice(templates[desk])
    written, order = order_phrase(rng) if "{order}" in template else ("", None)
    yarn = rng.choice(list(YARNS))
    text = template.format(order=written, yarn=yarn, colour=rng.choice(COLOURS), where=rng.choice(WHERE))
    urgency = "normal"
    can_rush = desk in ("postroom", "ledger", "mending") or "stock" in template
    if can_rush and rng.random() < 0.4:
        urgency = "rush"
        text = f"{text} I need it {rng.choice(DEADLINES)}."
    opener = rng.choice(OPENERS)
    if rng.random() < 0.5:
        text = f"{text} Thanks, {rng.choice(NAMES)}"
    if opener.endswith(", ") and not text.startswith("I"):
        text = text[0].lower() + text[1:]
    code = YARNS[yarn] if "{yarn}" in template else None
    return opener + text, {"desk": desk, "urgency": urgency, "order": order, "yarn": code}


def build(rng: random.Random, count: int, seen: set[str],
          templates: dict[str, list[str]]) -> list[dict[str, Any]]:
    rows = []
    desks = list(templates)
    while len(rows) < count:
        desk = desks[len(rows) % len(desks)]
        text, slip = ticket(rng, desk, templates)
        # Near-repeats (the same words but for the number or the name) would leak between
        # train and validation and inflate the held-out scores: one of each.
        key = re.sub(r"\d+|Thanks, \w+|^(Hi there!|Hi|Hello|Morning|Quick question:),? ", "", text).strip()
        key = key[0].lower() + key[1:]
        if key in seen:
            continue
        seen.add(key)
        rows.append({"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text},
                                  {"role": "assistant", "content": json.dumps(slip)}]})
    rng.shuffle(rows)
    return rows


GENERAL_CHAT = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many days are in a leap year?", "A leap year has 366 days."),
    ("What colour do you get by mixing blue and yellow?", "Mixing blue and yellow gives you green."),
    ("Why is the sky blue?", "Sunlight is scattered by the air, and blue light is scattered the most, "
                             "so the sky looks blue."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What is the boiling point of water?", "Water boils at 100 degrees Celsius at sea level."),
    ("Can you suggest a simple breakfast?", "Porridge with sliced banana and a little honey is quick, "
                                            "filling and simple to make."),
    ("What is the largest planet in our solar system?", "Jupiter is the largest planet in our solar system."),
    ("How do plants make their food?", "Plants make their food by photosynthesis: they use sunlight, water "
                                       "and carbon dioxide to make sugar and release oxygen."),
    ("What is 12 times 12?", "12 times 12 is 144."),
    ("Give me a tip for sleeping better.", "Try to go to bed at the same time every night and keep screens "
                                           "out of the bedroom."),
    ("Who wrote Romeo and Juliet?", "Romeo and Juliet was written by William Shakespeare."),
    ("What is the freezing point of water in Fahrenheit?", "Water freezes at 32 degrees Fahrenheit."),
    ("How can I keep cut flowers fresh?", "Trim the stems, change the water every two days and keep the vase "
                                          "away from direct sunlight."),
    ("What do bees make?", "Bees make honey and beeswax."),
    ("What is the opposite of hot?", "The opposite of hot is cold."),
    ("How many continents are there?", "There are seven continents."),
    ("What is a good way to learn a new language?", "Practise a little every day, listen to native "
                                                     "speakers and try to use new words in sentences."),
    ("Why do we have seasons?", "The Earth's axis is tilted, so each half of the planet gets more direct "
                                "sunlight for part of the year."),
    ("Name a fruit that is high in vitamin C.", "Oranges are high in vitamin C."),
    ("What is the tallest animal?", "The giraffe is the tallest animal."),
    ("How do I boil an egg?", "Place the egg in boiling water for about eight minutes, then cool it in cold "
                              "water before peeling."),
    ("What gas do humans breathe out?", "Humans breathe out carbon dioxide."),
    ("What is the main language spoken in Brazil?", "The main language spoken in Brazil is Portuguese."),
    ("How many minutes are in an hour?", "There are sixty minutes in an hour."),
    ("Write one sentence about autumn.", "In autumn the leaves turn red and gold and drift down from the "
                                         "trees."),
    ("What does a thermometer measure?", "A thermometer measures temperature."),
    ("What is the closest star to Earth?", "The closest star to Earth is the Sun."),
    ("Suggest a name for a pet goldfish.", "How about Bubbles?"),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au."),
]


def general_chat() -> list[dict[str, Any]]:
    """Everyday questions with plain answers, asked with no system prompt, as a chat model
    is used outside the task: the forgetting probe measures the loss of these answers."""
    return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in GENERAL_CHAT]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=120)
    parser.add_argument("--validation", type=int, default=30)
    parser.add_argument("--assets", type=Path, default=ASSETS)
    args = parser.parse_args()
    rng, seen = random.Random(SEED), set()
    train = build(rng, args.train, seen, TEMPLATES)
    validation = build(rng, args.validation, seen, NEW_PHRASINGS)
    write_jsonl(args.assets / "data" / "routing" / "train.jsonl", train)
    write_jsonl(args.assets / "data" / "routing" / "validation.jsonl", validation)
    write_jsonl(args.assets / "data" / "general_chat.jsonl", general_chat())


if __name__ == "__main__":
    main()
