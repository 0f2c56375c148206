"""Training data: load, render and fit the train and validation sets of a recipe."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from tunesmith.data.load import load_dataset
from tunesmith.data.render import RenderedExample, Renderer
from tunesmith.errors import DataError
from tunesmith.recipe import Recipe

RenderExample = Callable[[Renderer, Any, int, str], tuple[Any, bool]]
"""(renderer, record, max_length, overlong) -> (example or None when dropped, truncated)"""


@dataclass(slots=True)
class PreparedData:
    train: list[RenderedExample] | list[Any]
    validation: list[RenderedExample] | list[Any]
    format: str
    validation_source: str
    replay: int = 0
    """Examples of data.replay mixed into train (counted in it)."""
    dropped: list[str] = field(default_factory=list)
    truncated: int = 0
    fallback_template: bool = False

    @property
    def longest(self) -> int:
        return max(len(e) for e in self.train + self.validation)

    def summary(self) -> dict[str, Any]:
        return {"format": self.format, "train_examples": len(self.train),
                "replay_examples": self.replay,
                "validation_examples": len(self.validation), "validation_source": self.validation_source,
                "train_tokens": sum(len(e) for e in self.train),
                "trained_tokens": sum(e.trained_tokens for e in self.train),
                "dropped_overlong": len(self.dropped), "truncated": self.truncated,
                "fallback_chat_template": self.fallback_template}


def _render_all(path: str, recipe: Recipe, renderer: Renderer, max_length: int,
                prepared: PreparedData, render: RenderExample) -> tuple[list[Any], list[Any]]:
    """The fitted examples of a file and the records they came from."""
    dataset = load_dataset(path, recipe.data.format)
    out, records = [], []
    for record in dataset.records:
        fitted, truncated = render(renderer, record, max_length, recipe.data.overlong)
        if fitted is None:
            prepared.dropped.append(str(record.source))
            continue
        prepared.truncated += truncated
        out.append(fitted)
        records.append(record)
    prepared.format = dataset.format
    return out, records


def held_out_indices(count: int, recipe: Recipe) -> set[int]:
    """Which of `count` trainable examples the automatic validation split holds out: seeded,
    so a resumed or repeated run, and `tunesmith eval` afterwards, hold out the same ones."""
    held = int(count * recipe.data.validation_split) if count >= 10 else 0
    order = np.random.default_rng(recipe.training.seed).permutation(count).tolist()
    return set(order[:held])


def _renderer_for(recipe: Recipe, tokenizer: Any,
                  render: RenderExample | None) -> tuple[Renderer, RenderExample]:
    if render is None:
        from tunesmith.train.objectives import render_supervised

        render = render_supervised
    return Renderer(tokenizer, recipe.data.loss_on), render


def prepare_data(recipe: Recipe, tokenizer: Any, max_length: int,
                 render: RenderExample | None = None) -> PreparedData:
    """Train and validation examples of a recipe; `render` is the objective's (SFT by default)."""
    if not recipe.data.train:
        raise DataError("the recipe names no training data", where="data.train",
                        fix="set data.train to a JSONL, CSV or Parquet file")
    renderer, render = _renderer_for(recipe, tokenizer, render)
    prepared = PreparedData([], [], "", "", fallback_template=renderer.used_fallback_template)
    train, _ = _render_all(recipe.data.train, recipe, renderer, max_length, prepared, render)
    if recipe.data.validation:
        validation, _ = _render_all(recipe.data.validation, recipe, renderer, max_length, prepared, render)
        prepared.validation_source = recipe.data.validation
    else:
        held = held_out_indices(len(train), recipe)
        validation = [e for i, e in enumerate(train) if i in held]
        train = [e for i, e in enumerate(train) if i not in held]
        count = len(held)
        prepared.validation_source = f"{count} examples split from the training data" if count else "none"
    if not train:
        raise DataError("no training examples left after fitting to max_length",
                        where="data.max_length", fix="raise data.max_length or use overlong: truncate")
    if recipe.data.replay:
        # After the split, so replay is never held out and validation measures the task alone.
        task_format = prepared.format
        replay, _ = _render_all(recipe.data.replay, recipe, renderer, max_length, prepared, render)
        if prepared.format != task_format:
            raise DataError(f"data.replay holds {prepared.format} examples but the training data is "
                            f"{task_format}", where=recipe.data.replay,
                            fix="give replay examples in the training data's format")
        # Trained towards the base model's own distribution, not its sampled words (objectives/sft.py).
        train += [replace(e, distill=True) for e in replay]
        prepared.replay = len(replay)
    prepared.train, prepared.validation = train, validation
    return prepared


def validation_split_records(recipe: Recipe, tokenizer: Any,
                             render: RenderExample | None = None) -> list[Any]:
    """The records of a run's automatic validation split (no data.validation), found the way
    `prepare_data` found them: the same rendering, drops and seeded split."""
    if not recipe.data.train:
        return []
    renderer, render = _renderer_for(recipe, tokenizer, render)
    scratch = PreparedData([], [], "", "")
    _, records = _render_all(recipe.data.train, recipe, renderer, recipe.data.max_length, scratch, render)
    held = held_out_indices(len(records), recipe)
    return [r for i, r in enumerate(records) if i in held]
