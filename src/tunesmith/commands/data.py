"""`tunesmith data check`: the pre-flight report a user reads before spending compute.

Errors and warnings with file:line and a fix, token counts with the model's own
tokenizer, what padding would waste, one example with its trained tokens marked, and
a verdict. `--json` prints the same report as JSON. Exit status 1 when there are errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from tunesmith.commands import positive_int

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from tunesmith.data.check_report import CheckReport, PreviewToken
    from tunesmith.data.findings import Finding

FORMATS = ("auto", "chat", "completion", "text", "preference", "reinforcement")
NO_MODEL = "none"
TRAINED_STYLE = "bold green underline"
SEVERITY_STYLE = {"error": ("red", "✗"), "warning": ("yellow", "!")}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="check datasets before training",
                                   description="Check datasets before training.")
    commands = parser.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    check = commands.add_parser(
        "check", help="errors, warnings, token counts and cost of a dataset",
        description="Check a dataset (JSONL, CSV, Parquet or a Hugging Face dataset folder) "
                    "in one streaming pass: errors with file:line, duplicates, leakage, "
                    "sensitive data, token counts, padding waste and a rendered example.")
    check.add_argument("file", help="training data: a file or a dataset folder")
    check.add_argument("--validation", metavar="FILE", help="validation data, checked the same "
                       "way and for overlap with the training data")
    check.add_argument("--model", metavar="M", help="tokenizer and chat template to count with: "
                       "a folder, a hub id or the bundled model (default); 'none' skips tokens")
    check.add_argument("--format", choices=FORMATS, default="auto",
                       help="dataset shape (default: detected from the first row)")
    check.add_argument("--max-length", type=positive_int, metavar="N",
                       help="token limit per example (default: a recipe's data.max_length)")
    check.add_argument("--epochs", type=_epochs, default=3, metavar="N",
                       help="epochs for the billed-token estimate, or 'auto' (default: 3)")
    check.add_argument("--batch-size", type=positive_int, default=8, metavar="N",
                       help="examples per optimizer step, for the packing estimate (default: 8)")
    check.add_argument("--chat-template", metavar="T", help="chat template instead of the model's "
                       "own: a .jinja file or a built-in name (chatml-tools), as data.chat_template")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(handler=run_check)


def _epochs(text: str) -> int | str:
    return "auto" if text == "auto" else positive_int(text)


def run_check(args: argparse.Namespace) -> int:
    from tunesmith.commands.console import console
    from tunesmith.data.check import check_dataset
    from tunesmith.recipe import BUNDLED_MODEL

    model = args.model or BUNDLED_MODEL
    kwargs = dict(validation=args.validation, fmt=args.format,
                  model=None if model.lower() == NO_MODEL else model, max_length=args.max_length,
                  epochs=args.epochs, batch_size=args.batch_size, chat_template=args.chat_template)
    if args.json or not console.is_terminal:
        report = check_dataset(args.file, **kwargs)
    else:
        with console.status("checking…") as status:
            report = check_dataset(args.file, progress=lambda rows: status.update(
                f"checking… {rows:,} rows"), **kwargs)
    if args.json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
    else:
        print_report(report, console)
    return 0 if report.ok else 1


# --- the human-readable report ---------------------------------------------------------


def _out(console: Console, *items: object) -> None:
    """Print; off a terminal lines are not wrapped, so a file:line is never split."""
    console.print(*items, soft_wrap=not console.is_terminal, highlight=False)


def print_report(report: CheckReport, console: Console) -> None:
    _summary(report, console)
    for severity in ("error", "warning"):
        _findings(report, severity, console)
    if report.tokens is not None:
        _tokens(report, console)
    if report.preview:
        _preview(report, console)
    _verdict(report, console)


def _summary(report: CheckReport, console: Console) -> None:
    from rich.text import Text

    for part in (report, report.validation):
        if part is None:
            continue
        counts = part.counts
        label = "validation" if part is report.validation else "data"
        line = Text.assemble((f"{label} ", "dim"), (part.path, "bold"),
                             f"  {part.format or 'unknown format'} · {counts.examples:,} examples"
                             f" in {counts.rows:,} rows · {counts.with_errors:,} with errors")
        _out(console, line)
    errors, warnings = report.errors, report.warnings
    _out(console, Text.assemble(
        (f"{errors:,} error{'s' * (errors != 1)}", "red" if errors else "green"), " · ",
        (f"{warnings:,} warning{'s' * (warnings != 1)}", "yellow" if warnings else "green")))


def _findings(report: CheckReport, severity: str, console: Console) -> None:
    from rich.text import Text

    groups = [(code, kept, total) for code, kept, total in report.groups()
              if kept[0].severity == severity]
    if not groups:
        return
    style, mark = SEVERITY_STYLE[severity]
    _out(console, Text(f"\n{severity}s", style=f"bold {style}"))
    for code, kept, total in groups:
        for finding in kept:
            _out(console, _finding_line(finding, mark, style))
        if total > len(kept):
            _out(console, Text(f"    … and {total - len(kept):,} more ({code})", style="dim"))


def _finding_line(finding: Finding, mark: str, style: str) -> Text:
    from rich.text import Text

    line = Text.assemble((f"  {mark} ", style), (finding.where or "", "bold"),
                         "  " if finding.where else "", finding.message)
    if finding.fix:
        line.append(f"\n      fix: {finding.fix}", style="cyan")
    return line


def _tokens(report: CheckReport, console: Console) -> None:
    from rich.table import Table

    tokens = report.tokens
    assert tokens is not None
    table = Table(title=f"tokens ({report.model})", title_justify="left", show_edge=False)
    for column in ("examples", "mean", "p50", "p95", "max", "total", "trained",
                   f"billed (×{tokens.epochs} epochs)"):
        table.add_column(column, justify="right")
    approx = "" if tokens.trained_exact else "~"
    table.add_row(f"{tokens.examples:,}", f"{tokens.mean:,.1f}", f"{tokens.p50:,}",
                  f"{tokens.p95:,}", f"{tokens.max:,}", f"{tokens.total:,}",
                  f"{approx}{tokens.trained:,}", f"{tokens.billed:,}")
    console.print()
    console.print(table)
    if tokens.over_max_length:
        _out(console, f"{tokens.over_max_length:,} over max_length {tokens.max_length:,}: "
                      f"{tokens.truncated:,} truncated, {tokens.dropped:,} dropped")
    validation = report.validation.tokens if report.validation else None
    if validation is not None:
        _out(console, f"validation: {validation.examples:,} examples, {validation.total:,} "
                      f"tokens per evaluation pass")
    packing = report.packing
    if packing is not None:
        budget = report.settings.get("micro_batch_tokens", 0)
        _out(console,
             f"padding would waste {packing.padded_waste:.0%} of the tokens computed "
             f"({packing.micro_batches_padded:,} padded micro-batches per epoch); packed: "
             f"{packing.micro_batches_packed:,} micro-batches of {budget:,} tokens, "
             f"{packing.packed_fill:.0%} full")


def _preview(report: CheckReport, console: Console) -> None:
    from rich.text import Text

    assert report.preview is not None
    marks = "highlighted" if console.is_terminal else "in [brackets]"
    _out(console, Text(f"\npreview of {report.preview_where} (trained tokens {marks})",
                       style="bold"))
    preview = preview_text(report.preview, styled=console.is_terminal)
    preview.rstrip()
    _out(console, preview)


def preview_text(tokens: list[PreviewToken], styled: bool) -> Text:
    """Trained tokens styled on a terminal, wrapped in [ ] runs in plain text."""
    from rich.text import Text

    text = Text()
    trained_run = False
    for piece, trained in tokens:
        if not styled and trained != trained_run:
            text.append("[" if trained else "]")
            trained_run = trained
        text.append(piece, style=TRAINED_STYLE if styled and trained else "")
    if trained_run:
        text.append("]")
    return text


def _verdict(report: CheckReport, console: Console) -> None:
    from rich.text import Text

    console.print()
    if not report.ok:
        _out(console, Text(f"✗ {report.errors:,} error(s): fix them before training",
                           style="bold red"))
    elif report.warnings:
        _out(console, Text(f"✓ ready to train, with {report.warnings:,} warning(s) to review",
                           style="bold yellow"))
    else:
        _out(console, Text("✓ ready to train", style="bold green"))
