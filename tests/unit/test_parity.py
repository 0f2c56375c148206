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
