"""`tunesmith quickstart`: the whole loop on the bundled model and data, in about a minute.

Checks the data, measures the base model's held-out loss, fine-tunes with LoRA,
measures again, shows one reply before and after, and says where everything is.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("quickstart", help="check, fine-tune and evaluate the bundled example",
                                   description="Run the whole tunesmith loop on the bundled tiny model "
                                               "and Brightloom support data.")
    parser.add_argument("--out", default="runs", help="folder for the run (default: runs)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value of the quickstart recipe")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tunesmith.commands.console import console
    from tunesmith.commands.progress import train_on_terminal
    from tunesmith.data.check import check_dataset
    from tunesmith.model.inference import load_trained, reply
    from tunesmith.model.loading import ASSETS
    from tunesmith.recipe import load_recipe
    from tunesmith.train.run import RunDir

    recipe = load_recipe(ASSETS / "recipes" / "quickstart.yaml",
                         [f"output.dir={args.out}", *args.overrides])
    train_file, validation_file = recipe.data.train, recipe.data.validation
    assert train_file and validation_file

    console.rule("[bold]1. check the data")
    report = check_dataset(train_file, validation=validation_file, model=recipe.base_model,
                           max_length=recipe.data.max_length)
    errors = [f for f in report.findings if f.severity == "error"]
    warnings = [f for f in report.findings if f.severity == "warning"]
    console.print(f"{Path(train_file).name}: {report.format}, {report.valid_examples} examples, "
                  f"{len(errors)} errors, {len(warnings)} warnings", highlight=False)
    if errors:
        for finding in errors[:5]:
            console.print(f"  [red]{finding}[/]", highlight=False)
        return 1

    console.rule("[bold]2. fine-tune with LoRA")
    tracked = train_on_terminal(recipe)
    result = tracked.result

    console.rule("[bold]3. did it help?")
    evals = [r for r in RunDir(result.run_dir).metrics() if r.get("type") == "eval"]
    before, after = evals[0], min(evals[1:], key=lambda r: r["loss"])
    console.print(f"held-out loss   base {before['loss']:.3f}  ->  tuned {after['loss']:.3f} "
                  f"(step {after['step']})", highlight=False)
    console.print(f"token accuracy  base {before['token_accuracy']:.3f}  ->  tuned "
                  f"{after['token_accuracy']:.3f}", highlight=False)
    question = [{"role": "system", "content": "You are Wren, Brightloom's support assistant."},
                {"role": "user", "content": "Hi, my order hasn't arrived yet. Can you check on it?"}]
    base = load_trained(recipe.base_model)
    tuned = load_trained(result.run_dir)
    console.print(f"\n[bold]user:[/] {question[-1]['content']}", highlight=False)
    console.print(f"[bold]base:[/]  {reply(base, question, max_new_tokens=80).strip()}", highlight=False)
    console.print(f"[bold]tuned:[/] {reply(tuned, question, max_new_tokens=80).strip()}", highlight=False)

    report_file = result.run_dir / "report.json"
    if report_file.exists():
        import json

        summary = json.loads(report_file.read_text(encoding="utf-8"))["summary"]
        colour = {"green": "green", "amber": "yellow", "red": "red"}.get(summary["status"], "white")
        console.print(f"\n[bold]verdict: [{colour}]{summary['status']}[/][/]", highlight=False)
        for line in summary["lines"]:
            console.print(f"  {line}", highlight=False)

    console.rule("[bold]where everything is")
    run_dir = result.run_dir
    console.print(f"run directory   {run_dir}\n"
                  f"adapter (PEFT)  {result.final_dir}\n"
                  f"metrics         {run_dir / 'metrics.jsonl'}\n"
                  f"recipe          {run_dir / 'recipe.yaml'}\n"
                  f"report          {run_dir / 'report.html'}\n"
                  f"open the report tunesmith report {run_dir} --open\n"
                  f"model name      {tracked.model.name if tracked.model else 'not registered'}\n"
                  f"all models      tunesmith models list\n"
                  f"try it          tunesmith chat {run_dir}", highlight=False)
    return 0
