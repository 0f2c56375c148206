"""Held-out loss of a registered model on a dataset, with the training loop's own
evaluation (same rendering, masks and packing), so numbers compare with training's.

Kept small on purpose: the evaluation issue adds graders and a forgetting probe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunesmith.store.schema import Model


def model_target(model: Model) -> str:
    """What load_trained should open: the run folder when the weights sit in its final/."""
    path = Path(model.path)
    return str(path.parent) if (path.parent / "recipe.yaml").exists() else str(path)


def heldout_losses(model: Model, datasets: list[Path], device: str = "cpu") -> list[dict[str, float]]:
    """Loss, token accuracy and perplexity of `model` on each dataset (the model loaded once)."""
    from tunesmith.data.load import load_dataset
    from tunesmith.data.render import Renderer, fit_length
    from tunesmith.model.inference import load_trained
    from tunesmith.train.loop import evaluate, pick_device
    from tunesmith.train.objectives import make_objective

    recipe: dict[str, Any] = model.recipe
    data_cfg = recipe.get("data") or {}
    training = recipe.get("training") or {}
    loaded = load_trained(model_target(model), device)
    renderer = Renderer(loaded.tokenizer, data_cfg.get("loss_on", "assistant"))
    objective = make_objective(recipe.get("method", "sft"), int(training.get("loss_chunk_tokens", 1024)))
    results = []
    for data in datasets:
        examples = []
        for record in load_dataset(data, data_cfg.get("format", "auto")).records:
            fitted = fit_length(renderer.render(record), int(data_cfg.get("max_length", 2048)),
                                data_cfg.get("overlong", "truncate"))
            if fitted is not None:
                examples.append(fitted)
        budget = max(max((len(e) for e in examples), default=1), 4096)
        results.append(evaluate(loaded.model, objective, examples, budget, pick_device(device)))
    return results
