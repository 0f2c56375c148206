"""`tunesmith quickstart`: the whole loop on a real model and a bundled task, in minutes.

Pulls SmolLM2-135M-Instruct if it is not registered yet, checks the bundled routing data,
fine-tunes with LoRA, evaluates the tuned model against the base model, a few-shot prompt
and retrieval on graded held-out replies (with intervals) plus a forgetting probe, shows
one held-out ticket answered by each, prints the verdict and says where everything is.
`--tiny` runs the same loop on the bundled 1M-parameter model (for tests: fast, offline).
"""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path
from typing import Any

from tunesmith.commands.console import print_indented, shown_path

REAL_MODEL = "smollm2-135m-instruct"
RECIPES = {"real": "quickstart-smollm2.yaml", "tiny": "quickstart.yaml"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "quickstart", help="pull a real model, check, fine-tune and evaluate the bundled example",
        description="Run the whole tunesmith loop: pull SmolLM2-135M-Instruct (once), check the bundled "
                    "Brightloom ticket-routing data, fine-tune with LoRA, evaluate against the base "
                    "model, a few-shot prompt and retrieval, and print the verdict.")
    parser.add_argument("--out", default="runs", help="folder for the run (default: runs)")
    parser.add_argument("--tiny", action="store_true",
                        help="use the bundled 1M-parameter model and support chats instead (seconds, "
                             "offline; the model is too small to show a real gain)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value of the quickstart recipe")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tunesmith.commands.console import console
    from tunesmith.model.loading import ASSETS
    from tunesmith.recipe import load_recipe

    started = time.time()
    recipe = _tidy(load_recipe(ASSETS / "recipes" / RECIPES["tiny" if args.tiny else "real"],
                               [f"output.dir={args.out}", *args.overrides]))
    step = _Steps(console)
    if recipe.base_model == REAL_MODEL:
        step("get the base model")
        _ensure_pulled(console)

    step("check the data")
    if not _check(recipe, console):
        return 1

    step("fine-tune with LoRA")
    tracked = _train(recipe)
    run_dir = tracked.result.run_dir
    stopped = _stopped(tracked, args, console)
    if stopped is not None:
        return stopped

    step("did it help? (held-out replies, graded)")
    report, report_path = _evaluate(run_dir, recipe, console)
    _show_example(report, console)
    from tunesmith.commands.evaluate import show

    console.print()
    show(report, report_path, console)
    for note in report.get("notes") or []:
        console.print(f"  note: {note}", highlight=False)
    if tracked.model is not None:
        from tunesmith.commands.evaluate import report_summary
        from tunesmith.store import open_registry

        open_registry().update_model(tracked.model.id, evaluation={
            **tracked.model.evaluation, "report": report_summary(report, report_path)})

    step("where everything is")
    where_everything_is(console, run_dir, tracked.result.final_dir,
                        tracked.model.name if tracked.model else None, _minutes(time.time() - started))
    return 0


LABEL = 16
"""Width of the label column of the "where everything is" section."""


def where_everything_is(console: Any, run_dir: Path, final_dir: Path, model_name: str | None,
                        wall_time: str) -> None:
    """Where the run's files are and the commands that use them, narrow enough for an 80-column
    terminal: paths relative to the working folder (or ~) and a value that would not fit beside
    its label on a line of its own. A line is never broken inside: a path or a command copied
    from the terminal is whole, and the commands are quoted for the shell."""
    rows = [("run directory", shown_path(run_dir)), ("adapter (PEFT)", shown_path(final_dir)),
            ("metrics", shown_path(run_dir / "metrics.jsonl")),
            ("recipe", shown_path(run_dir / "recipe.yaml")),
            ("report", shown_path(run_dir / "report.html")),
            ("open the report", f"tunesmith report {_argument(run_dir)} --open"),
            ("model name", model_name or "not registered"), ("all models", "tunesmith models list"),
            ("try it", f"tunesmith chat {_argument(run_dir)}"), ("wall time", wall_time)]
    for label, value in rows:
        if LABEL + len(value) <= console.width:  # markup off: a path may hold [brackets]
            console.print(f"{label:<{LABEL - 1}} {value}", highlight=False, markup=False, soft_wrap=True)
        else:
            console.print(label, highlight=False)
            console.print(f"  {value}", highlight=False, markup=False, soft_wrap=True)


def _tidy(recipe: Any) -> Any:
    """The bundled recipe with its data paths written plainly (no 'recipes/../data'), and with
    evaluation left to the quickstart, which runs it right after training with progress on the
    terminal (the end-of-training hook would run it silently)."""
    from tunesmith.recipe import build_recipe

    raw = recipe.model_dump(mode="json")
    for section, key in (("data", "train"), ("data", "validation"), ("data", "replay"),
                         ("evaluation", "forgetting")):
        value = raw[section].get(key)
        if value and Path(value).exists():
            raw[section][key] = str(Path(value).resolve())
    raw["evaluation"]["enabled"] = False
    return build_recipe(raw, origin="quickstart recipe")


class _Steps:
    """Numbered section rules, each with the time since the start."""

    def __init__(self, console: Any):
        self.console, self.count, self.started = console, 0, time.time()

    def __call__(self, title: str) -> None:
        self.count += 1
        self.console.rule(f"[bold]{self.count}. {title}[/]  [dim]{_minutes(time.time() - self.started)}[/]")


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def _ensure_pulled(console: Any) -> None:
    from tunesmith.model.pull import pull
    from tunesmith.store.base_models import is_registered_base, registered_base

    if is_registered_base(REAL_MODEL):
        row = registered_base(REAL_MODEL)
        console.print(f"{REAL_MODEL}: pulled already, registered at", highlight=False)
        console.print(f"  {shown_path(row.location) if row else '?'}", highlight=False, soft_wrap=True)
        return
    from tunesmith.errors import ModelError

    try:
        pull(REAL_MODEL, progress=lambda message: print_indented(console, message, "    ", first="  "))
    except ModelError as exc:
        raise ModelError(exc.message, where=exc.where,
                         fix=f"{exc.fix + '; or ' if exc.fix else ''}run `tunesmith quickstart --tiny` "
                             "on the bundled model, which needs no download") from exc


def _check(recipe: Any, console: Any) -> bool:
    from tunesmith.data.check import check_dataset

    train_file, validation_file = Path(recipe.data.train).resolve(), Path(recipe.data.validation).resolve()
    replay_file = Path(recipe.data.replay).resolve() if recipe.data.replay else None
    report = check_dataset(recipe.data.model_copy(update={
        "train": str(train_file), "validation": str(validation_file),
        "replay": str(replay_file) if replay_file else None}),
        training=recipe.training, model=recipe.base_model)
    errors = [f for f in report.findings if f.severity == "error"]
    warnings = [f for f in report.findings if f.severity == "warning"]
    held_out = report.validation.valid_examples if report.validation is not None else 0
    console.print(f"{shown_path(train_file)} + {validation_file.name}", highlight=False, soft_wrap=True)
    console.print(f"  {report.format}: {report.valid_examples} training and {held_out} held-out examples, "
                  f"{_count(len(errors), 'error')}, {_count(len(warnings), 'warning')}", highlight=False,
                  soft_wrap=True)
    if replay_file and report.replay is not None:
        console.print(f"  + {report.replay.valid_examples} everyday chats in training, the base model's "
                      "own replies (data.replay)", highlight=False, soft_wrap=True)
    for finding in warnings:
        console.print(f"  [yellow]warning[/] {_finding(finding)}", highlight=False, soft_wrap=True)
    for finding in errors[:5]:
        console.print(f"  [red]error[/] {_finding(finding)}", highlight=False, soft_wrap=True)
    return not errors


def _argument(path: Path) -> str:
    """`shown_path(path)` as one shell word: quoted where it needs it, a leading ~ left outside the
    quotes so the shell still expands it."""
    shown = shown_path(path)
    if shown.startswith("~/"):
        return "~/" + shlex.quote(shown[2:])
    return shlex.quote(shown if not shown.startswith("-") else f"./{shown}")


def _finding(finding: Any) -> str:
    where = finding.where
    if where:
        file, sep, line = where.rpartition(":")
        where = f"{shown_path(Path(file))}:{line}" if sep and line.isdigit() else where
    text = f"{where}: {finding.message}" if where else finding.message
    return f"{text} (fix: {finding.fix})" if finding.fix else text


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _train(recipe: Any) -> Any:
    from tunesmith.commands.progress import train_on_terminal

    return train_on_terminal(recipe)


def _stopped(tracked: Any, args: argparse.Namespace, console: Any) -> int | None:
    """A SIGTERM or Ctrl-C stopped the training at a checkpoint: there is no final model, so
    nothing is evaluated or registered; the same quickstart with the run's name continues it."""
    from tunesmith.commands.progress import say_stopped

    run_dir = tracked.result.run_dir
    again = (f"tunesmith quickstart{' --tiny' if args.tiny else ''} --out {shlex.quote(str(args.out))} "
             f"--set output.name={shlex.quote(run_dir.name)}")
    return say_stopped(tracked, console, f"nothing was evaluated or registered (there is no final model). "
                                         f"Continue from its last checkpoint with `{again}`")


def _evaluate(run_dir: Path, recipe: Any, console: Any) -> tuple[dict[str, Any], Path]:
    from tunesmith.evaluate.runner import evaluate_model
    from tunesmith.hardware import pick_device

    started = time.time()

    def say(message: str) -> None:
        console.print(f"  [dim]{_minutes(time.time() - started)}[/] {message}", highlight=False)

    heldout = recipe.evaluation.data or recipe.data.validation
    return evaluate_model(run_dir, heldout, recipe.evaluation, device=str(pick_device("auto")),
                          progress=say)


def _show_example(report: dict[str, Any], console: Any) -> None:
    """One held-out question answered by every system, as graded (no second generation)."""
    items = (report.get("examples_detail") or {}).get("items") or []
    item = next((i for i in items if i.get("reply")), None)
    if item is None:
        return
    console.print()
    print_indented(console, item["question"], " " * 13, first="held-out:    ")
    for system, text in {"expected": item["reference"], **item["reply"]}.items():
        short = " ".join(text.split())
        print_indented(console, f"{short[:160]}{'…' if len(short) > 160 else ''}", " " * 13,
                       first=f"  {system:<10} ")
