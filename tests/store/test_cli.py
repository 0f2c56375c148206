"""runs, models, lineage and datasets commands as a user types them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.store.cli import cli_json, run_cli
from tests.store.conftest import chat, make_run, write_jsonl
from tunesmith.store import Registry
from tunesmith.store.runs import register_run


@pytest.fixture
def two_runs(registry: Registry, registry_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TUNESMITH_DATABASE_URL", registry_url)
    v1 = write_jsonl(tmp_path / "v1.jsonl", [chat("A?", "a"), chat("B?", "b")])
    v2 = write_jsonl(tmp_path / "v2.jsonl", [chat("A?", "a"), chat("B?", "better"), chat("C?", "c")])
    val = write_jsonl(tmp_path / "val.jsonl", [chat("V?", "v")])
    first = register_run(registry, make_run(tmp_path / "runs" / "bot", v1, val))
    second = register_run(registry, make_run(tmp_path / "runs" / "bot-2", v2, val, losses=(1.0, 0.8),
                                             training__learning_rate=0.001), parent_id=first.id)
    return first, second


def test_runs_list_show_compare(two_runs, monkeypatch, capsys) -> None:
    first, second = two_runs
    jobs = cli_json(capsys, "runs", "list")
    assert {j["id"] for j in jobs} == {first.job_id, second.job_id}
    shown = cli_json(capsys, "runs", "show", "bot-2")
    assert shown["model"] == second.name and shown["metrics"]["best_validation_loss"] == 0.8
    compared = cli_json(capsys, "runs", "compare", first.job_id, second.job_id)
    keys = {row["key"]: (row["a"], row["b"]) for row in compared["recipe"]}
    assert keys["training.learning_rate"] == (0.01, 0.001) and "data.train" in keys
    assert compared["metrics"]["best_validation_loss"] == {"a": 1.0, "b": 0.8}
    code, out = run_cli(capsys, "runs", "compare", first.job_id, second.job_id)
    assert code == 0 and "training.learning_rate" in out


def test_models_alias_delete_and_lineage(two_runs, monkeypatch, capsys) -> None:
    first, second = two_runs
    assert run_cli(capsys, "models", "alias", "bot@production", first.name)[0] == 0
    listed = cli_json(capsys, "models", "list")
    assert {m["name"]: m["aliases"] for m in listed} == {first.name: ["bot@production"], second.name: []}
    assert cli_json(capsys, "models", "show", "bot@production")["id"] == first.id
    chain = cli_json(capsys, "lineage", second.name)
    assert [m["id"] for m in chain] == [second.id, first.id]
    assert chain[0]["datasets"]["train"] != chain[1]["datasets"]["train"]
    code, out = run_cli(capsys, "lineage", second.id)
    assert code == 0 and "tunesmith/tiny-chat" in out and "training.learning_rate" in out
    assert run_cli(capsys, "models", "delete", "bot@production")[0] == 0
    assert [m["id"] for m in cli_json(capsys, "models", "list")] == [second.id]
    code, out = run_cli(capsys, "models", "show", "bot@production")
    assert code == 2 and "no alias" in out


def test_datasets_list_show_diff(two_runs, monkeypatch, capsys) -> None:
    versions = cli_json(capsys, "datasets", "list")
    assert len(versions) == 3
    by_count = {v["examples"]: v["id"] for v in versions if v["examples"] > 1}
    shown = cli_json(capsys, "datasets", "show", by_count[3][:10])
    assert shown["format"] == "chat" and Path(shown["stored_copy"]).exists()
    diff = cli_json(capsys, "datasets", "diff", by_count[2], by_count[3])
    assert (len(diff["added"]), len(diff["removed"]), len(diff["changed"]), diff["unchanged"]) == (1, 0, 1, 1)
    code, out = run_cli(capsys, "datasets", "diff", by_count[2], by_count[3])
    assert code == 0 and "+1 added" in out and "~1 changed" in out
