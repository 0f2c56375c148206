"""Per-token and per-sequence log-probabilities of packed rows, without full-vocabulary logits.

Preference and reinforcement objectives need log p(target) of every trained token, with a
different upstream gradient per token (a DPO weight per pair, a GRPO advantage per sample),
so the summed cross-entropy of train/loss.py does not fit. As there, the decoder's hidden
states are projected to the vocabulary only at trained positions, a chunk at a time. The
gradient of log p(target) with respect to a token's hidden state is a hidden-sized vector
(W^T (onehot - softmax)), so it is kept from the forward pass and only scaled in backward;
the head's own weight gradient (full fine-tuning only: LoRA leaves the head frozen) is
recomputed chunk by chunk in backward. Peak memory is one chunk of logits either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from tunesmith.model.adapters import causal_lm
from tunesmith.train.loss import TILE_LOGITS, hidden_states, predicting_states


def _chunk(part: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor,
           softcap: float | None, want_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(labels) of one chunk, and d log p / d (pre-softcap logits) when asked."""
    logits = (part @ weight.t() if bias is None else torch.addmm(bias, part, weight.t())).float()
    tanh = None
    if softcap:
        tanh = (logits / softcap).tanh()
        logits = tanh * softcap
    rows = torch.arange(labels.numel(), device=labels.device)
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all[rows, labels]
    if not want_grad:
        return logp, None
    grad = logp_all.exp_().neg_()  # in place: -softmax
    grad[rows, labels] += 1
    if tanh is not None:
        grad.mul_(1 - tanh.square())
    return logp, grad


class _TokenLogProb(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor, softcap: float | None, chunk_tokens: int) -> torch.Tensor:
        need_hidden = ctx.needs_input_grad[0]
        out = torch.empty(targets.numel(), dtype=torch.float32, device=hidden.device)
        unit_grads = torch.empty_like(hidden) if need_hidden else None
        for start in range(0, targets.numel(), chunk_tokens):
            stop = start + chunk_tokens
            logp, grad = _chunk(hidden[start:stop], weight, bias, targets[start:stop], softcap, need_hidden)
            out[start:stop] = logp
            if grad is not None:
                unit_grads[start:stop] = grad.to(weight.dtype) @ weight
        ctx.save_for_backward(hidden, weight, bias, targets)
        ctx.unit_grads = unit_grads
        ctx.softcap, ctx.chunk_tokens = softcap, chunk_tokens
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        hidden, weight, bias, targets = ctx.saved_tensors
        grad_hidden = grad_weight = grad_bias = None
        if ctx.unit_grads is not None:
            grad_hidden = ctx.unit_grads * grad_out.unsqueeze(-1).to(ctx.unit_grads.dtype)
        if ctx.needs_input_grad[1] or (bias is not None and ctx.needs_input_grad[2]):
            grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            grad_bias = torch.zeros(bias.shape, dtype=torch.float32, device=weight.device) \
                if bias is not None else None
            for start in range(0, targets.numel(), ctx.chunk_tokens):
                stop = start + ctx.chunk_tokens
                part = hidden[start:stop]
                _, grad = _chunk(part, weight, bias, targets[start:stop], ctx.softcap, True)
                grad.mul_(grad_out[start:stop].unsqueeze(-1))
                grad_weight.addmm_(grad.t(), part.float())
                if grad_bias is not None:
                    grad_bias += grad.sum(dim=0)
            grad_weight = grad_weight.to(weight.dtype)
            grad_bias = grad_bias.to(bias.dtype) if grad_bias is not None else None
        return grad_hidden, grad_weight, grad_bias, None, None, None


def token_logprobs(model: torch.nn.Module, input_ids: torch.Tensor, labels: torch.Tensor,
                   position_ids: torch.Tensor | None = None, chunk_tokens: int = 1024,
                   shared_prefix: int = 0) -> torch.Tensor:
    """log p(label_t | tokens before t) at every position whose label is set, in row order.

    `labels` are aligned with `input_ids` (label t is predicted from position t-1), as in
    data/pack.py; the result is differentiable and float32. With `shared_prefix` = P the row
    holds an untrained prefix of P tokens once and every sequence after it continues it (its
    positions start at P; train/loss.py's per-example attention reads such a row), so a
    sequence's first token is predicted from the prefix's last position.
    """
    hidden = hidden_states(model, input_ids, position_ids, shared_prefix=shared_prefix)
    selected, keep = predicting_states(hidden, labels, position_ids, shared_prefix)
    lm = causal_lm(model)
    head = lm.get_output_embeddings()
    softcap = getattr(lm.config, "final_logit_softcapping", None)
    tile = max(1, min(chunk_tokens, TILE_LOGITS // head.weight.shape[0]))
    return _TokenLogProb.apply(selected, head.weight, head.bias, labels[:, 1:][keep], softcap, tile)


@dataclass(slots=True)
class SequenceLogProbs:
    """Summed log-probability of each sequence of a packed row, with its trained-token count."""

    total: torch.Tensor
    count: torch.Tensor
    tokens: torch.Tensor
    """The per-token log-probs these sums were made from (for per-token objectives)."""

    @property
    def mean(self) -> torch.Tensor:
        return self.total / self.count.clamp(min=1)


def sequence_logprobs(model: torch.nn.Module, input_ids: torch.Tensor, labels: torch.Tensor,
                      position_ids: torch.Tensor, token_seq: torch.Tensor, num_seqs: int,
                      chunk_tokens: int = 1024, shared_prefix: int = 0) -> SequenceLogProbs:
    """Per-sequence sums of `token_logprobs`; `token_seq[i]` names the sequence of trained token i."""
    logp = token_logprobs(model, input_ids, labels, position_ids, chunk_tokens, shared_prefix)
    total = torch.zeros(num_seqs, dtype=logp.dtype, device=logp.device).index_add(0, token_seq, logp)
    count = torch.bincount(token_seq, minlength=num_seqs).to(logp.dtype)
    return SequenceLogProbs(total, count, logp)
