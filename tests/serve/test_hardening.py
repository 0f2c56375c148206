"""The server's refusals in-process (no model loaded): the operator's opt-ins, no server path
in any response, 500s and a full disk in the hosted shape, the stop scanner, the Host and
Origin rules."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tunesmith.model.generation import StopScanner
from tunesmith.serve import policy
from tunesmith.serve.app import create_app
from tunesmith.serve.errors import APIError
from tunesmith.serve.guard import GuardMiddleware
from tunesmith.serve.limits import Access
from tunesmith.serve.redact import public_text
from tunesmith.store import Registry, open_registry

ROW = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
LOCAL = {"base_url": "http://127.0.0.1", "headers": {"Origin": "http://127.0.0.1"}}
PYTHON = {"type": "python", "name": "py", "source": "def grade(sample, item):\n    return 1.0\n"}


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    opened = open_registry(home=tmp_path)
    yield opened
    opened.close()


def client(registry: Registry, tmp_path: Path, access: Access | None = None) -> TestClient:
    return TestClient(create_app(registry, tmp_path, access=access), raise_server_exceptions=False, **LOCAL)


def upload(api: TestClient) -> str:
    response = api.post("/v1/files", files={"file": ("rows.jsonl", (json.dumps(ROW) + "\n").encode())},
                        data={"purpose": "fine-tune"})
    assert response.status_code == 200, response.text
    return response.json()["id"]


def test_python_graders_run_only_when_the_operator_allows_them(registry: Registry, tmp_path: Path) -> None:
    extension = {"tunesmith": {"set": {"evaluation.enabled": True, "evaluation.graders": [PYTHON]}}}
    closed = client(registry, tmp_path)
    file_id = upload(closed)
    job = {"model": "tunesmith/tiny-chat", "training_file": file_id, **extension}
    refusal = closed.post("/v1/fine_tuning/jobs", json=job).json()["error"]
    assert refusal["code"] == "python_grader_not_allowed"
    opened = client(registry, tmp_path, Access(allow_python_graders=True))
    created = opened.post("/v1/fine_tuning/jobs", json=job)
    assert created.status_code == 200, created.text
    assert registry.job(created.json()["id"]).recipe["evaluation"]["graders"][0]["type"] == "python"
    still = {**job, "tunesmith": {"set": {"adapter.init_from": "/etc"}}}  # the opt-in opens code, not paths
    assert opened.post("/v1/fine_tuning/jobs", json=still).json()["error"]["code"] == "locked_key"


def test_registered_bases_are_accepted_by_the_one_model_check() -> None:
    policy.check_api_model("tunesmith/tiny-chat")
    policy.check_api_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    policy.check_api_model("team-llama", registered={"team-llama"})
    with pytest.raises(APIError) as caught:
        policy.check_api_model("team-llama", registered=set())
    assert caught.value.param == "model" and caught.value.code == "model_not_available"


def test_no_server_path_in_job_errors_events_or_the_dashboard(registry: Registry, tmp_path: Path) -> None:
    api = client(registry, tmp_path)
    file_id = upload(api)
    location = registry.file(file_id).location
    run_dir = str(tmp_path / "runs" / "ftjob-x")
    job = registry.create_job({"base_model": "tunesmith/tiny-chat", "method": "sft",
                               "data": {"train": location}, "output": {"dir": str(tmp_path / "runs")}},
                              id="ftjob-x", status="failed", run_dir=run_dir, training_file=file_id)
    message = (f"cannot read {location}:3; model files in /usr/lib/python3/site-packages/x/config.json and "
               f"{run_dir}/checkpoints/step-1 (see http://127.0.0.1:8000/v1/files)")
    registry.write(lambda s: setattr(s.get(type(job), job.id), "error", message))
    registry.add_event(job.id, "message", {"message": f"saved {run_dir}/final"}, step=0)
    shown = [api.get(f"/v1/fine_tuning/jobs/{job.id}").json(),
             api.get(f"/v1/fine_tuning/jobs/{job.id}/events").json(),
             api.get(f"/dashboard/api/jobs/{job.id}").json(), api.get("/dashboard/api/jobs").json()]
    text = json.dumps(shown)
    for secret in (str(tmp_path), "/usr/lib", location):
        assert secret not in text
    error = shown[0]["error"]["message"]
    assert f"{file_id} line 3" in error and "runs/ftjob-x/checkpoints" in error and "config.json" in error
    assert "http://127.0.0.1:8000/v1/files" in error  # URLs are not server paths
    assert shown[2]["recipe"]["data.train"] == file_id and "run_dir" not in shown[2]


def test_public_text_keeps_api_paths_and_urls() -> None:
    assert public_text("upload with POST /v1/files") == "upload with POST /v1/files"
    assert public_text("see https://example.org/etc/x") == "see https://example.org/etc/x"
    assert public_text("open /etc/passwd failed") == "open <server>/passwd failed"


def test_unexpected_failures_are_a_generic_500_and_a_full_disk_a_507(
        registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api = client(registry, tmp_path)
    file_id = upload(api)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"internal detail {tmp_path}")
    monkeypatch.setattr(registry, "create_job", broken)
    failed = api.post("/v1/fine_tuning/jobs", json={"model": "tunesmith/tiny-chat", "training_file": file_id})
    assert failed.status_code == 500 and failed.json()["error"]["type"] == "server_error"
    assert str(tmp_path) not in failed.text and "RuntimeError" not in failed.text

    def full(*args: object, **kwargs: object) -> None:
        import sqlalchemy.exc

        raise sqlalchemy.exc.OperationalError("INSERT", {}, Exception("database or disk is full"))
    monkeypatch.setattr(registry, "create_job", full)
    job = api.post("/v1/fine_tuning/jobs", json={"model": "tunesmith/tiny-chat", "training_file": file_id})
    assert job.status_code == 507 and job.json()["error"]["code"] == "insufficient_storage"

    import tunesmith.serve.files as files

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(files.os, "fsync", no_space)
    stored = api.post("/v1/files", files={"file": ("new.jsonl", b'{"a": 2}\n')},
                      data={"purpose": "fine-tune"})
    assert stored.status_code == 507 and stored.json()["error"]["code"] == "insufficient_storage"
    assert not [p for p in registry.artifacts.root.glob(".upload-*")], "the partial upload is removed"
    assert api.get("/health").status_code == 200


def test_stop_scanner_is_linear_in_the_stop_length() -> None:
    """A stop of 100,000 'a's and text of 'a's with a 'b' every 99,999: the old scanner tried every
    prefix of every stop at every piece (10^10 character comparisons); this one feeds each
    character once per stop."""
    stop = "a" * 100_000
    scanner = StopScanner([stop, "ab" * 10])
    seen = ""
    for _ in range(30):
        seen += scanner.feed("a" * 9_999 + "b")
    assert not scanner.stopped and (seen + scanner.flush()).count("b") == 30
    scanner = StopScanner(["abcd", "bc"])  # the first stop to complete wins
    assert scanner.feed("xab") == "x" and scanner.feed("cd") == "a" and scanner.stopped
    overlapping = StopScanner(["aab"])
    assert overlapping.feed("aaaab") == "aa" and overlapping.stopped


@pytest.mark.parametrize(("method", "headers", "allowed"), [
    ("GET", {"host": "127.0.0.1:8000"}, True),
    ("GET", {"host": "[::1]:8000"}, True),
    ("GET", {"host": "LOCALHOST"}, True),
    ("GET", {"host": "evil.example"}, False),
    ("GET", {"host": "127.0.0.1.evil.example"}, False),
    ("POST", {"host": "127.0.0.1:8000", "content-type": "application/json"}, True),
    ("POST", {"host": "127.0.0.1:8000", "content-type": "multipart/form-data; boundary=x"}, False),
    ("POST", {"host": "127.0.0.1:8000", "content-type": "multipart/form-data; boundary=x",
              "authorization": "Bearer k"}, True),
    ("POST", {"host": "127.0.0.1:8000"}, False),
    ("POST", {"host": "127.0.0.1:8000", "origin": "http://127.0.0.1:8000"}, True),
    ("POST", {"host": "127.0.0.1:8000", "origin": "http://127.0.0.1:9999", "authorization": "Bearer k"},
     False),
    ("DELETE", {"host": "127.0.0.1:8000", "referer": "http://evil.example/x"}, False),
    ("POST", {"host": "tunesmith.internal", "origin": "https://tunesmith.internal"}, True),
    ("POST", {"host": "127.0.0.1:8000", "origin": "http://127.0.0.1:8000", "sec-fetch-site": "same-origin"},
     True),
    ("POST", {"host": "127.0.0.1:8000", "authorization": "Bearer k", "sec-fetch-site": "cross-site"}, False),
])
def test_host_and_origin_rules(method: str, headers: dict[str, str], allowed: bool) -> None:
    guard = GuardMiddleware(None, allowed_hosts=("tunesmith.internal",))
    assert (guard.refusal(method, headers) is None) is allowed


def test_serving_beyond_loopback_without_keys_needs_the_operators_flag(
        capsys: pytest.CaptureFixture[str]) -> None:
    from tunesmith.cli import main

    assert main(["serve", "--host", "0.0.0.0", "--port", "9"]) == 2
    error = capsys.readouterr().err
    assert "refusing to serve on 0.0.0.0 with no API keys" in error and "--allow-keyless-network" in error
