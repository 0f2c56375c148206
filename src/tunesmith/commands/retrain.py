"""`tunesmith retrain MODEL --data NEW.jsonl [--alias NAME@LABEL] [--force]`.

Trains a new model from MODEL's recipe on new data (a new adapter from the base model, or
with --from-weights from MODEL's own weights), records MODEL as its parent,
compares both on the previous and the new held-out sets, and moves the alias only
when held-out loss did not regress past --max-regression and the forgetting probe (if
run) did not regress (unless --force).
"""

from __future__ import annotations

import argparse

from tunesmith.commands.runs import print_json

MAX_REGRESSION = 0.02  # = store.retrain.DEFAULT_MAX_REGRESSION; not imported, so --help stays fast


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("retrain",
                                   help="retrain on new data, guarded by held-out loss and forgetting",
                                   description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    parser.add_argument("model", help="model name, id or alias name@label to start from")
    parser.add_argument("--data", required=True, metavar="FILE", help="the new training data")
    parser.add_argument("--validation", metavar="FILE",
                        help="the new held-out data (default: split from --data; then only the previous "
                             "held-out set is compared)")
    parser.add_argument("--alias", metavar="NAME@LABEL", help="move this alias to the new model if it passes")
    parser.add_argument("--max-regression", type=float, default=MAX_REGRESSION, metavar="F",
                        help=f"largest allowed relative rise in held-out loss (default: {MAX_REGRESSION})")
    parser.add_argument("--from-weights", action="store_true",
                        help="start from MODEL's trained weights instead of a fresh adapter on the base")
    parser.add_argument("--force", action="store_true", help="move the alias even if the model regressed")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value of the model's recipe (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tunesmith.commands.console import console
    from tunesmith.commands.progress import say_stopped, train_on_terminal
    from tunesmith.store import open_registry
    from tunesmith.store.errors import AliasGuardError, RegistryError
    from tunesmith.store.retrain import compare_models, move_alias, retrain_recipe

    registry = open_registry()
    parent = registry.model(args.model)
    recipe = retrain_recipe(parent, args.data, args.validation, args.overrides,
                            from_weights=args.from_weights)
    # The child keeps the parent's suffix: ft:BASE:SUFFIX:ID names a model family.
    suffix = parent.name.split(":")[2] if parent.name.count(":") >= 3 else None
    tracked = train_on_terminal(recipe, parent_model_id=parent.id, suffix=suffix)
    result = tracked.result
    again = f"the same command with `--set output.name={result.run_dir.name}`"
    stopped = say_stopped(tracked, console, f"no new model, so nothing was compared and no alias moved. "
                                            f"Continue from its last checkpoint with {again}")
    if stopped is not None:
        return stopped
    if tracked.model is None:
        raise RegistryError(f"the retraining run ended as {result.status} without a model",
                            where=str(result.run_dir))
    child = tracked.model
    verdict = compare_models(registry, parent, child, args.max_regression)
    child = registry.update_model(child.id, evaluation={**child.evaluation, "retrain": verdict.to_dict()})
    outcome = {"parent": parent.name, "model": child.name, "run_dir": str(result.run_dir),
               "verdict": verdict.to_dict(), "alias": None}
    guard_error: AliasGuardError | None = None
    if args.alias:
        try:
            move_alias(registry, args.alias, child, verdict, args.force)
            outcome["alias"] = args.alias
        except AliasGuardError as exc:
            guard_error = exc
    if args.json:
        print_json(outcome)
    else:
        console.print(f"[bold]{child.name}[/] retrained from {parent.name}", highlight=False)
        for c in verdict.comparisons:
            style = "red" if c in verdict.regressions else "green"
            console.print(f"  held-out {c.dataset}: {c.parent_loss:.4f} -> [{style}]{c.child_loss:.4f} "
                          f"({c.change:+.1%})[/]", highlight=False)
        if outcome["alias"]:
            console.print(f"  {args.alias} -> {child.name}", highlight=False)
    if guard_error is not None:
        raise guard_error
    return 0
