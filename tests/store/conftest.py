"""Registry fixtures: every store test runs on SQLite, and on PostgreSQL when
TUNESMITH_TEST_POSTGRES_URL points at a server (each test gets its own schema)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tunesmith.store import Registry, open_registry

POSTGRES_ENV = "TUNESMITH_TEST_POSTGRES_URL"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.skipif(
    not os.environ.get(POSTGRES_ENV), reason=f"{POSTGRES_ENV} is not set"))]


def postgres_schema_url(base: str, schema: str) -> str:
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}options=-csearch_path%3D{schema}"


@pytest.fixture(params=BACKENDS)
def registry_url(request: pytest.FixtureRequest, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A database URL for an empty registry; the tunesmith home is a fresh temporary folder."""
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TUNESMITH_DATABASE_URL", raising=False)
    if request.param == "sqlite":
        (tmp_path / "home").mkdir()
        yield f"sqlite:///{tmp_path / 'home' / 'registry.db'}"
        return
    from sqlalchemy import text

    from tunesmith.store.engine import make_engine

    base = os.environ[POSTGRES_ENV]
    schema = f"ts_{uuid.uuid4().hex[:12]}"
    admin: Any = make_engine(base)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    yield postgres_schema_url(str(admin.url.render_as_string(hide_password=False)), schema)
    with admin.begin() as connection:
        connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture
def registry(registry_url: str, tmp_path: Path) -> Iterator[Registry]:
    opened = open_registry(registry_url, home=tmp_path / "home")
    yield opened
    opened.close()


def write_jsonl(path: Path, rows: list[dict[str, Any]], newline: str = "\n") -> Path:
    path.write_bytes("".join(json.dumps(r) + newline for r in rows).encode("utf-8"))
    return path


def chat(question: str, answer: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def make_run(folder: Path, train: Path, validation: Path | None = None, *, losses: tuple[float, ...] = (
        2.0, 1.5, 1.0), baseline: float = 3.0, status: str = "succeeded", **recipe_extra: Any) -> Path:
    """A finished run directory written by hand: recipe.yaml, run.json, metrics.jsonl, final/."""
    import yaml

    folder.mkdir(parents=True)
    recipe = {"base_model": "tunesmith/tiny-chat", "revision": None, "method": "sft",
              "adapter": {"kind": "lora", "rank": 8},
              "data": {"train": str(train), "validation": str(validation) if validation else None,
                       "format": "auto"},
              "training": {"epochs": 1, "learning_rate": 0.01, "batch_size": 4},
              "output": {"dir": str(folder.parent), "name": folder.name}}
    for key, value in recipe_extra.items():
        section, _, field = key.partition("__")
        recipe[section][field] = value
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    records: list[dict[str, Any]] = [{"type": "start", "step": 0, "run_dir": str(folder)},
                                     {"type": "eval", "step": 0, "baseline": True, "loss": baseline}]
    for step, loss in enumerate(losses, start=1):
        records.append({"type": "train", "step": step, "loss": loss + 0.1, "trained_tokens": 100.0})
        records.append({"type": "eval", "step": step, "loss": loss, "token_accuracy": 0.5})
    records.append({"type": "end", "step": len(losses), "status": status})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "run.json").write_text(json.dumps({"status": status, "started": 1.0, "finished": 2.0}))
    checkpoint = folder / "checkpoints" / f"step-{len(losses):08d}"
    checkpoint.mkdir(parents=True)
    (checkpoint / "COMPLETE").write_text('{"files": {}}')  # train/checkpoint.py's marker, no files
    (folder / "final").mkdir()
    (folder / "final" / "adapter_config.json").write_text("{}")
    return folder
