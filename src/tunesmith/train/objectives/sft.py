"""Supervised fine-tuning: cross-entropy on the trained tokens of packed examples."""

from __future__ import annotations

from typing import Any

import torch

from tunesmith.data.pack import PackedBatch, collate_packed
from tunesmith.data.render import RenderedExample
from tunesmith.train.loss import shares_prefix, token_loss
from tunesmith.train.objectives.base import render_supervised, summarise_tokens


class SupervisedObjective:
    name = "sft"
    head = "causal_lm"
    render_example = staticmethod(render_supervised)
    summarise = staticmethod(summarise_tokens)

    def __init__(self, chunk_tokens: int = 1024):
        self.chunk_tokens = chunk_tokens

    def prepare(self, model: torch.nn.Module, tokenizer: Any, datasets: list[list[Any]], budget: int,
                device: torch.device) -> None:
        """Nothing to prepare: SFT needs no reference model."""

    def collate(self, examples: list[RenderedExample]) -> PackedBatch:
        return collate_packed(examples, share_prefix=True)  # a shared system prompt is computed once

    def units(self, batch: PackedBatch) -> int:
        return batch.num_trained

    def __call__(self, model: torch.nn.Module, batch: PackedBatch) -> tuple[torch.Tensor, dict[str, float]]:
        if batch.shared_prefix and not shares_prefix(model):
            batch = batch.unshared()
        out = token_loss(model, batch.input_ids, batch.labels, batch.position_ids,
                         chunk_tokens=self.chunk_tokens, shared_prefix=batch.shared_prefix)
        return out.loss_sum, {"loss": float(out.loss_sum.detach()), "correct": float(out.correct),
                              "tokens": float(out.tokens)}
