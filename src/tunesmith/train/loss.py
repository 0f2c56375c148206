"""Token loss without full-vocabulary logits for the whole batch.

The decoder's hidden states are projected to the vocabulary only at positions that
are trained on, a chunk at a time; under autograd each chunk is recomputed in the
backward pass (activation checkpointing), so peak memory holds one chunk of logits
instead of tokens x vocab. Written here rather than taken from a library because it
must work on packed rows with any Hugging Face causal LM, plain or wrapped by PEFT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

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


def _chunk_loss(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                labels: torch.Tensor, softcap: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    logits = F.linear(hidden, weight, bias).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    loss = F.cross_entropy(logits, labels, reduction="sum")
    correct = (logits.argmax(dim=-1) == labels).sum()
    return loss, correct


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
    loss_sum = hidden.new_zeros((), dtype=torch.float32)
    correct = torch.zeros((), dtype=torch.long, device=hidden.device)
    for start in range(0, targets.numel(), chunk_tokens):
        args = (selected[start : start + chunk_tokens], head.weight, head.bias,
                targets[start : start + chunk_tokens], softcap)
        if torch.is_grad_enabled():
            part_loss, part_correct = checkpoint(_chunk_loss, *args, use_reentrant=False)
        else:
            part_loss, part_correct = _chunk_loss(*args)
        loss_sum = loss_sum + part_loss
        correct = correct + part_correct
    return TokenLoss(loss_sum, correct, int(targets.numel()))
