"""The reference model that preference and KL-regularised objectives measure against.

Under LoRA/DoRA the reference is the base model itself with the adapter switched off
(PEFT's `disable_adapter()`), so no second copy is held in memory. Under full fine-tuning
the weights being trained are the base, so a frozen copy is taken before training starts;
with precomputed reference log-probabilities even that copy is not needed.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def has_adapter(model: torch.nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


class Reference:
    def __init__(self) -> None:
        self.frozen: torch.nn.Module | None = None

    def attach(self, model: torch.nn.Module) -> None:
        """Keep what is needed to run the reference later, while `model` still is the base."""
        if not has_adapter(model):
            self.frozen = copy.deepcopy(model).eval().requires_grad_(False)

    @contextmanager
    def use(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """The module to run as the reference, under no_grad. Without `attach` and without
        an adapter, `model` itself is the reference (it has not been trained yet)."""
        with torch.no_grad():
            if self.frozen is not None:
                yield self.frozen
            elif has_adapter(model):
                with model.disable_adapter():
                    yield model
            else:
                yield model
