"""Attacks on a real `tunesmith serve` process on loopback, each refused with the documented
4xx in the hosted error shape, and the server answers a normal request right after.

The server runs without a worker (nothing here needs training) from a working folder that
holds a model folder, so a relative `model` that would load it can be tried."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.serve.server import Server, wait_for

ROW = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
FAST_REFUSAL = 10.0
"""A generous ceiling for refusals of what used to stall the server for minutes."""


def babbler(folder: Path) -> Path:
    """The bundled model's shape with random weights: it almost never emits its end token,
    so a generation runs to its max_tokens unless something stops it."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from tunesmith.model.loading import BUNDLED

    shutil.copytree(BUNDLED["tunesmith/tiny-chat"], folder)
    weights = load_file(str(folder / "model.safetensors"))
    generator = torch.Generator().manual_seed(0)
    for name, tensor in weights.items():
        if "norm" not in name:
            weights[name] = torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype) * 0.02
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("guarded-home")
    cwd = tmp_path_factory.mktemp("guarded-cwd")
    secret = cwd / "localdir" / "secretmodel"
    secret.mkdir(parents=True)
    (secret / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    server = Server(home, home / "server.log", ("--no-worker",), cwd=cwd,
                    env={"HF_HUB_OFFLINE": "1"})  # an unknown hub id fails at once, not after retries
    yield server.start()
    server.stop()


@pytest.fixture
def doomed(guarded: Server) -> Iterator[Server]:
    """A second server over the guarded one's home, for the test that stops its server (the
    module's own server must stay up for the tests that run after it, in any order)."""
    server = Server(guarded.home, guarded.home / "doomed.log", guarded.args, cwd=guarded.cwd, env=guarded.env)
    yield server.start()
    server.stop()


@pytest.fixture(scope="module")
def talker(guarded: Server) -> str:
    """The babbler as a tuned model in the running server's registry (read per request)."""
    from tunesmith.store import open_registry

    registry = open_registry(home=guarded.home)
    model = registry.add_model(base_model="tunesmith/tiny-chat", kind="full", recipe={}, suffix="babbler",
                               path=str(babbler(guarded.home / "babbler")))
    registry.close()
    return model.name


@pytest.fixture(scope="module")
def http(guarded: Server) -> Iterator[httpx.Client]:
    """A plain API client: no Origin, an Authorization header (what API clients send)."""
    with httpx.Client(base_url=f"http://127.0.0.1:{guarded.port}", timeout=120,
                      headers={"Authorization": "Bearer unused"}) as client:
        yield client


@pytest.fixture(scope="module")
def file_id(http: httpx.Client) -> str:
    response = http.post("/v1/files", files={"file": ("rows.jsonl", (json.dumps(ROW) + "\n").encode())},
                         data={"purpose": "fine-tune"})
    assert response.status_code == 200, response.text
    return response.json()["id"]


def refused(response: httpx.Response, status: int, code: str, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    return error


def healthy(http: httpx.Client, chat: bool = False) -> None:
    assert http.get("/health").json()["status"] == "ok"
    assert http.get("/v1/files").status_code == 200
    if chat:
        reply = http.post("/v1/chat/completions", json={"model": "tunesmith/tiny-chat", "max_tokens": 2,
                                                        "messages": [{"role": "user", "content": "hi"}]})
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"] is not None


def create_job(http: httpx.Client, file_id: str, **fields: Any) -> httpx.Response:
    return http.post("/v1/fine_tuning/jobs", json={"model": "tunesmith/tiny-chat", "training_file": file_id,
                                                   **fields})


def job_ids(http: httpx.Client) -> set[str]:
    return {job["id"] for job in http.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"]}


PYTHON = {"type": "python", "name": "py", "source": "def grade(sample, item):\n    return 1.0\n"}


@pytest.mark.parametrize(("fields", "param"), [
    ({"tunesmith": {"set": {"evaluation.enabled": True, "evaluation.graders": [PYTHON]}}},
     "tunesmith.set.evaluation.graders[0]"),
    ({"tunesmith": {"set": {"evaluation": {"graders": [{"type": "multi", "calculate_output": "a",
                                                         "graders": {"a": PYTHON}}]}}}},
     "tunesmith.set.evaluation.graders[0].graders.a"),
    ({"tunesmith": {"set": {"evaluation.forgetting_graders": [PYTHON]}}},
     "tunesmith.set.evaluation.forgetting_graders[0]"),
    ({"tunesmith": {"set": {"reinforcement.graders": [PYTHON]}}}, "tunesmith.set.reinforcement.graders[0]"),
    ({"method": {"type": "reinforcement", "reinforcement": {"grader": PYTHON}}},
     "method.reinforcement.grader"),
], ids=["evaluation", "nested-in-multi", "forgetting", "reinforcement-set", "method-grader"])
def test_python_graders_are_refused_from_the_api(http: httpx.Client, file_id: str, fields: dict[str, Any],
                                                 param: str) -> None:
    before = job_ids(http)  # other tests of this module create jobs, in any order
    error = refused(create_job(http, file_id, **fields), 400, "python_grader_not_allowed", param)
    assert "--allow-python-graders" in error["message"]
    assert job_ids(http) == before, "no job was created"
    healthy(http)


@pytest.mark.parametrize(("extension", "param"), [
    ({"adapter.init_from": "/etc"}, "tunesmith.set.adapter.init_from"),
    ({"adapter": {"init_from": "/etc"}}, "tunesmith.set.adapter.init_from"),
    ({"evaluation.data": "/etc/passwd"}, "tunesmith.set.evaluation.data"),
    ({"evaluation": {"forgetting": "/etc/passwd"}}, "tunesmith.set.evaluation.forgetting"),
    ({"data": {"train": "/etc/passwd"}}, "tunesmith.set.data.train"),
    ({"data.validation": "/etc/passwd"}, "tunesmith.set.data.validation"),
    ({"data": {"replay": "/etc/passwd"}}, "tunesmith.set.data.replay"),
    ({"output": {"dir": "/tmp"}}, "tunesmith.set.output"),
    ({"base_model": "/srv/models/x"}, "tunesmith.set.base_model"),
    ({"trust_remote_code": True}, "tunesmith.set.trust_remote_code"),
])
def test_recipe_keys_naming_server_files_are_refused(http: httpx.Client, file_id: str,
                                                     extension: dict[str, Any], param: str) -> None:
    refused(create_job(http, file_id, tunesmith={"set": extension}), 400, "locked_key", param)
    healthy(http)


def test_a_reward_model_grader_path_is_refused(http: httpx.Client, file_id: str) -> None:
    grader = {"type": "reward_model", "path": "/etc"}
    method = {"type": "reinforcement", "reinforcement": {"grader": grader}}
    response = create_job(http, file_id, method=method)
    refused(response, 400, "locked_key", "method.reinforcement.grader")
    healthy(http)


def test_bundled_reference_sets_and_declarative_graders_are_still_accepted(http: httpx.Client,
                                                                           file_id: str) -> None:
    grader = {"type": "string_check", "name": "hello", "operation": "eq", "input": "{{sample.output_text}}",
              "reference": "hello"}
    response = create_job(http, file_id, tunesmith={"set": {"evaluation.forgetting": "tunesmith/general",
                                                            "evaluation.graders": [grader]}})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("model", ["localdir/secretmodel", "/etc", "../models/x", "~/m", "a/b/c", "x",
                                   "org/../name", "ft:tiny-chat:x:y"])
def test_model_must_be_bundled_registered_or_a_hub_id(http: httpx.Client, file_id: str, model: str) -> None:
    refused(create_job(http, file_id, model=model), 400, "model_not_available", "model")
    healthy(http)


def test_the_data_check_does_not_tell_whether_a_server_path_exists(guarded: Server, http: httpx.Client,
                                                                   file_id: str) -> None:
    answers = []
    for model in ("localdir/secretmodel", "localdir/missingmodel", "/etc", "/nonexistent/folder"):
        response = http.get(f"/dashboard/api/files/{file_id}/check", params={"model": model})
        error = refused(response, 400, "model_not_available", "model")
        answers.append(error["message"].replace(repr(model), "MODEL"))
    assert len(set(answers)) == 1, answers
    checked = http.get(f"/dashboard/api/files/{file_id}/check")
    assert checked.status_code == 200 and checked.json()["path"] == "rows.jsonl"
    assert str(guarded.home) not in checked.text and "/site-packages/" not in checked.text
    healthy(http)


@pytest.mark.parametrize("path", ["/health", "/v1/models", "/"])
def test_only_served_host_names_are_answered(guarded: Server, http: httpx.Client, path: str) -> None:
    refused(http.get(path, headers={"Host": "attacker.example"}), 400, "host_not_allowed")
    refused(http.get(path, headers={"Host": f"attacker.example:{guarded.port}"}), 400, "host_not_allowed")
    assert http.get(path, headers={"Host": f"localhost:{guarded.port}"}).status_code == 200
    healthy(http)


def test_cross_site_requests_cannot_change_state(guarded: Server, file_id: str, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{guarded.port}"
    job = None
    with httpx.Client(base_url=url, timeout=60, headers={"Authorization": "Bearer unused"}) as api:
        job = create_job(api, file_id).json()["id"]
    upload = {"files": {"file": ("x.jsonl", (json.dumps(ROW) + "\n").encode())},
              "data": {"purpose": "fine-tune"}}
    with httpx.Client(base_url=url, timeout=60) as browser:  # what a page on another site can send
        evil = {"Origin": "http://attacker.example"}
        refused(browser.post("/v1/files", headers=evil, **upload), 403, "cross_site_request")
        refused(browser.post("/v1/files", **upload), 403, "cross_site_request")
        refused(browser.post("/v1/files", headers={"Referer": "http://attacker.example/page"}, **upload),
                403, "cross_site_request")
        refused(browser.post("/v1/files", headers={"Origin": "null"}, **upload), 403, "cross_site_request")
        for action in ("cancel", "pause", "resume"):
            path = f"/v1/fine_tuning/jobs/{job}/{action}"
            refused(browser.post(path, data={"x": "1"}, headers=evil), 403, "cross_site_request")
            refused(browser.post(path, data={"x": "1"}), 403, "cross_site_request")
            refused(browser.post(path, content=b"x", headers={"Content-Type": "text/plain"}), 403,
                    "cross_site_request")
        refused(browser.post(f"/v1/fine_tuning/jobs/{job}/cancel", json={}, headers=evil), 403,
                "cross_site_request")
        assert browser.get(f"/v1/fine_tuning/jobs/{job}").json()["status"] == "validating_files"
        # the dashboard: same-origin requests with its own Origin
        same = {"Origin": url}
        assert browser.post("/v1/files", headers=same, **upload).status_code == 200
        assert browser.post(f"/v1/fine_tuning/jobs/{job}/pause", headers=same).json()["id"] == job
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)  # sends no Origin
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(ROW) + "\n")
    assert client.files.create(file=path.open("rb"), purpose="fine-tune").id.startswith("file-")
    assert client.fine_tuning.jobs.cancel(job).status == "cancelled"


def chat(http: httpx.Client, model: str = "tunesmith/tiny-chat", **fields: Any) -> httpx.Response:
    body = {"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}], **fields}
    return http.post("/v1/chat/completions", json=body)


def test_stop_sequences_are_capped_like_the_hosted_api(http: httpx.Client) -> None:
    started = time.monotonic()
    refused(chat(http, max_tokens=2, stop=["x" * 900_000] * 4), 400, "invalid_value", "stop")
    assert time.monotonic() - started < FAST_REFUSAL
    refused(chat(http, stop=["a", "b", "c", "d", "e"]), 400, "invalid_value", "stop")
    refused(chat(http, stop="y" * 257), 400, "invalid_value", "stop")
    long_stop = chat(http, stop=["z" * 256, "\n\n", "END", "x"])
    assert long_stop.status_code == 200, long_stop.text
    healthy(http, chat=True)


def test_a_prompt_longer_than_the_context_is_refused_before_generation(http: httpx.Client) -> None:
    healthy(http, chat=True)  # the model is loaded: what follows measures only the refusal
    started = time.monotonic()
    huge = chat(http, messages=[{"role": "user", "content": "word " * 780_000}])  # 3.9 MB
    error = refused(huge, 400, "context_length_exceeded", "messages")
    assert time.monotonic() - started < FAST_REFUSAL
    assert "maximum context length is 1024 tokens" in error["message"]
    over = refused(chat(http, messages=[{"role": "user", "content": "word " * 1500}]), 400,
                   "context_length_exceeded", "messages")
    assert "1024" in over["message"]
    refused(chat(http, max_tokens=1000, messages=[{"role": "user", "content": "word " * 300}]), 400,
            "context_length_exceeded", "max_tokens")
    healthy(http, chat=True)


@pytest.mark.parametrize(("fields", "param"), [
    ({"temperature": 1e-300}, "temperature"), ({"temperature": -1}, "temperature"),
    ({"temperature": 2.5}, "temperature"), ({"seed": 2**70}, "seed"), ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "top_p"), ({"n": 0}, "n"), ({"n": 10**6}, "n"), ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 10**30}, "max_tokens"), ({"max_completion_tokens": -5}, "max_completion_tokens"),
])
def test_numeric_parameters_are_range_checked(http: httpx.Client, fields: dict[str, Any], param: str) -> None:
    refused(chat(http, **fields), 400, "invalid_value", param)
    healthy(http)


def test_unreadable_json_is_a_clean_400(http: httpx.Client) -> None:
    nan = (b'{"model": "tunesmith/tiny-chat", "temperature": NaN, '
           b'"messages": [{"role": "user", "content": "hi"}]}')
    refused(http.post("/v1/chat/completions", content=nan, headers={"Content-Type": "application/json"}),
            400, "invalid_value", "temperature")
    for body in (b'{"model": "tunesmith/tiny-chat", "messages": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
                 b'{"model": "tunesmith/tiny-chat", "seed": ' + b"9" * 100_000 + b', "messages": []}'):
        for path in ("/v1/chat/completions", "/v1/fine_tuning/jobs"):
            refused(http.post(path, content=body, headers={"Content-Type": "application/json"}), 400,
                    "invalid_json")
            healthy(http)


@pytest.mark.parametrize("line", [b"[" * 200_000 + b"]" * 200_000, b'{"n": ' + b"1" * 100_000 + b"}"],
                         ids=["deeply-nested", "huge-integer"])
def test_unreadable_upload_lines_are_a_clean_400(http: httpx.Client, line: bytes) -> None:
    rows = (json.dumps(ROW) + "\n").encode() + line + b"\n"
    response = http.post("/v1/files", files={"file": ("bad.jsonl", rows)}, data={"purpose": "fine-tune"})
    error = refused(response, 400, "invalid_file_format", "file")
    assert error["message"].startswith("line 2:")
    healthy(http)


def generations(http: httpx.Client) -> int:
    return int(http.get("/health").json()["generations"])


def test_a_client_that_leaves_stops_its_generation(talker: str, http: httpx.Client) -> None:
    """The babbler would generate 8 x 1000 tokens (minutes on a CPU); leaving stops it."""
    body = {"model": talker, "max_tokens": 1000, "n": 8, "temperature": 1.0,
            "messages": [{"role": "user", "content": "hi"}]}
    with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        assert generations(http) == 1
    wait_for(lambda: generations(http) == 0, timeout=30)
    with pytest.raises(httpx.ReadTimeout):
        http.post("/v1/chat/completions", json=body, timeout=3)
    wait_for(lambda: generations(http) == 0, timeout=30)
    healthy(http, chat=True)


def test_sigterm_stops_the_server_mid_generation(doomed: Server, talker: str) -> None:
    body = {"model": talker, "max_tokens": 1000, "n": 8, "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}
    first = threading.Event()
    with httpx.Client(base_url=f"http://127.0.0.1:{doomed.port}", timeout=120,
                      headers={"Authorization": "Bearer unused"}) as http:

        def listen() -> None:
            try:
                with http.stream("POST", "/v1/chat/completions", json=body) as response:
                    for _ in response.iter_lines():
                        first.set()
            except httpx.HTTPError:
                pass
        thread = threading.Thread(target=listen, daemon=True)
        thread.start()
        assert first.wait(60) and generations(http) == 1
        assert doomed.process is not None
        doomed.process.send_signal(signal.SIGTERM)
        doomed.process.wait(timeout=20)  # a generation left running would hold it for minutes
        thread.join(10)
