"""Supervised fine-tuning: cross-entropy on the trained tokens of packed examples."""

from __future__ import annotations

import torch

from tunesmith.data.pack import PackedBatch, collate_packed
from tunesmith.data.render import RenderedExample
from tunesmith.train.loss import token_loss


class SupervisedObjective:
    name = "sft"

    def __init__(self, chunk_tokens: int = 1024):
        self.chunk_tokens = chunk_tokens

    def collate(self, examples: list[RenderedExample]) -> PackedBatch:
        return collate_packed(examples)

    def units(self, batch: PackedBatch) -> int:
        return batch.num_trained

    def __call__(self, model: torch.nn.Module, batch: PackedBatch) -> tuple[torch.Tensor, dict[str, float]]:
        out = token_loss(model, batch.input_ids, batch.labels, batch.position_ids,
                         chunk_tokens=self.chunk_tokens)
        return out.loss_sum, {"loss": float(out.loss_sum.detach()), "correct": float(out.correct),
                              "tokens": float(out.tokens)}
