"""Shared fixtures: small real models and a tiny random one for mechanics."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import tunesmith

ASSETS = Path(tunesmith.__file__).parent / "assets"
BUNDLED_MODEL = ASSETS / "models" / "tiny-chat"
STORIES = Path(__file__).resolve().parents[2] / "shared" / "models" / "stories260K"

# `training.dtype: auto` (and the server's dtype) follow the CPU: bf16 where the start-up probe
# finds it faster. The suite pins float32 (every process it starts inherits it) so its exact
# comparisons hold on CPUs with and without fast bf16; the bf16 paths are tested with the dtype
# or the probe set by the test.
os.environ.setdefault("TUNESMITH_CPU_DTYPE", "float32")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own tunesmith home (registry and artifacts), never the user's, and
    leaves the environment as it found it (a variable the CLI sets for itself, such as
    HF_HUB_DISABLE_PROGRESS_BARS, or one a test set by hand, must not reach the next test)."""
    before = dict(os.environ)
    home = tmp_path_factory.mktemp("tunesmith-home")
    monkeypatch.setenv("TUNESMITH_HOME", str(home))
    monkeypatch.delenv("TUNESMITH_DATABASE_URL", raising=False)
    yield home
    for key in set(os.environ) - set(before):
        del os.environ[key]
    for key, value in before.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models spend more time synchronising threads than computing, badly so on a shared
    machine: one thread makes their tests several times faster there."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def stories_path() -> Path:
    if not (STORIES / "config.json").exists():
        pytest.skip("shared/models/stories260K is not present")
    return STORIES


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    """The bundled tiny chat model (shipped in the package), else the stories260K model."""
    if (BUNDLED_MODEL / "config.json").exists():
        return BUNDLED_MODEL
    if not (STORIES / "config.json").exists():
        pytest.skip("neither the bundled tiny-chat model nor shared/models/stories260K is present")
    return STORIES


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    return ASSETS


def make_random_model(folder: Path, tokenizer_from: Path, hidden: int = 32, layers: int = 2) -> Path:
    """A randomly initialised Llama with a real tokenizer: for mechanics, where weights don't matter."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def random_model_path(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Path:
    return make_random_model(tmp_path_factory.mktemp("random-llama"), tiny_model_path)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    import json

    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def colour_chats(count: int, seed: int = 0) -> list[dict]:
    """A learnable chat task: the reply is a fixed function of the question."""
    import random

    rng = random.Random(seed)
    colours = ["red", "green", "blue", "yellow", "purple", "orange"]
    rows = []
    for _ in range(count):
        colour = rng.choice(colours)
        rows.append({"messages": [
            {"role": "user", "content": f"What colour is the {colour} box?"},
            {"role": "assistant", "content": f"The box is {colour}. Thank you for asking!"},
        ]})
    return rows
