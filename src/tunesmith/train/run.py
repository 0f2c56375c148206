"""The run directory: self-describing, so a run can be inspected, resumed or served
from its folder alone.

    recipe.yaml      the resolved recipe, in full
    run.json         status, timestamps, auto choices, data and model facts, best step
    metrics.jsonl    one line per train step, evaluation and event
    checkpoints/     step-XXXXXXXX/ with a COMPLETE marker
    final/           the trained adapter (PEFT layout) or model, with its tokenizer
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from tunesmith.errors import RecipeError, TunesmithError
from tunesmith.fsutil import atomic_write_text
from tunesmith.recipe import Recipe, apply_override, build_recipe, save_recipe

RESUMABLE = ("training.max_steps", "training.epochs", "training.eval_every", "training.save_every",
             "training.keep_checkpoints", "training.early_stopping_patience", "training.report_to")
"""Settings `--resume` may change: where the run ends, how often it evaluates and saves, what it
reports. Everything else (data, model, adapter, optimizer, batch, seed) made the checkpoint what
it is; changing it would give a run that is neither the old one nor a new one."""
RESUMABLE_SECTIONS = ("evaluation.",)
"""The evaluation after training reads the final model and never changes it (its data paths are
the exception: a run's recipe keeps absolute paths, so they are set when the run starts)."""
FIXED_ON_RESUME = ("evaluation.data", "evaluation.forgetting")


def resumable(key: str) -> bool:
    if key in FIXED_ON_RESUME:
        return False
    return key in RESUMABLE or key.startswith(RESUMABLE_SECTIONS)


class RunFolderGone(TunesmithError):
    """The run folder was deleted while its training ran."""


class RunDir:
    def __init__(self, path: Path):
        self.path = path

    recipe_file = property(lambda self: self.path / "recipe.yaml")
    info_file = property(lambda self: self.path / "run.json")
    metrics_file = property(lambda self: self.path / "metrics.jsonl")
    checkpoints = property(lambda self: self.path / "checkpoints")
    final = property(lambda self: self.path / "final")

    @classmethod
    def create(cls, recipe: Recipe) -> RunDir:
        root = Path(recipe.output.dir)
        path = root / (recipe.output.name or default_name(recipe))
        if recipe.output.name is None:
            # Two unnamed runs started in the same second get distinct folders.
            base, count = path, 1
            while path.exists():
                count += 1
                path = base.with_name(f"{base.name}-{count}")
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    def exists(self) -> bool:
        return self.info_file.exists()

    def require(self) -> None:
        """Refuse to write into a run folder that was deleted (or moved) under the training: it
        must not come back half made (checkpoints without a recipe or run.json)."""
        if not self.recipe_file.is_file():
            raise RunFolderGone("the run folder was deleted while training; nothing more is written",
                                where=str(self.path),
                                fix="start the run again (the folder and its checkpoints are gone)")

    def resume_recipe(self, overrides: list[str] | tuple[str, ...]) -> Recipe:
        """The run's saved recipe with `key=value` overrides of the settings a resume may change;
        any other key is refused, all named at once."""
        recipe = self.read_recipe()
        if not overrides:
            return recipe
        keys = [override.partition("=")[0].strip() for override in overrides]
        refused = [key for key in keys if not resumable(key)]
        if refused:
            raise RecipeError(
                f"--resume cannot change {', '.join(refused)}: the checkpoints were trained with the saved "
                f"values", where="--set",
                fix=f"when resuming, change only {', '.join(RESUMABLE)} or evaluation.* settings; "
                    f"to change the rest, start a new run (another output.name)")
        raw = recipe.model_dump(mode="json")
        for override in overrides:
            apply_override(raw, override)
        return build_recipe(raw, origin=f"{self.recipe_file} with --set")

    def info(self) -> dict[str, Any]:
        return json.loads(self.info_file.read_text()) if self.info_file.exists() else {}

    def update_info(self, **fields: Any) -> None:
        self.require()
        info = self.info()
        info.update(fields)
        atomic_write_text(self.info_file, json.dumps(info, indent=1, default=str))

    def write_recipe(self, recipe: Recipe) -> None:
        save_recipe(recipe, self.recipe_file)

    def read_recipe(self) -> Recipe:
        import yaml

        return build_recipe(yaml.safe_load(self.recipe_file.read_text()), origin=str(self.recipe_file))

    def metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_file.exists():
            return []
        lines = self.metrics_file.read_text(encoding="utf-8").splitlines()
        records = []
        for number, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if number == len(lines) - 1:  # the line a killed process was writing
                    break
                raise TunesmithError(f"metrics.jsonl line {number + 1} is not JSON",
                                     where=str(self.metrics_file), fix="remove or repair that line") from None
        return records

    def truncate_metrics(self, last_step: int) -> None:
        """On resume, forget what killed attempts logged after the checkpoint being resumed from
        (at step 0, with no checkpoint: everything), so every step is in the file once."""
        kept = [r for r in self.metrics() if last_step > 0 and r.get("step", 0) <= last_step
                and r.get("type") != "end"]
        atomic_write_text(self.metrics_file, "".join(json.dumps(r) + "\n" for r in kept))


def default_name(recipe: Recipe) -> str:
    base = re.sub(r"[^A-Za-z0-9]+", "-", Path(recipe.base_model).name).strip("-").lower()
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{base}-{recipe.method}"
