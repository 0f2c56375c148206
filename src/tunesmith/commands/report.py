"""`tunesmith report RUN_DIR [--open]`: the evaluation summary and where report.html is."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="show a run's evaluation report (--open: in a browser)",
                                   description="Print the summary of RUN_DIR/report.json, rebuild "
                                               "report.html from it and the run's metrics, and say where "
                                               "it is.")
    parser.add_argument("run_dir", help="run directory (or any folder holding report.json)")
    parser.add_argument("--open", action="store_true", help="open report.html in the web browser")
    parser.add_argument("--json", action="store_true", help="print report.json")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tunesmith.commands.console import console
    from tunesmith.evaluate.report import read_report, write_report
    from tunesmith.train.run import RunDir

    folder = Path(args.run_dir)
    report = read_report(folder)
    path = write_report(report, folder, RunDir(folder).metrics())
    if args.json:
        from tunesmith.commands.runs import print_json

        print_json(report)
        return 0
    from tunesmith.commands.evaluate import show

    show(report, path, console)
    if args.open:
        import webbrowser

        webbrowser.open((folder / "report.html").resolve().as_uri())
    return 0
