"""The Hermes tool-call block has one source (data/templates.py): the built-in chatml-tools
template and the bundled tiny model's template (scripts/tiny_chat_model.py) are built from it,
and the template shipped in assets/models/tiny-chat is exactly what the script would write."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from tests.conftest import BUNDLED_MODEL
from tunesmith.data.templates import CHATML_TOOLS, HERMES_TOOL_CALL, TEXT_MACRO
from tunesmith.model.tool_calls import parse_tool_calls

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
CALLS = [{"id": "c1", "type": "function",
          "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
         {"id": "c2", "type": "function", "function": {"name": "get_time", "arguments": {"zone": "CET"}}}]


@pytest.fixture
def tiny_script(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(SCRIPTS))  # the script imports its sibling asset_phrases
    return importlib.import_module("tiny_chat_model")


def test_both_templates_are_built_from_the_one_block(tiny_script: Any) -> None:
    for template in (tiny_script.CHAT_TEMPLATE, CHATML_TOOLS):
        assert template.count(HERMES_TOOL_CALL) == 1 and template.startswith(TEXT_MACRO)


def test_the_shipped_tiny_template_is_what_the_script_writes(tiny_script: Any) -> None:
    shipped = (BUNDLED_MODEL / "chat_template.jinja").read_text(encoding="utf-8")
    assert shipped == tiny_script.CHAT_TEMPLATE  # regenerating the assets leaves it as it is


@pytest.mark.parametrize("body", ["Checking.", None])
def test_both_templates_render_a_reply_s_calls_alike_and_they_read_back(body: str | None) -> None:
    tokenizer = AutoTokenizer.from_pretrained(BUNDLED_MODEL)
    messages = [{"role": "user", "content": "Weather and time in Oslo?"},
                {"role": "assistant", "content": body, "tool_calls": CALLS}]
    replies = []
    for template in (tokenizer.chat_template, CHATML_TOOLS):
        tokenizer.chat_template = template
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        replies.append(text.split("<|im_start|>assistant\n", 1)[1].split("<|im_end|>", 1)[0])
    assert replies[0] == replies[1]
    content, calls = parse_tool_calls(replies[0], {"get_weather", "get_time"})
    assert content == body
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        ("get_weather", '{"city": "Oslo"}'), ("get_time", '{"zone": "CET"}')]
