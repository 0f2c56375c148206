"""What is being exported: a run directory, an adapter or model folder, or a registry model.

Collects everything the export and its model card need (weights, base model, recipe,
evaluation, dataset versions) without loading any weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.model.export.errors import ExportError
from tunesmith.recipe import DATA_ROLES


@dataclass(slots=True)
class ExportSource:
    ref: str                      # what the user named
    weights: Path                 # the adapter folder, or a full model folder
    load_from: Path               # what tunesmith.model.inference.load_trained is given
    is_adapter: bool
    base_model: str
    name: str                     # registry name, run folder name or folder name
    recipe: dict[str, Any] | None = None
    evaluation: dict[str, Any] = field(default_factory=dict)
    datasets: dict[str, str] = field(default_factory=dict)   # role -> dataset version id


def resolve_source(ref: str) -> ExportSource:
    """A run directory, an adapter folder, a model folder, else a registry model name/id/alias."""
    path = Path(ref).expanduser()
    if path.is_dir():
        if (path / "recipe.yaml").exists():
            return _from_run(ref, path)
        if path.name == "final" and (path.parent / "recipe.yaml").exists():
            return _from_run(ref, path.parent)
        if (path / "adapter_config.json").exists() or (path / "config.json").exists():
            return _from_folder(ref, path)
        raise ExportError(f"{path} is not a run directory, an adapter folder or a model folder",
                          fix="point at a run directory (with recipe.yaml) or its final/ folder")
    if path.exists() or ref.startswith((".", "/", "~")):
        raise ExportError(f"{ref} is not a folder", fix="give a run directory, an adapter folder or a model")
    return _from_registry(ref)


def _from_run(ref: str, run_dir: Path) -> ExportSource:
    from tunesmith.store.runs import read_metrics, read_recipe, summarise_metrics
    from tunesmith.train.run import RunDir

    final = run_dir / "final"
    if not final.is_dir():
        info = RunDir(run_dir).info()
        raise ExportError(f"run {run_dir} has no final model (status: {info.get('status', 'unknown')})",
                          fix=f"finish it first with `tunesmith train --resume {run_dir}`")
    recipe = read_recipe(run_dir)
    return ExportSource(ref=ref, weights=final, load_from=run_dir, is_adapter=_is_adapter(final),
                        base_model=str(recipe.get("base_model", "")), name=run_dir.name, recipe=recipe,
                        evaluation=summarise_metrics(read_metrics(run_dir)),
                        datasets=_dataset_versions(recipe))


def _from_folder(ref: str, folder: Path) -> ExportSource:
    adapter = _is_adapter(folder)
    base = (json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path", "")
            if adapter else str(folder))
    return ExportSource(ref=ref, weights=folder, load_from=folder, is_adapter=adapter, base_model=base,
                        name=folder.name)


def _from_registry(ref: str) -> ExportSource:
    from tunesmith.model.targets import registered

    model = registered(ref)  # the one resolver shared with chat and eval
    weights = Path(model.path)
    if not weights.is_dir():
        raise ExportError(f"the weights of {model.name} are gone: {weights} does not exist",
                          fix="export from a copy of the run directory, or retrain")
    run_dir = weights.parent if (weights.parent / "recipe.yaml").exists() else weights
    return ExportSource(ref=ref, weights=weights, load_from=run_dir, is_adapter=_is_adapter(weights),
                        base_model=model.base_model, name=model.name, recipe=model.recipe,
                        evaluation=dict(model.evaluation or {}),
                        datasets={d.role: d.dataset_id for d in model.datasets})


def _is_adapter(folder: Path) -> bool:
    return (folder / "adapter_config.json").exists()


def _dataset_versions(recipe: dict[str, Any]) -> dict[str, str]:
    """The registry's version ids of the run's data files (content hashes; no registry needed)."""
    from tunesmith.store.datasets import canonicalise

    data = recipe.get("data") or {}
    found: dict[str, str] = {}
    for role in DATA_ROLES:
        path = data.get(role)
        if path and Path(path).is_file():
            found[role] = f"ds-{canonicalise(path, data.get('format') or 'auto').content_hash[:16]}"
    return found
