"""The verdict tables that `tunesmith eval` and the quickstart print fit an 80-column terminal
whole: no cell is wrapped or cut, whatever the graders' names, with every number shown."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from tunesmith.commands.evaluate import show
from tunesmith.evaluate.report import summarise

SYSTEMS = ["tuned", "base", "fewshot", "retrieval"]
GRADERS = ["house_format", "desk", "from_message", "exact_slip"]


def report() -> dict:
    loss = {s: {"loss": 12.345 - i, "low": 11.002 - i, "high": 13.876 - i} for i, s in enumerate(SYSTEMS)}
    scores = {g: {s: {"value": 0.967 - 0.3 * i, "low": 0.9, "high": 1.0} for i, s in enumerate(SYSTEMS)}
              for g in GRADERS}
    comparisons = [{"baseline": b, "metric": m, "wins": 28, "ties": 2, "losses": 0,
                    "difference": {"value": -0.533, "low": -0.7, "high": -0.367},
                    "verdict": "no clear difference"} for b in SYSTEMS[1:] for m in ["loss", *GRADERS]]
    out = {"examples": 30, "systems": SYSTEMS, "settings": {"confidence": 0.95}, "loss": loss,
           "scores": scores, "graded_items": 30, "ungraded_items": 0, "comparisons": comparisons,
           "forgetting": {"data": "/somewhere/long/assets/data/general_chat.jsonl",
                          "change": {"value": 0.052, "low": -0.013, "high": 0.121}, "threshold": 0.1,
                          "regressed": False}}
    out["summary"] = summarise(out)
    return out


def test_the_verdict_tables_fit_80_columns_with_every_cell_whole() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=80, color_system=None, force_terminal=False)
    show(report(), Path("runs/r/report.json"), console)
    text = buffer.getvalue()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    at = lines.index("forgetting: loss on general_chat.jsonl +5.2% (threshold +10%) ok")
    assert lines[at + 1] == "  interval -1.3% to +12.1%"
    assert f"verdict: {report()['summary']['status']}   report: runs/r/report.html" in lines
    assert "…" not in text  # nothing cut short
    for name in GRADERS + SYSTEMS + ["held-out loss", "no clear difference"]:
        assert name in text  # never broken over two lines
    cells = len(report()["comparisons"])
    assert text.count("no clear difference") == text.count("no clear") == cells
    assert text.count("-0.53 (-0.70,-0.37)") == text.count("w/t/l 28/2/0") == cells
    assert text.count("12.345") == 1 and text.count("11.00-13.88") == 1
    assert text.count("0.967") == len(GRADERS)
