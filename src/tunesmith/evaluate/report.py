"""The report: the verdict in words and a status, report.json and report.html written
atomically, read back, and the few numbers the registry keeps."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.errors import TunesmithError
from tunesmith.fsutil import atomic_write_text

NOT_PROVEN = "not_proven"
STATUSES = ("green", "amber", "red", NOT_PROVEN)
"""Every status `summarise` gives (the dashboard and report.html style each one)."""


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    """Headline lines and a status: red when forgetting regressed or the tuned model is worse
    than the base on held-out loss or a grade; "not_proven" when no held-out reply was graded
    (loss alone never makes a verdict green); amber when a baseline does as well; green when
    the tuned model's graded replies beat every baseline."""
    lines, status = [], "green"
    graded = report.get("graded_items")
    if graded is None:  # a report written before items were counted: graded when it has scores
        graded = len(report.get("scores") or {})
    examples, ungraded = report.get("examples") or 0, report.get("ungraded_items") or 0
    loss = report.get("loss") or {}
    tuned_loss = loss.get("tuned", {}).get("loss")
    base_loss = loss.get("base", {}).get("loss")
    beats_base = None
    if tuned_loss is not None and base_loss is not None:
        beats_base = tuned_loss < base_loss
        lines.append(f"held-out loss: tuned {tuned_loss:.3f} vs base {base_loss:.3f}")
        if not beats_base:
            status = "red"
    for comparison in report.get("comparisons", []):
        verdict = comparison["verdict"]
        lines.append(f"vs {comparison['baseline']} on {comparison['metric']}: {verdict} "
                     f"(win/tie/loss {comparison['wins']}/{comparison['ties']}/{comparison['losses']})")
        if verdict != "better" and status == "green":
            status = "amber"
        if verdict == "worse" and comparison["baseline"] == "base":
            status = "red"
    forgetting = report.get("forgetting")
    if forgetting:
        change = forgetting["change"]["value"]
        word = "REGRESSED" if forgetting["regressed"] else "ok"
        lines.append(f"forgetting: reference loss {change:+.1%} "
                     f"(threshold {forgetting['threshold']:.0%}): {word}")
        if forgetting["regressed"]:
            status = "red"
    if ungraded:
        where = ", ".join(report.get("ungraded_sources") or [])
        more = f" (e.g. {where}{', …' if ungraded > len(report.get('ungraded_sources') or []) else ''})" \
            if where else ""
        lines.append(f"{ungraded} of {examples} held-out items could not be graded: no reference reply "
                     f"text or tool call to grade against{more}")
    if not graded and status != "red":
        status = NOT_PROVEN
        lines.insert(0, "not proven: no held-out reply was graded, and held-out loss alone cannot show "
                        "that the tuned model is better (give items a reference reply or tool call, or "
                        "set evaluation.graders)")
    lines += report.get("notes") or []
    return {"status": status, "graded_items": graded, "ungraded_items": ungraded,
            "tuned_beats_base_loss": beats_base, "tuned_loss": tuned_loss,
            "base_loss": base_loss,
            "forgetting": None if not forgetting else ("regressed" if forgetting["regressed"] else "ok"),
            "lines": lines}


def write_report(report: dict[str, Any], folder: Path, metrics: list[dict[str, Any]] | None = None) -> Path:
    """report.json and the self-contained report.html, each written atomically."""
    from tunesmith.evaluate.report_html import render_html

    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "report.json", json.dumps(_clean(report), indent=1, allow_nan=False))
    atomic_write_text(folder / "report.html", render_html(report, metrics or []))
    return folder / "report.json"


def _clean(value: Any) -> Any:
    """Strict JSON: NaN and infinities (an empty statistic) become null, numpy numbers floats."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)




def read_report(folder: Path) -> dict[str, Any]:
    path = folder / "report.json"
    if not path.exists():
        raise TunesmithError("no report.json in this folder", where=str(folder),
                             fix=f"run `tunesmith eval {folder} --data HELDOUT.jsonl` first")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TunesmithError(f"report.json is not valid JSON: {exc}", where=str(path)) from None


def brief(report: dict[str, Any]) -> dict[str, Any]:
    """The few numbers a model's registry entry keeps from its report."""
    return {**report.get("summary", {}),
            "scores": {name: {s: v.get("value") for s, v in by.items()}
                       for name, by in (report.get("scores") or {}).items()},
            "examples": report.get("examples"), "data": report.get("data"),
            "forgetting_change": (report.get("forgetting") or {}).get("change", {}).get("value")}
