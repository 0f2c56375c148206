"""One reporter interface for progress: metrics.jsonl always, TensorBoard and MLflow
when asked, and whatever the CLI or server plugs in (a progress bar, registry events).

Records are plain dicts with a "type": start, train, eval, checkpoint, event or end.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from tunesmith.errors import RecipeError


class Reporter(Protocol):
    def report(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class MetricsFile:
    """Appends one JSON line per record and flushes, so a crash loses at most one line."""

    def __init__(self, path: Path):
        self.handle = path.open("a", encoding="utf-8")

    def report(self, record: dict[str, Any]) -> None:
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


class TensorBoardReporter:
    def __init__(self, folder: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise RecipeError("report_to: tensorboard needs the tensorboard package",
                              where="training.report_to", fix="pip install 'tunesmith[tracking]'") from exc
        self.writer = SummaryWriter(str(folder))

    def report(self, record: dict[str, Any]) -> None:
        if record.get("type") in ("train", "eval"):
            for key, value in record.items():
                if isinstance(value, int | float) and key != "step":
                    self.writer.add_scalar(f"{record['type']}/{key}", value, record["step"])

    def close(self) -> None:
        self.writer.close()


class MLflowReporter:
    def __init__(self, run_name: str, params: dict[str, Any]):
        try:
            import mlflow
        except ImportError as exc:
            raise RecipeError("report_to: mlflow needs the mlflow package",
                              where="training.report_to", fix="pip install 'tunesmith[tracking]'") from exc
        self.mlflow = mlflow
        mlflow.start_run(run_name=run_name)
        mlflow.log_params(params)

    def report(self, record: dict[str, Any]) -> None:
        if record.get("type") in ("train", "eval"):
            prefix = "eval_" if record["type"] == "eval" else ""
            metrics = {f"{prefix}{k}": v for k, v in record.items()
                       if isinstance(v, int | float) and k != "step"}
            self.mlflow.log_metrics(metrics, step=record["step"])

    def close(self) -> None:
        self.mlflow.end_run()


class Fanout:
    """Sends every record to several reporters."""

    def __init__(self, reporters: list[Reporter]):
        self.reporters = reporters

    def report(self, record: dict[str, Any]) -> None:
        for reporter in self.reporters:
            reporter.report(record)

    def close(self) -> None:
        for reporter in self.reporters:
            reporter.close()
