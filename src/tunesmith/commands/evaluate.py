"""`tunesmith eval RUN_DIR|MODEL --data HELDOUT.jsonl`: is the tuned model better than the
base model, than a few-shot prompt and than retrieval, and what did it forget?"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate a tuned model against baselines; write report.json and report.html",
        description="Held-out loss and graded replies of the tuned model, the base model zero-shot, "
                    "with few-shot examples and with retrieved examples; a forgetting probe; the "
                    "worst examples. Settings come from the run's recipe (evaluation.*), then flags.")
    parser.add_argument("model", help="run directory, adapter folder, or registered model name/id/alias")
    parser.add_argument("--data", help="held-out file (default: evaluation.data, the run's validation "
                        "file, or else its automatic validation split)")
    parser.add_argument("--baseline", help="comma-separated: base,fewshot,retrieval (default: recipe's)")
    parser.add_argument("--forgetting", metavar="REFERENCE",
                        help="general reference set ('tunesmith/general' is bundled)")
    parser.add_argument("--threshold", type=float, help="largest allowed relative loss increase on it")
    parser.add_argument("--train", help="training file for few-shot and retrieval (default: the run's)")
    parser.add_argument("--base", help="base model (default: the run's or the adapter's)")
    parser.add_argument("--graders", help="YAML or JSON file holding a list of grader definitions")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="any evaluation setting, e.g. --set max_new_tokens=64")
    parser.add_argument("--out", help="folder for the report (default: the run directory)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, mps or auto")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--check", action="store_true", help="exit with status 1 when the verdict is red")
    parser.set_defaults(handler=run)


def resolve_target(ref: str) -> tuple[str, Any]:
    """A path as given, else a registered model (see tunesmith.model.targets: one resolver)."""
    from tunesmith.model.targets import resolve_target as resolve

    return resolve(ref)


def settings_for(target_dir: str, args: argparse.Namespace) -> tuple[Any, Any]:
    """The run's evaluation section (if any) with the command's flags applied on top."""
    from tunesmith.evaluate.models import target_of
    from tunesmith.recipe import apply_override, build_recipe

    target = target_of(target_dir, args.train, args.base)
    raw = {"evaluation": dict(target.recipe.get("evaluation") or {})}
    section = raw["evaluation"]
    if args.baseline:
        section["baselines"] = [b.strip() for b in args.baseline.split(",") if b.strip()]
    if args.forgetting:
        section["forgetting"] = args.forgetting
    if args.threshold is not None:
        section["forgetting_threshold"] = args.threshold
    if args.graders:
        section["graders"] = _read_graders(Path(args.graders))
    for override in args.overrides:
        key = override if override.startswith("evaluation.") else f"evaluation.{override}"
        apply_override(raw, key)
    recipe = build_recipe(raw, origin="eval settings")
    return target, recipe.evaluation


def _read_graders(path: Path) -> Any:
    import yaml

    from tunesmith.errors import RecipeError

    if not path.exists():
        raise RecipeError(f"grader file not found: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))  # YAML reads JSON too
    if isinstance(data, dict) and "graders" in data:
        data = data["graders"]
    if not isinstance(data, list):
        raise RecipeError("a grader file holds a list of grader definitions", where=str(path))
    return data


def run(args: argparse.Namespace) -> int:
    from tunesmith.commands.console import console, err_console
    from tunesmith.errors import DataError
    from tunesmith.evaluate.runner import evaluate_model
    from tunesmith.hardware import pick_device

    target_dir, registered = resolve_target(args.model)
    target, settings = settings_for(target_dir, args)
    # With none of these, a run is evaluated on its own automatic validation split.
    heldout = args.data or settings.data or (target.recipe.get("data") or {}).get("validation")
    if not heldout and target.run_dir is None:
        raise DataError("no held-out data to evaluate on", fix="pass --data HELDOUT.jsonl")
    device = str(pick_device(args.device))
    report, path = evaluate_model(
        target_dir, heldout or None, settings, train_data=args.train, base_model=args.base,
        out_dir=Path(args.out) if args.out else None, device=device,
        progress=lambda message: err_console.print(f"[dim]{message}[/]", highlight=False))
    if registered is not None:
        from tunesmith.store import open_registry

        open_registry().update_model(registered.id, evaluation={**registered.evaluation,
                                                                 "report": report_summary(report, path)})
    if args.json:
        from tunesmith.commands.runs import print_json

        print_json(report)
    else:
        show(report, path, console)
    return 1 if args.check and report["summary"]["status"] == "red" else 0


def report_summary(report: dict[str, Any], path: Path) -> dict[str, Any]:
    from tunesmith.evaluate.report import brief

    return {**brief(report), "path": str(path)}


def show(report: dict[str, Any], path: Path, console: Any) -> None:
    """The verdict tables, narrow enough for an 80-column terminal: one column per system (a
    value over its interval) and one row per metric, then each baseline against the tuned model
    with the gain (positive is better for the tuned model) and its interval."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from tunesmith.commands.console import shown_path

    def cell(value: float | None, low: float | None = None, high: float | None = None) -> str:
        if value is None:
            return "-"
        if low is None or high is None:
            return f"{value:.3f}"
        return f"{value:.3f}\n[dim]{low:.2f}-{high:.2f}[/]"

    systems = report["systems"]
    table = Table("", *systems, box=box.SIMPLE_HEAD, pad_edge=False,
                  title=f"{report['examples']} held-out examples, {report['settings']['confidence']:.0%} "
                        "bootstrap intervals")
    if report.get("loss"):
        losses = [report["loss"].get(system) or {} for system in systems]
        table.add_row("held-out loss", *(cell(x.get("loss"), x.get("low"), x.get("high")) for x in losses))
    for name, by_system in (report.get("scores") or {}).items():
        scores = [by_system.get(system) or {} for system in systems]
        table.add_row(escape(name), *(cell(x.get("value"), x.get("low"), x.get("high")) for x in scores))
    console.print(table)
    comparisons = report.get("comparisons") or []
    if comparisons:
        # One row per metric, one column per baseline: the verdict, the gain with its interval,
        # and wins/ties/losses over the items.
        baselines = list(dict.fromkeys(c["baseline"] for c in comparisons))
        metrics = list(dict.fromkeys(c["metric"] for c in comparisons))
        found = {(c["baseline"], c["metric"]): c for c in comparisons}
        versus = Table("tuned vs", box=box.SIMPLE_HEAD, pad_edge=False,
                       title="gain: tuned minus baseline, positive when tuned is better")
        for baseline in baselines:
            versus.add_column(baseline, no_wrap=True)
        colours = {"better": "green", "worse": "red"}
        for metric in metrics:
            row = []
            for baseline in baselines:
                c = found.get((baseline, metric))
                if c is None:
                    row.append("-")
                    continue
                d = c["difference"]
                row.append(f"[{colours.get(c['verdict'], 'yellow')}]{c['verdict']}[/]\n"
                           f"{d['value']:+.2f} [dim]({d['low']:+.2f},{d['high']:+.2f})[/]\n"
                           f"[dim]w/t/l[/] {c['wins']}/{c['ties']}/{c['losses']}")
            versus.add_row(escape(metric), *row)
        console.print(versus)
    forgetting = report.get("forgetting")
    if forgetting:
        colour = "red" if forgetting["regressed"] else "green"
        change = forgetting["change"]
        console.print(f"forgetting: loss on {Path(forgetting['data']).name} {change['value']:+.1%} "
                      f"(threshold +{forgetting['threshold']:.0%}) [{colour}]"
                      f"{'REGRESSED' if forgetting['regressed'] else 'ok'}[/]", highlight=False)
        if "low" in change:
            console.print(f"  interval {change['low']:+.1%} to {change['high']:+.1%}", highlight=False)
    for line in report["summary"].get("lines", []):
        if line.startswith("not proven") or "could not be graded" in line:
            console.print(f"[yellow]{escape(line)}[/]", highlight=False, soft_wrap=True)
    status = report["summary"]["status"]
    colour = {"green": "green", "amber": "yellow", "red": "red"}.get(status, "white")
    console.print(f"verdict: [bold {colour}]{status.replace('_', ' ')}[/]   report: "
                  f"{shown_path(path.parent / 'report.html')}", highlight=False, soft_wrap=True)
