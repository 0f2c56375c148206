"""`tunesmith fixes export RUN_DIR --out FIXES.jsonl` and
`tunesmith fixes apply FIXES.jsonl --data TRAIN.jsonl --out FIXED.jsonl`.

Export: the training examples the tuned model fits worst and the held-out items it answered
worst (from the run's evaluation report), each as its original row with a review entry, for a
person to fix. Apply: the edited training rows back at their lines, in a copy of the training
file; then `tunesmith retrain MODEL --data FIXED.jsonl` shows before/after on the same held-out set.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("fixes", help="export the worst-fit examples to fix; apply the fixes",
                                   description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    commands = parser.add_subparsers(dest="fixes_command", required=True, metavar="COMMAND")
    export = commands.add_parser("export", help="write the examples worth reviewing as JSONL")
    export.add_argument("run", help="run directory with an evaluation report (tunesmith eval)")
    export.add_argument("--out", required=True, metavar="FILE", help="the review file to write")
    export.set_defaults(handler=run_export)
    apply = commands.add_parser("apply", help="put the fixed training rows back, in a copy of the data")
    apply.add_argument("fixes", help="the reviewed file")
    apply.add_argument("--data", required=True, metavar="FILE", help="the training file the rows came from")
    apply.add_argument("--out", required=True, metavar="FILE", help="the fixed copy to write")
    apply.set_defaults(handler=run_apply)


def run_export(args: argparse.Namespace) -> int:
    from tunesmith.commands.console import console
    from tunesmith.iterate.fixes import export_fixes

    result = export_fixes(args.run, args.out)
    console.print(f"{result['training']} training examples and {result['heldout']} held-out items to review "
                  f"in {result['path']}", highlight=False)
    if result["without_original"]:
        console.print(f"[yellow]{result['without_original']} rows could not be read back from their "
                      "file (not JSONL, or changed since): their review entry names the source[/]",
                      highlight=False)
    return 0


def run_apply(args: argparse.Namespace) -> int:
    from tunesmith.commands.console import console
    from tunesmith.iterate.fixes import apply_fixes

    result = apply_fixes(args.fixes, args.data, args.out)
    console.print(f"{result['replaced']} rows fixed, {result['dropped']} dropped, {result['unchanged']} "
                  f"left as they were; {result['heldout_not_applied']} held-out items are for reading, "
                  f"not applied. Wrote {result['path']}", highlight=False)
    return 0
