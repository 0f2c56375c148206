"""Held-out metrics of an objective: the numbers training reports at each evaluation, the
baseline before the first step, and each example's loss in `tunesmith eval` and the registry's
held-out loss all come from this one function."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from tunesmith.train import distributed as dist

if TYPE_CHECKING:
    from tunesmith.train.objectives import Objective


@torch.no_grad()
def evaluate(model: torch.nn.Module, objective: Objective, examples: Sequence[Any], budget: int,
             device: torch.device, parallel: dist.Parallel | None = None) -> dict[str, float]:
    """The objective's metrics over held-out examples (loss, token accuracy for SFT), packed like
    training (under several processes: each rank its share, sums reduced over ranks)."""
    was_training = model.training
    model.eval()
    parallel = parallel or dist.Parallel(dist.SINGLE, model, objective)
    lengths = [len(e) for e in examples]
    totals: dict[str, float] = {}
    for micro, real in dist.shard_examples(parallel.ctx, range(len(examples)), lengths, budget):
        batch = objective.collate([examples[i] for i in micro]).to(device)
        _, metrics = parallel(batch)
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + (value if real else 0.0)
    model.train(was_training)
    return objective.summarise(dist.sum_metrics(parallel.ctx, totals))
