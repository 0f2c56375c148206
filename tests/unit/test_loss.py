"""The fused cross-entropy of train/loss.py computes its gradients by hand in the forward pass;
they must equal plain autograd through the unfused computation (projection, optional bias,
optional final-logit soft-capping, cross-entropy summed), chunk boundaries included."""

from __future__ import annotations

import pytest
import torch

from tunesmith.train.loss import _LinearCrossEntropy


def reference(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
              softcap: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    logits = hidden @ weight.t()
    if bias is not None:
        logits = logits + bias
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    loss = torch.nn.functional.cross_entropy(logits.double(), targets, reduction="sum")
    return loss, (logits.argmax(dim=-1) == targets).sum()


@pytest.mark.parametrize("softcap", [None, 2.0])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("chunk", [5, 64])  # several chunks with a ragged last one; one chunk
def test_hand_written_gradients_equal_autograd(softcap: float | None, with_bias: bool, chunk: int) -> None:
    generator = torch.Generator().manual_seed(0)
    tokens, width, vocab = 23, 16, 40
    # Logits of several units, so the soft cap (2.0) bends them a lot and a wrong tanh' shows.
    hidden = torch.randn(tokens, width, generator=generator, dtype=torch.float64)
    weight = torch.randn(vocab, width, generator=generator, dtype=torch.float64) * 0.8
    bias = torch.randn(vocab, generator=generator, dtype=torch.float64) if with_bias else None
    targets = torch.randint(vocab, (tokens,), generator=generator)
    scale = 1.7  # the incoming gradient (a step's normalisation) must scale every gradient

    inputs = [hidden, weight] + ([bias] if bias is not None else [])
    ours = [t.clone().float().requires_grad_() for t in inputs]
    theirs = [t.clone().requires_grad_() for t in inputs]
    loss, correct = _LinearCrossEntropy.apply(ours[0], ours[1], ours[2] if with_bias else None, targets,
                                              softcap, chunk, True)
    (loss * scale).backward()
    expected_loss, expected_correct = reference(theirs[0], theirs[1], theirs[2] if with_bias else None,
                                                targets, softcap)
    (expected_loss * scale).backward()

    assert int(correct) == int(expected_correct)
    assert float(loss.detach()) == pytest.approx(float(expected_loss.detach()), rel=1e-6)
    for name, got, want in zip(("hidden", "weight", "bias"), ours, theirs, strict=False):
        assert got.grad is not None, name
        torch.testing.assert_close(got.grad.double(), want.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_soft_capping_changes_the_gradient() -> None:
    """The softcap branch is really taken: capped and uncapped gradients differ."""
    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(8, 4, generator=generator)
    weight = (torch.randn(10, 4, generator=generator) * 2).requires_grad_()
    targets = torch.randint(10, (8,), generator=generator)
    grads = []
    for softcap in (None, 1.5):
        weight.grad = None
        loss, _ = _LinearCrossEntropy.apply(hidden, weight, None, targets, softcap, 3, True)
        loss.backward()
        grads.append(weight.grad.clone())
    assert not torch.allclose(grads[0], grads[1], atol=1e-3)


def test_without_gradients_the_loss_is_the_same() -> None:
    generator = torch.Generator().manual_seed(2)
    hidden = torch.randn(9, 4, generator=generator)
    weight = torch.randn(12, 4, generator=generator)
    targets = torch.randint(12, (9,), generator=generator)
    with torch.no_grad():
        plain, _ = _LinearCrossEntropy.apply(hidden, weight, None, targets, 3.0, 4, False)
    expected, _ = reference(hidden.double(), weight.double(), None, targets, 3.0)
    assert float(plain) == pytest.approx(float(expected), rel=1e-6)


def test_under_autocast_the_head_computes_in_bf16_and_returns_fp32_gradients() -> None:
    """Full fine-tuning in bf16: an fp32 master head weight gets an fp32 gradient from a bf16
    product, close to the fp32 result (bf16 rounding only), and the loss stays fp32."""
    from tunesmith.train.loss import _autocast_dtype

    generator = torch.Generator().manual_seed(2)
    hidden = torch.randn(30, 16, generator=generator)
    weight = torch.randn(50, 16, generator=generator) * 0.5
    targets = torch.randint(50, (30,), generator=generator)
    results = []
    for autocast in (False, True):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            compute = _autocast_dtype(h)
            loss, _ = _LinearCrossEntropy.apply(h, w, None, targets, None, 7, True, compute)
        assert compute == (torch.bfloat16 if autocast else None)
        loss.backward()
        assert loss.dtype == torch.float32 and h.grad.dtype == torch.float32 and w.grad.dtype == torch.float32
        results.append((loss.detach(), h.grad, w.grad))
    (loss32, h32, w32), (loss16, h16, w16) = results
    assert not torch.equal(w16, w32)  # the bf16 path was really taken
    torch.testing.assert_close(loss16, loss32, rtol=2e-2, atol=0)
    torch.testing.assert_close(h16, h32, rtol=5e-2, atol=5e-2)
    torch.testing.assert_close(w16, w32, rtol=5e-2, atol=5e-2)


def test_its_gradients_are_given_once_and_a_second_backward_says_so() -> None:
    """backward hands the gradients it computed in the forward pass over (so autograd keeps them
    as .grad without a copy); a second backward through the same graph is an error, not a
    silently doubled gradient."""
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(12, 4, generator=generator).requires_grad_()
    loss, _ = _LinearCrossEntropy.apply(torch.randn(6, 4, generator=generator), weight, None,
                                        torch.randint(12, (6,), generator=generator), None, 4, True)
    loss.backward(retain_graph=True)
    first = weight.grad.clone()
    with pytest.raises(RuntimeError, match="backward ran twice"):
        loss.backward()
    torch.testing.assert_close(weight.grad, first)


def test_no_tokens_give_a_zero_weight_gradient() -> None:
    weight = torch.randn(12, 4).requires_grad_()
    no_targets = torch.zeros(0, dtype=torch.long)
    loss, correct = _LinearCrossEntropy.apply(torch.zeros(0, 4), weight, None, no_targets, None, 4, True)
    loss.backward()
    assert float(loss.detach()) == 0 and int(correct) == 0
    assert weight.grad is not None and torch.count_nonzero(weight.grad) == 0
