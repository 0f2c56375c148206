"""Shared terminal output for the CLI (rich), kept out of the library."""

from __future__ import annotations

from rich.console import Console

from tunesmith.errors import TunesmithError

console = Console()
err_console = Console(stderr=True)


def print_error(exc: TunesmithError) -> None:
    where = f"[bold]{exc.where}[/]: " if exc.where else ""
    err_console.print(f"[red]error[/] {where}{exc.message}", highlight=False)
    if exc.fix:
        err_console.print(f"  [cyan]fix:[/] {exc.fix}", highlight=False)
