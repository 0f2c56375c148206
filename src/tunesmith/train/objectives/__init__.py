"""Objectives: one per training method, found by the method's name (`method: dpo` is dpo.py).

OBJECTIVES is the table the loop, evaluation and the registry build an objective from; adding
a method is a module with its objective class and one row here (base.py: the shape they share).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from tunesmith.errors import RecipeError
from tunesmith.train.objectives.base import Objective, render_supervised, summarise_tokens
from tunesmith.train.objectives.dpo import PreferenceObjective
from tunesmith.train.objectives.grpo import GroupRelativeObjective
from tunesmith.train.objectives.reward import RewardObjective
from tunesmith.train.objectives.sft import SupervisedObjective

if TYPE_CHECKING:
    from tunesmith.recipe import Recipe

__all__ = ["OBJECTIVES", "Objective", "make_objective", "render_supervised", "summarise_tokens"]

# method -> objective built from the recipe and the loss's chunk size (training.loss_chunk_tokens)
OBJECTIVES: dict[str, Callable[[Recipe, int], Objective]] = {
    "sft": lambda recipe, chunk_tokens: SupervisedObjective(chunk_tokens),
    "dpo": lambda recipe, chunk_tokens: PreferenceObjective(recipe.preference, chunk_tokens),
    "reward": lambda recipe, chunk_tokens: RewardObjective(recipe.preference),
    "grpo": lambda recipe, chunk_tokens: GroupRelativeObjective(recipe.reinforcement, chunk_tokens),
}


def make_objective(method: str, chunk_tokens: int, recipe: Recipe | None = None) -> Objective:
    """The objective of `method`; without a recipe, with that method's default settings."""
    from tunesmith.recipe import Recipe

    if method not in OBJECTIVES:
        raise RecipeError(f"method '{method}' is not available", where="method",
                          fix=f"use one of: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[method](recipe or Recipe(method=method), chunk_tokens)
