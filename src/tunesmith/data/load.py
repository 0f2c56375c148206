"""Load a dataset: stream rows, detect the shape once per file, parse into records."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tunesmith.data.findings import Finding, error
from tunesmith.data.formats import describe_shapes, detect_format, parse_record
from tunesmith.data.readers import read_rows
from tunesmith.data.records import Format, Record, Source
from tunesmith.errors import DataError


@dataclass(slots=True)
class Parsed:
    """One row after parsing: a record when it is usable, and what was found on the way."""

    source: Source
    record: Record | None
    findings: list[Finding]
    format: Format | None


def iter_parsed(path: str | Path, fmt: Format | str = "auto") -> Iterator[Parsed]:
    """Yield every row of `path` parsed in its shape.

    With fmt="auto" the shape is detected from the first readable row of each file and
    every other row of that file is held to it, so a stray row in another shape is
    reported instead of silently changing what is trained.
    """
    forced = None if fmt == "auto" else Format(fmt)
    current_file: str | None = None
    detected: Format | None = None
    for row in read_rows(path):
        if row.source.path != current_file:
            current_file, detected = row.source.path, forced
        if row.data is None:
            assert row.error is not None
            yield Parsed(row.source, None, [row.error], detected)
            continue
        if detected is None:
            detected = detect_format(row.data)
            if detected is None:
                keys = ", ".join(sorted(row.data)) or "none"
                yield Parsed(row.source, None, [error(
                    "unknown_shape", f"cannot tell the example's shape from its keys ({keys})",
                    row.source, f"use one of: {describe_shapes()}")], None)
                continue
        record, findings = parse_record(row.data, row.source, detected)
        yield Parsed(row.source, record, findings, detected)


@dataclass(slots=True)
class Dataset:
    """Records of one shape, ready to render. Built only from data without errors."""

    records: list[Record]
    format: Format
    path: str


def load_dataset(path: str | Path, fmt: Format | str = "auto", max_errors: int = 10) -> Dataset:
    """Load every record or raise a DataError listing the first errors with their lines."""
    records: list[Record] = []
    errors: list[Finding] = []
    formats: set[Format] = set()
    for parsed in iter_parsed(path, fmt):
        errors += [f for f in parsed.findings if f.severity == "error"]
        if parsed.record is not None:
            records.append(parsed.record)
            formats.add(parsed.record.format)
    if errors:
        shown = "\n  ".join(str(f) for f in errors[:max_errors])
        more = f"\n  ... and {len(errors) - max_errors} more" if len(errors) > max_errors else ""
        raise DataError(f"{len(errors)} error(s) in the data:\n  {shown}{more}", where=str(path),
                        fix=f"run `tunesmith data check {path}` for the full report")
    if not records:
        raise DataError("dataset holds no examples", where=str(path))
    if len(formats) > 1:
        raise DataError(f"dataset mixes shapes: {', '.join(sorted(formats))}", where=str(path),
                        fix="keep one shape per dataset")
    return Dataset(records, formats.pop(), str(path))
