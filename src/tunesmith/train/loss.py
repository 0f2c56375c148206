"""Token loss without full-vocabulary logits for the whole batch.

The decoder's hidden states are projected to the vocabulary only at positions that
are trained on, a chunk at a time. Under autograd the gradient of each chunk is taken
in the same pass as its loss (softmax minus one-hot, computed in place in the chunk's
logits buffer) and projected straight back to the hidden states, so peak memory holds
one chunk of logits instead of tokens x vocab, nothing is recomputed in the backward
pass and the head costs two matrix products per trained token instead of three.
Written here rather than taken from a library because it must work on packed rows with
any Hugging Face causal LM, plain or wrapped by PEFT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from tunesmith.data.pack import IGNORE_INDEX


@dataclass(slots=True)
class TokenLoss:
    """Summed (not averaged) so accumulation can normalise over all tokens of a step."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    tokens: int


def causal_lm(model: torch.nn.Module) -> Any:
    """The underlying transformers causal LM, also when wrapped by PEFT."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of `hidden @ weight.T + bias` against `targets`, and the count of
    argmax hits, a chunk of tokens at a time. Gradients are computed during the forward pass
    (the loss is a scalar, so backward only scales them by the incoming gradient)."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor, softcap: float | None, chunk_tokens: int,
                with_grads: bool) -> tuple[torch.Tensor, torch.Tensor]:
        need_hidden = with_grads and ctx.needs_input_grad[0]
        need_weight = with_grads and ctx.needs_input_grad[1]
        need_bias = with_grads and bias is not None and ctx.needs_input_grad[2]
        count = targets.numel()
        loss_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
        correct = torch.zeros((), dtype=torch.long, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        fp32 = {"dtype": torch.float32, "device": weight.device}
        grad_weight = torch.zeros(weight.shape, **fp32) if need_weight else None
        grad_bias = torch.zeros(bias.shape, **fp32) if need_bias else None
        buffer = hidden.new_empty((min(chunk_tokens, count), weight.shape[0])) if count else None
        for start in range(0, count, chunk_tokens):
            part = hidden[start : start + chunk_tokens]
            labels = targets[start : start + chunk_tokens]
            rows = torch.arange(labels.numel(), device=labels.device)
            out = buffer[: labels.numel()]
            if bias is None:
                torch.mm(part, weight.t(), out=out)
            else:
                torch.addmm(bias, part, weight.t(), out=out)
            logits = out.float()  # a copy only for half-precision models
            tanh = None
            if softcap:
                tanh = logits.div_(softcap).tanh_()
                logits = tanh * softcap
            correct += (logits.argmax(dim=-1) == labels).sum()
            target_logits = logits[rows, labels]
            top = logits.amax(dim=-1, keepdim=True)
            probs = logits.sub_(top).exp_()  # in place: the buffer now holds exp(logit - max)
            total = probs.sum(dim=-1, keepdim=True)
            loss_sum += (top.squeeze(-1) + total.log().squeeze(-1) - target_logits).sum()
            if not (need_hidden or need_weight or need_bias):
                continue
            grad = probs.div_(total)  # softmax
            grad[rows, labels] -= 1  # d(loss) / d(logits)
            if tanh is not None:
                grad.mul_(tanh.square_().neg_().add_(1))
            grad = grad.to(weight.dtype)
            if grad_hidden is not None:
                torch.mm(grad, weight, out=grad_hidden[start : start + chunk_tokens])
            if grad_weight is not None:
                grad_weight.addmm_(grad.t().float(), part.float())
            if grad_bias is not None:
                grad_bias += grad.sum(dim=0, dtype=torch.float32)
        ctx.grads = (grad_hidden,
                     grad_weight.to(weight.dtype) if grad_weight is not None else None,
                     grad_bias.to(bias.dtype) if grad_bias is not None else None)
        ctx.mark_non_differentiable(correct)
        return loss_sum, correct

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor, _grad_correct: Any) -> tuple[Any, ...]:
        grads = [None if g is None else g * grad_loss.to(g.dtype) for g in ctx.grads]
        ctx.grads = None
        return (*grads, None, None, None, None)


def hidden_states(model: torch.nn.Module, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None,
                  attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    decoder = causal_lm(model).get_decoder()
    # use_cache=False matters: transformers splits a packed row into its examples (from the
    # restarting position ids) only when no KV cache is built; with one, examples would
    # attend to each other silently.
    out = decoder(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask,
                  use_cache=False)
    return out.last_hidden_state


def token_loss(model: torch.nn.Module, input_ids: torch.Tensor, labels: torch.Tensor,
               position_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
               chunk_tokens: int = 1024) -> TokenLoss:
    """Summed cross-entropy and correct-token count over positions whose label is set.

    `labels` are aligned with `input_ids` (label t is predicted from position t-1).
    """
    hidden = hidden_states(model, input_ids, position_ids, attention_mask)
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    selected = hidden[:, :-1][keep]
    targets = targets[keep]
    head = causal_lm(model).get_output_embeddings()
    softcap = getattr(causal_lm(model).config, "final_logit_softcapping", None)
    loss_sum, correct = _LinearCrossEntropy.apply(selected, head.weight, head.bias, targets, softcap,
                                                  max(1, chunk_tokens), torch.is_grad_enabled())
    return TokenLoss(loss_sum, correct, int(targets.numel()))
