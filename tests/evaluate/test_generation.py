"""generate_replies: batched left-padded greedy generation matches one-by-one replies;
seeded sampling repeats; stop sequences cut the reply."""

from __future__ import annotations

import pytest
import torch

from tunesmith.model.inference import generate_replies, load_trained, reply

QUESTIONS = ["Where is my order BL-12345?", "How do I reset my password?",
             "Can I return a skein of yarn I bought last week because the colour is not what I expected?"]


@pytest.fixture(scope="module")
def loaded(tiny_model_path):
    return load_trained(str(tiny_model_path))


def conversations():
    return [[{"role": "system", "content": "You are Wren, Brightloom's support assistant."},
             {"role": "user", "content": q}] for q in QUESTIONS]


def test_batched_greedy_matches_one_by_one(loaded) -> None:
    batched = generate_replies(loaded, conversations(), max_new_tokens=16)
    assert [len(r) for r in batched] == [1, 1, 1]
    single = [reply(loaded, c, max_new_tokens=16) for c in conversations()]
    assert [r[0] for r in batched] == single
    assert all(single)


def test_seeded_sampling_repeats_and_leaves_global_rng_alone(loaded) -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = generate_replies(loaded, conversations(), max_new_tokens=12, temperature=1.5, seed=7, n=3)
    after = torch.rand(1)
    assert torch.equal(before, after)
    again = generate_replies(loaded, conversations(), max_new_tokens=12, temperature=1.5, seed=7, n=3)
    assert first == again
    assert all(len(r) == 3 for r in first)
    assert len({text for r in first for text in r}) > 3  # sampling at high temperature varies


def test_stop_sequences_cut_before_the_stop(loaded) -> None:
    full = generate_replies(loaded, conversations()[:1], max_new_tokens=24)[0][0]
    words = full.split()
    assert len(words) > 2
    stop = words[2]
    cut = generate_replies(loaded, conversations()[:1], max_new_tokens=24, stop=[stop, "never-there"])[0][0]
    assert stop not in cut
    assert full.startswith(cut) and len(cut) < len(full)
