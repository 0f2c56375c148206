"""Resolve "auto" hyperparameters against the dataset, the way hosted APIs do, and say
what was chosen so it can be printed and written into the run."""

from __future__ import annotations

import math

from tunesmith.recipe import Recipe

# Hosted fine-tuning picks 3 epochs, more for tiny sets and fewer for huge ones so the
# number of examples seen lands between these bounds.
MIN_EXAMPLES_SEEN = 100
MAX_EXAMPLES_SEEN = 25_000
MAX_AUTO_EPOCHS = 25
LEARNING_RATES = {"lora": 2e-4, "dora": 2e-4, "full": 2e-5}
CPU_MICRO_BATCH_TOKENS = 4096
GPU_MICRO_BATCH_TOKENS = 16384


def auto_epochs(examples: int) -> int:
    if examples <= 0:
        return 1
    if examples * 3 < MIN_EXAMPLES_SEEN:
        return min(MAX_AUTO_EPOCHS, math.ceil(MIN_EXAMPLES_SEEN / examples))
    if examples * 3 > MAX_EXAMPLES_SEEN:
        return max(1, MAX_EXAMPLES_SEEN // examples)
    return 3


def auto_batch_size(examples: int) -> int:
    """About 32 steps per epoch, as a power of two between 1 and 32."""
    target = max(1, examples // 32)
    return max(1, min(32, 2 ** int(math.log2(target))))


def resolve_auto(recipe: Recipe, examples: int, longest: int,
                 on_gpu: bool) -> tuple[Recipe, dict[str, object]]:
    """A copy of the recipe with every "auto" training value filled in, and those choices."""
    resolved = recipe.model_copy(deep=True)
    training = resolved.training
    chosen: dict[str, object] = {}
    if training.epochs == "auto":
        training.epochs = chosen["epochs"] = auto_epochs(examples)
    if training.batch_size == "auto":
        training.batch_size = chosen["batch_size"] = auto_batch_size(examples)
    if training.learning_rate == "auto":
        training.learning_rate = chosen["learning_rate"] = LEARNING_RATES[resolved.adapter.kind]
    if training.micro_batch_tokens == "auto":
        budget = GPU_MICRO_BATCH_TOKENS if on_gpu else CPU_MICRO_BATCH_TOKENS
        training.micro_batch_tokens = chosen["micro_batch_tokens"] = max(budget, longest)
    if resolved.preference.beta == "auto" and resolved.method == "dpo":
        from tunesmith.train.objectives.dpo import resolve_beta

        resolved.preference.beta = chosen["preference.beta"] = resolve_beta(resolved.preference)
    steps_per_epoch = math.ceil(examples / int(training.batch_size))
    total = steps_per_epoch * int(training.epochs)
    if training.max_steps:
        total = min(total, training.max_steps)
    if training.eval_every == "auto":
        training.eval_every = chosen["eval_every"] = max(1, total // 10)
    if training.save_every == "auto":
        training.save_every = chosen["save_every"] = max(1, total // 4)
    return resolved, chosen
