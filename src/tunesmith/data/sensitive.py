"""Detect sensitive data in training text: e-mail addresses, phone numbers, payment
cards and secrets (API keys, tokens, private keys).

A fine-tuned model can repeat what it was trained on, so these are worth a warning
before any compute is spent. Patterns favour precision: phone numbers need separators
or a leading +, so order numbers and dates are not flagged, and card numbers must pass
the Luhn check. Matches are only ever shown masked; the full value never leaves here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

EMAIL = "email"
PHONE = "phone"
CARD = "card"
SECRET = "secret"
KINDS = (EMAIL, PHONE, CARD, SECRET)

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24}(?![\w-])")
# International: a leading + and 8-15 digits, single separators between them.
# US-style: 3-3-4 digits with separators, or parentheses around the area code.
_PHONE_INTL = re.compile(r"(?<![\w+])\+\d(?:\)?[ .-]?\(?\d){7,14}(?!\d)")
_PHONE_US = re.compile(r"(?<![\w+-])(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w-])")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
# First digits of the major card networks (Mastercard 2/5, Amex/Diners/JCB 3, Visa 4,
# Discover/UnionPay 6): keeps Luhn-valid order numbers starting with 0, 1, 7-9 out.
_CARD_FIRST_DIGITS = "23456"

# (label, literal triggers, pattern): a pattern runs only when a trigger is in the text,
# which keeps the scan cheap on the many texts that hold no secret at all. A pattern
# with a "secret" group masks only that group (the token after "Bearer").
_SECRETS: tuple[tuple[str, tuple[str, ...], re.Pattern[str]], ...] = (
    ("OpenAI API key", ("sk-",),
     re.compile(r"(?<![\w-])sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}")),
    ("AWS access key", ("AKIA", "ASIA"),
     re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Z0-9])")),
    ("GitHub token", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
     re.compile(r"(?<!\w)(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_\w{22,})")),
    ("Slack token", ("xox",), re.compile(r"(?<!\w)xox[abprs]-[A-Za-z0-9-]{10,}")),
    ("Google API key", ("AIza",), re.compile(r"(?<![\w-])AIza[0-9A-Za-z_-]{35}(?![\w-])")),
    ("bearer token", ("earer",),
     re.compile(r"\b[Bb]earer\s+(?P<secret>[A-Za-z0-9._~+/=-]{20,})")),
    ("private key", ("PRIVATE KEY",), re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")),
)
# A run of digits and separators: phone and card patterns run only inside runs of 7 or
# more digits, so long texts are scanned once by this cheap pattern.
_DIGIT_RUN = re.compile(r"[0-9][0-9 ().-]{5,}[0-9]")
_MIN_RUN_DIGITS = 7


@dataclass(frozen=True, slots=True)
class Hit:
    """One sensitive value found in a text: its kind, a label, and a masked preview."""

    kind: str
    label: str
    masked: str
    start: int
    end: int


def mask(value: str, head: int = 4, tail: int = 2) -> str:
    """Enough of a value to find it in the file, never enough to use it."""
    if len(value) <= head + tail + 2:
        return value[:1] + "…"
    return f"{value[:head]}…{value[-tail:]}"


def _mask_email(value: str) -> str:
    local, _, domain = value.partition("@")
    return f"{local[:1]}…@{domain}"


def _mask_digits(value: str) -> str:
    digits = re.sub(r"\D", "", value)
    return f"…{digits[-2:]}"


def _mask_card(value: str) -> str:
    digits = re.sub(r"\D", "", value)
    return f"…{digits[-4:]}"


def luhn_valid(digits: str) -> bool:
    """The checksum every payment card number carries."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _is_card(value: str) -> bool:
    digits = re.sub(r"[ -]", "", value)
    if not 13 <= len(digits) <= 19 or digits[0] not in _CARD_FIRST_DIGITS:
        return False
    if len(set(digits)) == 1:
        return False
    return luhn_valid(digits)


def _find(pattern: re.Pattern[str], text: str, kind: str, label: str,
          masker: Callable[[str], str], accept: Callable[[str], bool] | None = None,
          span: tuple[int, int] | None = None) -> list[Hit]:
    hits = []
    start, end = span or (0, len(text))
    for match in pattern.finditer(text, start, end):
        value = match.group()
        if accept is not None and not accept(value):
            continue
        secret = match.groupdict().get("secret")
        shown = masker(value)
        if secret:
            shown = value[: match.start("secret") - match.start()] + masker(secret)
        hits.append(Hit(kind, label, shown, match.start(), match.end()))
    return hits


def _private_key_mask(value: str) -> str:
    return value  # the header names the key type and holds nothing secret


def find_sensitive(text: str) -> list[Hit]:
    """Every sensitive value in `text`, in order of position."""
    hits: list[Hit] = []
    if "@" in text:
        hits += _find(_EMAIL, text, EMAIL, "e-mail address", _mask_email)
    for label, triggers, pattern in _SECRETS:
        for trigger in triggers:
            if trigger in text:
                masker = _private_key_mask if label == "private key" else mask
                hits += _find(pattern, text, SECRET, label, masker)
                break
    for run in _DIGIT_RUN.finditer(text):
        if sum(char.isdigit() for char in run.group()) >= _MIN_RUN_DIGITS:
            # Two characters of context before ("+(") and one after, for the boundaries.
            span = (max(0, run.start() - 2), min(len(text), run.end() + 1))
            hits += _digit_hits(text, hits, span)
    hits.sort(key=lambda hit: hit.start)
    return hits


def _digit_hits(text: str, found: list[Hit], span: tuple[int, int]) -> list[Hit]:
    """Cards and phones within one digit run; a phone inside a card or a secret is not one."""
    cards = _find(_CARD, text, CARD, "payment card number", _mask_card, _is_card, span)
    taken = [(hit.start, hit.end) for hit in [*found, *cards]]
    phones = _find(_PHONE_INTL, text, PHONE, "phone number", _mask_digits, span=span)
    phones += _find(_PHONE_US, text, PHONE, "phone number", _mask_digits, span=span)
    kept: list[Hit] = []
    for hit in sorted(phones, key=lambda h: (h.start, -h.end)):
        spans = taken + [(k.start, k.end) for k in kept]
        if not any(start < hit.end and hit.start < end for start, end in spans):
            kept.append(hit)
    return cards + kept


def sensitive_kinds(text: str) -> set[str]:
    """The kinds of sensitive data in `text` (email, phone, card, secret)."""
    return {hit.kind for hit in find_sensitive(text)}
