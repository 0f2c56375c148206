"""What is evaluated (a run, an adapter or a model), the models it is compared with, and
each example's loss measured by the training loop's own evaluation (evaluate/heldout.py)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.data.records import Record
from tunesmith.errors import DataError
from tunesmith.evaluate.stats import ratio_interval
from tunesmith.recipe import DataConfig, TrainingConfig


@dataclass(slots=True)
class Target:
    """What is evaluated and what it was trained from."""

    model: str  # a run directory, an adapter folder or a model
    base_model: str
    run_dir: Path | None = None
    train_data: str | None = None
    data_format: str = "auto"
    max_length: int = DataConfig.model_fields["max_length"].default
    loss_on: str = DataConfig.model_fields["loss_on"].default
    chunk_tokens: int = TrainingConfig.model_fields["loss_chunk_tokens"].default
    recipe: dict[str, Any] = field(default_factory=dict)


def target_of(model: str | Path, train_data: str | None = None, base_model: str | None = None) -> Target:
    """Read a run directory's recipe (or an adapter's config) to know the base and the data."""
    path = Path(model)
    if path.name == "final" and (path.parent / "recipe.yaml").exists():
        path = path.parent
    if (path / "recipe.yaml").exists():
        from tunesmith.train.run import RunDir

        recipe = RunDir(path).read_recipe()
        return Target(str(path), base_model or recipe.base_model, path, train_data or recipe.data.train,
                      recipe.data.format, recipe.data.max_length, recipe.data.loss_on,
                      recipe.training.loss_chunk_tokens, recipe.model_dump(mode="json"))
    if (path / "adapter_config.json").exists():
        config = json.loads((path / "adapter_config.json").read_text())
        return Target(str(path), base_model or config.get("base_model_name_or_path", ""),
                      train_data=train_data)
    return Target(str(model), base_model or str(model), train_data=train_data)


# --- models ---------------------------------------------------------------------------------


class Models:
    """The tuned model, and the base model it came from: for an adapter, the same weights
    with the adapter switched off (no second copy in memory); otherwise loaded once."""

    def __init__(self, target: Target, device: str, tuned: Any = None):
        from tunesmith.model.inference import load_trained

        self.target, self.device = target, device
        self.tuned = tuned if tuned is not None else load_trained(target.model, device)
        self._base: Any = None

    @contextmanager
    def use(self, system: str) -> Iterator[Any]:
        if system == "tuned":
            yield self.tuned
            return
        from peft import PeftModel

        if isinstance(self.tuned.model, PeftModel):
            with self.tuned.model.disable_adapter():
                yield self.tuned
            return
        if self._base is None:
            from tunesmith.model.inference import load_trained

            self._base = load_trained(self.target.base_model, self.device)
        yield self._base


    def mixed_adapter(self) -> str | None:
        """The tuned model's adapter where every system can generate in one batch with it
        (PEFT's mixed-adapter batch: the adapter on for tuned rows, off for base rows); None
        for a merged or fully tuned model, or an adapter PEFT cannot mix."""
        from peft import PeftModel

        from tunesmith.model.generation import mixable

        model = self.tuned.model
        if not isinstance(model, PeftModel):
            return None
        name = model.active_adapter
        return name if isinstance(name, str) and mixable(model, name) else None


def max_positions(loaded: Any, fallback: int) -> int:
    return int(getattr(loaded.model.config, "max_position_embeddings", None) or fallback)


# --- losses ---------------------------------------------------------------------------------


EVAL_BATCH_TOKENS = 4096
"""Tokens per packed forward when scoring held-out examples (the CPU training default)."""


def example_losses(loaded: Any, examples: list[Any], chunk_tokens: int, device: str,
                   budget: int = EVAL_BATCH_TOKENS) -> list[dict[str, float]]:
    """Summed loss, trained tokens and correct tokens of each example, packed like training
    (several examples per forward, each attending only to itself) with the training loss's
    own masks and head; the same numbers as scoring each example alone."""
    import torch

    from tunesmith.data.pack import collate_packed, pack_indices
    from tunesmith.hardware import pick_device
    from tunesmith.train.loss import example_losses as packed_losses
    from tunesmith.train.loss import shares_prefix

    target = pick_device(device)
    share = shares_prefix(loaded.model)  # a common prompt (a system prompt, few-shot turns) once per row
    out = [{"loss_sum": float("nan"), "tokens": 0.0, "correct": 0.0} for _ in examples]
    present = [i for i, e in enumerate(examples) if e is not None]
    lengths = [len(e) if e is not None else 0 for e in examples]
    was_training = loaded.model.training
    loaded.model.eval()
    try:
        with torch.no_grad():
            for micro in pack_indices(present, lengths, max(budget, max(lengths, default=1))):
                batch = collate_packed([examples[i] for i in micro], share_prefix=share)
                scores = packed_losses(loaded.model, batch.input_ids.to(target), batch.labels.to(target),
                                       batch.position_ids.to(target), [lengths[i] for i in micro],
                                       chunk_tokens, batch.shared_prefix)
                for i, (loss_sum, correct, tokens) in zip(micro, scores, strict=True):
                    out[i] = {"loss_sum": loss_sum, "tokens": float(tokens), "correct": float(correct)}
    finally:
        loaded.model.train(was_training)
    return out


def render_example(renderer: Any, record: Record, max_length: int) -> Any:
    from tunesmith.data.render import fit_length

    try:
        return fit_length(renderer.render(record), max_length, "truncate")
    except DataError:
        return None


def loss_summary(rows: list[dict[str, float]], indices: np.ndarray, confidence: float) -> dict[str, Any]:
    """Token-weighted loss over examples (as in training), with its bootstrap interval."""
    interval = ratio_interval([r["loss_sum"] for r in rows], [r["tokens"] for r in rows], indices, confidence)
    tokens = sum(r["tokens"] for r in rows)
    return {"loss": interval.value, "low": interval.low, "high": interval.high,
            "perplexity": math.exp(min(interval.value, 50.0)),
            "token_accuracy": sum(r["correct"] for r in rows) / max(tokens, 1.0), "tokens": tokens}


def per_token(row: dict[str, float]) -> float:
    return row["loss_sum"] / row["tokens"] if row["tokens"] else float("nan")
