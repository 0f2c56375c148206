"""Shared terminal output for the CLI (rich), kept out of the library."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from rich.console import Console

from tunesmith.errors import TunesmithError

console = Console()
err_console = Console(stderr=True)


def print_error(exc: TunesmithError) -> None:
    where = f"[bold]{exc.where}[/]: " if exc.where else ""
    err_console.print(f"[red]error[/] {where}{exc.message}", highlight=False)
    if exc.fix:
        err_console.print(f"  [cyan]fix:[/] {exc.fix}", highlight=False)


def shown_path(path: Path | str) -> str:
    """A path relative to the working folder where it is inside it, else under ~ where it is
    in the home folder, else absolute: what fits a terminal line."""
    absolute = Path(os.path.abspath(path))
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        pass
    try:
        return str(Path("~") / absolute.relative_to(Path.home()))
    except (ValueError, RuntimeError):  # RuntimeError: no home folder can be found
        return str(absolute)


def print_indented(out: Console, text: str, indent: str = "    ", first: str | None = None) -> None:
    """Plain text wrapped to the terminal with every line indented (rich would start its
    continuation lines at the margin); `first` leads the first line instead of `indent`. A word
    longer than a line (a path) gets a line of its own, whole, so it can be copied."""
    out.print(textwrap.fill(text, width=max(40, out.width), initial_indent=indent if first is None else first,
                            subsequent_indent=indent, break_on_hyphens=False, break_long_words=False),
              highlight=False, markup=False, soft_wrap=True)
