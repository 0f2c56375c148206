"""Bootstrap intervals are deterministic given a seed; win/tie/loss and verdicts; BM25
ranks the obviously similar document first; few-shot prompts keep the system first."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tunesmith.data.records import ChatRecord, ReinforcementRecord, Source
from tunesmith.evaluate.bm25 import BM25
from tunesmith.evaluate.examples import ShotPicker, to_item, with_shots
from tunesmith.evaluate.stats import compare, mean_interval, ratio_interval, resamples

SCORES = [0.1, 0.9, 0.4, 0.8, 0.3, 0.7, 0.65, 0.2, 0.5, 1.0]


def test_bootstrap_intervals_are_deterministic_given_a_seed() -> None:
    first = mean_interval(SCORES, resamples(len(SCORES), 500, seed=3))
    again = mean_interval(SCORES, resamples(len(SCORES), 500, seed=3))
    other = mean_interval(SCORES, resamples(len(SCORES), 500, seed=4))
    assert first == again
    assert (first.low, first.high) != (other.low, other.high)
    assert first.value == pytest.approx(np.mean(SCORES))
    assert first.low < first.value < first.high
    assert first.low >= 0.0 and first.high <= 1.0


def test_interval_narrows_with_more_examples_and_covers_the_truth() -> None:
    rng = np.random.default_rng(0)
    small = rng.random(20).tolist()
    large = rng.random(2000).tolist()
    a = mean_interval(small, resamples(20, 400, 0))
    b = mean_interval(large, resamples(2000, 400, 0))
    assert (b.high - b.low) < (a.high - a.low) / 4
    assert b.low < 0.5 < b.high


def test_ratio_interval_weights_by_tokens() -> None:
    # two examples: loss sums 10 over 10 tokens and 1 over 100 tokens -> 11 / 110
    interval = ratio_interval([10.0, 1.0], [10.0, 100.0], resamples(2, 200, 0))
    assert interval.value == pytest.approx(0.1)
    assert interval.low >= 0.01 - 1e-12 and interval.high <= 1.0 + 1e-12


def test_compare_counts_wins_ties_losses_and_gives_a_verdict() -> None:
    tuned = [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 1.0, 1.0, 1.0, 0.0]
    base = [0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.0, 0.0, 0.0, 1.0]
    result = compare("base", "exact", tuned, base, resamples(10, 1000, 0))
    assert (result.wins, result.ties, result.losses) == (7, 2, 1)
    assert result.verdict == "better"
    assert compare("base", "exact", base, tuned, resamples(10, 1000, 0)).verdict == "worse"
    # lower is better for loss: a lower tuned loss is a win
    loss = compare("base", "loss", [1.0, 1.0], [2.0, 2.0], resamples(2, 100, 0), higher_is_better=False)
    assert loss.wins == 2 and loss.difference.value == pytest.approx(1.0)
    same = compare("base", "exact", [0.5] * 6, [0.5] * 6, resamples(6, 100, 0))
    assert same.ties == 6 and same.verdict == "no clear difference"


def test_empty_values_give_nan_not_an_error() -> None:
    assert math.isnan(mean_interval([], resamples(1, 10, 0)).value)


def test_bm25_ranks_the_matching_document_first() -> None:
    docs = ["where is my parcel, it has not arrived", "how do I reset my password",
            "can I return yarn", "the parcel arrived damaged"]
    index = BM25(docs)
    assert index.top("my password reset link expired", 2)[0] == 1
    assert index.top("parcel not arrived yet", 1) == [0]
    assert index.scores("zebra") == [0.0] * 4


def chat(user: str, answer: str, system: bool = True) -> ChatRecord:
    messages = ([{"role": "system", "content": "Be kind."}] if system else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return ChatRecord(messages, Source("train.jsonl", 1))


def test_shots_go_after_the_system_message_most_similar_last() -> None:
    train = [chat("reset password please", "Use the link."), chat("where is my order", "In transit."),
             chat("order status for BL-1", "Shipped."), chat("return yarn", "Use the label.")]
    picker = ShotPicker(train, seed=0)
    item = to_item(0, chat("order status please", "On its way."))
    assert item.reference == "On its way." and item.prompt[-1]["role"] == "user"
    shots = picker.retrieved(item.question(), 2)
    assert "status" in shots[-1][0]["content"]  # the best match sits next to the question
    prompt = with_shots(item.prompt, shots)
    assert prompt[0]["role"] == "system" and prompt[-1] == item.prompt[-1]
    assert [m["role"] for m in prompt[1:-1]] == ["user", "assistant", "user", "assistant"]
    assert all(m["role"] != "system" for shot in shots for m in shot)
    assert picker.fewshot(2) == ShotPicker(train, seed=0).fewshot(2)


def test_reinforcement_items_expose_their_fields_to_graders() -> None:
    record = ReinforcementRecord([{"role": "user", "content": "I was charged twice"}], Source("t", 3),
                                 {"category": "billing"})
    item = to_item(0, record)
    assert item.grader_item["category"] == "billing"
    assert item.reference is None and not item.has_loss
