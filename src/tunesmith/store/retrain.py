"""Retraining cycles: a new model from an old model's recipe and new data, judged on the
old held-out set and the new one before an alias may move to it.

The guard compares parent and child on the same examples with the same evaluation, so
a change in the data or the split cannot pass for an improvement.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.store.errors import AliasGuardError
from tunesmith.store.registry import Registry
from tunesmith.store.schema import Model

DEFAULT_MAX_REGRESSION = 0.02  # 2% higher held-out loss than the parent's


def retrain_recipe(parent: Model, data: str | Path, validation: str | Path | None = None,
                   overrides: tuple[str, ...] | list[str] = (), output_dir: str | None = None,
                   from_weights: bool = False) -> Any:
    """The parent's recipe with the new data, a fresh run name and `--set` overrides; with
    `from_weights`, training starts from the parent's adapter (or, fully fine-tuned, its weights)."""
    from tunesmith.recipe import apply_override, build_recipe

    raw = {key: (dict(value) if isinstance(value, dict) else value) for key, value in parent.recipe.items()}
    raw["data"] = {**(raw.get("data") or {}), "train": str(Path(data).resolve()),
                   "validation": str(Path(validation).resolve()) if validation else None}
    suffix = (raw.get("output") or {}).get("name") or "model"
    name = f"{suffix.split('-retrain-')[0]}-retrain-{time.strftime('%Y%m%d-%H%M%S')}"
    raw["output"] = {**(raw.get("output") or {}), "name": name}
    if output_dir:
        raw["output"]["dir"] = output_dir
    if from_weights:
        if (raw.get("adapter") or {}).get("kind") == "full":
            raw["base_model"] = parent.path
        else:
            raw["adapter"] = {**(raw.get("adapter") or {}), "init_from": parent.path}
    for override in overrides:
        apply_override(raw, override)
    return build_recipe(raw, origin=f"recipe of {parent.name}")


@dataclass(slots=True)
class Comparison:
    """Parent vs child held-out loss on one dataset."""

    dataset: str
    parent_loss: float
    child_loss: float

    @property
    def change(self) -> float:
        return (self.child_loss - self.parent_loss) / max(abs(self.parent_loss), 1e-12)


@dataclass(slots=True)
class Verdict:
    max_regression: float
    comparisons: list[Comparison] = field(default_factory=list)
    forgetting: str | None = None
    """The child's forgetting probe from its evaluation report: "ok", "regressed" or None (not run)."""

    @property
    def regressions(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.change > self.max_regression]

    @property
    def passed(self) -> bool:
        """No held-out set to judge by is not a pass: the guard cannot vouch for the model."""
        return bool(self.comparisons) and not self.regressions and self.forgetting != "regressed"

    def to_dict(self) -> dict[str, Any]:
        return {"max_regression": self.max_regression, "passed": self.passed, "forgetting": self.forgetting,
                "comparisons": [{**asdict(c), "change": c.change} for c in self.comparisons]}


def heldout_sets(registry: Registry, parent: Model, child: Model) -> dict[str, Path]:
    """The previous held-out set (the parent's validation version) and the new one (the child's).

    A run that split its validation data from the training data has no validation version,
    so it contributes no set here; pass --validation to retrain to get one.
    """
    sets: dict[str, Path] = {}
    seen: set[str] = set()
    for label, model in (("previous", parent), ("new", child)):
        for link in model.datasets:
            if link.role == "validation" and link.dataset_id not in seen:
                seen.add(link.dataset_id)
                sets[f"{label} {link.dataset_id}"] = registry.dataset_path(registry.dataset(link.dataset_id))
    return sets


def compare_models(registry: Registry, parent: Model, child: Model, max_regression: float,
                   losses: Any = None) -> Verdict:
    """Evaluate both models on every held-out set.

    `losses(model, paths) -> [metrics per path]` is injectable (tests, other evaluators).
    """
    if losses is None:
        from tunesmith.store.heldout import heldout_losses as losses
    report = (child.evaluation or {}).get("report") or {}
    verdict = Verdict(max_regression, forgetting=report.get("forgetting"))
    sets = heldout_sets(registry, parent, child)
    if not sets:
        return verdict
    paths = list(sets.values())
    before, after = losses(parent, paths), losses(child, paths)
    for label, old, new in zip(sets, before, after, strict=True):
        verdict.comparisons.append(Comparison(label, old["loss"], new["loss"]))
    return verdict


def move_alias(registry: Registry, alias: str, child: Model, verdict: Verdict, force: bool = False) -> None:
    """Point `alias` at `child` unless it regressed past the threshold (then AliasGuardError)."""
    if not verdict.comparisons and not force:
        raise AliasGuardError(f"{alias} stays on its model: no held-out set to compare {child.name} on",
                              where=alias, fix="retrain with --validation FILE, or pass --force")
    if verdict.forgetting == "regressed" and not force:
        raise AliasGuardError(
            f"{alias} stays on its model: {child.name} forgot too much (its forgetting probe on the "
            "general reference set regressed past the threshold; see its report)", where=alias,
            fix="lower the learning rate or epochs, use an adapter, or pass --force to move the alias anyway")
    if not verdict.passed and not force:
        worst = max(verdict.regressions, key=lambda c: c.change)
        raise AliasGuardError(
            f"{alias} stays on its model: {child.name} has {worst.change:+.1%} held-out loss on "
            f"{worst.dataset} ({worst.parent_loss:.4f} -> {worst.child_loss:.4f}), past the "
            f"{verdict.max_regression:.0%} limit", where=alias,
            fix="improve the data or recipe, or pass --force to move the alias anyway")
    registry.set_alias(alias, child.id)
