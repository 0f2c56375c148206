"""Supervised fine-tuning: cross-entropy on the trained tokens of packed examples.

Replayed examples (data.replay, `RenderedExample.distill`) are trained towards the base
model's own next-token distribution instead: KL(base || model) on their trained tokens, the
base being the model with its adapter switched off (or, in full fine-tuning, a frozen copy).
Cross-entropy on a few sampled replies only pulls the model towards those exact words and
makes it surer of them than the base was; the distribution keeps what the base knew at every
token, which is the point of replay.
"""

from __future__ import annotations

from typing import Any

import torch

from tunesmith.data.pack import PackedBatch, collate_packed
from tunesmith.data.render import RenderedExample
from tunesmith.train.loss import shares_prefix, teacher_states, token_loss
from tunesmith.train.objectives.base import render_supervised, summarise_tokens
from tunesmith.train.objectives.reference import Reference


class SupervisedObjective:
    name = "sft"
    head = "causal_lm"
    render_example = staticmethod(render_supervised)
    summarise = staticmethod(summarise_tokens)

    def __init__(self, chunk_tokens: int = 1024):
        self.chunk_tokens = chunk_tokens
        self.reference = Reference()

    def prepare(self, model: torch.nn.Module, tokenizer: Any, datasets: list[list[Any]], budget: int,
                device: torch.device) -> None:
        """The base model as the reference of replayed examples, when there are any."""
        if any(getattr(e, "distill", False) for data in datasets for e in data):
            self.reference.attach(model)

    def collate(self, examples: list[RenderedExample]) -> PackedBatch:
        return collate_packed(examples, share_prefix=True)  # a shared system prompt is computed once

    def units(self, batch: PackedBatch) -> int:
        return batch.num_trained

    def __call__(self, model: torch.nn.Module, batch: PackedBatch) -> tuple[torch.Tensor, dict[str, float]]:
        if batch.shared_prefix and not shares_prefix(model):
            batch = batch.unshared()
        teacher = None
        if batch.distill is not None:
            with self.reference.use(model) as reference:
                teacher = teacher_states(reference, batch)
        out = token_loss(model, batch.input_ids, batch.labels, batch.position_ids,
                         chunk_tokens=self.chunk_tokens, shared_prefix=batch.shared_prefix,
                         distill=batch.distill, teacher=teacher)
        metrics = {"loss": float(out.loss_sum.detach()), "correct": float(out.correct),
                   "tokens": float(out.tokens)}
        if out.kl_sum is None:
            return out.loss_sum, metrics
        metrics.update(replay_kl=float(out.kl_sum.detach()), replay_tokens=float(out.distilled))
        return out.loss_sum + out.kl_sum, metrics
