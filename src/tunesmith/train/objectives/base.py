"""The shape every objective has: a small object that turns a micro-batch into a summed loss
and summed metrics. The one training loop never branches on the method.

Besides the loss, an objective owns what differs between methods and nothing else: how a
record becomes a training example (`render_example`), what the model needs before training
starts (`prepare`: a reference model, precomputed reference log-probabilities, a tokenizer
for sampling) and how summed metrics become reported ones (`summarise`). `head` says which
model class the base is loaded as ("causal_lm", or "score" for a scalar reward head).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Protocol

import torch

from tunesmith.data.render import fit_length

if TYPE_CHECKING:
    from tunesmith.data.records import Record
    from tunesmith.data.render import Renderer


class Objective(Protocol):
    name: str
    head: str

    def render_example(self, renderer: Renderer, record: Record, max_length: int,
                       overlong: str) -> tuple[Any | None, bool]:
        """The training example of a record (None: dropped as overlong), and whether it was cut."""

    def prepare(self, model: torch.nn.Module, tokenizer: Any, datasets: list[list[Any]],
                budget: int, device: torch.device) -> None:
        """Called once the adapter is applied and before any checkpoint is loaded into it."""

    def collate(self, examples: list[Any]) -> Any:
        """Build one micro-batch from rendered examples."""

    def units(self, batch: Any) -> int:
        """What the loss is normalised over (trained tokens for SFT, pairs for DPO)."""

    def __call__(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """Summed loss over the batch's units, and summed metrics."""

    def summarise(self, totals: dict[str, float]) -> dict[str, float]:
        """Reported metrics from the summed ones of a step or an evaluation; includes "loss"."""


def render_supervised(renderer: Renderer, record: Record, max_length: int,
                      overlong: str) -> tuple[Any | None, bool]:
    example = renderer.render(record)
    fitted = fit_length(example, max_length, overlong)
    return fitted, fitted is not None and fitted is not example


def summarise_tokens(totals: dict[str, float]) -> dict[str, float]:
    """Loss, accuracy and perplexity of the label targets; the replayed (distilled) tokens'
    mean KL apart as `replay_kl`, since it is not a loss on the task. `tokens` counts both."""
    tokens = max(totals.get("tokens", 0.0), 1.0)
    loss = totals.get("loss", 0.0) / tokens
    summary = {"loss": loss, "token_accuracy": totals.get("correct", 0.0) / tokens,
               "perplexity": math.exp(min(loss, 50.0)),
               "tokens": totals.get("tokens", 0.0) + totals.get("replay_tokens", 0.0)}
    if totals.get("replay_tokens"):
        summary["replay_kl"] = totals.get("replay_kl", 0.0) / totals["replay_tokens"]
    return summary
