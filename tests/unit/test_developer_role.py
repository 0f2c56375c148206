"""A `developer` message reaches the chat template one way, decided in data/prompt.py: the
same token ids in training's rendering, in `tunesmith chat`/evaluation's prompt and in the
server's prompt, for the bundled tiny model's own template and for the built-in chatml-tools."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import BUNDLED_MODEL, write_jsonl
from tunesmith.data.prompt import developer_role
from tunesmith.data.render import FALLBACK_CHAT_TEMPLATE
from tunesmith.data.templates import CHATML_TOOLS, apply_chat_template_choice
from tunesmith.model.loading import load_tokenizer, resolve_model

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "weather of a city",
                                            "parameters": {"type": "object"}}}]
CONVERSATION = [
    {"role": "developer", "content": "Answer in one word."},
    {"role": "user", "content": "Weather in Oslo?"},
    {"role": "assistant", "content": "Sunny."},
]


def _training_ids(tmp_path: Path, chat_template: str | None, tools: list | None) -> tuple[list[int], object]:
    """The example training renders for the conversation, the way train/loop.py prepares it,
    and the tokenizer it would save with final/."""
    from tunesmith.recipe import build_recipe
    from tunesmith.train.data import prepare_data

    row = {"messages": copy.deepcopy(CONVERSATION), **({"tools": tools} if tools else {})}
    train = write_jsonl(tmp_path / "train.jsonl", [row])
    recipe = build_recipe({"base_model": "tunesmith/tiny-chat",
                           "data": {"train": str(train), "chat_template": chat_template,
                                    "validation_split": 0}}, origin="test")
    tokenizer = load_tokenizer(resolve_model(recipe.base_model))
    apply_chat_template_choice(tokenizer, recipe.data.chat_template)
    prepared = prepare_data(recipe, tokenizer, recipe.data.max_length)
    (example,) = prepared.train
    return list(example.input_ids), tokenizer


def _trained_folder(tmp_path: Path, tokenizer: object) -> Path:
    """A model folder holding the tokenizer training used, as final/ holds it."""
    folder = tmp_path / "model"
    shutil.copytree(BUNDLED_MODEL, folder)
    tokenizer.save_pretrained(folder)
    return folder


def _served_ids(folder: Path, tools: list | None) -> list[int]:
    """The prompt the server builds for the request (serve/chat.py: messages, then _measure)."""
    from tunesmith.serve.cache import Target
    from tunesmith.serve.chat import ChatRequest, _measure, _messages
    from tunesmith.serve.engine import EngineClient

    request = ChatRequest.model_validate({"model": "trained", "messages": copy.deepcopy(CONVERSATION[:-1]),
                                          **({"tools": tools} if tools else {})})
    state = SimpleNamespace(cache=EngineClient())
    ids, _ = _measure(state, Target("trained", str(folder)), _messages(request), 8, False,
                      [t.model_dump(exclude_none=True) for t in request.tools] if tools else None)
    return ids


@pytest.mark.parametrize("tools", [None, TOOLS], ids=["no-tools", "tools"])
@pytest.mark.parametrize("chat_template", [None, "chatml-tools"], ids=["tiny-own", "chatml-tools"])
def test_training_chat_and_serving_prompt_a_developer_message_alike(
        tmp_path: Path, chat_template: str | None, tools: list | None) -> None:
    from tunesmith.model.inference import load_trained

    trained, tokenizer = _training_ids(tmp_path, chat_template, tools)
    folder = _trained_folder(tmp_path, tokenizer)
    served = _served_ids(folder, tools)
    chatted = load_trained(folder).renderer.prompt_ids(copy.deepcopy(CONVERSATION[:-1]), tools)
    assert served == chatted
    assert trained[:len(served)] == served  # the prompt is exactly what training saw before the reply
    reply = tokenizer.decode(trained[len(served):])
    assert reply.startswith("Sunny.")
    prompt = tokenizer.decode(served)
    if chat_template == "chatml-tools":  # the template knows system, so developer arrives as system
        head = "<|im_start|>system\nAnswer in one word."
        assert prompt.startswith(head + ("\n\n# Tools" if tools else "<|im_end|>"))
        assert "developer" not in prompt
    else:  # the tiny model's template renders the developer role itself
        assert "<|im_start|>developer\nAnswer in one word.<|im_end|>" in prompt


@pytest.mark.parametrize("template", [CHATML_TOOLS, FALLBACK_CHAT_TEMPLATE], ids=["chatml-tools", "fallback"])
def test_tunesmith_templates_leave_the_developer_role_to_prompt_preparation(template: str) -> None:
    tokenizer = load_tokenizer(resolve_model("tunesmith/tiny-chat"))
    tokenizer.chat_template = template
    assert developer_role(tokenizer) == "system"
    with pytest.raises(Exception, match="developer"):  # given directly, the template says so
        tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
