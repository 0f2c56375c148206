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

from tunesmith.errors import ModelError


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel-style wrapper (`.module`), else the model."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, torch.nn.Module) else model


def has_adapter(model: torch.nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(unwrap(model), PeftModel)


class Reference:
    def __init__(self) -> None:
        self.frozen: torch.nn.Module | None = None

    def attach(self, model: torch.nn.Module) -> None:
        """Keep what is needed to run the reference later, while `model` still is the base."""
        if not has_adapter(model):
            self.frozen = copy.deepcopy(unwrap(model)).eval().requires_grad_(False)

    @contextmanager
    def use(self, model: torch.nn.Module, untrained: bool = False) -> Iterator[torch.nn.Module]:
        """The module to run as the reference, under no_grad. `untrained=True` says `model`
        has not been trained yet, so without an adapter it is its own reference."""
        with torch.no_grad():
            if self.frozen is not None:
                yield self.frozen
            elif has_adapter(model):
                with unwrap(model).disable_adapter():
                    yield unwrap(model)
            elif untrained:
                yield model
            else:
                raise ModelError("no reference model: full fine-tuning needs a frozen copy taken before "
                                 "training (Reference.attach) or precomputed reference log-probabilities")
