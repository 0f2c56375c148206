"""The parity comparison: logits within tolerance, greedy tokens equal, near ties accepted only
when the reference's two best logits are closer than twice the tolerance."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tunesmith.model.export.errors import ParityError
from tunesmith.model.export.parity import Reference, check, compare


class FixedLogits:
    """A stand-in model returning given logits for any input."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits

    def __call__(self, input_ids, **_):
        return SimpleNamespace(logits=self.logits.unsqueeze(0))


def reference(logits: torch.Tensor, prompt_length: int = 2) -> Reference:
    # The sequence continues with the reference's own greedy picks after the prompt.
    tokens = [0] * prompt_length + [int(x) for x in logits[prompt_length - 1:-1].argmax(-1)]
    return Reference([tokens], [prompt_length], [logits])


def test_identical_logits_pass() -> None:
    logits = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    result = compare(reference(logits), FixedLogits(logits.clone()), "same", "f32")
    assert result.passed and result.max_logit_diff == 0 and result.tokens_compared == 3


def test_flip_at_a_near_tie_is_accepted_and_counted() -> None:
    logits = torch.zeros(4, 3)
    logits[:, 0] = 5.0
    logits[2, 1] = 4.9995          # the reference barely prefers token 0 at position 2
    got = logits.clone()
    got[2, 1] = 5.0004             # within f32's 1e-3, the export prefers token 1
    result = compare(reference(logits), FixedLogits(got), "tie", "f32")
    assert result.near_ties == 1 and result.token_mismatches == 0 and result.passed


def test_a_flipped_token_outside_a_near_tie_is_a_mismatch() -> None:
    logits = torch.zeros(4, 3)
    logits[:, 0] = 5.0
    got = logits.clone()
    got[2, 1] = 5.3                # the reference's margin was 5.0: far from a tie
    result = compare(reference(logits), FixedLogits(got), "flip", "q8_0")
    assert result.max_logit_diff == pytest.approx(5.3)
    assert not result.passed and result.token_mismatches == 1


def test_logit_drift_beyond_tolerance_fails_with_the_number() -> None:
    logits = torch.zeros(4, 3)
    logits[:, 0] = 5.0
    got = logits + 0.01            # same argmax everywhere, but 10x f32's tolerance
    result = compare(reference(logits), FixedLogits(got), "drift", "f32")
    assert result.token_mismatches == 0 and not result.passed
    with pytest.raises(ParityError, match=r"max logit difference 0\.01"):
        check([result])


def test_more_near_ties_than_stated_fail() -> None:
    """A runtime may flip a stated number of near ties (llama.cpp: LLAMACPP_NEAR_TIES), no more."""
    from tunesmith.model.export.parity import compare_logits

    logits = torch.zeros(5, 3)
    logits[:, 0] = 5.0
    logits[1:4, 1] = 4.99          # three near ties
    got = logits.clone()
    got[1:4, 1] = 5.01
    result = compare_logits(reference(logits), [got], "ties", "q8_0", tolerance=0.05)
    assert result.near_ties == 3 and result.token_mismatches == 0 and result.passed
    result.near_ties_allowed = 2
    assert not result.passed and "at most 2 allowed" in result.summary()


def test_greedy_decoding_is_compared_up_to_the_first_difference() -> None:
    from tunesmith.model.export.parity import compare_generation

    logits = torch.zeros(5, 3)
    logits[:, 0] = 5.0
    logits[2, 1] = 4.99            # a near tie where the continuation's second token is chosen
    ref = reference(logits)        # prompt of 2, continuation of 3 tokens (all 0)
    assert compare_generation(ref, [[0, 0, 0]], tolerance=0.05) == []
    assert compare_generation(ref, [[0, 1, 2]], tolerance=0.05) == []        # flips at the tie; rest unjudged
    problems = compare_generation(ref, [[2, 0, 0]], tolerance=0.05)           # flips where no tie was
    assert len(problems) == 1 and "token 2 where the trained model gives 0 (token 1 of 3)" in problems[0]
    assert compare_generation(ref, [[]], tolerance=0.05)               # stopped at once, where no tie was


def test_logit_spread_is_the_mean_standard_deviation_per_position() -> None:
    from tunesmith.model.export.parity import logit_spread

    logits = torch.tensor([[0.0, 2.0], [0.0, 4.0]])
    assert logit_spread(Reference([[0, 1]], [1], [logits])) == pytest.approx((2 ** 0.5 + 8 ** 0.5) / 2)


def test_an_informational_comparison_does_not_fail_the_check() -> None:
    logits = torch.zeros(4, 3)
    logits[:, 0] = 5.0
    result = compare(reference(logits), FixedLogits(logits + 1.0), "second opinion", "f32")
    result.required = False
    check([result])
    result.required = True
    with pytest.raises(ParityError):
        check([result])
