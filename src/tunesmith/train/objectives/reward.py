"""Reward models: a scalar head on the base, trained on preference pairs (Bradley-Terry).

The model is the base loaded as a one-output sequence classifier (transformers'
...ForSequenceClassification, num_labels=1): a linear score head on the hidden state of a
conversation's last trained token (the answer's end-of-turn token). Under LoRA, PEFT's
SEQ_CLS task trains and saves that head in full beside the adapter, so the result loads
with plain transformers + PEFT. The loss is -log s(r(chosen) - r(rejected)) (Bradley-Terry),
with optional label smoothing; pairs are packed into padding-free rows like every method.
A trained reward model is loaded and used as a grader by reward_model.py.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tunesmith.model.adapters import causal_lm
from tunesmith.recipe import PreferenceConfig
from tunesmith.train.loss import hidden_states
from tunesmith.train.objectives.pairs import PairExample, collate_pairs, render_pair, summarise_pairs
from tunesmith.train.objectives.sequences import SequenceBatch


def sequence_scores(model: torch.nn.Module, batch: SequenceBatch) -> torch.Tensor:
    """The scalar score of every sequence of a packed row, read at its last trained token."""
    hidden = hidden_states(model, batch.input_ids, batch.position_ids)
    head = causal_lm(model).score
    return head(hidden[0, batch.last_trained]).squeeze(-1).float()


class RewardObjective:
    name = "reward"
    head = "score"
    render_example = staticmethod(render_pair)
    summarise = staticmethod(summarise_pairs)

    def __init__(self, config: PreferenceConfig | None = None):
        self.label_smoothing = config.label_smoothing if config is not None else 0.0

    def prepare(self, model: torch.nn.Module, tokenizer: Any, datasets: list[list[PairExample]],
                budget: int, device: torch.device) -> None:
        """A reward model needs no reference."""

    def collate(self, examples: list[PairExample]) -> SequenceBatch:
        return collate_pairs(examples)

    def units(self, batch: SequenceBatch) -> int:
        return batch.num_seqs // 2

    def __call__(self, model: torch.nn.Module, batch: SequenceBatch) -> tuple[torch.Tensor, dict[str, float]]:
        scores = sequence_scores(model, batch)
        chosen, rejected = scores[0::2], scores[1::2]
        margin = chosen - rejected
        smooth = self.label_smoothing
        losses = -(1 - smooth) * F.logsigmoid(margin) - smooth * F.logsigmoid(-margin)
        loss_sum = losses.sum()
        margin = margin.detach()
        return loss_sum, {"loss": float(loss_sum.detach()), "chosen_reward": float(chosen.detach().sum()),
                          "rejected_reward": float(rejected.detach().sum()),
                          "reward_margin": float(margin.sum()), "reward_accuracy": float((margin > 0).sum()),
                          "pairs": float(losses.numel()), "tokens": float(batch.token_seq.numel())}
