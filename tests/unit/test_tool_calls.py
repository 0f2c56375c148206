"""Reading tool calls out of a model's reply, in each family's format, whole and streamed."""

from __future__ import annotations

import json

import pytest

from tunesmith.model.tool_calls import ToolCallStream, parse_tool_calls

NAMES = {"get_weather", "lookup"}


def _fn(call: dict) -> tuple[str, dict]:
    assert call["type"] == "function" and call["id"].startswith("call_")
    return call["function"]["name"], json.loads(call["function"]["arguments"])


def test_hermes_calls_are_read_and_removed_from_the_text() -> None:
    text = ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
            '</tool_call>\n<tool_call>{"name": "lookup", "arguments": {"q": "x"}}</tool_call>')
    content, calls = parse_tool_calls(text, NAMES)
    assert content == "Let me check."
    assert [_fn(c) for c in calls] == [("get_weather", {"city": "Paris"}), ("lookup", {"q": "x"})]
    assert calls[0]["id"] != calls[1]["id"]


def test_arguments_written_as_json_text_are_read_too() -> None:
    text = '<tool_call>{"name": "lookup", "arguments": "{\\"q\\": 1}"}</tool_call>'
    content, calls = parse_tool_calls(text, NAMES)
    assert content is None and [_fn(c) for c in calls] == [("lookup", {"q": 1})]


@pytest.mark.parametrize("text", [
    '{"name": "get_weather", "parameters": {"city": "Oslo"}}',
    '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Oslo"}}',
    '  [{"name": "get_weather", "arguments": {"city": "Oslo"}}]\n',
    '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Oslo"}}]',
])
def test_llama_and_mistral_json_calls(text: str) -> None:
    content, calls = parse_tool_calls(text, NAMES)
    assert content is None and [_fn(c) for c in calls] == [("get_weather", {"city": "Oslo"})]


@pytest.mark.parametrize("text", [
    "The weather is fine.",
    '{"name": "delete_everything", "parameters": {}}',        # not a declared function
    '{"answer": 42}',                                         # JSON that is no call
    '<tool_call>{"name": "lookup", "arguments": {"q": </tool_call>',  # broken JSON
    '<tool_call>{"name": "lookup", "arguments": [1]}</tool_call>',     # arguments not an object
    '[{"name": "lookup", "arguments": {}}, {"name": "nope", "arguments": {}}]',  # one is no call
])
def test_text_that_is_not_a_call_of_a_declared_function_stays_text(text: str) -> None:
    assert parse_tool_calls(text, NAMES) == (text, [])


def test_an_undeclared_hermes_block_stays_in_the_text_beside_a_real_call() -> None:
    text = '<tool_call>{"name": "nope", "arguments": {}}</tool_call><tool_call>{"name": "lookup", ' \
           '"arguments": {}}</tool_call>'
    content, calls = parse_tool_calls(text, NAMES)
    assert content == '<tool_call>{"name": "nope", "arguments": {}}</tool_call>'
    assert [_fn(c) for c in calls] == [("lookup", {})]


def _stream(pieces: list[str]) -> tuple[str, str, list[dict]]:
    reading = ToolCallStream(NAMES)
    sent = "".join(reading.feed(p) for p in pieces)
    rest, calls = reading.finish()
    return sent, rest, calls


def test_streamed_text_holds_back_a_hermes_call_split_over_pieces() -> None:
    text = 'Checking <tool_call>{"name": "lookup", "arguments": {"q": "x"}}</tool_call>'
    pieces = [text[i:i + 3] for i in range(0, len(text), 3)]
    reading = ToolCallStream(NAMES)
    sent_so_far = ""
    for piece in pieces:
        sent_so_far += reading.feed(piece)
        assert "<" not in sent_so_far  # never a piece of the marker or the call
    rest, calls = reading.finish()
    assert sent_so_far == "Checking " and rest == ""
    assert [_fn(c) for c in calls] == [("lookup", {"q": "x"})]


def test_a_streamed_json_call_is_held_whole() -> None:
    sent, rest, calls = _stream(["\n", '{"name": ', '"lookup", "parameters": ', '{}}'])
    assert sent == "" and rest == "" and [_fn(c) for c in calls] == [("lookup", {})]


@pytest.mark.parametrize("pieces", [["Hello", " there", ", friend."], ["<", "b>bold</b> text"],
                                    ['{"not": "a call"}'], ["a < b and <tool", "box"]])
def test_streamed_text_without_calls_arrives_whole(pieces: list[str]) -> None:
    sent, rest, calls = _stream(pieces)
    assert calls == [] and sent + rest == "".join(pieces)
