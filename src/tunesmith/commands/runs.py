"""`tunesmith runs list|show|compare|register`: training jobs recorded in the registry."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("runs", help="list, show and compare training runs",
                                   description="Training runs (jobs) recorded in the registry.")
    commands = parser.add_subparsers(dest="runs_command", required=True, metavar="SUBCOMMAND")
    listing = commands.add_parser("list", help="recent runs, newest first")
    listing.add_argument("--status", help="only runs in this state (running, succeeded, failed...)")
    listing.add_argument("--limit", type=int, default=20, help="how many (default: 20)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=run_list)
    show = commands.add_parser("show", help="one run: status, data, metrics, checkpoints, model")
    show.add_argument("run", help="job id (or prefix), run folder or run name")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=run_show)
    compare = commands.add_parser("compare", help="two runs: recipe differences and metrics side by side")
    compare.add_argument("a", help="first run")
    compare.add_argument("b", help="second run")
    compare.add_argument("--json", action="store_true", help="print JSON")
    compare.set_defaults(handler=run_compare)
    record = commands.add_parser("register", help="record a finished run folder as a job and a model")
    record.add_argument("run_dir", help="run directory (with run.json, recipe.yaml, final/)")
    record.add_argument("--json", action="store_true", help="print JSON")
    record.set_defaults(handler=run_register)


def when(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp)) if timestamp else "-"


def number(value: Any) -> str:
    """A value for a rich table cell: floats to 4 places, text escaped (it may hold [brackets])."""
    from rich.markup import escape

    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else escape(str(value))


def print_json(data: Any) -> None:
    from tunesmith.commands.console import console

    console.print_json(json.dumps(data, default=str))


def run_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from tunesmith.commands.console import console
    from tunesmith.store import open_registry
    from tunesmith.store.views import job_view

    jobs = open_registry().jobs(limit=args.limit, status=args.status)
    if args.json:
        print_json([job_view(j) for j in jobs])
        return 0
    table = Table("job", "status", "base model", "method", "steps", "created", "run folder")
    for job in jobs:
        table.add_row(job.id, job.status, job.base_model, job.method, number(job.steps), when(job.created_at),
                      job.run_dir or "-")
    console.print(table if jobs else "no runs recorded yet")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from rich.table import Table

    from tunesmith.commands.console import console
    from tunesmith.store import open_registry
    from tunesmith.store.runs import model_for_job
    from tunesmith.store.views import final_metrics, job_view

    registry = open_registry()
    job = registry.job(args.run)
    metrics = final_metrics(job, registry.events(job.id, ["train", "eval"]))
    checkpoints = registry.checkpoints(job.id)
    model = model_for_job(registry, job.id)
    if args.json:
        saved = [{"step": c.step, "path": c.path, "metrics": c.metrics} for c in checkpoints]
        print_json({**job_view(job), "metrics": metrics, "recipe": job.recipe, "checkpoints": saved,
                    "model": model.name if model else None})
        return 0
    table = Table(show_header=False, box=None)
    for key, value in job_view(job).items():
        shown = when(value) if key.endswith("_at") else number(value)
        table.add_row(f"[bold]{key}[/]", shown)
    table.add_row("[bold]model[/]", model.name if model else "-")
    console.print(table)
    console.print("[bold]metrics[/]: " + ", ".join(f"{k} {number(v)}" for k, v in metrics.items()),
                  highlight=False)
    for checkpoint in checkpoints:
        console.print(f"  checkpoint step {checkpoint.step}: {checkpoint.path}", highlight=False)
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from rich.table import Table

    from tunesmith.commands.console import console
    from tunesmith.store import open_registry
    from tunesmith.store.views import diff_recipes, final_metrics

    registry = open_registry()
    a, b = registry.job(args.a), registry.job(args.b)
    changes = diff_recipes(a.recipe, b.recipe)
    metrics = [final_metrics(j, registry.events(j.id, ["train", "eval"])) for j in (a, b)]
    if args.json:
        print_json({"a": a.id, "b": b.id, "recipe": [{"key": k, "a": x, "b": y} for k, x, y in changes],
                    "metrics": {k: {"a": metrics[0].get(k), "b": metrics[1].get(k)} for k in metrics[0]}})
        return 0
    recipe = Table("recipe key", a.id, b.id, title="recipe differences")
    for key, left, right in changes:
        recipe.add_row(key, json.dumps(left), json.dumps(right))
    console.print(recipe if changes else "recipes are identical")
    table = Table("metric", a.id, b.id, title="final metrics")
    for key in metrics[0]:
        table.add_row(key, number(metrics[0][key]), number(metrics[1].get(key)))
    console.print(table)
    return 0


def run_register(args: argparse.Namespace) -> int:
    from tunesmith.commands.console import console
    from tunesmith.store import open_registry
    from tunesmith.store.runs import register_run
    from tunesmith.store.views import model_view

    model = register_run(open_registry(), args.run_dir)
    if args.json:
        print_json(model_view(model))
    else:
        console.print(f"registered [bold]{model.name}[/] (job {model.job_id})", highlight=False)
    return 0
