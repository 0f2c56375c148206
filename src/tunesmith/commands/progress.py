"""A reporter that shows training on a terminal: a progress bar with loss, tokens/s and
ETA, and a line per evaluation. Off a terminal it prints plain lines instead."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tunesmith.commands.console import print_indented, shown_path


class ConsoleProgress:
    def __init__(self, console: Console, every: int = 10):
        self.console = console
        self.every = every
        self.live = console.is_terminal
        self.progress: Progress | None = None
        self.task: Any = None

    def report(self, record: dict[str, Any]) -> None:
        kind = record.get("type")
        if kind == "start":
            self._start(record)
        elif kind == "train":
            self._train(record)
        elif kind == "eval":
            best = " [green](best)[/]" if record.get("best") else ""
            self.console.print(
                f"  step {record['step']:>5}  validation loss {record['loss']:.4f}  "
                f"{_headline(record)}{best}", highlight=False)
        elif kind == "event":
            style = "red" if record.get("level") == "error" else "yellow"
            self.console.print(f"  [{style}]{record['message']}[/]", highlight=False)
        elif kind == "end":
            self.close()

    def _start(self, record: dict[str, Any]) -> None:
        data = record["data"]
        replay = data.get("replay_examples") or 0
        count = f"{data['train_examples'] - replay} + {replay} replayed" if replay else data["train_examples"]
        source = data["validation_source"]
        if Path(source).is_file():  # a file, not "12 examples split from the training data"
            source = f"{shown_path(source)} ({data['validation_examples']})"
        self.console.print(f"[bold]training[/] {count} examples ({data['format']}), "
                           f"{record['trainable_parameters']:,} trainable parameters", highlight=False)
        self.console.print(f"  validation: {source}", highlight=False)
        auto = record.get("auto") or {}
        chosen = ", ".join(f"{k}={v}" for k, v in auto.items()
                           if not isinstance(v, dict) and k != "dtype_reason")
        if chosen:
            self.console.print(f"  auto: {chosen}", highlight=False)
        if auto.get("dtype_reason"):
            print_indented(self.console, f"why {auto.get('dtype', 'this dtype')}: {auto['dtype_reason']}")
        if record["step"]:
            self.console.print(f"  resuming at step {record['step']}", highlight=False)
        self.console.print(f"  run: {shown_path(record['run_dir'])}", highlight=False)
        if self.live:
            self.progress = Progress(
                TextColumn("[bold]step"), MofNCompleteColumn(), BarColumn(),
                TextColumn("loss {task.fields[loss]}  {task.fields[speed]} tok/s"),
                TimeRemainingColumn(), console=self.console, transient=False)
            self.progress.start()
            self.task = self.progress.add_task("train", total=record["total_steps"],
                                               completed=record["step"], loss="-", speed="-")
        self.total = record["total_steps"]

    def _train(self, record: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=record["step"], loss=f"{record['loss']:.4f}",
                                 speed=f"{record['tokens_per_second']:,.0f}")
        elif record["step"] % self.every == 0 or record["step"] == self.total:
            self.console.print(
                f"  step {record['step']:>5}/{self.total}  loss {record['loss']:.4f}  "
                f"{record['tokens_per_second']:,.0f} tok/s", highlight=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


HEADLINES = (("token_accuracy", "token accuracy"), ("reward_accuracy", "reward accuracy"),
             ("reward", "mean grade"))
"""The one number beside the loss that says most about a method's evaluation (SFT, DPO and
reward models, GRPO)."""


def _headline(record: dict[str, Any]) -> str:
    for key, label in HEADLINES:
        if key in record:
            return f"{label} {record[key]:.3f}"
    return ""


def train_on_terminal(recipe: Any = None, job_id: str | None = None, **tracking: Any) -> Any:
    """Train as a registry job with the progress bar on the terminal; what the registry could
    not record is shown as a warning (the run folder stays the source of truth).

    `job_id` runs an existing queued job (a process launched by the server's worker);
    `tracking` goes to tunesmith.store.tracking.train_tracked (resume_dir, parent_model_id, ...).
    """
    from tunesmith.commands.console import console, err_console
    from tunesmith.store import open_registry
    from tunesmith.store.tracking import train_tracked
    from tunesmith.train.distributed import env_world_size
    from tunesmith.train.stopping import StopOnSignal

    def stopping(name: str) -> None:
        err_console.print(f"[yellow]{name}: stopping at the next step with a checkpoint saved "
                          "(Ctrl-C again to stop at once)[/]", highlight=False)

    registry = open_registry()
    progress = ConsoleProgress(console)
    # One process: SIGTERM and Ctrl-C stop at a step boundary. Under torchrun a rank unwinds on
    # SIGTERM instead (train/distributed.py), since every rank must agree on when to stop.
    stop = StopOnSignal(stopping) if env_world_size() <= 1 else None
    try:
        job = registry.job(job_id) if job_id else None
        with stop or nullcontext():
            tracked = train_tracked(registry, recipe, reporters=[progress], job=job,
                                    should_stop=stop, **tracking)
        tracked.stopped_by = stop.signal_number if stop is not None else None
    finally:
        progress.close()
    for failure in tracked.registry_failures:
        err_console.print(f"[yellow]registry:[/] {failure}", highlight=False)
    return tracked


def say_stopped(tracked: Any, console: Console, what_next: str | None = None) -> int | None:
    """When a signal stopped the training before its end (no final model), say so and how to
    continue it, and give the command's exit code (128 + the signal); None when it ran to its end.

    `what_next` replaces the default advice (`tunesmith train --resume RUN_DIR`) for a command
    that does more after training (quickstart, retrain): it says what was not done and how to
    finish it."""
    result = tracked.result
    if result.status != "stopped":
        return None
    advice = what_next or f"continue it with `tunesmith train --resume {result.run_dir}`"
    console.print(f"[bold yellow]stopped[/] after {result.steps} steps, before the end of training; "
                  f"{advice}", highlight=False, soft_wrap=True)
    return 128 + tracked.stopped_by if tracked.stopped_by else 0
