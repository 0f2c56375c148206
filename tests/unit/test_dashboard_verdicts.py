"""The dashboard shows every verdict status of a report (evaluate/report.py STATUSES) as a
badge in words with a style of its own, "not proven" among them, like a job's status."""

from __future__ import annotations

import json
import re
from pathlib import Path

import tunesmith.serve as serve
from tunesmith.evaluate.report import NOT_PROVEN, STATUSES, summarise

STATIC = Path(serve.__file__).parent / "static"


def _verdict_labels() -> dict[str, str]:
    script = (STATIC / "app.js").read_text(encoding="utf-8")
    found = re.search(r"const VERDICTS = (\{[^}]*\});", script)
    assert found, "app.js declares no VERDICTS table"
    return json.loads(re.sub(r"(\w+):", r'"\1":', found.group(1)))


def _verdict_styles() -> dict[str, str]:
    css = (STATIC / "app.css").read_text(encoding="utf-8")
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"\.badge\.verdict\.(\w+) \{([^}]*)\}", css)}


def test_every_verdict_status_has_a_label_and_a_style_of_its_own() -> None:
    labels, styles = _verdict_labels(), _verdict_styles()
    assert set(labels) == set(STATUSES) and set(styles) == set(STATUSES)
    assert labels[NOT_PROVEN] == "not proven"
    assert len(set(styles.values())) == len(STATUSES)  # no two statuses look alike


def test_a_report_without_graded_replies_is_shown_as_not_proven() -> None:
    status = summarise({"loss": {"tuned": {"loss": 1.0}, "base": {"loss": 2.0}}, "examples": 3,
                        "graded_items": 0})["status"]
    assert _verdict_labels()[status] == "not proven"
