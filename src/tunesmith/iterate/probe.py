"""What fine-tuning a dataset would cost on this machine, measured rather than guessed: the
training loop itself runs a few steps in a scratch folder (the same auto values, packing and
model), and its own step plan says how many steps the whole run would take."""

from __future__ import annotations

import resource
import statistics
import sys
import tempfile
from typing import Any

from tunesmith.recipe import Recipe


class _Collector:
    """A reporter that keeps the loop's records and asks it to stop after `steps` steps."""

    def __init__(self, steps: int):
        self.steps = steps
        self.records: list[dict[str, Any]] = []

    def report(self, record: dict[str, Any]) -> None:
        self.records.append(record)

    def close(self) -> None:
        pass

    def should_stop(self) -> bool:
        return sum(r.get("type") == "train" for r in self.records) >= self.steps


def probe_cost(recipe: Recipe, steps: int = 3) -> dict[str, Any]:
    """Train `steps` steps of `recipe` in a scratch folder (deleted after) and extrapolate.

    The loop is stopped through its `should_stop` hook at a step boundary, so the probe is an
    ordinary training cut short: nothing is registered and no final model is written."""
    import torch

    from tunesmith.train.loop import train

    collector = _Collector(max(1, steps))
    with tempfile.TemporaryDirectory(prefix="tunesmith-probe-") as scratch:
        probe = recipe.model_copy(deep=True)
        probe.output.dir, probe.output.name = scratch, "probe"
        probe.evaluation.enabled = False
        probe.training.report_to = []
        probe.training.eval_every = probe.training.save_every = 10**9
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        train(probe, reporters=[collector], should_stop=collector.should_stop)
    records = collector.records
    start = next(r for r in records if r.get("type") == "start")
    steps_done = [r for r in records if r.get("type") == "train"]
    # The first step pays for warm-up (allocations, kernel choice): timed apart when there are others.
    timed = steps_done[1:] if len(steps_done) > 1 else steps_done
    seconds = statistics.median(float(r["elapsed"]) for r in timed)
    tokens_per_second = statistics.median(float(r["tokens_per_second"]) for r in timed)
    data, auto = start.get("data") or {}, start.get("auto") or {}
    epochs = int(auto.get("epochs") or recipe.training.epochs)  # type: ignore[arg-type]
    total_steps = int(start["total_steps"])
    memory: dict[str, Any]
    if torch.cuda.is_available() and recipe.training.device in ("auto", "cuda"):
        memory = {"peak_bytes": int(torch.cuda.max_memory_allocated()), "what": "peak GPU memory allocated"}
    else:
        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
        memory = {"peak_bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale),
                  "what": "peak resident memory of this process so far (an upper bound for training)"}
    return {
        "probe_steps": len(steps_done), "seconds_per_step": seconds, "tokens_per_second": tokens_per_second,
        "total_steps": total_steps, "epochs": epochs, "auto": auto,
        "train_examples": data.get("train_examples"), "tokens_per_epoch": data.get("train_tokens"),
        "trained_tokens_per_epoch": data.get("trained_tokens"),
        "tokens": int(data.get("train_tokens") or 0) * epochs,
        "estimated_seconds": seconds * total_steps,
        "trainable_parameters": start.get("trainable_parameters"),
        "memory": memory, "device": recipe.training.device,
    }
