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
import math
import random
import re
import shutil
import string
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SEED = 20240611
ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "src" / "tunesmith" / "assets"

SUPPORT_SYSTEM = "You are Wren, Brightloom's support assistant."
SIGN_OFF = "— Wren, Brightloom Support"
TRIAGE_CATEGORIES = ("shipping", "billing", "account", "product", "returns")
TRIAGE_SYSTEM = (
    "Classify the ticket as one of: shipping, billing, account, product, returns. "
    'Answer with JSON: {"category": "<category>"}'
)

Message = dict[str, Any]

# --------------------------------------------------------------------------------------------
# Shared vocabulary: the "facts" of the fictional shop. Handbook text and support answers both
# draw on these so that the datasets never contradict each other.
# --------------------------------------------------------------------------------------------

NAMES = [
    "Priya", "Tom", "Aisha", "Mateo", "Hannah", "Kenji", "Olivia", "Sam", "Fatima", "Liam",
    "Chloé", "Noah", "Ingrid", "Ravi", "Grace", "Diego", "Maeve", "Yusuf", "Ellie", "Jonas",
    "Amara", "Felix", "Rosa", "Theo", "Nadia", "Oscar", "Leila", "Callum", "Zoe", "Hugo",
    "Mei", "Aaron", "Beatriz", "Finn", "Ana", "Rowan", "Esme", "Kwame", "Isla", "Marek",
    "Renée", "Joao", "Siobhan", "Dev", "Lucia", "Arjun", "Freya", "Omar", "Bea", "Nils",
]  # fmt: skip

MONTHS = [
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
]  # fmt: skip


@dataclass(frozen=True)
class Yarn:
    """A product line; its attributes fill answer and handbook templates."""

    name: str
    weight: str
    fibre: str
    metres: int
    needle: str
    care: str
    feel: str


YARNS = [
    Yarn("Meadow Merino DK", "DK", "100% superwash merino", 225, "4",
         "machine wash at 30°C on a wool cycle and dry flat", "soft, springy and warm"),
    Yarn("Harbour Cotton Aran", "aran", "100% combed cotton", 170, "5",
         "machine wash at 30°C and reshape while damp", "cool, smooth and crisp"),
    Yarn("Foxglove Alpaca Lace", "lace", "70% baby alpaca and 30% silk", 800, "3",
         "hand wash in cool water and dry flat away from sunlight", "light, drapey and haloed"),
    Yarn("Sprig Sock 4-ply", "4-ply", "75% merino and 25% nylon", 400, "2.5",
         "machine wash at 40°C and dry flat", "hard-wearing and bouncy"),
    Yarn("Cloudburst Chunky", "chunky", "80% merino and 20% alpaca", 100, "8",
         "hand wash in cool water and dry flat", "lofty, plush and quick to knit"),
    Yarn("Tidewater Linen 4-ply", "4-ply", "100% linen", 300, "3.25",
         "machine wash at 40°C; it softens with every wash", "crisp at first, softening with wear"),
    Yarn("Bramble Tweed Aran", "aran", "90% wool and 10% viscose tweed flecks", 180, "5",
         "hand wash in cool water and dry flat", "rustic, sturdy and flecked with colour"),
    Yarn("Hearth Wool Worsted", "worsted", "100% non-superwash wool", 200, "4.5",
         "hand wash only, as it will felt in a machine", "toasty, robust and a little rustic"),
]  # fmt: skip

COLOURS = {
    "Heather": "a soft purple-grey with flecks of pink",
    "Sea Glass": "a pale misty green",
    "Rust": "a warm, autumnal orange-brown",
    "Oatmeal": "an undyed creamy beige",
    "Midnight": "a deep inky navy",
    "Moss": "an earthy olive green",
    "Clementine": "a bright citrus orange",
    "Fog": "a quiet, cool light grey",
    "Plum": "a rich red-purple",
    "Saffron": "a golden mustard yellow",
    "Slate": "a blue-tinged charcoal",
    "Rosehip": "a dusty coral pink",
}

CODES = ["KNITMORE10", "WELCOME15", "COSY20", "LOOMLOVE", "SPRING12", "STITCH5", "WOOLWEEK"]
COUNTRIES = [
    "Canada", "Germany", "Japan", "Australia", "Ireland", "France", "New Zealand", "Norway",
    "Spain", "Mexico", "the Netherlands", "Sweden", "Italy", "Singapore",
]  # fmt: skip
STREETS = ["Elm Road", "Mill Lane", "Harbour Street", "Station Road", "Willow Close", "Park Row"]
CITIES = ["Bristol", "Portland", "Leeds", "Halifax", "Galway", "Dunedin", "Bath", "Asheville"]
AMOUNTS = ["$25", "$40", "$50", "$75", "$100"]
MONTH_WORDS = ["one", "two", "three"]


def make_slots(rng: random.Random) -> dict[str, str]:
    """Draw one consistent set of slot values for a single conversation."""
    yarn = rng.choice(YARNS)
    month = rng.randrange(12)
    day = rng.randint(1, 26)
    n_months = rng.choice(MONTH_WORDS)
    return {
        "name": rng.choice(NAMES),
        "order": f"BL-{rng.randint(10000, 99999)}",
        "product": yarn.name,
        "weight": yarn.weight,
        "fibre": yarn.fibre,
        "metres": str(yarn.metres),
        "needle": yarn.needle,
        "care": yarn.care,
        "feel": yarn.feel,
        "colour": rng.choice(list(COLOURS)),
        "date": f"{day} {MONTHS[month]}",
        "ship_date": f"{day + 1} {MONTHS[month]}",
        "back_date": f"{day + 2} {MONTHS[month]}",
        "code": rng.choice(CODES),
        "country": rng.choice(COUNTRIES),
        "amount": rng.choice(AMOUNTS),
        "months": n_months,
        "month_s": "month" if n_months == "one" else "months",
        "address": f"{rng.randint(2, 98)} {rng.choice(STREETS)}, {rng.choice(CITIES)}",
    }


# Slots a reply may only use if the customer mentioned them (or, for yarn facts, the product).
USER_FACING = {"order", "product", "colour", "code", "country", "amount", "months", "address"}
NEEDS_PRODUCT = {"weight", "fibre", "metres", "needle", "care", "feel"}


def slots_in(template: str) -> set[str]:
    """Names of the ``{slot}`` fields used by a format template."""
    return {f for _, f, _, _ in string.Formatter().parse(template) if f}


def fill(template: str, slots: dict[str, str]) -> str:
    """Fill a template; the first letter is capitalised because slots may start a sentence."""
    text = template.format_map(slots)
    return text[:1].upper() + text[1:]


def usable(template: str, mentioned: set[str]) -> bool:
    """Whether a reply template only refers to details the customer actually gave."""
    used = slots_in(template)
    if used & NEEDS_PRODUCT and "product" not in mentioned:
        return False
    return (used & USER_FACING) <= mentioned


# --------------------------------------------------------------------------------------------
# Support intents
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Intent:
    """One kind of customer request with its phrasings and both reply voices."""

    name: str
    category: str
    asks: tuple[str, ...]  # customer phrasings; a leading "?" marks a plain question
    empathy: tuple[str, ...]  # one warm sentence for a problem (house voice only)
    answers: tuple[str, ...]  # the concrete answer, house voice
    curt: tuple[str, ...]  # the same facts, curt and unsigned (base-model / rejected voice)
    subject: str  # e-mail subject line for triage tickets


INTENTS = [
    Intent(
        "order_status", "shipping",
        ("Where is my order {order}? I placed it on {date} and haven't heard anything.",
         "?Can you tell me the status of order {order}?",
         "My order {order} still hasn't arrived. Any news?",
         "I ordered some {product} on {date}. Has it shipped yet? Order number {order}.",
         "?How do I track my order? It's {order}.",
         "hi, just wondering when my yarn will get here, order {order}",
         "Has my parcel been sent yet? I can't find a tracking number."),
        ("I know waiting for new yarn is hard!",
         "Thanks for checking in about your parcel.",
         "I'm sorry you've been left wondering where your order is."),
        ("Order {order} left our studio on {ship_date} and is with the courier now. You can "
         "follow it with the tracking link in your dispatch email.",
         "I've checked order {order}: it was packed on {ship_date} and is on its way. Standard "
         "delivery takes 3–5 working days from dispatch.",
         "Every order gets a tracking link in its dispatch email. If you can't find it, reply "
         "with your order number and I'll send it straight over."),
        ("Order {order} shipped on {ship_date}. The tracking link is in the dispatch email.",
         "{order} is in transit. Check the dispatch email for tracking.",
         "The tracking link is in the dispatch email. Send the order number if it is missing."),
        "Where is my order?",
    ),
    Intent(
        "refund_status", "billing",
        ("I returned my {product} last week. When will I get my refund?",
         "Still waiting on a refund for order {order}.",
         "?How long do refunds take?",
         "Has my refund for {order} been processed yet?",
         "I sent back a parcel ages ago and haven't seen any money back."),
        ("I'm sorry the refund is taking a while.",
         "Thanks for your patience while we sort this out.",
         "I understand — nobody likes waiting for money back."),
        ("Your return for {order} reached us on {date}, and we've refunded it to your original "
         "payment method. It usually shows within 5–7 working days.",
         "Refunds go back to your original payment method within 5 working days of your "
         "return reaching us. Your bank may take a couple of extra days to show it."),
        ("Refund for {order} issued to the original payment method. Allow 5–7 working days.",
         "Refunds take 5–7 working days after we receive the return."),
        "Refund",
    ),
    Intent(
        "return_label", "returns",
        ("How do I get a return label? I want to send back the {product}.",
         "Can I return some yarn I didn't use?",
         "I need a returns label for order {order}.",
         "What's your return policy? The {colour} {product} isn't quite what I wanted.",
         "I bought too many skeins. Can I send the spares back?"),
        ("I'm sorry it wasn't quite right for you.",
         "No problem at all — returns are easy.",
         "Of course, I'm happy to help with that."),
        ("You can return unused yarn within 30 days. Go to Account > Orders, choose {order} "
         "and click Return items to download a free label.",
         "Head to Account > Orders, pick the order and select Return items; a free prepaid label "
         "downloads straight away. Please keep the ball bands on.",
         "Unused {product} can come back within 30 days with its ball bands on. Use Return "
         "items in Account > Orders for a free label."),
        ("Returns accepted within 30 days if unused. Use Account > Orders > Return items.",
         "Return label for {order}: Account > Orders > Return items. 30-day limit."),
        "Return label",
    ),
    Intent(
        "damaged_item", "returns",
        ("My {product} arrived damaged — the skein is all tangled and snapped.",
         "The parcel for {order} was crushed and one of the needles is broken.",
         "One of the balls of {colour} {product} has a hole in it!",
         "Item arrived damaged, what do I do?",
         "The box was soaking wet when it arrived and the yarn is stained."),
        ("Oh no, I'm so sorry your order arrived damaged.",
         "That's really disappointing, and I'm sorry.",
         "I'm sorry — that's not the welcome your yarn should have had."),
        ("Please reply with a photo of the damage and we'll send a replacement straight away — "
         "no need to send anything back.",
         "If you send a quick photo, we'll post a free replacement {product} today or refund "
         "you, whichever you prefer."),
        ("Send a photo of the damage. We'll replace it.",
         "Reply with a photo and a replacement {product} will be sent."),
        "Damaged item",
    ),
    Intent(
        "password_reset", "account",
        ("I can't log in to my account.",
         "I forgot my password, how do I reset it?",
         "The password reset email never arrived.",
         "Locked out of my account, help!",
         "My password isn't working even though I'm sure it's right."),
        ("I'm sorry you're locked out — that's frustrating.",
         "Let's get you back into your account.",
         "Don't worry, this happens to all of us."),
        ("Click Forgot password on the sign-in page and we'll email you a reset link, valid for "
         "one hour. If it doesn't arrive, check your spam folder.",
         "I've sent a fresh reset link to the email on your account; it works for one hour. Do "
         "peek in your spam folder if it's not in your inbox."),
        ("Use Forgot password on the sign-in page. The link expires in 1 hour.",
         "Reset link sent. Check spam."),
        "Can't log in",
    ),
    Intent(
        "shipping_times", "shipping",
        ("How long does delivery take?",
         "If I order today, when will it arrive?",
         "Do you offer express shipping?",
         "How much is shipping?",
         "I need some {product} by the weekend for a gift. Is that possible?"),
        ("Great question!",
         "Happy to help you plan ahead.",
         "I love a well-planned project!"),
        ("Orders placed before 2pm ship the same working day. Standard delivery takes 3–5 "
         "working days and is free over $50; express takes 1–2 working days for $9.",
         "Standard delivery is 3–5 working days (free over $50). For speed, choose express at "
         "checkout: 1–2 working days for $9 if you order before 2pm.",
         "If you order the {product} before 2pm with express delivery ($9), it should reach "
         "you in 1–2 working days."),
        ("Standard 3–5 working days, free over $50. Express 1–2 days, $9.",
         "Express shipping is $9 and takes 1–2 working days. Order before 2pm."),
        "Delivery times",
    ),
    Intent(
        "international_shipping", "shipping",
        ("Do you ship to {country}?",
         "How long does shipping to {country} take?",
         "Will I have to pay customs fees? I'm in {country}.",
         "Can I order from {country}?",
         "Do you ship internationally?"),
        ("Thanks for thinking of us from so far away!",
         "We love sending yarn around the world.",
         "Great question!"),
        ("Yes, we ship to {country}! International orders arrive in 7–14 working days with "
         "tracking. Any customs fees are collected by your local carrier on delivery.",
         "We do ship to {country}; delivery takes 7–14 working days and every parcel is tracked. "
         "Import duties, if any, are paid on arrival.",
         "We ship to over 40 countries in 7–14 working days, fully tracked. Customs fees, if "
         "any, are paid on delivery."),
        ("Yes. 7–14 working days to {country}. Customs fees are paid by the recipient.",
         "International shipping takes 7–14 working days. Duties are paid on arrival."),
        "International order",
    ),
    Intent(
        "change_address", "shipping",
        ("I put the wrong address on order {order}. Can you change it?",
         "I've moved! Please update the delivery address for {order} to {address}.",
         "Can I change my shipping address after ordering?",
         "Please send order {order} to {address} instead."),
        ("Thanks for letting us know so quickly.",
         "Of course, happy to help.",
         "No problem, let's get that fixed."),
        ("Order {order} hadn't been packed yet, so I've updated it to {address}.",
         "We can change the address any time before the order is packed, usually within two "
         "hours. Reply with the new address and I'll update it.",
         "I've caught order {order} before packing; just reply with the correct address and "
         "I'll change it."),
        ("Address for {order} updated to {address}.",
         "Send the new address before the order is packed."),
        "Change address",
    ),
    Intent(
        "cancel_order", "returns",
        ("Please cancel order {order}.",
         "I ordered the wrong colour by mistake — can I cancel?",
         "Can I cancel my order? I placed it on {date}.",
         "I need to cancel {order}, I ordered twice by accident."),
        ("No problem at all, mistakes happen.",
         "Thanks for letting us know.",
         "Of course — let's sort it out."),
        ("Order {order} hadn't been packed yet, so I've cancelled it and refunded your original "
         "payment method.",
         "We can cancel within two hours of purchase; after that the parcel is on its way, but "
         "you can return it free within 30 days."),
        ("Order {order} cancelled. Refund in 5–7 working days.",
         "Cancellation is possible within 2 hours. Otherwise, return it within 30 days."),
        "Cancel order",
    ),
    Intent(
        "discount_code", "billing",
        ("The code {code} isn't working at checkout.",
         "Why won't my discount code apply?",
         "I tried {code} but it says invalid.",
         "?Can I use two discount codes on one order?"),
        ("I'm sorry the code is being stubborn.",
         "That's annoying, I'm sorry.",
         "Let's get that discount working for you."),
        ("{code} can't be used on sale items or gift cards, and only one code works per order. "
         "If your basket is full-price yarn, try typing it again without spaces.",
         "Codes work on full-price items only, one per order, and some have an expiry date. "
         "Check the basket for sale items and try again."),
        ("{code}: one code per order, not valid on sale items or gift cards.",
         "One code per order. Not valid on sale items or gift cards."),
        "Discount code",
    ),
    Intent(
        "yarn_weight", "product",
        ("What weight is {product}?",
         "Is {product} good for a beginner's scarf?",
         "What needle size should I use with {product}?",
         "Can I use {product} for a pattern that calls for {weight} yarn?",
         "How many metres are in a skein of {product}?"),
        ("What a lovely choice!",
         "Great question — it's one of my favourites.",
         "I'm so glad you're planning a new project!"),
        ("{product} is a {weight} weight yarn in {fibre}, with about {metres} m per 100 g. We "
         "suggest {needle} mm needles.",
         "It knits up at {weight} weight on {needle} mm needles, so it suits any pattern written "
         "for {weight} yarn. Each 100 g skein has about {metres} m."),
        ("{product}: {weight}, {metres} m per 100 g, {needle} mm needles.",
         "{weight} weight. Use {needle} mm needles."),
        "Yarn question",
    ),
    Intent(
        "fibre_care", "product",
        ("How should I wash a jumper knitted in {product}?",
         "What's {product} made of?",
         "Is {product} itchy? I have sensitive skin.",
         "Is {product} machine washable?",
         "How do I look after {colour} {product} so it doesn't fade?"),
        ("Thanks for taking such good care of your knits!",
         "Great question!",
         "I'm glad you asked before washing."),
        ("{product} is {fibre}, and it feels {feel}. To care for it, {care}.",
         "It's {fibre}. For best results, {care}."),
        ("{fibre}. Care: {care}.",
         "{product}: {care}."),
        "Care instructions",
    ),
    Intent(
        "gift_card", "billing",
        ("Do you sell gift cards?",
         "How long is a gift card valid for?",
         "I'd like to buy a {amount} gift card for my sister.",
         "How do I check my gift card balance?"),
        ("What a thoughtful gift!",
         "Great question!",
         "Any knitter would love that."),
        ("Our e-gift cards come in amounts from $10 to $200 and are emailed straight away. They "
         "stay valid for two years and can be spent over several orders.",
         "A {amount} e-gift card is emailed instantly and is valid for two years. You can "
         "schedule it for a birthday at checkout.",
         "Your balance shows at checkout when you enter the card code, and the card is valid "
         "for two years."),
        ("E-gift cards $10–$200, emailed instantly, valid 2 years.",
         "Enter the card code at checkout to see the balance."),
        "Gift card",
    ),
    Intent(
        "subscription_pause", "account",
        ("How do I pause my Loom Box subscription?",
         "Can I skip next month's Loom Box? I'm travelling.",
         "I want to pause my subscription for {months} {month_s}.",
         "Is there a way to stop the Loom Box for a bit?"),
        ("Of course — life gets busy!",
         "No problem at all.",
         "Happy to help with that."),
        ("Go to Account > Subscription and choose Pause; you can pause for one to three months. "
         "Do it before the 20th to skip next month's box.",
         "I've paused your Loom Box for {months} {month_s}; it will restart automatically "
         "afterwards."),
        ("Account > Subscription > Pause, up to 3 months. Do it before the 20th.",
         "Subscription paused for {months} {month_s}."),
        "Subscription",
    ),
    Intent(
        "wrong_item", "returns",
        ("I ordered {colour} but received a different colour.",
         "Wrong item in my parcel for order {order}.",
         "You sent me {product} instead of what I ordered.",
         "The yarn I got isn't the one I ordered."),
        ("I'm so sorry about the mix-up.",
         "Oh dear, that's our mistake and I'm sorry.",
         "Apologies — that shouldn't have happened."),
        ("I'll send the correct {colour} skeins out today by express at no cost, and a free "
         "return label for the wrong yarn is on its way to your inbox.",
         "We'll post the right yarn by express today and email a free return label for the "
         "wrong item."),
        ("Correct {colour} yarn will be sent. Use the emailed label to return the wrong item.",
         "Replacement sent. Return the wrong item with the emailed label."),
        "Wrong item",
    ),
    Intent(
        "missing_item", "shipping",
        ("My parcel for {order} arrived but the {product} is missing.",
         "Only half my order arrived.",
         "Something is missing from order {order}."),
        ("I'm sorry, that's confusing.",
         "Sorry to hear something is missing!",
         "Thanks for telling us."),
        ("Larger orders sometimes ship in two parcels; the second one for {order} is due "
         "within 2 working days. If it doesn't turn up, I'll send a replacement.",
         "Big orders can travel in two parcels. If the rest hasn't arrived in 2 working days, "
         "reply here and we'll send it again."),
        ("Order {order} shipped in two parcels. The second is due in 2 working days.",
         "Orders may ship in two parcels. Wait 2 working days."),
        "Missing item",
    ),
    Intent(
        "restock", "product",
        ("When will {colour} {product} be back in stock?",
         "Is {product} in {colour} coming back?",
         "Everything I want is sold out! When do you restock?"),
        ("I'm glad you love that shade!",
         "Sorry it's sold out right now.",
         "Great taste!"),
        ("{colour} {product} is being dyed now and should be back in about three weeks. Click "
         "Notify me on the product page and we'll email you when it lands.",
         "We restock most colours every three to four weeks. Click Notify me on a product page "
         "and we'll email you when it's back."),
        ("{colour} {product} restocks in about 3 weeks. Use Notify me on the product page.",
         "Restocks every 3–4 weeks. Use Notify me."),
        "Restock",
    ),
    Intent(
        "account_email", "account",
        ("How do I change the email address on my account?",
         "I want to stop getting your newsletter.",
         "Can I delete my account?",
         "I have two accounts by mistake. Can you merge them?"),
        ("Happy to help with that.",
         "Of course!",
         "Thanks for reaching out."),
        ("Go to Account > Details to update your email or newsletter settings; we'll confirm "
         "any change by email.",
         "I can do that for you. Just reply from the email address on the account so I can "
         "confirm it's you."),
        ("Account > Details. Changes are confirmed by email.",
         "Reply from the account email to confirm."),
        "Account",
    ),
    Intent(
        "payment_problem", "billing",
        ("I was charged twice for order {order}!",
         "My card was declined at checkout.",
         "?What payment methods do you accept?",
         "Why is there a pending charge on my card for {order}?"),
        ("I'm sorry for the worry.",
         "That's stressful, and I'm sorry.",
         "Let's get this sorted for you."),
        ("I can see only one payment for {order}; the second is a temporary hold that your bank "
         "releases within 3 working days.",
         "We accept cards, PayPal and Brightloom gift cards. If a card is declined, check the "
         "billing address matches the one your bank has."),
        ("Only one charge for {order}. The hold is released in 3 working days.",
         "We accept cards, PayPal and gift cards. Check the billing address."),
        "Payment",
    ),
]  # fmt: skip

CLOSINGS = (
    "Happy knitting!",
    "Wishing you cosy stitches!",
    "Just reply here if you need anything else. Happy knitting!",
    "Warm wishes from all of us at the studio!",
)

# Openers for plain questions inside problem intents (no apology where nothing went wrong).
FRIENDLY = ("Great question!", "Happy to help with that.", "Thanks for getting in touch.")

ACKS = ("Thanks!", "Brilliant, thank you.", "That helps, thanks.", "Perfect.", "Great, thanks!")


@dataclass
class Ask:
    """A filled customer message plus what it mentions (so replies stay consistent)."""

    text: str
    intent: Intent
    slots: dict[str, str]
    mentioned: set[str]
    signed: bool
    question: bool


def make_ask(rng: random.Random, intent: Intent, sign: bool | None = None) -> Ask:
    """Fill a customer phrasing; some customers sign their name, which the reply must use."""
    slots = make_slots(rng)
    template = rng.choice(intent.asks)
    question = template.startswith("?")
    template = template.removeprefix("?")
    text = fill(template, slots)
    signed = rng.random() < 0.65 if sign is None else sign
    if signed:
        name = slots["name"]
        form = rng.randrange(4)
        if form == 0:
            text = f"{text}\n\nThanks,\n{name}"
        elif form == 1:
            text = f"{text} — {name}"
        elif form == 2:
            text = f"{name} here. {text}"
        else:
            text = f"{text} Thanks! {name}"
    return Ask(text, intent, slots, slots_in(template), signed, question)


def house_reply(rng: random.Random, ask: Ask) -> str:
    """The house voice: greeting + empathy, the concrete answer, a closing line, the sign-off."""
    greeting = f"Hi {ask.slots['name']}!" if ask.signed else "Hello there!"
    empathy = rng.choice(FRIENDLY if ask.question else ask.intent.empathy)
    options = [a for a in ask.intent.answers if usable(a, ask.mentioned)]
    answer = fill(rng.choice(options), ask.slots)
    closing = rng.choice(CLOSINGS)
    return f"{greeting} {empathy}\n\n{answer}\n\n{closing}\n{SIGN_OFF}"


def curt_reply(rng: random.Random, ask: Ask) -> str:
    """The same facts in a curt, unsigned voice (what a generic model would say)."""
    options = [a for a in ask.intent.curt if usable(a, ask.mentioned)]
    return fill(rng.choice(options), ask.slots)


def word_count(messages: Iterable[Message]) -> int:
    """Words in all non-system turns; keeps conversations short enough for the tiny model."""
    return sum(len(m["content"].split()) for m in messages if m["role"] != "system")


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


# --------------------------------------------------------------------------------------------
# Tokenizer and chat template
# --------------------------------------------------------------------------------------------

BOS, IM_START, IM_END, PAD = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"
SPECIAL_TOKENS = [BOS, IM_START, IM_END, PAD]  # ids 0..3 in this order
VOCAB_SIZE = 2048
MAX_LEN = 1024

# ChatML without a BOS token. Prefix-stable by construction: every message renders to a
# self-contained block, the tools line lives inside the (first) system block, and the
# generation prompt is exactly the opening of an assistant block. Assistant blocks are wrapped
# in {% generation %} so transformers can return an assistant-token mask.
CHAT_TEMPLATE = (
    "{%- macro text(content) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- elif content is iterable -%}"
    "{%- for part in content -%}{%- if part.type == 'text' -%}{{ part.text }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{%- endmacro -%}"
    "{%- set ns = namespace(start=0) -%}"
    "{%- if tools -%}"
    "{{- '<|im_start|>system\\n' -}}"
    "{%- if messages and messages[0].role == 'system' -%}"
    "{%- set ns.start = 1 -%}"
    "{%- set sys = text(messages[0].content) -%}"
    "{%- if sys -%}{{- sys ~ '\\n\\n' -}}{%- endif -%}"
    "{%- endif -%}"
    "{{- 'Tools: ' ~ (tools | tojson) ~ '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages[ns.start:] -%}"
    "{{- '<|im_start|>' ~ message.role ~ '\\n' -}}"
    "{%- if message.role == 'assistant' -%}"
    "{%- generation -%}"
    "{%- set body = text(message.content) -%}"
    "{{- body -}}"
    "{%- if message.tool_calls -%}"
    "{%- for tc in message.tool_calls -%}"
    "{%- set call = tc.function if tc.function is defined else tc -%}"
    "{%- if body or not loop.first -%}{{- '\\n' -}}{%- endif -%}"
    "{{- '<tool_call>\\n{\"name\": ' ~ (call.name | tojson) ~ ', \"arguments\": ' -}}"
    "{%- if call.arguments is string -%}{{- call.arguments -}}"
    "{%- else -%}{{- call.arguments | tojson -}}{%- endif -%}"
    "{{- '}\\n</tool_call>' -}}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>' -}}"
    "{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{{- text(message.content) ~ '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def render_chatml(messages: Sequence[Message]) -> str:
    """Plain-Python ChatML for corpus building (matches CHAT_TEMPLATE for text-only chats)."""
    return "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)


def train_tokenizer(texts: Iterable[str], out_dir: Path) -> Any:
    """Byte-level BPE: any string round-trips exactly and offsets come for free."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, t
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        unk_token=BOS,
        eos_token=IM_END,
        pad_token=PAD,
        additional_special_tokens=[IM_START],
        model_max_length=MAX_LEN,
        clean_up_tokenization_spaces=False,
        padding_side="right",
    )
    hf.chat_template = CHAT_TEMPLATE
    hf.save_pretrained(out_dir)
    # transformers 5 writes its own class name and a list-valued extra_special_tokens, which
    # transformers 4.x (still allowed by pyproject) cannot load; the v4 spellings load in both.
    cfg_path = out_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    extra = cfg.pop("extra_special_tokens", None)
    if isinstance(extra, list):
        cfg["additional_special_tokens"] = extra
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return hf


# --------------------------------------------------------------------------------------------
# Tiny model
# --------------------------------------------------------------------------------------------


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


def count_params(model: Any) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())


MODEL_README = """\
# tiny-chat

A deliberately tiny Llama-architecture chat model ({n_params:,} parameters: hidden size 128,
4 layers, 4 attention heads with 2 key/value heads, vocabulary 2048, tied embeddings), stored in
bfloat16 safetensors. It exists **only for tunesmith's tests and quickstart**, so that a full
fine-tune can run on a laptop CPU in seconds. It is not a useful language model.

## How it was built
Everything here is produced by `python scripts/build_assets.py` (seed {seed}), offline and
reproducibly:

* **Tokenizer**: byte-level BPE (vocabulary 2048) trained with the `tokenizers` library on the
  pretraining corpus. Special tokens: `<|endoftext|>` (bos/unk, id 0), `<|im_start|>` (id 1),
  `<|im_end|>` (eos, id 2), `<|pad|>` (pad, id 3). No BOS is added automatically.
* **Chat template**: ChatML (`<|im_start|>role\\ncontent<|im_end|>\\n`), no BOS, prefix-stable;
  supports `tools`, assistant `tool_calls`, content given as text parts, and `{{% generation %}}`
  markers for assistant-token masks.
* **Pretraining corpus** ({corpus_tokens:,} tokens): templated everyday English, neutral
  shopping/customer-service chats rendered in ChatML, and the train split of the Brightloom
  handbook. It contains none of the validation splits and none of the "Wren" house voice, so
  the base model knows the chat format and the domain's words, but not the voice that the
  sample fine-tuning datasets teach.
* **Training**: AdamW (peak learning rate {lr}, warm-up then cosine decay), {steps} steps of
  {batch} sequences x {seq} tokens on CPU with 2 threads (about 2.5 minutes); training loss
  {loss_start:.2f} at the first step -> {loss_end:.2f} (mean of the last 10 steps).

## Licence
Apache-2.0, the same as tunesmith.
"""


def build_model(data: Datasets, model_dir: Path, steps: int, seed: int) -> None:
    """Train the tokenizer, pretrain the tiny Llama and save both with the chat template."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(2)
    torch.manual_seed(seed)
    random.seed(seed)
    torch.use_deterministic_algorithms(True)

    if model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.mkdir(parents=True)

    docs = pretraining_corpus(data, seed)
    t0 = time.perf_counter()
    plain = [re.sub(r"<\|im_(start|end)\|>", "\n", d) for d in docs]
    tok = train_tokenizer(plain, model_dir)
    print(f"  tokenizer trained in {time.perf_counter() - t0:.1f}s (vocab {len(tok)})")

    ids: list[int] = []
    for enc in tok(docs, add_special_tokens=False)["input_ids"]:
        ids.extend(enc)
        ids.append(tok.bos_token_id)  # <|endoftext|> separates documents
    stream = torch.tensor(ids, dtype=torch.long)
    print(f"  corpus: {len(docs)} documents, {stream.numel():,} tokens")

    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=384,
        max_position_embeddings=MAX_LEN,
        tie_word_embeddings=True,
        rope_theta=10000.0,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        initializer_range=0.02,
    )
    model = LlamaForCausalLM(config)
    n_params = count_params(model)
    print(f"  model: {n_params:,} parameters")

    batch, seq, peak_lr, warmup = 16, 256, 3e-3, 20
    opt = torch.optim.AdamW(model.parameters(), lr=peak_lr, betas=(0.9, 0.95), weight_decay=0.1)

    def lr_at(step: int) -> float:
        if step < warmup:
            return peak_lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return peak_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        starts = torch.randint(0, stream.numel() - seq, (batch,), generator=gen)
        x = torch.stack([stream[s : s + seq] for s in starts.tolist()])
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 10 == 0 or step == steps - 1:
            print(f"  step {step:4d}  loss {losses[-1]:.3f}  ({time.perf_counter() - t0:.0f}s)")
    print(f"  pretraining took {(time.perf_counter() - t0) / 60:.1f} min")
    loss_start, loss_end = losses[0], sum(losses[-10:]) / min(10, len(losses))
    print(f"  loss {loss_start:.3f} -> {loss_end:.3f} (mean of last 10 steps)")

    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model.to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    model.save_pretrained(model_dir)
    for path in model_dir.iterdir():
        path.chmod(0o644)  # safetensors are written owner-only; these files ship in the package
    (model_dir / "README.md").write_text(
        MODEL_README.format(
            n_params=n_params,
            seed=seed,
            corpus_tokens=stream.numel(),
            steps=steps,
            batch=batch,
            seq=seq,
            lr=peak_lr,
            loss_start=loss_start,
            loss_end=loss_end,
        ),
        encoding="utf-8",
    )
    sample_generation(model_dir)


def sample_generation(model_dir: Path) -> None:
    """Greedy reply from the saved model, to eyeball that it speaks ChatML (not the voice)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    messages = [
        {"role": "system", "content": SUPPORT_SYSTEM},
        {"role": "user", "content": "Where is my order BL-12345? I ordered it last week."},
    ]
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=60, do_sample=False)
    reply = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=False)
    print("  sample greedy reply:", repr(reply))


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
        build_model(data, args.assets / "models" / "tiny-chat", args.steps, args.seed)
    print(f"done in {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
