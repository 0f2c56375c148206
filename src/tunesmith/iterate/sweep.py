"""Hyperparameter sweeps: Optuna chooses the values (a grid, or TPE) and prunes on validation
loss; every trial is an ordinary registered training run (train_tracked), so its job, events,
checkpoints and model are in the registry like any other, and several `tunesmith sweep`
processes naming the same study share its trials (Optuna's storage beside the registry).

Pruning uses the loop's two existing hooks and nothing else: a reporter hands each held-out
evaluation to the trial, and `should_stop` stops the run at its next step boundary once
Optuna says the trial is unpromising (the job ends cancelled, resumable, with a note why).

The finished trials are then evaluated on the same held-out items (evaluate/runner.py, the
tuned system alone) and ranked; each is compared with the best item by item (a paired
bootstrap, evaluate/stats.py), so the leaderboard marks which differences are real.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tunesmith.errors import RecipeError
from tunesmith.evaluate.stats import compare, resamples
from tunesmith.recipe import EvaluationConfig, Recipe

SAMPLERS = ("grid", "tpe")
Progress = Callable[[str], None]


@dataclass(slots=True)
class Search:
    """One searched key and its candidate values (read as YAML: 3, 1e-4, true, [a, b])."""

    key: str
    values: list[Any]


def parse_search(spec: str) -> Search:
    key, sep, text = spec.partition("=")
    key = key.strip()
    if not sep or not key or not text.strip():
        raise RecipeError(f"bad --search {spec!r}", where="--search",
                          fix="write KEY=V1,V2,..., e.g. --search training.learning_rate=1e-4,3e-4")
    values = [_value(part) for part in text.split(",") if part.strip()]
    if len(values) < 1:
        raise RecipeError(f"--search {key} has no values", where="--search")
    return Search(key, values)


def _value(text: str) -> Any:
    value = yaml.safe_load(text)
    if isinstance(value, str) and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+", value.strip()):
        return float(value)  # YAML 1.1 reads 1e-4 (no dot) as text
    return value


def check_searches(recipe_file: str | Path | None, base: list[str], searches: list[Search]) -> None:
    """Every searched value must make a valid recipe: a bad key or value fails before any training."""
    from tunesmith.recipe import load_recipe

    for search in searches:
        if search.key.split(".")[0] == "output":
            raise RecipeError("a sweep names its trials' runs itself", where=f"--search {search.key}")
        for value in search.values:
            load_recipe(recipe_file, [*base, f"{search.key}={json.dumps(value)}"])


@dataclass(slots=True)
class TrialReporter:
    """Hands each held-out evaluation to the Optuna trial; asks the loop to stop once pruned."""

    trial: Any
    pruned_at: int | None = None
    losses: list[tuple[int, float]] = field(default_factory=list)

    def report(self, record: dict[str, Any]) -> None:
        if record.get("type") != "eval" or record.get("baseline") or self.pruned_at is not None:
            return
        step, loss = int(record["step"]), float(record["loss"])
        self.losses.append((step, loss))
        self.trial.report(loss, step)
        if self.trial.should_prune():
            self.pruned_at = step

    def close(self) -> None:
        pass

    def should_stop(self) -> bool:
        return self.pruned_at is not None


def run_sweep(recipe_file: str | Path | None, searches: list[Search], *, base: tuple[str, ...] = (),
              name: str, sampler: str = "grid", trials: int | None = None, prune: bool = True,
              seed: int = 0, storage: str | None = None, heldout: str | None = None,
              settings: EvaluationConfig | None = None, device: str = "cpu",
              progress: Progress | None = None, registry: Any = None) -> dict[str, Any]:
    """Run the study and return its leaderboard (also written to the sweep's folder)."""
    import optuna

    from tunesmith.recipe import load_recipe
    from tunesmith.store import open_registry
    from tunesmith.store.tracking import train_tracked

    say = progress or (lambda message: None)
    if sampler not in SAMPLERS:
        raise RecipeError(f"unknown sampler {sampler!r}", where="--sampler",
                          fix=f"use one of: {', '.join(SAMPLERS)}")
    sets = list(base)
    check_searches(recipe_file, sets, searches)
    first = load_recipe(recipe_file, sets)
    heldout = heldout or first.evaluation.data or first.data.validation  # else each run's own split
    registry = registry or open_registry()
    space = {s.key: s.values for s in searches}
    grid_size = math.prod(len(v) for v in space.values())
    count = trials or grid_size if sampler == "grid" else trials or 8
    chosen = optuna.samplers.GridSampler(space, seed=seed) if sampler == "grid" else \
        optuna.samplers.TPESampler(seed=seed)
    # The first two trials always finish: a median of one trial would prune nearly every later one.
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0) if prune else \
        optuna.pruners.NopPruner()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the library never prints; the CLI tells
    study = optuna.create_study(study_name=name, storage=storage, sampler=chosen, pruner=pruner,
                                direction="minimize", load_if_exists=storage is not None)

    def objective(trial: Any) -> float:
        values = {key: trial.suggest_categorical(key, choices) for key, choices in space.items()}
        trial_sets = [*sets, *(f"{k}={json.dumps(v)}" for k, v in values.items()),
                f"output.name={name}-trial-{trial.number}", "evaluation.enabled=false"]
        recipe = load_recipe(recipe_file, trial_sets)
        if not (recipe.data.validation or recipe.data.validation_split):
            raise RecipeError("pruning and ranking need held-out loss during training",
                              where="data.validation", fix="set data.validation or data.validation_split")
        say(f"trial {trial.number}: {', '.join(f'{k}={v}' for k, v in values.items())}")
        watcher = TrialReporter(trial)
        tracked = train_tracked(registry, recipe, reporters=[watcher], should_stop=watcher.should_stop)
        trial.set_user_attr("job_id", tracked.job.id)
        trial.set_user_attr("run_dir", str(tracked.result.run_dir))
        trial.set_user_attr("model_id", tracked.model.id if tracked.model else None)
        if watcher.pruned_at is not None:
            step, loss = watcher.losses[-1]
            note = (f"pruned by sweep {name}: validation loss {loss:.4f} at step {step} was worse than "
                    "the median of earlier trials at that step")
            registry.add_event(tracked.job.id, "event", {"sweep": name, "trial": trial.number}, step=step,
                               level="info", message=note)
            say(f"trial {trial.number}: pruned at step {step} (validation loss {loss:.4f})")
            raise optuna.TrialPruned()
        loss = tracked.result.best_validation_loss
        if loss is None:
            raise RecipeError("the run reported no validation loss", where=str(tracked.result.run_dir))
        return float(loss)

    study.optimize(objective, n_trials=count, catch=())
    board = leaderboard(study, registry, heldout, settings or first.evaluation, device, say)
    board.update({"sweep": name, "sampler": sampler, "pruning": prune, "search": space,
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return board


def leaderboard(study: Any, registry: Any, heldout: str | None, settings: EvaluationConfig, device: str,
                say: Progress) -> dict[str, Any]:
    """Evaluate each finished trial on the same held-out items and rank them by held-out loss;
    each is compared with the best, item by item, so a difference is marked real only when its
    interval excludes zero."""
    import optuna

    from tunesmith.evaluate.runner import evaluate_model

    evaluation = settings.model_copy(update={"baselines": [], "forgetting": None, "max_train_examples": None})
    rows: list[dict[str, Any]] = []
    per_item: dict[int, list[float]] = {}
    for trial in study.trials:
        done = trial.state == optuna.trial.TrialState.COMPLETE
        attrs = trial.user_attrs
        row: dict[str, Any] = {
            "trial": trial.number, "state": trial.state.name.lower(), "params": trial.params,
            "job_id": attrs.get("job_id"), "model_id": attrs.get("model_id"), "run_dir": attrs.get("run_dir"),
            "validation_loss": trial.value if done else None}
        if trial.state == optuna.trial.TrialState.PRUNED:
            steps = sorted(trial.intermediate_values)
            row["pruned_at_step"] = steps[-1] if steps else None
        if done and row["run_dir"]:
            say(f"trial {trial.number}: evaluating on held-out examples")
            report, path = evaluate_model(row["run_dir"], heldout, evaluation, device=device)
            loss = (report.get("loss") or {}).get("tuned") or {}
            row["heldout"] = {"loss": loss.get("loss"), "low": loss.get("low"), "high": loss.get("high"),
                              "examples": report["examples"], "report": str(path),
                              "scores": {g: by["tuned"] for g, by in (report.get("scores") or {}).items()}}
            items = report["examples_detail"]["items"]
            per_item[trial.number] = [float(i["loss"].get("tuned", float("nan"))) for i in items]
            if row["model_id"]:
                from tunesmith.evaluate.report import brief

                model = registry.model(row["model_id"])
                registry.update_model(model.id, evaluation={**model.evaluation,
                                                            "report": {**brief(report), "path": str(path)}})
        rows.append(row)
    ranked = sorted((r for r in rows if r.get("heldout") and r["heldout"]["loss"] is not None),
                    key=lambda r: r["heldout"]["loss"])
    best = ranked[0] if ranked else None
    if best is not None:
        reference = per_item[best["trial"]]
        for rank, row in enumerate(ranked, 1):
            row["rank"] = rank
            if row is best:
                row["versus_best"] = None
                continue
            mine = per_item[row["trial"]]
            keep = [n for n in range(len(reference))
                    if math.isfinite(reference[n]) and math.isfinite(mine[n])]
            indices = resamples(len(keep), evaluation.bootstrap_samples, evaluation.bootstrap_seed)
            c = compare(f"trial {best['trial']}", "loss", [mine[n] for n in keep],
                        [reference[n] for n in keep], indices, higher_is_better=False,
                        confidence=evaluation.confidence).to_dict()
            row["versus_best"] = {"difference": c["difference"], "wins": c["wins"], "ties": c["ties"],
                                  "losses": c["losses"], "verdict": c["verdict"],
                                  "real": c["verdict"] != "no clear difference"}
    order = {r["trial"]: n for n, r in enumerate(ranked)}
    rows.sort(key=lambda r: (order.get(r["trial"], len(order)), r["trial"]))
    return {"trials": rows, "best": best["trial"] if best else None,
            "best_model_id": best["model_id"] if best else None,
            "confidence": evaluation.confidence, "heldout": heldout or "each run's validation data"}


def write_leaderboard(board: dict[str, Any], folder: Path) -> Path:
    from tunesmith.fsutil import atomic_write_text

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "leaderboard.json"
    atomic_write_text(path, json.dumps(board, indent=2, default=str))
    return path


def sweep_folder(recipe_file: str | Path | None, base: tuple[str, ...], name: str) -> Path:
    """Where the leaderboard goes: beside the trials' run folders."""
    from tunesmith.recipe import load_recipe

    recipe: Recipe = load_recipe(recipe_file, list(base))
    return Path(recipe.output.dir) / f"{name}-leaderboard"
