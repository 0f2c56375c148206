"""The hosted fine-tuning API's `method` object, mapped onto a recipe.

    {"type": "supervised",    "supervised":    {"hyperparameters": {...}}}           -> method: sft
    {"type": "dpo",           "dpo":           {"hyperparameters": {"beta": ...}}}   -> method: dpo
    {"type": "reinforcement", "reinforcement": {"grader": {...}, "hyperparameters"}} -> method: grpo

so a job created through the API and a recipe written by hand train the same way.
"""

from __future__ import annotations

import copy
from typing import Any

from tunesmith.errors import RecipeError

METHODS = {"supervised": "sft", "dpo": "dpo", "reinforcement": "grpo"}
COMMON = {"n_epochs": ("training", "epochs"), "batch_size": ("training", "batch_size")}
SPECIFIC = {"dpo": {"beta": ("preference", "beta")},
            "reinforcement": {"eval_interval": ("training", "eval_every")}}
IGNORED_WHEN_AUTO = {"reinforcement": {"compute_multiplier", "eval_samples", "reasoning_effort"}}


def apply_api_method(raw: dict[str, Any], method: dict[str, Any]) -> dict[str, Any]:
    """A copy of the raw recipe dict with the API's method and hyperparameters applied."""
    kind = method.get("type", "supervised")
    if kind not in METHODS:
        raise RecipeError(f"method type {kind!r} is not supported", where="method.type",
                          fix=f"use one of: {', '.join(METHODS)}")
    out = copy.deepcopy(raw)
    out["method"] = METHODS[kind]
    body = method.get(kind) or {}
    params = dict(body.get("hyperparameters") or {})
    keys = {**COMMON, **SPECIFIC.get(kind, {})}
    for name, value in params.items():
        where = f"method.{kind}.hyperparameters.{name}"
        if name == "learning_rate_multiplier":
            if value != "auto":
                from tunesmith.train.auto import LEARNING_RATES

                adapter = (out.get("adapter") or {}).get("kind", "lora")
                out.setdefault("training", {})["learning_rate"] = float(value) * LEARNING_RATES[adapter]
        elif name in keys:
            section, key = keys[name]
            out.setdefault(section, {})[key] = value
        elif not (name in IGNORED_WHEN_AUTO.get(kind, set()) and value in ("auto", None)):
            raise RecipeError(f"hyperparameter '{name}' is not supported for {kind}", where=where,
                              fix=f"use: {', '.join(sorted({*keys, 'learning_rate_multiplier'}))}")
    if kind == "reinforcement":
        grader = body.get("grader")
        if not isinstance(grader, dict):
            raise RecipeError("reinforcement needs a grader", where="method.reinforcement.grader")
        out.setdefault("reinforcement", {})["graders"] = [grader]
    return out
