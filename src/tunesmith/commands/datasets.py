"""`tunesmith datasets list|show|diff|add`: dataset versions by content."""

from __future__ import annotations

import argparse
import json

from tunesmith.commands.runs import number, print_json, when

SHOWN = 10


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("datasets", help="list, show, diff and record dataset versions",
                                   description="Dataset versions: one per distinct content.")
    commands = parser.add_subparsers(dest="datasets_command", required=True, metavar="SUBCOMMAND")
    listing = commands.add_parser("list", help="dataset versions, newest first")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=run_list)
    show = commands.add_parser("show", help="one version: format, counts, findings, stored copy")
    show.add_argument("version", help="version id or content hash (or a prefix)")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=run_show)
    diff = commands.add_parser("diff", help="examples added, removed and changed between two versions",
                               description="Compare two versions by example content. 'changed' is the "
                                           "same first user message (or prompt) with a different answer.")
    diff.add_argument("old", help="older version (id, hash prefix)")
    diff.add_argument("new", help="newer version")
    diff.add_argument("--json", action="store_true", help="print JSON with every example")
    diff.set_defaults(handler=run_diff)
    add = commands.add_parser("add", help="record a dataset file as a version")
    add.add_argument("file", help="dataset file or folder")
    add.add_argument("--json", action="store_true", help="print JSON")
    add.set_defaults(handler=run_add)


def run_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from tunesmith.commands.console import console
    from tunesmith.store import open_registry
    from tunesmith.store.views import dataset_view

    versions = open_registry().datasets()
    if args.json:
        print_json([dataset_view(v) for v in versions])
        return 0
    table = Table("version", "format", "examples", "errors", "warnings", "source", "recorded")
    for v in versions:
        table.add_row(v.id, v.format or "-", str(v.examples), str(v.errors), str(v.warnings), v.source_path,
                      when(v.created_at))
    console.print(table if versions else "no dataset versions recorded yet")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from rich.table import Table

    from tunesmith.commands.console import console
    from tunesmith.store import open_registry
    from tunesmith.store.views import dataset_view

    registry = open_registry()
    version = registry.dataset(args.version)
    view = {**dataset_view(version), "stored_copy": str(registry.dataset_path(version))}
    if args.json:
        print_json(view)
        return 0
    table = Table(show_header=False, box=None)
    for key, value in view.items():
        shown = json.dumps(value) if isinstance(value, dict) else number(value)
        table.add_row(f"[bold]{key}[/]", when(value) if key == "created_at" else shown)
    console.print(table)
    return 0


def _brief(row: dict) -> str:
    from rich.markup import escape

    text = json.dumps(row, ensure_ascii=False)
    return escape(text if len(text) <= 160 else text[:157] + "...")


def run_diff(args: argparse.Namespace) -> int:
    from tunesmith.commands.console import console
    from tunesmith.store import open_registry

    registry = open_registry()
    old, new = registry.dataset(args.old), registry.dataset(args.new)
    diff = registry.diff_datasets(old.id, new.id)
    if args.json:
        print_json({"old": old.id, "new": new.id, **diff.to_dict()})
        return 0
    console.print(f"{old.id} -> {new.id}: [green]+{len(diff.added)} added[/], [red]-{len(diff.removed)} "
                  f"removed[/], [yellow]~{len(diff.changed)} changed[/], {diff.unchanged} unchanged",
                  highlight=False)
    for row in diff.added[:SHOWN]:
        console.print(f"[green]+ {_brief(row)}[/]", highlight=False)
    for row in diff.removed[:SHOWN]:
        console.print(f"[red]- {_brief(row)}[/]", highlight=False)
    for before, after in diff.changed[:SHOWN]:
        console.print(f"[yellow]~ {_brief(before)}\n  -> {_brief(after)}[/]", highlight=False)
    hidden = sum(max(0, len(x) - SHOWN) for x in (diff.added, diff.removed, diff.changed))
    if hidden:
        console.print(f"... and {hidden} more (use --json for all)", highlight=False)
    return 0


def run_add(args: argparse.Namespace) -> int:
    from tunesmith.commands.console import console
    from tunesmith.store import open_registry
    from tunesmith.store.views import dataset_view

    version = open_registry().add_dataset(args.file)
    if args.json:
        print_json(dataset_view(version))
    else:
        console.print(f"{version.id}: {version.examples} examples ({version.format}), "
                      f"{version.errors} errors", highlight=False)
    return 0
