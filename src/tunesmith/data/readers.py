"""Readers: stream raw rows (plain dicts) out of JSONL, CSV, Parquet and Hugging Face
dataset folders, each with its file:line provenance.

Rows are yielded one at a time so a million-line file is never held in memory. A row
that cannot be read becomes a `Row` with an error finding instead of stopping the file,
so a user sees every broken line in one pass.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.data.findings import Finding, error
from tunesmith.data.records import Source
from tunesmith.errors import DataError

BOM = b"\xef\xbb\xbf"
# Columns that hold nested structures; in CSV they arrive as JSON text.
STRUCTURED_KEYS = {
    "messages", "tools", "input", "preferred_output", "non_preferred_output", "chosen",
    "rejected", "prompt", "metadata",
}
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


@dataclass(slots=True)
class Row:
    source: Source
    data: dict[str, Any] | None
    error: Finding | None = None


def read_rows(path: str | Path) -> Iterator[Row]:
    """Yield every row of a dataset file or folder, in order."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"dataset not found: {path}", fix="check the path")
    if path.is_dir():
        yield from _read_folder(path)
        return
    suffix = path.suffix.lower()
    if suffix == ".json" and _starts_with_array(path):
        yield from _read_json_array(path)
    elif suffix in (".jsonl", ".json"):
        yield from _read_jsonl(path)
    elif suffix == ".csv":
        yield from _read_csv(path)
    elif suffix == ".parquet":
        yield from _read_parquet(path)
    else:
        raise DataError(
            f"unsupported file type '{suffix}'",
            where=str(path),
            fix="use .jsonl, .csv, .parquet or a Hugging Face dataset folder",
        )


def _read_jsonl(path: Path) -> Iterator[Row]:
    # Binary mode so a bad byte becomes a finding on its own line instead of an
    # exception that loses the position; BOM and CRLF are stripped here.
    name = str(path)
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(BOM):
                raw = raw[len(BOM):]
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                continue
            source = Source(name, number)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield Row(source, None, error(
                    "invalid_utf8", f"not valid UTF-8 at byte {exc.start + 1}", source,
                    "save the file as UTF-8"))
                continue
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                where = f"{source}:{exc.colno}"
                yield Row(source, None, error(
                    "invalid_json", f"not valid JSON: {exc.msg} (column {exc.colno})", where,
                    "each line must be one complete JSON object"))
                continue
            yield _object_row(source, data)


def _starts_with_array(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(64).lstrip(BOM).lstrip()
    return head.startswith(b"[")


def _read_json_array(path: Path) -> Iterator[Row]:
    """A .json file holding one array of examples; rows are numbered by array position.
    (Such a file is loaded whole: JSONL is the format for large data.)"""
    name = str(path)
    try:
        items = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f"{name}:{exc.lineno}:{exc.colno}" if isinstance(exc, json.JSONDecodeError) else name
        yield Row(Source(name, 1), None, error("invalid_json", f"not valid JSON: {exc}", where,
                                               "save the file as UTF-8 JSON, or as JSONL"))
        return
    for number, data in enumerate(items, start=1):
        yield _object_row(Source(name, number), data)


def _object_row(source: Source, data: Any) -> Row:
    if isinstance(data, dict):
        return Row(source, data)
    kind = type(data).__name__ if data is not None else "null"
    return Row(source, None, error(
        "not_an_object", f"expected a JSON object, got {kind}", source,
        'each line must be an object such as {"messages": [...]}'))


def _read_csv(path: Path) -> Iterator[Row]:
    name = str(path)
    with path.open("r", encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None:
            return
        start = reader.line_num + 1
        for record in reader:
            source = Source(name, start)
            start = reader.line_num + 1
            if None in record:
                yield Row(source, None, error(
                    "csv_columns", "row has more cells than the header", source,
                    "quote cells that contain commas"))
                continue
            yield _csv_row(source, record)


def _csv_row(source: Source, record: dict[str, str]) -> Row:
    data: dict[str, Any] = {}
    for key, value in record.items():
        text = value if value is not None else ""
        if key in STRUCTURED_KEYS and text.lstrip()[:1] in ("[", "{"):
            try:
                data[key] = json.loads(text)
            except json.JSONDecodeError as exc:
                return Row(source, None, error(
                    "invalid_json", f"column '{key}' is not valid JSON: {exc.msg}", source,
                    "structured columns hold JSON text"))
        else:
            data[key] = text
    return Row(source, data)


def _read_parquet(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    name = str(path)
    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for data in batch.to_pylist():
            number += 1
            yield _object_row(Source(name, number), data)


def _read_folder(path: Path) -> Iterator[Row]:
    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
        yield from _read_hf_dataset(path)
        return
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in DATA_SUFFIXES)
    if not files:
        raise DataError(
            "folder holds no .jsonl, .csv or .parquet files and is not a saved dataset",
            where=str(path))
    for file in files:
        yield from read_rows(file)


def _read_hf_dataset(path: Path) -> Iterator[Row]:
    """A folder written by `datasets.Dataset.save_to_disk` (a DatasetDict uses its train split)."""
    try:
        import datasets
    except ImportError as exc:
        raise DataError(
            "reading a Hugging Face dataset folder needs the 'datasets' package",
            where=str(path), fix="pip install 'tunesmith[hf]'") from exc
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise DataError(
                f"dataset folder has splits {sorted(loaded)} but no 'train'",
                where=str(path), fix=f"point at one split folder, e.g. {path}/{next(iter(loaded))}")
        loaded, path = loaded["train"], path / "train"
    name = str(path)
    for number, data in enumerate(loaded, start=1):
        yield _object_row(Source(name, number), data)

