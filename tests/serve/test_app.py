"""The HTTP layer without training: errors in OpenAI's shape, auth, caps, pagination, requests
mapped onto recipes. FastAPI's TestClient runs the app in-process; no model is loaded."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tunesmith.cli import main
from tunesmith.commands.serve import is_loopback
from tunesmith.model.generation import StopScanner
from tunesmith.serve import auth
from tunesmith.serve.app import create_app
from tunesmith.serve.limits import Limits
from tunesmith.store import Registry, open_registry

ROW = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}

LOCAL = {"base_url": "http://127.0.0.1", "headers": {"Origin": "http://127.0.0.1"}}
"""In-process clients look like the dashboard: a loopback host and its own Origin."""


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    opened = open_registry(home=tmp_path)
    yield opened
    opened.close()


def make_client(registry: Registry, tmp_path: Path, **limits: int) -> TestClient:
    return TestClient(create_app(registry, tmp_path, Limits(**limits)), **LOCAL)


def upload(client: TestClient, text: str, name: str = "data.jsonl", **headers: str) -> httpx.Response:
    return client.post("/v1/files", files={"file": (name, text.encode())}, data={"purpose": "fine-tune"},
                       headers=headers)


def test_errors_have_the_openai_shape(registry: Registry, tmp_path: Path) -> None:
    client = make_client(registry, tmp_path)
    response = client.get("/v1/fine_tuning/jobs/ftjob-missing")
    assert response.status_code == 404
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and "ftjob-missing" in error["message"]
    bad = client.post("/v1/chat/completions", json={"model": "tunesmith/tiny-chat", "messages": []})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "messages"


def test_keys_guard_every_route_but_health(registry: Registry, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "CACHE_SECONDS", 0.0)
    client = make_client(registry, tmp_path)
    assert client.get("/v1/files").status_code == 200  # no keys yet: open
    row, key = auth.create_key(registry, "ci")
    assert row.sha256 == auth.hash_key(key)
    assert key not in json.dumps([[k.prefix, k.sha256] for k in auth.list_keys(registry)])
    assert client.get("/health").status_code == 200
    refused = client.get("/v1/files")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert client.get("/v1/files", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/v1/files", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    auth.revoke_key(registry, row.id)
    auth.create_key(registry, "other")
    assert client.get("/v1/files", headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_the_cached_key_check_answers_like_the_full_one_and_only_while_fresh(registry: Registry) -> None:
    row, key = auth.create_key(registry, "ci")
    checker = auth.KeyChecker(registry)
    assert checker.allows_cached(f"Bearer {key}") is None  # nothing read yet: the event loop must not guess
    assert checker.allows(f"Bearer {key}") and not checker.allows("Bearer nope")
    assert checker.allows_cached(f"Bearer {key}") is True
    assert checker.allows_cached("Bearer nope") is False and checker.allows_cached(None) is False
    auth.create_key(registry, "other")  # with no key left at all the server would be open
    auth.revoke_key(registry, row.id)
    checker._read_at -= auth.CACHE_SECONDS + 1  # the cache's second has passed
    assert checker.allows_cached(f"Bearer {key}") is None
    assert not checker.allows(f"Bearer {key}")  # the fresh read sees the revocation


def test_uploads_are_checked_capped_and_paginated(registry: Registry, tmp_path: Path) -> None:
    client = make_client(registry, tmp_path, max_upload_bytes=2000)
    assert upload(client, json.dumps(ROW), name="data.csv").json()["error"]["param"] == "file"
    too_big = upload(client, (json.dumps(ROW) + "\n") * 40)
    assert too_big.status_code == 413
    kept = [p for p in registry.artifacts.root.rglob("*") if p.is_file()]
    assert not kept, "nothing of a refused upload is kept"
    bad = upload(client, json.dumps(ROW) + "\n[1, 2]\n")
    assert bad.status_code == 400 and "line 2" in bad.json()["error"]["message"]

    ids = [upload(client, json.dumps({**ROW, "n": i}) + "\n", name=f"../../etc/f{i}.jsonl").json()["id"]
           for i in range(3)]
    stored = registry.file(ids[0])
    assert Path(stored.location).is_relative_to(registry.artifacts.root) and "etc" not in stored.location
    first = client.get("/v1/files", params={"limit": 2}).json()
    assert [f["id"] for f in first["data"]] == ids[::-1][:2] and first["has_more"]
    rest = client.get("/v1/files", params={"limit": 2, "after": first["last_id"]}).json()
    assert [f["id"] for f in rest["data"]] == [ids[0]] and not rest["has_more"]
    assert client.delete(f"/v1/files/{ids[0]}").json()["deleted"] is True
    assert client.get(f"/v1/files/{ids[0]}").status_code == 404


def test_job_requests_become_checked_recipes(registry: Registry, tmp_path: Path) -> None:
    client = make_client(registry, tmp_path)
    file_id = upload(client, json.dumps(ROW) + "\n").json()["id"]

    def create(**fields: object) -> httpx.Response:
        return client.post("/v1/fine_tuning/jobs", json={"model": "tunesmith/tiny-chat",
                                                         "training_file": file_id, **fields})
    job = create(method={"type": "supervised", "supervised": {"hyperparameters": {
        "n_epochs": 3, "batch_size": 2, "learning_rate_multiplier": 0.5}}}, seed=11,
        tunesmith={"set": {"training.max_steps": 5, "adapter.rank": 4}}).json()
    assert job["status"] == "validating_files" and job["hyperparameters"]["n_epochs"] == 3
    recipe = registry.job(job["id"]).recipe
    assert recipe["training"]["epochs"] == 3 and recipe["training"]["seed"] == 11
    assert recipe["training"]["learning_rate"] == pytest.approx(1e-4)
    assert recipe["adapter"]["rank"] == 4 and recipe["output"]["name"] == job["id"]
    assert recipe["data"]["train"] == registry.file(file_id).location
    dpo = create(method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2}}}).json()
    assert dpo["method"]["type"] == "dpo" and registry.job(dpo["id"]).recipe["preference"]["beta"] == 0.2
    grader = {"type": "string_check", "name": "days", "operation": "ilike",
              "input": "{{sample.output_text}}", "reference": "days"}
    rft = registry.job(create(method={"type": "reinforcement", "reinforcement": {"grader": grader}})
                       .json()["id"]).recipe
    assert rft["method"] == "grpo" and rft["reinforcement"]["graders"] == [grader]
    no_grader = create(method={"type": "reinforcement"})
    assert no_grader.status_code == 400
    assert no_grader.json()["error"]["param"] == "method.reinforcement.grader"

    locked = create(tunesmith={"set": {"data.train": "/etc/passwd"}})
    assert locked.status_code == 400 and locked.json()["error"]["param"] == "tunesmith.set.data.train"
    template = create(tunesmith={"set": {"data.chat_template": "/etc/passwd"}})
    assert template.status_code == 400
    assert template.json()["error"]["param"] == "tunesmith.set.data.chat_template"
    builtin = create(tunesmith={"set": {"data.chat_template": "chatml-tools"}}).json()
    assert registry.job(builtin["id"]).recipe["data"]["chat_template"] == "chatml-tools"
    unknown = create(tunesmith={"set": {"training.epoch": 2}})
    assert unknown.status_code == 400 and "did you mean 'epochs'" in unknown.json()["error"]["message"]
    assert create(model="/home/me/model").json()["error"]["param"] == "model"
    assert create(training_file="file-nope").json()["error"]["param"] == "training_file"


def test_generation_caps_are_enforced_before_any_model_loads(registry: Registry, tmp_path: Path) -> None:
    client = make_client(registry, tmp_path, max_tokens=64, max_n=2, max_request_bytes=4096)
    chat = {"model": "tunesmith/tiny-chat", "messages": [{"role": "user", "content": "hi"}]}
    assert client.post("/v1/chat/completions", json={**chat, "max_tokens": 65}).json()["error"]["param"] \
        == "max_tokens"
    assert client.post("/v1/chat/completions", json={**chat, "n": 3}).json()["error"]["param"] == "n"
    missing = client.post("/v1/chat/completions", json={**chat, "model": "ft:nope"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    huge = {**chat, "messages": [{"role": "user", "content": "x" * 5000}]}
    assert client.post("/v1/chat/completions", json=huge).status_code == 413


def test_stop_sequences_cut_streamed_text_without_leaking_a_prefix() -> None:
    scanner = StopScanner(["END", "\n\n"])
    out = [scanner.feed(p) for p in ["Hello E", "N", "o wor", "ld E", "ND more"]]
    assert "".join(out) == "Hello ENo world " and scanner.stopped
    assert out[0] == "Hello " and scanner.feed("late") == ""
    plain = StopScanner([])
    assert plain.feed("abc") == "abc" and plain.flush() == ""
    held = StopScanner(["xyz"])
    assert held.feed("abx") == "ab" and held.flush() == "x"


def test_keys_commands_show_a_key_once_and_revoke_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "create", "--name", "laptop"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith(auth.KEY_PREFIX)
    assert main(["keys", "list"]) == 0
    listed = capsys.readouterr().out
    assert "laptop" in listed and key not in listed
    assert main(["keys", "revoke", "laptop"]) == 0
    registry = open_registry()
    assert [k.revoked_at is not None for k in auth.list_keys(registry)] == [True]
    registry.close()


def test_only_loopback_addresses_count_as_private() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.com")


def test_models_lists_and_shows_the_registered_bases_without_their_paths(registry: Registry,
                                                                          tmp_path: Path) -> None:
    from tunesmith.store.base_models import register_base

    pulled = tmp_path / "bases" / "smollm2-135m-instruct"
    pulled.mkdir(parents=True)
    register_base(registry, "smollm2-135m-instruct", pulled, None, "pull", "ab" * 32)
    register_base(registry, "gone-model", tmp_path / "bases" / "gone", None, "add-base")  # files missing
    client = make_client(registry, tmp_path)
    listed = client.get("/v1/models").json()["data"]
    ids = [m["id"] for m in listed]
    assert "tunesmith/tiny-chat" in ids and "smollm2-135m-instruct" in ids
    assert "gone-model" not in ids  # a job could not use it, so it is not offered
    entry = next(m for m in listed if m["id"] == "smollm2-135m-instruct")
    assert entry["object"] == "model" and entry["tunesmith"] == {"base_model": True, "source": "pull"}
    assert str(tmp_path) not in json.dumps(listed)
    shown = client.get("/v1/models/smollm2-135m-instruct")
    assert shown.status_code == 200 and shown.json()["id"] == "smollm2-135m-instruct"
    assert client.get("/v1/models/gone-model").status_code == 404
    refused = client.delete("/v1/models/smollm2-135m-instruct")
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "model"
    assert "smollm2-135m-instruct" in [m["id"] for m in client.get("/v1/models").json()["data"]]


CALL = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]}


@pytest.mark.parametrize(("messages", "param"), [
    ([{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}],
     "messages[1]"),  # a reply to no call
    ([{"role": "user", "content": "hi"}, CALL, {"role": "user", "content": "well?"},
      {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}], "messages[3]"),  # not just after it
    ([{"role": "user", "content": "hi"}, CALL, {"role": "tool", "tool_call_id": "call_9", "content": "x"}],
     "messages[2].tool_call_id"),  # a call the model never made
])
def test_a_tool_message_must_answer_the_call_before_it(registry: Registry, tmp_path: Path, messages: list,
                                                       param: str) -> None:
    response = make_client(registry, tmp_path).post(
        "/v1/chat/completions", json={"model": "tunesmith/tiny-chat", "messages": messages})
    assert response.status_code == 400 and response.json()["error"]["param"] == param


def test_tool_replies_to_the_calls_before_them_pass_the_check() -> None:
    from tunesmith.serve.chat import _check_tool_replies

    second = {**CALL, "tool_calls": [*CALL["tool_calls"], {**CALL["tool_calls"][0], "id": "call_2"}]}
    _check_tool_replies([{"role": "user", "content": "hi"}, second,
                         {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                         {"role": "tool", "tool_call_id": "call_2", "content": "warm"},
                         {"role": "assistant", "content": "Sunny and warm."}])
