"""Registry API: files, dataset versions, jobs, events, checkpoints, models, aliases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.store.conftest import chat, write_jsonl
from tunesmith.store import Registry
from tunesmith.store.errors import RegistryError
from tunesmith.store.registry import slug


def test_files_are_content_addressed(registry: Registry, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("same")
    (tmp_path / "b.txt").write_text("same")
    first, second = registry.add_file(tmp_path / "a.txt"), registry.add_file(tmp_path / "b.txt")
    assert first.id == second.id and Path(first.location).read_text() == "same"
    assert registry.file(first.id).sha256 == first.sha256


def test_same_data_written_twice_is_one_version(registry: Registry, tmp_path: Path) -> None:
    rows = [chat("Where is my order?", "It ships today."), chat("Refund?", "Yes, within 30 days.")]
    plain = write_jsonl(tmp_path / "plain.jsonl", rows)
    # Other whitespace, key order, CRLF line ends and a BOM: the same examples.
    messy = tmp_path / "messy.jsonl"
    lines = [json.dumps({"messages": [dict(reversed(list(m.items()))) for m in r["messages"]]}, indent=None,
                        separators=(" , ", " :  ")) for r in rows]
    messy.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n\r\n")
    first, second = registry.add_dataset(plain), registry.add_dataset(messy)
    assert first.id == second.id and first.content_hash == second.content_hash
    assert len(registry.datasets()) == 1
    assert first.examples == 2 and first.format == "chat" and first.errors == 0
    changed = registry.add_dataset(write_jsonl(tmp_path / "c.jsonl", [*rows, chat("Hi", "Hello!")]))
    assert changed.id != first.id and len(registry.datasets()) == 2
    # The stored canonical copy loads back as the same data.
    assert registry.add_dataset(registry.dataset_path(first)).id == first.id


def test_dataset_version_counts_findings(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(chat("q", "a")) + "\n{not json\n" + json.dumps({"messages": []}) + "\n")
    version = registry.add_dataset(path)
    assert version.examples == 1 and version.errors == 2
    assert sum(version.findings["codes"].values()) >= 2


def test_dataset_diff_added_removed_changed(registry: Registry, tmp_path: Path) -> None:
    old = write_jsonl(tmp_path / "v1.jsonl", [chat("A?", "a"), chat("B?", "b"), chat("C?", "c")])
    new = write_jsonl(tmp_path / "v2.jsonl", [chat("A?", "a"), chat("B?", "better b"), chat("D?", "d")])
    v1, v2 = registry.add_dataset(old), registry.add_dataset(new)
    diff = registry.diff_datasets(v1.id, v2.id)
    assert diff.unchanged == 1
    assert [r["messages"][0]["content"] for r in diff.added] == ["D?"]
    assert [r["messages"][0]["content"] for r in diff.removed] == ["C?"]
    assert [(a["messages"][1]["content"], b["messages"][1]["content"]) for a, b in diff.changed] == [
        ("b", "better b")]


def test_job_lifecycle_events_and_checkpoints(registry: Registry) -> None:
    job = registry.create_job({"base_model": "m", "method": "sft"})
    assert job.status == "validating_files" and job.id.startswith("ftjob-")
    assert registry.update_job(job.id, status="running").started_at is not None
    registry.add_event(job.id, "train", {"loss": 1.0}, step=1)
    registry.add_event(job.id, "eval", {"loss": float("nan"), "where": Path("/x")}, step=1)
    registry.add_checkpoint(job.id, 1, "/x/step-1", {"loss": 0.9})
    registry.add_checkpoint(job.id, 1, "/y/step-1", {"loss": 0.8})  # resumed: same step again
    done = registry.update_job(job.id, status="succeeded")
    assert done.finished_at is not None
    assert [e.type for e in registry.events(job.id)] == ["train", "eval"]
    assert registry.events(job.id, ["eval"])[0].data == {"loss": None, "where": "/x"}
    assert [c.path for c in registry.checkpoints(job.id)] == ["/y/step-1"]
    assert registry.job(job.id[:10]).id == job.id
    with pytest.raises(RegistryError, match="unknown job status"):
        registry.update_job(job.id, status="done")


def test_models_names_aliases_and_soft_delete(registry: Registry) -> None:
    parent = registry.add_model(base_model="org/Base-1B", kind="lora", path="/p", recipe={},
                                suffix="Support Bot")
    child = registry.add_model(base_model="org/Base-1B", kind="lora", path="/c", recipe={},
                               suffix="support-bot", parent_id=parent.id)
    assert parent.name == f"ft:base-1b:support-bot:{parent.id}"
    long = registry.add_model(base_model="org/Base-1B", kind="lora", path="/l", recipe={},
                              suffix="20261201-193759-smollm2-135m-instruct-sft")
    assert long.name == f"ft:base-1b:20261201-193759-smollm2-135m-instruct:{long.id}"  # cut at a word
    assert slug("x" * 60, 40) == "x" * 40  # one long word: cut where it must be
    registry.delete_model(long.id)
    registry.set_alias("support-bot@production", parent.id)
    assert registry.model("support-bot@production").id == parent.id
    registry.set_alias("support-bot@production", child.name)
    assert registry.model("support-bot@production").id == child.id
    assert [m.id for m in registry.lineage(child.id)] == [child.id, parent.id]
    with pytest.raises(RegistryError, match="bad alias"):
        registry.set_alias("no-label", child.id)
    registry.delete_model(child.id)
    assert [m.id for m in registry.models()] == [parent.id]
    assert registry.aliases() == []
    with pytest.raises(RegistryError, match="deleted"):
        registry.model(child.id)
    assert [m.id for m in registry.lineage(child.id)] == [child.id, parent.id]


def test_open_registry_uses_home_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tunesmith.store import open_registry

    monkeypatch.delenv("TUNESMITH_DATABASE_URL", raising=False)
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "th"))
    registry = open_registry()
    assert (tmp_path / "th" / "registry.db").exists()
    registry.close()
    monkeypatch.setenv("TUNESMITH_DATABASE_URL", f"sqlite:///{tmp_path / 'other.db'}")
    open_registry().close()
    assert (tmp_path / "other.db").exists()


def test_csv_and_jsonl_of_the_same_examples_hash_alike(tmp_path: Path) -> None:
    import csv

    from tunesmith.store.datasets import canonicalise

    rows = [{"prompt": "a, b", "completion": "c"}, {"prompt": "d", "completion": "e\nf"}]
    with (tmp_path / "x.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["completion", "prompt"])
        writer.writeheader()
        writer.writerows(rows)
    jsonl = write_jsonl(tmp_path / "x.jsonl", rows)
    assert canonicalise(tmp_path / "x.csv").content_hash == canonicalise(jsonl).content_hash
