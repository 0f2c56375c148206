"""`tunesmith train RECIPE [--set k=v ...]` and `tunesmith train --resume RUN_DIR`."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="fine-tune a model from a recipe",
                                   description="Fine-tune a base model as a recipe describes.")
    parser.add_argument("recipe", nargs="?", help="recipe YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, e.g. --set training.epochs=2 (repeatable)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tunesmith.commands.console import console
    from tunesmith.commands.progress import train_on_terminal
    from tunesmith.errors import RecipeError
    from tunesmith.recipe import load_recipe

    if args.resume and (args.recipe or args.overrides):
        raise RecipeError("--resume continues a run with its saved recipe; give no recipe or --set")
    if not args.resume and not args.recipe and not args.overrides:
        raise RecipeError("give a recipe file (or --set values, or --resume RUN_DIR)",
                          fix="see docs/recipes.md for an example recipe")
    recipe = None if args.resume else load_recipe(args.recipe, args.overrides)
    tracked = train_on_terminal(recipe, resume_dir=Path(args.resume) if args.resume else None)
    result = tracked.result
    console.print(f"[bold green]{result.status}[/] after {result.steps} steps", highlight=False)
    if result.final_dir:
        console.print(f"  model: {result.final_dir}", highlight=False)
    if tracked.model is not None:
        console.print(f"  registered as {tracked.model.name} (job {tracked.job.id})", highlight=False)
    if result.best_step is not None:
        console.print(f"  best validation loss {result.best_validation_loss:.4f} at step {result.best_step}",
                      highlight=False)
    return 0
