"""One prompt preparation: a request's conversation reaches the chat template exactly as the
same conversation in a training file does (roles, content parts, tool calls, tools)."""

from __future__ import annotations

import copy

import pytest
from transformers import AutoTokenizer

from tunesmith.data.formats import parse_record
from tunesmith.data.prompt import developer_role, request_messages, template_messages
from tunesmith.data.records import Format, Source
from tunesmith.data.render import Renderer
from tunesmith.model.loading import BUNDLED

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
CALL = {"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
CONVERSATION = [
    {"role": "developer", "content": "Answer briefly."},
    {"role": "user", "content": [{"type": "text", "text": "Weather "}, {"type": "text", "text": "in Oslo?"}]},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    {"role": "assistant", "content": "Sunny."},
]
# Some templates know only system/user/assistant and drop anything else without a word.
DROPPING = ("{% for m in messages %}{% if m.role in ['system', 'user', 'assistant'] %}<{{ m.role }}>"
            "{{ m.content }}\n{% endif %}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")
RAISING = ("{% for m in messages %}{% if m.role not in ['system', 'user', 'assistant'] %}"
           "{{ raise_exception('unknown role') }}{% endif %}<{{ m.role }}>{{ m.content }}\n{% endfor %}")


@pytest.fixture
def tokenizer():
    return AutoTokenizer.from_pretrained(BUNDLED["tunesmith/tiny-chat"])


def test_a_request_renders_exactly_as_the_training_row(tokenizer) -> None:
    renderer = Renderer(tokenizer)
    record, findings = parse_record({"messages": copy.deepcopy(CONVERSATION), "tools": TOOLS},
                                    Source("train.jsonl", 1), Format.CHAT)
    assert record is not None and not [f for f in findings if f.severity == "error"]
    served = copy.deepcopy(CONVERSATION)
    served[2] = {**served[2], "refusal": None, "audio": None, "annotations": []}  # as the client echoes it
    messages, problems = request_messages(served)
    assert problems == []
    trained = renderer.chat_text(record.messages[:-1], record.tools, generation_prompt=True)
    assert renderer.chat_text(messages[:-1], TOOLS, generation_prompt=True) == trained
    assert "Weather in Oslo?" in trained and "get_weather" in trained and "sunny" in trained


def test_a_template_that_renders_developer_keeps_it(tokenizer) -> None:
    assert developer_role(tokenizer) == "developer"
    assert "<|im_start|>developer\nAnswer briefly." in Renderer(tokenizer).chat_text(CONVERSATION[:1])


@pytest.mark.parametrize("template", [DROPPING, RAISING])
def test_developer_becomes_system_where_the_template_would_lose_it(tokenizer, template: str) -> None:
    tokenizer.chat_template = template
    renderer = Renderer(tokenizer)
    assert renderer.developer == "system"
    messages = [{"role": "developer", "content": "Answer briefly."}, {"role": "user", "content": "hi"}]
    assert "<system>Answer briefly." in renderer.chat_text(messages)  # training and serving alike
    assert template_messages(messages, renderer.developer)[0]["role"] == "system"


@pytest.mark.parametrize(("message", "words"), [
    ({"role": "user", "content": "hi", "weight": 1}, "weight"),
    ({"role": "wizard", "content": "hi"}, "unrecognized role"),
    ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}, "text parts"),
    ({"role": "assistant", "content": "x", "refusal": "I will not"}, "refusal"),
])
def test_what_a_request_message_cannot_carry_is_an_error(message: dict, words: str) -> None:
    _, findings = request_messages([message])
    assert any(words in f.message for f in findings if f.severity == "error")
