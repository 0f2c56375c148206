"""Sensitive-data detectors: what they flag, what they leave alone, and masking."""

from __future__ import annotations

import pytest

from tunesmith.data.sensitive import find_sensitive, luhn_valid, mask, sensitive_kinds


@pytest.mark.parametrize(("text", "kind", "label"), [
    ("write to jane.doe+billing@example.co.uk today", "email", "e-mail address"),
    ("call +44 20 7946 0958 after six", "phone", "phone number"),
    ("call +14155552671", "phone", "phone number"),
    ("my number is (415) 555-2671", "phone", "phone number"),
    ("my number is 415-555-2671.", "phone", "phone number"),
    ("card 4111 1111 1111 1111 exp 12/27", "card", "payment card number"),
    ("card 5555-5555-5555-4444", "card", "payment card number"),
    ("amex 378282246310005", "card", "payment card number"),
    ("key sk-proj-Abcdefghijklmnopqrstuvwx0123456789", "secret", "OpenAI API key"),
    ("aws AKIAIOSFODNN7EXAMPLE", "secret", "AWS access key"),
    ("token ghp_" + "a1B2" * 9, "secret", "GitHub token"),
    ("token github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", "secret", "GitHub token"),
    ("slack xoxb-123456789012-abcdefABCDEF", "secret", "Slack token"),
    ("google AIzaSyA-" + "x" * 31, "secret", "Google API key"),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc", "secret", "bearer token"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA", "secret", "private key"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----", "secret", "private key"),
])
def test_detects(text: str, kind: str, label: str) -> None:
    hits = find_sensitive(text)
    assert [(hit.kind, hit.label) for hit in hits] == [(kind, label)]
    hit = hits[0]
    assert text[hit.start:hit.end].strip()


@pytest.mark.parametrize("text", [
    "order 4155552671 shipped",                 # digits without separators
    "on 2024-03-05 at 12:30:45",                # dates and times
    "reference 12-34-5678, version 1.2.3",
    "card 4111 1111 1111 1112",                 # fails the Luhn check
    "invoice 1234567812345670",                 # Luhn-valid, but no card network starts with 1
    "we use sk-learn and scikit-learn",
    "3+4=7 and +5 points",
    "user@localhost is not an address",
    "AKIA is a prefix, AKIAshort too",
    "a bearer of good news",
])
def test_leaves_alone(text: str) -> None:
    assert find_sensitive(text) == []


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")


def test_masks_never_show_the_value() -> None:
    secret = "sk-proj-Abcdefghijklmnopqrstuvwx0123456789"
    card = "4111 1111 1111 1111"
    hits = find_sensitive(f"{secret} and {card} and jane.doe@example.com and +44 20 7946 0958")
    shown = " ".join(hit.masked for hit in hits)
    assert [hit.kind for hit in hits] == ["secret", "card", "email", "phone"]
    assert secret not in shown and secret[4:20] not in shown
    assert card not in shown and "4111 1111" not in shown
    assert "jane.doe" not in shown and "7946" not in shown
    assert hits[0].masked == "sk-p…89"
    assert hits[1].masked == "…1111"
    assert mask("sk-abcdefghij9f") == "sk-a…9f"
    bearer = find_sensitive("Bearer eyJhbGciOiJIUzI1NiJ9.abcdefghijk")[0]
    assert bearer.masked == "Bearer eyJh…jk"


def test_kinds_and_positions() -> None:
    text = "mail a@b.io, phone +1 415 555 2671, card 4242424242424242"
    assert sensitive_kinds(text) == {"email", "phone", "card"}
    hits = find_sensitive(text)
    assert [text[h.start:h.end] for h in hits] == ["a@b.io", "+1 415 555 2671", "4242424242424242"]


def test_a_card_is_not_also_a_phone() -> None:
    assert sensitive_kinds("pay with 4111-1111-1111-1111 now") == {"card"}
