"""The command line: parse arguments, call the library, show the result.

Each command lives in tunesmith/commands/<name>.py with a `register(subparsers)`
function; heavy imports (torch, transformers) happen inside the handlers so
`tunesmith --help` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from tunesmith import __version__, allocator
from tunesmith.errors import TunesmithError

COMMAND_MODULES = (
    "tunesmith.commands.data",
    "tunesmith.commands.train",
    "tunesmith.commands.quickstart",
    "tunesmith.commands.chat",
    "tunesmith.commands.evaluate",
    "tunesmith.commands.advise",
    "tunesmith.commands.sweep",
    "tunesmith.commands.fixes",
    "tunesmith.commands.report",
    "tunesmith.commands.runs",
    "tunesmith.commands.models",
    "tunesmith.commands.datasets",
    "tunesmith.commands.lineage",
    "tunesmith.commands.retrain",
    "tunesmith.commands.export",
    "tunesmith.commands.serve",
    "tunesmith.commands.worker",
    "tunesmith.commands.keys",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunesmith",
        description="Fine-tune open language models on your own examples and prove whether it helped.")
    parser.add_argument("--version", action="version", version=f"tunesmith {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def quiet_libraries() -> None:
    """tunesmith draws its own progress; the libraries' bars and a deprecation notice that
    PEFT triggers inside transformers would only clutter the terminal."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    try:
        allocator.tune()  # before any command allocates its first large tensor
        return int(args.handler(args) or 0)
    except TunesmithError as exc:
        from tunesmith.commands.console import print_error

        print_error(exc)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
