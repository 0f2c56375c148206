"""Data iteration: the examples worth a person's look, exported as JSONL they can fix and feed back.

`export_fixes` reads a run's evaluation report (report.json) and writes one line per example:

- the training examples the tuned model fits worst (often a wrong label or a typo), as the
  original row, editable in place, or marked `"drop": true` in its review entry;
- the held-out items it answered worst (lowest grade, then highest loss), as the original row
  with the model's reply beside it: to read, not to train on (copying them into training would
  leak the held-out set); fix a wrong reference in the held-out file, or write new training
  examples that teach what it misses.

Each line carries a `tunesmith_review` entry (why it is there, where it came from, the model's
numbers); `apply_fixes` puts the edited training rows back at their lines in a copy of the
training file, so `tunesmith retrain MODEL --data FIXED` can show before/after on the same
held-out set. Nothing is changed in place, and a fix that names another file is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunesmith.errors import DataError

REVIEW = "tunesmith_review"


def _split_source(source: str) -> tuple[Path, int] | None:
    path, _, line = source.rpartition(":")
    return (Path(path).resolve(), int(line)) if path and line.isdigit() else None


def _original(source: str, cache: dict[Path, list[str]]) -> dict[str, Any] | None:
    """The row at `path:line` of a JSONL file, or None (another format, or the file is gone)."""
    where = _split_source(source)
    if where is None or where[0].suffix.lower() not in (".jsonl", ".json") or not where[0].exists():
        return None
    path, line = where
    if path not in cache:
        cache[path] = path.read_text(encoding="utf-8-sig").splitlines()
    lines = cache[path]
    if not 1 <= line <= len(lines):
        return None
    try:
        row = json.loads(lines[line - 1])
    except json.JSONDecodeError:
        return None
    return row if isinstance(row, dict) else None


def fix_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows to review, worst first: training examples, then held-out items."""
    cache: dict[Path, list[str]] = {}
    rows = []
    for example in report.get("noisy_training_examples") or []:
        review = {"kind": "training", "source": example["source"], "loss": example["loss"],
                  "why": "among the training examples the tuned model fits worst: check the reply (a wrong "
                         "label or a typo is common); edit this row, or set \"drop\": true here"}
        rows.append({**(_original(example["source"], cache) or {}), REVIEW: review})
    detail = report.get("examples_detail") or {}
    items = {item["index"]: item for item in detail.get("items") or []}
    seen: set[int] = set()
    for reason, indices in (("lowest graded", detail.get("worst_by_grade") or []),
                            ("highest loss", detail.get("worst_by_loss") or [])):
        for index in indices:
            if index in seen or index not in items:
                continue
            seen.add(index)
            item = items[index]
            review = {"kind": "heldout", "source": item["source"], "reason": reason,
                      "reply": (item.get("reply") or {}).get("tuned"), "reference": item.get("reference"),
                      "loss": (item.get("loss") or {}).get("tuned"),
                      "scores": {g: by.get("tuned") for g, by in (item.get("scores") or {}).items()},
                      "why": "held out: do not copy it into training (it would leak the held-out set); fix "
                             "its reference in the held-out file if it is wrong, or add training examples "
                             "that teach what the reply misses"}
            rows.append({**(_original(item["source"], cache) or {}), REVIEW: review})
    return rows


def export_fixes(run_dir: str | Path, out: str | Path) -> dict[str, Any]:
    """Write the review file of a run that has an evaluation report."""
    from tunesmith.evaluate.report import read_report
    from tunesmith.fsutil import atomic_write_text

    report = read_report(Path(run_dir))
    rows = fix_rows(report)
    if not rows:
        raise DataError("the run's report lists no examples to review", where=str(run_dir),
                        fix="evaluate it with training examples scored (evaluation.max_train_examples) and "
                            "a held-out set: `tunesmith eval RUN_DIR --data HELDOUT.jsonl`")
    atomic_write_text(Path(out), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    kinds = [r[REVIEW]["kind"] for r in rows]
    return {"path": str(out), "training": kinds.count("training"), "heldout": kinds.count("heldout"),
            "without_original": sum(len(r) == 1 for r in rows)}


def apply_fixes(fixes: str | Path, data: str | Path, out: str | Path) -> dict[str, Any]:
    """A copy of `data` with the reviewed training rows put back at their lines (or dropped)."""
    from tunesmith.fsutil import atomic_write_text

    data_path = Path(data).resolve()
    lines = data_path.read_text(encoding="utf-8-sig").splitlines()
    replaced: dict[int, str | None] = {}
    counts = {"replaced": 0, "dropped": 0, "unchanged": 0, "heldout_not_applied": 0}
    for number, text in enumerate(Path(fixes).read_text(encoding="utf-8").splitlines(), 1):
        where = f"{fixes}:{number}"
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"not valid JSON ({exc.msg})", where=where,
                            fix="keep one JSON object per line") from None
        review = row.pop(REVIEW, None) if isinstance(row, dict) else None
        if not isinstance(review, dict) or not isinstance(review.get("source"), str):
            raise DataError(f"a reviewed row needs its {REVIEW} entry with the source it came from",
                            where=where, fix="keep the entry `tunesmith fixes export` wrote")
        if review.get("kind") == "heldout":
            counts["heldout_not_applied"] += 1
            continue
        source = _split_source(review["source"])
        if source is None or source[0] != data_path or not 1 <= source[1] <= len(lines):
            raise DataError(f"this fix is for {review['source']}, not a line of {data_path.name}",
                            where=where, fix="apply it to the training file it came from (--data)")
        line = source[1]
        if review.get("drop"):
            replaced[line] = None
            counts["dropped"] += 1
            continue
        if not row:
            raise DataError("the row is empty: nothing to put back", where=where,
                            fix='edit the example, or set "drop": true in its review entry')
        new = json.dumps(row, ensure_ascii=False)
        if json.loads(lines[line - 1]) == row:
            counts["unchanged"] += 1
            continue
        replaced[line] = new
        counts["replaced"] += 1
    kept = [replaced.get(n, text) for n, text in enumerate(lines, 1)]
    atomic_write_text(Path(out), "".join(line + "\n" for line in kept if line is not None))
    return {"path": str(out), "source": str(data_path), **counts}
