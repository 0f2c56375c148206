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
    import torch

    from tunesmith.data.load import load_dataset
    from tunesmith.data.render import Renderer
    from tunesmith.model.inference import load_trained
    from tunesmith.recipe import build_recipe
    from tunesmith.train.loop import evaluate, pick_device
    from tunesmith.train.objectives import make_objective

    recipe: dict[str, Any] = model.recipe
    data_cfg = recipe.get("data") or {}
    training = recipe.get("training") or {}
    method = recipe.get("method", "sft")
    loaded = load_trained(model_target(model), device)
    renderer = Renderer(loaded.tokenizer, data_cfg.get("loss_on", "assistant"))
    objective = make_objective(method, int(training.get("loss_chunk_tokens", 1024)),
                               build_recipe(recipe) if method != "sft" else None)
    target = pick_device(device)
    results = []
    for data in datasets:
        examples = []
        for record in load_dataset(data, data_cfg.get("format", "auto")).records:
            fitted, _ = objective.render_example(renderer, record, int(data_cfg.get("max_length", 2048)),
                                                 data_cfg.get("overlong", "truncate"))
            if fitted is not None:
                examples.append(fitted)
        budget = max(max((len(e) for e in examples), default=1), 4096)
        # A preference model's reference is its base: the loaded adapter switched off, or
        # the base model itself after full fine-tuning.
        objective.prepare(loaded.model, loaded.tokenizer, [], budget, target)
        if getattr(getattr(objective, "reference", None), "frozen", None) is not None:
            from tunesmith.model.loading import load_model, resolve_model

            base = load_model(resolve_model(recipe["base_model"]), dtype=torch.float32)
            objective.reference.frozen = base.to(target).eval().requires_grad_(False)
        results.append(evaluate(loaded.model, objective, examples, budget, target))
    return results
