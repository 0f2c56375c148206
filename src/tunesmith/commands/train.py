"""`tunesmith train RECIPE [--set k=v ...] [--nproc N]` and `tunesmith train --resume RUN_DIR [--set k=v]`.

A SIGTERM or the first Ctrl-C stops a single-process training at its next step boundary with
a checkpoint saved (the job ends cancelled, and --resume continues it); a second Ctrl-C stops
it at once. --resume takes --set for the settings a resume may change (train/run.py RESUMABLE).

With --nproc N the command starts N training processes on this machine under torchrun's
elastic agent; plain `torchrun ... -m tunesmith train RECIPE` works too (docs/distributed.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="fine-tune a model from a recipe",
                                   description="Fine-tune a base model as a recipe describes.")
    parser.add_argument("recipe", nargs="?", help="recipe YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, e.g. --set training.epochs=2 (repeatable)")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue an interrupted run; --set may change where it ends "
                             "(training.max_steps, training.epochs), its eval/save cadence and reporting")
    parser.add_argument("--nproc", type=int, metavar="N",
                        help="train with N processes on this machine (one per GPU, or CPU processes)")
    parser.add_argument("--job", metavar="JOB_ID",
                        help="run this queued registry job (how the server hands a job to a process)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tunesmith.commands.console import console
    from tunesmith.commands.progress import say_stopped, train_on_terminal
    from tunesmith.errors import RecipeError
    from tunesmith.recipe import load_recipe

    if args.resume and args.recipe:
        raise RecipeError("--resume continues a run with its saved recipe; give no recipe file",
                          fix="change what a resume may change with --set, e.g. --set training.max_steps=200")
    if not args.resume and not args.recipe and not args.overrides:
        raise RecipeError("give a recipe file (or --set values, or --resume RUN_DIR)",
                          fix="see docs/recipes.md for an example recipe")
    if args.nproc is not None and args.nproc < 1:
        raise RecipeError(f"--nproc must be at least 1, got {args.nproc}", where="--nproc")
    if args.nproc is not None and args.nproc > 1:
        return _launch(args)
    recipe = None if args.resume else load_recipe(args.recipe, args.overrides)
    resume = {"resume_dir": Path(args.resume), "overrides": args.overrides} if args.resume else {}
    from tunesmith.train.distributed import is_main_process

    if not is_main_process():
        # Rank > 0 of a multi-process run: the same training, silent; rank 0 reports and registers.
        from tunesmith.train.loop import train

        train(recipe, **resume)
        return 0
    tracked = train_on_terminal(recipe, job_id=args.job, **resume)
    result = tracked.result
    stopped = say_stopped(tracked, console)
    if stopped is not None:
        return stopped
    console.print(f"[bold green]{result.status}[/] after {result.steps} steps", highlight=False)
    if result.final_dir:
        console.print(f"  model: {result.final_dir}", highlight=False)
    if tracked.model is not None:
        console.print(f"  registered as {tracked.model.name} (job {tracked.job.id})", highlight=False)
    if result.best_step is not None:
        console.print(f"  best validation loss {result.best_validation_loss:.4f} at step {result.best_step}",
                      highlight=False)
    _print_verdict(result.run_dir, console)
    return 0


def _print_verdict(run_dir: Path, console: object) -> None:
    """The verdict lines of the evaluation a recipe with evaluation.enabled ran at the end."""
    from rich.markup import escape

    from tunesmith.errors import TunesmithError
    from tunesmith.evaluate.report import read_report
    from tunesmith.train.run import RunDir

    run = RunDir(run_dir)
    try:
        if not run.read_recipe().evaluation.enabled:
            return
        summary = read_report(run_dir).get("summary") or {}
    except TunesmithError:
        failed = [r.get("message", "") for r in run.metrics()
                  if r.get("type") == "event" and "evaluation failed" in str(r.get("message", ""))]
        console.print(f"  [yellow]{escape(failed[-1] if failed else 'no evaluation report was written')}[/]",
                      highlight=False)
        return
    status = str(summary.get("status", "?"))
    colour = {"green": "green", "amber": "yellow", "red": "red"}.get(status, "white")
    console.print(f"verdict: [bold {colour}]{status.replace('_', ' ')}[/]", highlight=False)
    for line in summary.get("lines", []):
        console.print(f"  {escape(line)}", highlight=False, soft_wrap=True)
    console.print(f"  report: {run_dir / 'report.html'}", highlight=False)


def _launch(args: argparse.Namespace) -> int:
    """Re-run this command as N ranks; the ranks load and validate the recipe themselves."""
    from tunesmith.errors import RecipeError
    from tunesmith.recipe import load_recipe
    from tunesmith.train.distributed import env_world_size
    from tunesmith.train.launch import run_workers

    if env_world_size() > 1:
        raise RecipeError("--nproc given inside a torchrun job", where="--nproc",
                          fix="drop --nproc: torchrun already started the processes")
    if not args.resume:
        load_recipe(args.recipe, args.overrides)  # a bad recipe fails once, here, not in every rank
    what = ["--resume", args.resume] if args.resume else ([args.recipe] if args.recipe else [])
    sets = [item for value in args.overrides for item in ("--set", value)]
    job = ["--job", args.job] if args.job else []
    run_workers(args.nproc, ["-m", "tunesmith", "train", *what, *sets, *job])
    return 0
