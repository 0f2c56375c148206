"""`tunesmith models list|show|alias|delete`: trained models and their aliases."""

from __future__ import annotations

import argparse

from tunesmith.commands.runs import number, print_json, when


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list, show, alias and delete trained models",
                                   description="Trained models recorded in the registry.")
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
