"""`tunesmith advise DATA [--model M]`: before training, is fine-tuning the right tool?

Scores the base model zero-shot, with few-shot examples and with retrieved examples on
held-out examples (the graders and intervals of `tunesmith eval`), probes what fine-tuning
would cost here (a few real training steps), says what the numbers suggest and records the
advice in the registry with the dataset version.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "advise", help="before training: prompt, retrieve or fine-tune? (measured, with the cost)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    parser.add_argument("data", help="the training examples (JSONL, CSV or Parquet)")
    parser.add_argument("--model", help="base model (default: the recipe's, else tunesmith/tiny-chat)")
    parser.add_argument("--heldout", metavar="FILE",
                        help="held-out examples (default: the split a training run would hold out)")
    parser.add_argument("--recipe", metavar="FILE", help="recipe whose training settings the cost probe uses")
    parser.add_argument("--graders", help="YAML or JSON file holding a list of grader definitions")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe value, e.g. --set evaluation.max_examples=40 --set adapter.rank=8")
    parser.add_argument("--probe-steps", type=int, default=3, metavar="N",
                        help="training steps timed for the cost estimate (default: 3)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, mps or auto")
    parser.add_argument("--no-record", action="store_true", help="do not record the advice in the registry")
    parser.add_argument("--json", action="store_true", help="print the advice as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tunesmith.commands.console import console, err_console
    from tunesmith.errors import RecipeError
    from tunesmith.hardware import pick_device
    from tunesmith.iterate.advise import advice_recipe, advise

    if args.probe_steps < 1:
        raise RecipeError(f"--probe-steps must be at least 1, got {args.probe_steps}", where="--probe-steps")
    device = str(pick_device(args.device))
    overrides = [*args.overrides, f"training.device={device}"]
    if args.graders:
        import json

        from tunesmith.commands.evaluate import _read_graders

        overrides.append(f"evaluation.graders={json.dumps(_read_graders(Path(args.graders)))}")
    recipe = advice_recipe(args.data, args.model, overrides, args.recipe)
    heldout = str(Path(args.heldout).expanduser().resolve()) if args.heldout else None
    result = advise(recipe, heldout=heldout, probe_steps=args.probe_steps, device=device,
                    progress=lambda message: err_console.print(f"[dim]{message}[/]", highlight=False))
    if not args.no_record:
        from tunesmith.store import open_registry
        from tunesmith.store.advice import record_advice

        row = record_advice(open_registry(), args.data, result, heldout, recipe.data.format)
        result = {**result, "id": row.id, "dataset_id": row.dataset_id}
    if args.json:
        from tunesmith.commands.runs import print_json

        print_json(result)
    else:
        show(result, console)
    return 0


def show(advice: dict[str, Any], console: Any) -> None:
    """Each system's numbers with intervals, the comparisons, the cost, then the advice."""
    from rich.markup import escape
    from rich.table import Table

    def cell(value: dict[str, Any] | None, key: str = "value") -> str:
        if not value or value.get(key) is None:
            return "-"
        return f"{value[key]:.3f} [dim]({value['low']:.3f}-{value['high']:.3f})[/]"

    graders = sorted({g for s in advice["systems"].values() for g in s["scores"]})
    confidence = advice["settings"]["confidence"]
    title = f"{advice['base_model']} on {advice['examples']} held-out examples, {confidence:.0%} intervals"
    table = Table("system", "held-out loss", *graders, title=title)
    for name, system in advice["systems"].items():
        table.add_row(name, cell(system["loss"], "loss"), *(cell(system["scores"].get(g)) for g in graders))
    console.print(table)
    versus = Table("system", "vs", "metric", "difference", "win/tie/loss", "verdict")
    for c in advice["comparisons"]:
        d = c["difference"]
        colour = {"better": "green", "worse": "red"}.get(c["verdict"], "yellow")
        versus.add_row(c["system"], c["versus"], c["metric"],
                       f"{d['value']:+.3f} [dim]({d['low']:+.3f} to {d['high']:+.3f})[/]",
                       f"{c['wins']}/{c['ties']}/{c['losses']}", f"[{colour}]{c['verdict']}[/]")
    console.print(versus)
    cost = advice["cost"]
    console.print(
        f"fine-tuning here: {cost['train_examples']} examples x {cost['epochs']} epochs = {cost['tokens']:,} "
        f"tokens in {cost['total_steps']} steps; about {_duration(cost['estimated_seconds'])} at "
        f"{cost['seconds_per_step']:.2f} s/step ({cost['tokens_per_second']:.0f} tokens/s, timed over "
        f"{cost['probe_steps']} probe steps on {cost['device']}); memory: "
        f"{cost['memory']['peak_bytes'] / 2**20:,.0f} MiB ({cost['memory']['what']})", highlight=False)
    for note in advice.get("notes") or []:
        console.print(f"[yellow]{escape(note)}[/]", highlight=False)
    colour = {"retrieval": "cyan", "fine_tune": "green", "nothing_to_gain": "yellow"}.get(
        advice["recommendation"], "white")
    console.print(f"advice: [bold {colour}]{advice['recommendation'].replace('_', ' ')}[/]: "
                  f"{escape(advice['reason'])}", highlight=False, soft_wrap=True)
    for line in advice["evidence"]:
        console.print(f"  [dim]{escape(line)}[/]", highlight=False, soft_wrap=True)
    if advice.get("id"):
        console.print(f"recorded as {advice['id']} for dataset {advice['dataset_id']}", highlight=False)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
