"""The forgetting probe: did tuning make the model worse at general text it knew before?

Loss on a general reference set (bundled: tunesmith/general) for the base and the tuned
model, on the same tokens; the relative change gets a paired bootstrap interval, and a
change above the threshold marks the run as regressed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tunesmith.data.records import Message
from tunesmith.errors import DataError
from tunesmith.evaluate.examples import Item, load_items, resolve_data
from tunesmith.evaluate.graders import build_graders
from tunesmith.evaluate.models import Models, Target, example_losses, loss_summary, render_example
from tunesmith.evaluate.stats import resamples
from tunesmith.recipe import EvaluationConfig

Generate = Callable[[Any, list[list[Message]], list[Any]], list[str]]
"""(model, prompts, each prompt's tools) -> replies."""


def forgetting_probe(models: Models, target: Target, settings: EvaluationConfig, reference: str,
                     generate: Generate, say: Callable[[str], None]) -> dict[str, Any]:
    """Base and tuned loss on a general reference set, and the relative change with its interval."""
    from tunesmith.data.render import Renderer

    s = settings
    path = resolve_data(reference)
    items = load_items(path, "auto", None)
    say(f"forgetting probe: {len(items)} reference examples")
    renderer = Renderer(models.tuned.tokenizer, "assistant")
    examples = [render_example(renderer, i.record, target.max_length) if i.has_loss else None
                for i in items]
    rows: dict[str, list[dict[str, float]]] = {}
    for system in ("base", "tuned"):
        with models.use(system) as loaded:
            rows[system] = example_losses(loaded, examples, target.chunk_tokens, models.device)
    kept = [n for n in range(len(items)) if rows["base"][n]["tokens"] > 0]
    if not kept:
        raise DataError("the forgetting reference set holds nothing to measure a loss on",
                        where=str(path))
    indices = resamples(len(kept), s.bootstrap_samples, s.bootstrap_seed)
    base = loss_summary([rows["base"][n] for n in kept], indices, s.confidence)
    tuned = loss_summary([rows["tuned"][n] for n in kept], indices, s.confidence)
    num_t = np.array([rows["tuned"][n]["loss_sum"] for n in kept])[indices].sum(axis=1)
    num_b = np.array([rows["base"][n]["loss_sum"] for n in kept])[indices].sum(axis=1)
    draws = num_t / np.maximum(num_b, 1e-12) - 1  # same tokens, so the ratio of sums is the loss ratio
    tail = (1 - s.confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    change = tuned["loss"] / base["loss"] - 1
    result: dict[str, Any] = {
        "data": reference, "examples": len(kept), "base": base, "tuned": tuned,
        "change": {"value": change, "low": float(low), "high": float(high)},
        "threshold": s.forgetting_threshold, "regressed": change > s.forgetting_threshold}
    if s.forgetting_graders and any(i.prompt is not None for i in items):
        result["scores"] = _scores(models, settings, items, generate)
        result["regressed"] |= any(v["regressed"] for v in result["scores"].values())
    return result

def _scores(models: Models, settings: EvaluationConfig, items: list[Item],
            generate: Generate) -> dict[str, Any]:
    """Graded replies of both models on a chat reference set; a drop past the threshold regresses."""
    s = settings
    from tunesmith.train.objectives.reward_model import load_reward_scorer

    graders = build_graders(s.forgetting_graders or [], "evaluation.forgetting_graders", load_reward_scorer)
    asked = [i for i in items if i.prompt is not None]
    means: dict[str, dict[str, float]] = {g.name: {} for g in graders}
    for system in ("base", "tuned"):
        with models.use(system) as loaded:
            texts = generate(loaded, [i.prompt or [] for i in asked], [i.tools for i in asked])
        for grader in graders:
            values = [grader.grade(t, i.grader_item).score for t, i in zip(texts, asked, strict=True)]
            means[grader.name][system] = sum(values) / len(values)
    for grader in graders:
        grader.close()
    return {name: {**m, "drop": m["base"] - m["tuned"],
                   "regressed": m["base"] - m["tuned"] > s.forgetting_threshold}
            for name, m in means.items()}
