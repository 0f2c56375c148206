#!/usr/bin/env python
"""Build the sample datasets and the tiny base model that ship in ``tunesmith/assets``.

Everything is generated from text written in this file (templates + seeded random choices), so
the build needs no network and is reproducible: same seed, same bytes. The tiny model exists so
that the quickstart and the test-suite can run a real fine-tune on a laptop CPU in seconds.

Usage::

    python scripts/build_assets.py               # data + model (~3 minutes on 2 CPU cores)
    python scripts/build_assets.py --data-only   # only the JSONL datasets
    python scripts/build_assets.py --model-only  # only the tokenizer + model

Outputs replace ``assets/data/`` and ``assets/models/tiny-chat/`` wholesale; other files under
``assets/`` are left alone.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asset_phrases import (
    ACKS,
    ASSETS,
    COLOURS,
    INTENTS,
    SEED,
    SIGN_OFF,
    SUPPORT_SYSTEM,
    TRIAGE_CATEGORIES,
    TRIAGE_SYSTEM,
    YARNS,
    Intent,
    Message,
    curt_reply,
    fill,
    house_reply,
    make_ask,
    word_count,
)
from tiny_chat_model import build_model, render_chatml

# --------------------------------------------------------------------------------------------
# Dataset builders
# --------------------------------------------------------------------------------------------


def unique_pool(
    rng: random.Random, n: int, make: Callable[[random.Random], tuple[Any, list[str]] | None]
) -> list[Any]:
    """Draw ``n`` examples whose prompt texts never repeat, so any split is disjoint."""
    seen: set[str] = set()
    out: list[Any] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > n * 200:
            raise RuntimeError(f"could not draw {n} unique examples")
        made = make(rng)
        if made is None:
            continue
        example, keys = made
        norm = [k.strip().lower() for k in keys]
        if any(k in seen for k in norm):
            continue
        seen.update(norm)
        out.append(example)
    return out


def split(items: list[Any], n_val: int) -> tuple[list[Any], list[Any]]:
    """Last ``n_val`` items are validation (the pool is already randomly ordered)."""
    return items[:-n_val], items[-n_val:]


def support_example(rng: random.Random) -> tuple[dict[str, Any], list[str]] | None:
    """One SFT chat; ~15% are two-turn, a few with an off-voice first reply at weight 0."""
    first = make_ask(rng, rng.choice(INTENTS))
    messages: list[Message] = [
        {"role": "system", "content": SUPPORT_SYSTEM},
        {"role": "user", "content": first.text},
    ]
    if rng.random() < 0.15:
        # Second question from the same customer: same name/signing, different intent.
        second_intent = rng.choice([i for i in INTENTS if i is not first.intent])
        second = make_ask(rng, second_intent, sign=False)
        second.slots["name"] = first.slots["name"]
        second.signed = first.signed
        follow = f"{rng.choice(ACKS)} {second.text}"
        if rng.random() < 0.25:
            # An earlier reply from an old bot: kept as context but not learned from.
            messages.append({"role": "assistant", "content": curt_reply(rng, first), "weight": 0})
        else:
            messages.append({"role": "assistant", "content": house_reply(rng, first)})
        messages.append({"role": "user", "content": follow})
        messages.append({"role": "assistant", "content": house_reply(rng, second)})
        keys = [first.text, follow]
    else:
        messages.append({"role": "assistant", "content": house_reply(rng, first)})
        keys = [first.text]
    if word_count(messages) > 120:
        return None
    return {"messages": messages}, keys


def preference_example(rng: random.Random) -> tuple[dict[str, Any], list[str]]:
    """One DPO pair: same facts, house voice preferred over the curt unsigned reply."""
    ask = make_ask(rng, rng.choice(INTENTS))
    prompt: list[Message] = [{"role": "user", "content": ask.text}]
    if rng.random() < 0.9:
        prompt.insert(0, {"role": "system", "content": SUPPORT_SYSTEM})
    return {
        "input": {"messages": prompt},
        "preferred_output": [{"role": "assistant", "content": house_reply(rng, ask)}],
        "non_preferred_output": [{"role": "assistant", "content": curt_reply(rng, ask)}],
    }, [ask.text]


GENERIC_SUBJECTS = ("Help please", "Question", "Urgent", "Hello", "Order query", "Quick question")


def ticket_example(rng: random.Random, intent: Intent) -> tuple[dict[str, Any], list[str]]:
    """One triage ticket: a customer message dressed as an e-mail, labelled by category."""
    ask = make_ask(rng, intent)
    style = rng.randrange(5)
    text = ask.text
    if style == 0:
        text = f"Subject: {intent.subject}\n\n{text}"
    elif style == 1:
        text = f"Subject: {rng.choice(GENERIC_SUBJECTS)}\n\n{text}"
    elif style == 2:
        text = text.lower()
    elif style == 3:
        text = f"{text}\n\nSent from my phone"
    return {
        "messages": [
            {"role": "system", "content": TRIAGE_SYSTEM},
            {"role": "user", "content": text},
        ],
        "category": intent.category,
    }, [ask.text]


def build_triage(rng: random.Random, per_cat_train: int, per_cat_val: int) -> tuple[list, list]:
    """Balanced across the five categories so a constant guess scores only 20%."""
    train: list[dict[str, Any]] = []
    val: list[dict[str, Any]] = []
    for cat in TRIAGE_CATEGORIES:
        intents = [i for i in INTENTS if i.category == cat]
        pool = unique_pool(
            rng, per_cat_train + per_cat_val, lambda r, ii=intents: ticket_example(r, r.choice(ii))
        )
        t, v = split(pool, per_cat_val)
        train += t
        val += v
    rng.shuffle(train)
    rng.shuffle(val)
    return train, val


# --------------------------------------------------------------------------------------------
# Handbook (continued pre-training text)
# --------------------------------------------------------------------------------------------

POLICY_SENTENCES: dict[str, list[str]] = {
    "Shipping": [
        "Orders placed before 2pm on a working day leave the Brightloom studio the same day.",
        "Standard delivery takes three to five working days and is free on orders over $50.",
        "Express delivery costs $9 and arrives in one to two working days.",
        "Every parcel is tracked, and the tracking link is sent in the dispatch email.",
        "Larger orders are sometimes split into two parcels, which may arrive a day apart.",
        "We pack every order in recycled paper and compostable mailers.",
        "Delivery addresses can be changed until an order has been packed, which is usually "
        "within two hours of ordering.",
        "If a parcel has not arrived within ten working days, we will send a replacement.",
    ],
    "International shipping": [
        "Brightloom ships to more than 40 countries, including Canada, Japan and Australia.",
        "International delivery usually takes seven to fourteen working days.",
        "All international parcels are tracked from our studio to your door.",
        "Customs duties and import taxes are collected by the local carrier on delivery.",
        "We cannot mark parcels as gifts to avoid customs fees.",
        "International returns are welcome, but return postage is paid by the customer.",
    ],
    "Returns": [
        "Unused yarn can be returned within 30 days of delivery.",
        "Please keep the ball bands on returned yarn so we can restock it.",
        "To start a return, go to Account > Orders, choose the order and click Return items.",
        "Domestic return labels are free and download straight away.",
        "Patterns, gift cards and opened notions cannot be returned.",
        "Exchanges are handled as a return plus a new order, so you get the new yarn quickly.",
        "Orders can be cancelled within two hours of purchase; after that, use a return.",
    ],
    "Refunds": [
        "Refunds go back to the original payment method.",
        "We issue refunds within five working days of a return reaching the studio.",
        "Banks can take a further two or three days to show a refund.",
        "Gift card purchases are refunded as gift card credit.",
        "Original shipping charges are refunded only when an item was damaged or sent in error.",
        "A temporary hold on your card from a failed payment is released by your bank within "
        "three working days.",
    ],
    "Damaged or wrong items": [
        "If something arrives damaged, reply to your dispatch email with a photo.",
        "We replace damaged items free of charge, and there is no need to send them back.",
        "If we send the wrong colour or product, we post the right one by express at no cost.",
        "A free return label for a wrong item is emailed automatically.",
        "Missing items are usually in a second parcel; we check and resend if not.",
    ],
    "Gift cards": [
        "Brightloom e-gift cards come in amounts from $10 to $200.",
        "Gift cards are emailed straight away or on a date you choose at checkout.",
        "A gift card stays valid for two years from the date of purchase.",
        "The balance can be spent over several orders.",
        "You can check the balance at checkout by entering the card code.",
        "Discount codes cannot be used to buy gift cards.",
    ],
    "The Loom Box": [
        "The Loom Box is our monthly subscription of two skeins and a pattern.",
        "Boxes are dispatched on the 25th of each month.",
        "You can pause the Loom Box for one to three months from Account > Subscription.",
        "To skip next month's box, pause before the 20th.",
        "After a pause, the subscription restarts automatically.",
        "Subscribers get early access to new colourways.",
    ],
    "Discount codes": [
        "Only one discount code can be used per order.",
        "Discount codes do not apply to sale items or gift cards.",
        "Some codes have an expiry date, which is shown in the email that sent them.",
        "Codes are not case-sensitive, but extra spaces can stop them working.",
        "New subscribers to our newsletter receive a welcome code.",
    ],
    "Accounts": [
        "You can update your email address and newsletter settings in Account > Details.",
        "Password reset links are valid for one hour.",
        "If a reset email does not arrive, check the spam folder.",
        "We confirm every change to an account by email.",
        "To delete an account, reply from the email address on it so we can confirm it is you.",
        "We accept cards, PayPal and Brightloom gift cards.",
    ],
    "Dye lots": [
        "Every batch of hand-dyed yarn is a dye lot, printed on the ball band.",
        "Skeins from different dye lots can differ slightly in shade.",
        "Buy enough yarn from one dye lot for a whole project.",
        "If you must mix lots, alternate two rows from each skein to blend them.",
        "Most colours are restocked every three to four weeks.",
        "The Notify me button on a product page emails you when a colour is back.",
    ],
    "Swatching": [
        "A gauge swatch shows how many stitches and rows fit in ten centimetres.",
        "Knit a swatch at least 15 centimetres square and wash it as you will wash the garment.",
        "If you have more stitches than the pattern, try larger needles.",
        "If you have fewer stitches than the pattern, try smaller needles.",
        "Swatching saves yarn, time and disappointment.",
    ],
}

WEIGHT_NOTES = {
    "lace": "Lace weight is our finest yarn, for shawls and airy wraps on 2 to 3.5 mm needles.",
    "4-ply": "4-ply, also called fingering, suits socks, baby clothes and fine jumpers on 2.5 to "
    "3.5 mm needles.",
    "DK": "DK, or double knit, sits between 4-ply and aran and is the most versatile weight, "
    "usually knitted on 3.75 to 4.5 mm needles.",
    "aran": "Aran is a medium-heavy weight for cables, hats and jumpers on 4.5 to 5.5 mm needles.",
    "worsted": "Worsted is a touch finer than aran and is common in American patterns, usually on "
    "4.5 mm needles.",
    "chunky": "Chunky yarn knits up fast on 7 to 10 mm needles, lovely for blankets and hats.",
}

FIBRE_NOTES = [
    "Merino is a fine, soft wool that is warm but breathable and rarely itchy.",
    "Superwash merino has been treated so that it can be machine washed on a wool cycle.",
    "Alpaca is warmer than sheep's wool, has a gentle halo and contains no lanolin.",
    "Cotton is cool and crisp, ideal for summer tops and dishcloths, but it has little stretch.",
    "Linen feels stiff in the skein and softens beautifully with every wash.",
    "Silk adds sheen and drape to a blend and takes dye in deep, glowing colours.",
    "Nylon in sock yarn makes heels and toes last much longer.",
    "Non-superwash wool will felt if it is agitated in hot water, so always wash it by hand.",
    "Tweed yarns carry small flecks of colour spun into the base for a rustic look.",
    "Hand washing means a cool soak with wool wash, a gentle squeeze and drying flat.",
]


def handbook_paragraph(rng: random.Random) -> str:
    """One 40–150 word handbook paragraph: a product page or a policy/know-how section."""
    kind = rng.random()
    if kind < 0.4:
        yarn = rng.choice(YARNS)
        colour = rng.choice(list(COLOURS))
        parts = [
            f"{yarn.name} is our {yarn.weight} weight yarn, spun from {yarn.fibre}.",
            f"Each 100 g skein holds about {yarn.metres} metres, and it knits to gauge on "
            f"{yarn.needle} mm needles.",
            f"It feels {yarn.feel}.",
            f"The {colour} colourway is {COLOURS[colour]}.",
            f"To care for it, {yarn.care}.",
            WEIGHT_NOTES[yarn.weight],
            rng.choice(FIBRE_NOTES),
            rng.choice(POLICY_SENTENCES["Dye lots"]),
        ]
        keep = [parts[0], *rng.sample(parts[1:], rng.randint(3, 6))]
        return " ".join(keep)
    if kind < 0.55:
        notes = rng.sample(FIBRE_NOTES, rng.randint(3, 5))
        weights = rng.sample(list(WEIGHT_NOTES.values()), rng.randint(0, 2))
        title = rng.choice(["Fibres and care.", "Choosing a fibre.", "Looking after your knits."])
        return " ".join([title, *notes, *weights])
    topic = rng.choice(list(POLICY_SENTENCES))
    pool = POLICY_SENTENCES[topic]
    chosen = sorted(rng.sample(range(len(pool)), rng.randint(3, min(6, len(pool)))))
    return " ".join([f"{topic}.", *(pool[i] for i in chosen)])


def handbook_item(rng: random.Random) -> tuple[dict[str, str], list[str]] | None:
    """Wrap a paragraph, rejecting ones outside the 40–150 word range."""
    text = handbook_paragraph(rng)
    if not 40 <= len(text.split()) <= 150:
        return None
    return {"text": text}, [text]


# --------------------------------------------------------------------------------------------
# General everyday English (pretraining corpus and the forgetting reference set)
# --------------------------------------------------------------------------------------------

GENERAL: dict[str, dict[str, Any]] = {
    "weather": {
        "slots": {
            "season": ["spring", "summer", "autumn", "winter"],
            "place": ["the valley", "the city", "the coast", "the hills", "the north", "town"],
            "adj": ["cool", "bright", "damp", "windy", "mild", "grey", "clear", "chilly"],
            "thing": ["an umbrella", "a warm coat", "sun cream", "a hat", "sturdy boots"],
        },
        "sentences": [
            "In {season}, mornings in {place} are often {adj}.",
            "The forecast for {place} says the afternoon will be {adj} with a light breeze.",
            "When dark clouds gather over {place}, rain usually follows within an hour.",
            "Many people carry {thing} in {season}, just in case.",
            "Fog forms when warm, moist air passes over cold ground and cools down.",
            "A rainbow appears when sunlight shines through raindrops behind you.",
            "Thunder is the sound of air expanding quickly around a flash of lightning.",
            "Snow is more likely when the air near the ground is below freezing.",
            "After a {adj} week, the weekend in {place} is expected to be sunny.",
            "Weather forecasters use satellites, balloons and computer models to predict rain.",
            "Wind is simply air moving from areas of high pressure to areas of low pressure.",
        ],
    },
    "cooking": {
        "slots": {
            "food": ["potatoes", "carrots", "rice", "pasta", "lentils", "onions", "mushrooms"],
            "dish": ["soup", "stew", "a simple curry", "a tray bake", "an omelette", "a salad"],
            "minutes": ["five", "ten", "fifteen", "twenty", "thirty"],
            "herb": ["parsley", "basil", "thyme", "coriander", "mint", "rosemary"],
        },
        "sentences": [
            "To make {dish}, start by chopping the {food} into even pieces.",
            "Boil the {food} for about {minutes} minutes, until they are tender.",
            "A handful of fresh {herb} added at the end brightens almost any dish.",
            "Always wash your hands before handling food and after touching raw meat.",
            "Bread rises because yeast produces tiny bubbles of gas in the dough.",
            "Salt brings out flavour, but it is easy to add too much, so taste as you go.",
            "Leftover {dish} keeps in the fridge for two or three days in a covered dish.",
            "A sharp knife is safer than a blunt one because it does not slip as easily.",
            "Let the pan heat up before adding oil so that the {food} do not stick.",
            "Simmering means cooking gently, with just a few bubbles rising to the surface.",
            "Many cooks make {dish} on a Sunday and eat it through the week.",
        ],
    },
    "animals": {
        "slots": {
            "animal": ["fox", "hedgehog", "owl", "otter", "badger", "robin", "deer", "squirrel"],
            "food": ["berries", "insects", "seeds", "fish", "worms", "nuts"],
            "home": ["woodland", "riverbanks", "gardens", "hedgerows", "open fields"],
        },
        "sentences": [
            "The {animal} lives in {home} and feeds mainly on {food}.",
            "In winter, the {animal} has to work harder to find {food}.",
            "Many birds fly south in autumn to find warmer weather and more food.",
            "Bees visit flowers to collect nectar, and in doing so they carry pollen between them.",
            "A young {animal} stays close to its parents for the first few months.",
            "Cats sleep for up to sixteen hours a day, often in short naps.",
            "Dogs use their sense of smell far more than their eyesight to explore.",
            "Frogs begin life as tadpoles and slowly grow legs as they develop.",
            "If you sit quietly near {home} at dusk, you may spot a {animal}.",
            "Squirrels bury nuts in autumn and dig many of them up again in winter.",
            "Whales are mammals, so they must come to the surface to breathe air.",
        ],
    },
    "science": {
        "slots": {
            "thing": ["water", "ice", "a metal spoon", "a balloon", "a ball", "a candle"],
            "number": ["eight", "nine", "three", "seven"],
        },
        "sentences": [
            "Water boils at 100 degrees Celsius at sea level and freezes at zero.",
            "The Earth takes about 365 days to travel once around the Sun.",
            "The Moon does not make its own light; it reflects light from the Sun.",
            "Plants use sunlight, water and carbon dioxide to make their own food.",
            "Sound travels faster through water than through air.",
            "If you heat {thing}, its particles move faster and spread out.",
            "Magnets attract iron and steel but not wood, glass or plastic.",
            "Light from the Sun takes about {number} minutes to reach the Earth.",
            "A shadow forms when an object blocks light from reaching a surface.",
            "Gravity is the force that makes {thing} fall to the ground when you drop it.",
            "Our hearts pump blood around the body about seventy times a minute at rest.",
        ],
    },
    "routine": {
        "slots": {
            "person": ["Anna", "Ben", "my neighbour", "my brother", "the teacher", "Grandad"],
            "time": ["six", "seven", "half past seven", "eight"],
            "activity": ["a short walk", "a cup of tea", "some reading", "a quick stretch"],
            "place": ["the bus stop", "the library", "the market", "the park", "work"],
        },
        "sentences": [
            "Every morning, {person} wakes up at {time} and starts the day with {activity}.",
            "After breakfast, {person} walks to {place} and says hello to the people there.",
            "Most evenings end with {activity} before bed.",
            "On Saturdays, {person} goes to {place} to buy fresh fruit and vegetables.",
            "A regular bedtime helps the body know when it is time to rest.",
            "Drinking a glass of water in the morning is a simple healthy habit.",
            "Writing a short list each day makes it easier to remember small jobs.",
            "At lunchtime, {person} likes to sit outside if the weather is fine.",
            "Sunday is for washing clothes, tidying up and planning the week ahead.",
            "Before leaving home, check that you have your keys, phone and wallet.",
        ],
    },
    "garden": {
        "slots": {
            "plant": ["tomatoes", "beans", "sunflowers", "lettuce", "strawberries", "sweet peas"],
            "season": ["spring", "early summer", "late spring", "autumn"],
        },
        "sentences": [
            "Sow {plant} in {season}, once the soil has warmed up.",
            "Water the garden in the early morning or evening so less water evaporates.",
            "{plant} grow best in a sunny spot with rich, well-drained soil.",
            "Compost made from kitchen scraps feeds the soil and helps plants grow.",
            "Weeds compete with young plants for light, water and food.",
            "A layer of mulch keeps moisture in the soil during dry weather.",
            "Birds and hedgehogs help gardeners by eating slugs and snails.",
            "Pick {plant} regularly and the plants will keep producing more.",
        ],
    },
}


def general_paragraph(rng: random.Random) -> str:
    """Three to five everyday sentences on one topic, slots filled independently."""
    topic = GENERAL[rng.choice(list(GENERAL))]
    picks = rng.sample(topic["sentences"], rng.randint(3, 5))
    filled = [fill(s, {k: rng.choice(v) for k, v in topic["slots"].items()}) for s in picks]
    return " ".join(filled)


GENERAL_QA = [
    ("What should I wear if it looks like rain?", "A waterproof coat and shoes that can get wet "
     "are a good idea. An umbrella helps too."),
    ("How long should I boil an egg?", "About six minutes gives a soft yolk, and nine to ten "
     "minutes gives a firm one."),
    ("Why is the sky blue?", "Sunlight is scattered by the air, and blue light is scattered the "
     "most, so the sky looks blue."),
    ("What do hedgehogs eat?", "Mostly insects, beetles, worms and slugs."),
    ("How can I sleep better?", "Keep a regular bedtime, avoid screens late at night and keep "
     "the bedroom cool and dark."),
    ("When should I plant tomatoes?", "Plant them outside in late spring, once there is no more "
     "risk of frost."),
    ("What is a good quick dinner?", "An omelette with some vegetables takes about ten minutes "
     "and is filling."),
    ("Why do leaves change colour in autumn?", "Trees stop making green chlorophyll, so the "
     "yellow and red colours underneath show through."),
    ("How far away is the Moon?", "About 384,000 kilometres from the Earth on average."),
    ("How do I keep bread fresh?", "Store it in a bread bin or paper bag, or freeze slices you "
     "will not eat within two days."),
]  # fmt: skip

NEUTRAL_SYSTEMS = (
    "You are a helpful assistant.",
    "You are a customer service assistant for an online shop.",
    "You are a helpful assistant for a craft supplies store.",
    None,
)


def generic_chat(rng: random.Random) -> list[Message]:
    """A plain, neutral chat: teaches the base model ChatML and the domain, not the house voice."""
    system = rng.choice(NEUTRAL_SYSTEMS)
    msgs: list[Message] = [] if system is None else [{"role": "system", "content": system}]
    turns = 2 if rng.random() < 0.2 else 1
    for _ in range(turns):
        if rng.random() < 0.75:
            ask = make_ask(rng, rng.choice(INTENTS))
            msgs.append({"role": "user", "content": ask.text})
            msgs.append({"role": "assistant", "content": curt_reply(rng, ask)})
        else:
            q, a = rng.choice(GENERAL_QA)
            msgs.append({"role": "user", "content": q})
            msgs.append({"role": "assistant", "content": a})
    return msgs


# --------------------------------------------------------------------------------------------
# Writing datasets
# --------------------------------------------------------------------------------------------


@dataclass
class Datasets:
    """Every dataset, in memory, so the model build can reuse the train splits."""

    splits: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]]
    general_reference: list[dict[str, str]]


def build_datasets(seed: int = SEED) -> Datasets:
    """Generate every dataset from its own seeded stream (changing one leaves the rest alone)."""
    support = unique_pool(random.Random(seed + 1), 340, support_example)
    preference = unique_pool(random.Random(seed + 2), 180, preference_example)
    handbook = unique_pool(random.Random(seed + 3), 170, handbook_item)
    triage = build_triage(random.Random(seed + 4), per_cat_train=30, per_cat_val=6)
    reference = unique_pool(
        random.Random(seed + 5), 60, lambda r: ({"text": (t := general_paragraph(r))}, [t])
    )
    return Datasets(
        splits={
            "support": split(support, 40),
            "support_preference": split(preference, 30),
            "handbook_text": split(handbook, 20),
            "ticket_triage": triage,
        },
        general_reference=reference,
    )


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """UTF-8 JSON lines with real characters (not \\u escapes), one object per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


DATA_README = """\
# Sample datasets

All files are JSON Lines (UTF-8, one object per line) generated by
`python scripts/build_assets.py --data-only` from templates and seeded random choices in that
script, so they are reproducible and contain no real customer data. They describe
**Brightloom**, a made-up online yarn and knitting-supplies shop. Train and validation splits
never share a customer message.

## support/ (train {support_train}, validation {support_val})
Supervised fine-tuning chats in OpenAI's chat fine-tuning format: `{{"messages": [{{"role":
"system", ...}}, {{"role": "user", ...}}, {{"role": "assistant", ...}}]}}`.
Customer questions cover {n_intents} intents (order status, refunds, return labels, damaged or
wrong items, password resets, shipping times, international shipping, address changes,
cancellations, discount codes, yarn weight and fibre care, gift cards, pausing the Loom Box
subscription, restocks, payments...) with several phrasings each and filled slots (names,
order numbers, products, colours, dates). The assistant always answers in the house voice of
"Wren": a greeting ("Hi Name!" or "Hello there!") and one empathetic sentence, the concrete
answer, a warm closing line, then the sign-off "— Wren, Brightloom Support". About 15% of
chats are two-turn; in a few, the first assistant turn is a curt reply from an old bot marked
`"weight": 0` (OpenAI's per-message weight: keep it as context, do not train on it).

## support_preference/ (train {pref_train}, validation {pref_val})
Preference pairs in OpenAI's DPO format: `{{"input": {{"messages": [...]}},
"preferred_output": [{{"role": "assistant", ...}}], "non_preferred_output": [...]}}`. Both
replies carry the same facts; the preferred one is in Wren's house voice, the non-preferred one
is curt, unstructured and unsigned. About 10% of prompts have no system message.

## handbook_text/ (train {hb_train}, validation {hb_val})
Raw text for continued pre-training: `{{"text": "..."}}`, one 40-150 word paragraph of the
Brightloom handbook per line (product pages for its yarns, yarn weights, fibres and care,
shipping, international shipping, returns, refunds, gift cards, the Loom Box, discount codes,
accounts, dye lots, swatching), assembled from a pool of consistent fact sentences.

## ticket_triage/ (train {tri_train}, validation {tri_val})
Reinforcement fine-tuning prompts in OpenAI's RFT format: `{{"messages": [system, user],
"category": "..."}}`. The messages end with the user turn (a ticket, sometimes with a subject
line, lower-cased or a phone signature); the extra top-level `category` field is the reference
answer a grader reads. Categories are balanced: shipping, billing, account, product and returns
(returns also covers damaged/wrong items and cancellations). The system prompt asks for
`{{"category": "<category>"}}` as JSON.

## general_reference.jsonl ({n_ref})
`{{"text": "..."}}` paragraphs of plain everyday English (weather, cooking, animals, simple
science, daily routines, gardening), not about Brightloom. Used to measure catastrophic
forgetting: compare the model's loss on it before and after fine-tuning. The tiny base model
was pretrained on text from the same generator, but never on these exact paragraphs.
"""


def write_datasets(data: Datasets, data_dir: Path) -> None:
    """Write all JSONL files and the data README, replacing any previous build."""
    if data_dir.exists():
        shutil.rmtree(data_dir)
    for name, (train, val) in data.splits.items():
        write_jsonl(data_dir / name / "train.jsonl", train)
        write_jsonl(data_dir / name / "validation.jsonl", val)
    write_jsonl(data_dir / "general_reference.jsonl", data.general_reference)
    s = data.splits
    readme = DATA_README.format(
        support_train=len(s["support"][0]),
        support_val=len(s["support"][1]),
        n_intents=len(INTENTS),
        pref_train=len(s["support_preference"][0]),
        pref_val=len(s["support_preference"][1]),
        hb_train=len(s["handbook_text"][0]),
        hb_val=len(s["handbook_text"][1]),
        tri_train=len(s["ticket_triage"][0]),
        tri_val=len(s["ticket_triage"][1]),
        n_ref=len(data.general_reference),
    )
    (data_dir / "README.md").write_text(readme, encoding="utf-8")
    for name, (train, val) in s.items():
        print(f"  {name}: train={len(train)} validation={len(val)}")
    print(f"  general_reference: {len(data.general_reference)}")


def pretraining_corpus(data: Datasets, seed: int) -> list[str]:
    """General English + neutral ChatML chats + handbook train text; no validation data."""
    rng = random.Random(seed + 10)
    held_out = {row["text"] for row in data.general_reference}
    val_users: set[str] = set()
    for name in ("support", "support_preference", "ticket_triage"):
        for row in data.splits[name][1]:
            msgs = row["messages"] if "messages" in row else row["input"]["messages"]
            val_users.update(m["content"] for m in msgs if m["role"] == "user")

    docs: list[str] = []
    while len(docs) < 5000:
        para = general_paragraph(rng)
        if para not in held_out:
            docs.append(para)
    n_chats = 0
    while n_chats < 3500:
        chat = generic_chat(rng)
        if any(m["content"] in val_users for m in chat if m["role"] == "user"):
            continue
        docs.append(render_chatml(chat))
        n_chats += 1
    handbook_train = [row["text"] for row in data.splits["handbook_text"][0]]
    docs += handbook_train * 3
    rng.shuffle(docs)
    joined = "".join(docs)
    assert "Wren" not in joined and SIGN_OFF not in joined, "house voice leaked into pretraining"
    return docs


def main(argv: Sequence[str] | None = None) -> None:
    """Parse options and build the requested assets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--data-only", action="store_true", help="only write the datasets")
    group.add_argument("--model-only", action="store_true", help="only build the model")
    parser.add_argument("--steps", type=int, default=450, help="pretraining steps")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--assets", type=Path, default=ASSETS, help="output assets folder")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    data = build_datasets(args.seed)
    if not args.model_only:
        print("datasets:")
        write_datasets(data, args.assets / "data")
    if not args.data_only:
        print("model:")
        build_model(pretraining_corpus(data, args.seed), args.assets / "models" / "tiny-chat", args.steps,
                    args.seed)
    print(f"done in {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
