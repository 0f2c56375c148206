"""`tunesmith keys create|list|revoke`: API keys for `tunesmith serve` (stored hashed)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("keys", help="create, list and revoke API keys for the server",
                                   description="API keys for `tunesmith serve`. Once any key exists, every "
                                               "route but /health needs 'Authorization: Bearer KEY'.")
    commands = parser.add_subparsers(dest="keys_command", required=True, metavar="SUBCOMMAND")
    create = commands.add_parser("create", help="make a key; it is printed once and stored only as a hash")
    create.add_argument("--name", default="default", help="a label to recognise the key by")
    create.set_defaults(handler=run_create)
    listing = commands.add_parser("list", help="keys (name, prefix, created, revoked)")
    listing.set_defaults(handler=run_list)
    revoke = commands.add_parser("revoke", help="revoke a key by id, name or prefix")
    revoke.add_argument("key")
    revoke.set_defaults(handler=run_revoke)


def run_create(args: argparse.Namespace) -> int:
    from tunesmith.commands.console import err_console
    from tunesmith.serve.auth import create_key
    from tunesmith.store import open_registry

    row, secret = create_key(open_registry(), args.name)
    print(secret)
    err_console.print(f"created key {row.id} ({row.name}); it is shown only this once", highlight=False)
    return 0


def run_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from tunesmith.commands.console import console
    from tunesmith.commands.runs import when
    from tunesmith.serve.auth import list_keys
    from tunesmith.store import open_registry

    keys = list_keys(open_registry())
    table = Table("id", "name", "prefix", "created", "revoked")
    for key in keys:
        table.add_row(key.id, key.name, key.prefix + "…", when(key.created_at),
                      when(key.revoked_at) if key.revoked_at else "-")
    console.print(table if keys else "no API keys: the server is open to whoever can reach it")
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    from tunesmith.commands.console import console
    from tunesmith.serve.auth import revoke_key
    from tunesmith.store import open_registry

    key = revoke_key(open_registry(), args.key)
    console.print(f"revoked {key.id} ({key.name})", highlight=False)
    return 0
