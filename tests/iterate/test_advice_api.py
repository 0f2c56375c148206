"""POST /v1/advice: advise on an uploaded file, every field hostile (the model check, file ids
only, the grader check, capped sizes), and no server path in the answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.iterate.tasks import pets
from tunesmith.serve.app import create_app
from tunesmith.store import open_registry

LOCAL = {"base_url": "http://127.0.0.1", "headers": {"Origin": "http://127.0.0.1"}}
pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture
def client(tmp_path: Path):
    registry = open_registry(home=tmp_path)
    yield TestClient(create_app(registry, tmp_path), **LOCAL)
    registry.close()


def _upload(client: TestClient, rows: list[dict], name: str) -> str:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    response = client.post("/v1/files", files={"file": (name, text.encode())}, data={"purpose": "fine-tune"})
    assert response.status_code == 200, response.text
    return response.json()["id"]


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "/etc"}, "model"),
    ({"model": "../../models/x"}, "model"),
    ({"max_examples": 10**6}, "max_examples"),
    ({"max_new_tokens": 100_000}, "max_new_tokens"),
    ({"probe_steps": 1000}, "probe_steps"),
    ({"graders": [{"type": "python", "source": "import os"}]}, None),
    ({"graders": [{"type": "reward_model", "path": "/etc/passwd"}]}, None),
    ({"data": {"train": "/etc/passwd"}}, None),
    ({"training_file": "file-nothere"}, "training_file"),
])
def test_hostile_fields_are_refused_before_any_model_loads(client: TestClient, body: dict, param: str | None,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import tunesmith.iterate.advise as advise_module

    def never(*args, **kwargs):
        raise AssertionError("advise ran for a refused request")
    monkeypatch.setattr(advise_module, "advise", never)
    file_id = _upload(client, pets()[0], "pets.jsonl")
    request = {"model": "tunesmith/tiny-chat", "training_file": file_id, **body}
    response = client.post("/v1/advice", json=request)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    if param:
        assert param in (error["param"] or "") or param in error["message"]


@pytest.mark.slow  # a real advise run over HTTP (~25 s on a shared machine)
def test_advice_over_http_names_no_server_path_and_is_recorded(client: TestClient, tmp_path: Path) -> None:
    train, heldout = pets()
    train_id, held_id = _upload(client, train, "pets.jsonl"), _upload(client, heldout, "heldout.jsonl")
    response = client.post("/v1/advice", json={"model": "tunesmith/tiny-chat", "training_file": train_id,
                                               "validation_file": held_id, "max_new_tokens": 8,
                                               "probe_steps": 1})
    assert response.status_code == 200, response.text
    advice = response.json()
    assert advice["object"] == "advice" and advice["recommendation"] == "retrieval"
    assert advice["training_file"] == train_id and advice["dataset_id"].startswith("ds-")
    assert str(tmp_path) not in response.text
    listed = client.get("/v1/advice").json()["data"]
    assert [a["id"] for a in listed] == [advice["id"]]
    again = client.get(f"/v1/advice/{advice['id']}").json()
    assert again["comparisons"] == advice["comparisons"] and str(tmp_path) not in json.dumps(again)
    assert client.get("/v1/advice/advice-missing").status_code == 404
