"""Shapes: detection per file, OpenAI's chat/DPO/RFT files load unchanged, and the
alternatives (prompt/chosen/rejected, prompt/completion, text) too."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import write_jsonl
from tunesmith.data.load import iter_parsed, load_dataset
from tunesmith.data.records import ChatRecord, Format, PreferenceRecord, ReinforcementRecord
from tunesmith.errors import DataError

CHAT = {
    "messages": [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "a"},
    ]
}


@pytest.mark.parametrize(
    ("row", "fmt"),
    [
        (CHAT, Format.CHAT),
        ({**CHAT, "tools": [{"type": "function", "function": {"name": "f"}}]}, Format.CHAT),
        ({"messages": [{"role": "user", "content": "2+2?"}], "answer": "4"}, Format.REINFORCEMENT),
        (
            {
                "input": {"messages": [{"role": "user", "content": "hi"}]},
                "preferred_output": [{"role": "assistant", "content": "Hello!"}],
                "non_preferred_output": [{"role": "assistant", "content": "What"}],
            },
            Format.PREFERENCE,
        ),
        ({"prompt": "hi", "chosen": "Hello!", "rejected": "What"}, Format.PREFERENCE),
        ({"prompt": "Q:", "completion": " A"}, Format.COMPLETION),
        ({"text": "Some domain document."}, Format.TEXT),
    ],
)
def test_detects_and_loads_each_shape(tmp_path: Path, row: dict, fmt: Format) -> None:
    dataset = load_dataset(write_jsonl(tmp_path / "d.jsonl", [row, row]))
    assert dataset.format == fmt
    assert len(dataset.records) == 2
    assert str(dataset.records[1].source).endswith("d.jsonl:2")


def test_openai_dpo_and_rft_fields_are_kept(tmp_path: Path) -> None:
    dpo = {
        "input": {"messages": [{"role": "user", "content": "hi"}], "tools": []},
        "preferred_output": [{"role": "assistant", "content": "Hello!"}],
        "non_preferred_output": [{"role": "assistant", "content": "What"}],
    }
    record = load_dataset(write_jsonl(tmp_path / "dpo.jsonl", [dpo])).records[0]
    assert isinstance(record, PreferenceRecord)
    assert record.chosen[0]["content"] == "Hello!" and record.rejected[0]["content"] == "What"
    rft = {"messages": [{"role": "user", "content": "Classify"}], "category": "billing", "score": 2}
    record = load_dataset(write_jsonl(tmp_path / "rft.jsonl", [rft])).records[0]
    assert isinstance(record, ReinforcementRecord) and record.fields == {"category": "billing", "score": 2}


def test_content_parts_and_tool_calls(tmp_path: Path) -> None:
    row = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "Weather in "}, {"type": "text", "text": "Oslo?"}],
            },
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "rain"},
            {"role": "assistant", "content": "It rains."},
        ]
    }
    record = load_dataset(write_jsonl(tmp_path / "t.jsonl", [row])).records[0]
    assert isinstance(record, ChatRecord)
    assert record.messages[0]["content"] == "Weather in Oslo?"
    assert record.messages[1]["tool_calls"][0]["function"]["name"] == "weather"


def test_format_override_and_stray_shape_reported(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "mixed.jsonl", [CHAT, {"text": "stray"}])
    parsed = list(iter_parsed(path))
    assert parsed[0].record is not None
    assert parsed[1].record is None
    assert {f.code for f in parsed[1].findings} == {"unknown_key", "missing_key"}
    assert "mixed.jsonl:2" in parsed[1].findings[0].where
    forced = list(iter_parsed(path, "text"))
    assert forced[1].record is not None and forced[0].record is None


def test_load_dataset_error_lists_lines(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"messages": [{"role": "robot", "content": "x"}]}\n{"messages": []}\n')
    with pytest.raises(DataError) as caught:
        load_dataset(path)
    text = str(caught.value)
    assert "bad.jsonl:1" in text and "robot" in text and "bad.jsonl:2" in text


def test_json_array_file_is_read_as_rows(tmp_path: Path) -> None:
    import json

    path = tmp_path / "data.json"
    path.write_text(json.dumps([CHAT, {"messages": [{"role": "user", "content": "no answer"}]}]))
    parsed = list(iter_parsed(path))
    assert parsed[0].record is not None
    assert parsed[1].findings[0].code == "no_assistant" and parsed[1].findings[0].where.endswith(
        "data.json:2"
    )
