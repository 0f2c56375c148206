"""The fictional shop's facts and phrase tables (names, yarns, support intents with their
questions and replies, openers and closings) that scripts/build_assets.py writes datasets from."""

from __future__ import annotations

import random
import string
from collections.abc import Iterable
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
