"""`tunesmith sweep RECIPE --search KEY=V1,V2 ... [--sampler grid|tpe] [--alias NAME@LABEL]`.

Every trial is an ordinary registered training run; unpromising trials are stopped early on
validation loss (Optuna's median pruner); the finished ones are evaluated on the same
held-out examples and ranked, and each difference from the best is marked real or not by a
paired bootstrap interval. --alias points NAME@LABEL at the best run's model.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("sweep", help="search hyperparameters, prune on validation loss, rank",
                                   description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    parser.add_argument("recipe", help="recipe YAML file")
    parser.add_argument("--search", action="append", default=[], required=True, metavar="KEY=V1,V2",
                        help="a recipe key and its candidate values (repeatable)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe value every trial shares (repeatable)")
    parser.add_argument("--sampler", default="grid", choices=["grid", "tpe"],
                        help="grid: every combination; tpe: Optuna's TPE over the values (default: grid)")
    parser.add_argument("--trials", type=int, metavar="N",
                        help="trials to run (default: the grid's size, or 8)")
    parser.add_argument("--no-prune", action="store_true", help="train every trial to its end")
    parser.add_argument("--name", help="the sweep's name (default: sweep-<time>); names the trials' runs")
    parser.add_argument("--study-db", metavar="URL",
                        help="Optuna storage shared by several sweep processes (default: in memory)")
    parser.add_argument("--heldout", metavar="FILE", help="held-out examples for the leaderboard "
                        "(default: evaluation.data, else data.validation, else each run's split)")
    parser.add_argument("--alias", metavar="NAME@LABEL", help="point this alias at the best run's model")
    parser.add_argument("--seed", type=int, default=0, help="the sampler's seed (default: 0)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, mps or auto (evaluation)")
    parser.add_argument("--json", action="store_true", help="print the leaderboard as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import time

    from tunesmith.commands.console import console, err_console
    from tunesmith.errors import RecipeError
    from tunesmith.hardware import pick_device
    from tunesmith.iterate.sweep import parse_search, run_sweep, sweep_folder, write_leaderboard
    from tunesmith.store import open_registry

    if args.trials is not None and args.trials < 1:
        raise RecipeError(f"--trials must be at least 1, got {args.trials}", where="--trials")
    name = args.name or time.strftime("sweep-%Y%m%d-%H%M%S")
    searches = [parse_search(spec) for spec in args.search]
    registry = open_registry()
    board = run_sweep(args.recipe, searches, base=tuple(args.overrides), name=name, sampler=args.sampler,
                      trials=args.trials, prune=not args.no_prune, seed=args.seed, storage=args.study_db,
                      heldout=args.heldout, device=str(pick_device(args.device)), registry=registry,
                      progress=lambda message: err_console.print(f"[dim]{message}[/]", highlight=False))
    if args.alias:
        if board["best_model_id"] is None:
            raise RecipeError("no trial finished with a model to alias", where="--alias")
        registry.set_alias(args.alias, board["best_model_id"])
        board["alias"] = args.alias
    path = write_leaderboard(board, sweep_folder(args.recipe, tuple(args.overrides), name))
    if args.json:
        from tunesmith.commands.runs import print_json

        print_json({**board, "path": str(path)})
    else:
        show(board, console)
        console.print(f"leaderboard: {path}", highlight=False)
    return 0


def show(board: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    keys = list(board["search"])
    table = Table("rank", "trial", *keys, "state", "held-out loss", "vs best",
                  title=f"sweep {board['sweep']}: {board['confidence']:.0%} intervals on {board['heldout']}")
    for row in board["trials"]:
        held = row.get("heldout") or {}
        loss = f"{held['loss']:.4f} ({held['low']:.4f}-{held['high']:.4f})" if held.get("loss") is not None \
            else "-"
        versus = row.get("versus_best")
        if row.get("rank") == 1:
            mark = "[bold green]best[/]"
        elif versus:
            d = versus["difference"]
            mark = (f"{d['value']:+.4f} ({d['low']:+.4f} to {d['high']:+.4f}) "
                    + ("[red]really worse[/]" if versus["real"] else "[yellow]not distinguishable[/]"))
        else:
            mark = f"pruned at step {row.get('pruned_at_step')}" if row["state"] == "pruned" else "-"
        params = (str(row["params"].get(k, "-")) for k in keys)
        table.add_row(str(row.get("rank", "-")), str(row["trial"]), *params, row["state"], loss, mark)
    console.print(table)
    if board.get("alias"):
        console.print(f"{board['alias']} -> model {board['best_model_id']} (trial {board['best']})",
                      highlight=False)
