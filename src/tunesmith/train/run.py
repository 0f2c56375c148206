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

from tunesmith.fsutil import atomic_write_text
from tunesmith.recipe import Recipe, build_recipe, save_recipe


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

    def info(self) -> dict[str, Any]:
        return json.loads(self.info_file.read_text()) if self.info_file.exists() else {}

    def update_info(self, **fields: Any) -> None:
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
        return [json.loads(line) for line in lines if line.strip()]

    def truncate_metrics(self, last_step: int) -> None:
        """On resume, forget what was logged after the checkpoint being resumed from."""
        kept = [r for r in self.metrics() if r.get("step", 0) <= last_step and r.get("type") != "end"]
        atomic_write_text(self.metrics_file, "".join(json.dumps(r) + "\n" for r in kept))


def default_name(recipe: Recipe) -> str:
    base = re.sub(r"[^A-Za-z0-9]+", "-", Path(recipe.base_model).name).strip("-").lower()
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{base}-{recipe.method}"
