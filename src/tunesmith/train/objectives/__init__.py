"""Objectives: each method is a small object that turns a micro-batch into a summed loss
and summed metrics. The one training loop never branches on the method."""

from __future__ import annotations

from typing import Any, Protocol

import torch

from tunesmith.errors import RecipeError


class Objective(Protocol):
    name: str

    def collate(self, examples: list[Any]) -> Any:
        """Build one micro-batch from rendered examples."""

    def units(self, batch: Any) -> int:
        """What the loss is normalised over (trained tokens for SFT, pairs for DPO)."""

    def __call__(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """Summed loss over the batch's units, and summed metrics."""


def make_objective(method: str, chunk_tokens: int) -> Objective:
    from tunesmith.train.objectives.sft import SupervisedObjective

    objectives = {"sft": SupervisedObjective}
    if method not in objectives:
        raise RecipeError(f"method '{method}' is not available yet", where="method",
                          fix=f"use one of: {', '.join(objectives)}")
    return objectives[method](chunk_tokens)
