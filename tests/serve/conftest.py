"""One shared server for the API tests (a second one for auth and the kill -9 test)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.serve.server import Server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("serve-home")
    running = Server(home, home / "server.log").start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import colour_chats, write_jsonl

    folder = tmp_path_factory.mktemp("serve-data")
    write_jsonl(folder / "colours.jsonl", colour_chats(16))
    return folder
