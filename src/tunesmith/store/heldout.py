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
    """The training objective's held-out metrics of `model` on each dataset (loss, token
    accuracy and perplexity for SFT; rewards and reward accuracy for preference methods)."""
    import torch

    from tunesmith.data.load import load_dataset
    from tunesmith.data.render import Renderer
    from tunesmith.evaluate.heldout import evaluate
    from tunesmith.hardware import pick_device
    from tunesmith.recipe import build_recipe
    from tunesmith.train.objectives import make_objective

    recipe: dict[str, Any] = model.recipe
    # The reference is measured live here: precomputing it would measure the trained model.
    live = {**recipe, "preference": {**(recipe.get("preference") or {}), "precompute_reference": False}}
    typed = build_recipe(live)  # the stored recipe, with its defaults stated once (recipe.py)
    data_cfg, method = typed.data, typed.method
    if method == "reward":
        from tunesmith.train.objectives.reward_model import load_reward_model

        network, tokenizer = load_reward_model(model_target(model), device)
    else:
        from tunesmith.model.inference import load_trained

        loaded = load_trained(model_target(model), device)
        network, tokenizer = loaded.model, loaded.tokenizer
    renderer = Renderer(tokenizer, data_cfg.loss_on)
    objective = make_objective(method, typed.training.loss_chunk_tokens, typed)
    target = pick_device(device)
    # A preference model's reference is its base: the loaded adapter switched off, or the
    # base model itself after full fine-tuning (prepare copies the loaded model; replace it).
    objective.prepare(network, tokenizer, [], 0, target)
    if getattr(getattr(objective, "reference", None), "frozen", None) is not None:
        from tunesmith.model.loading import load_model, resolve_model

        base = load_model(resolve_model(typed.base_model), dtype=torch.float32)
        objective.reference.frozen = base.to(target).eval().requires_grad_(False)
    results = []
    for data in datasets:
        examples = []
        for record in load_dataset(data, data_cfg.format).records:
            fitted, _ = objective.render_example(renderer, record, data_cfg.max_length, data_cfg.overlong)
            if fitted is not None:
                examples.append(fitted)
        budget = max(max((len(e) for e in examples), default=1), 4096)
        results.append(evaluate(network, objective, examples, budget, target))
    return results
