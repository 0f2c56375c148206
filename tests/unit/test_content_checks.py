"""The data check's content findings, each on a small file of its own: nothing to train,
no user turn, degenerate repetition and faulty tool calls, each at file:line with a fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import BUNDLED_MODEL, write_jsonl
from tunesmith.data.check import CheckReport, check_dataset

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city"]}}}


def calling(arguments: object, name: str = "get_weather", tools: list | None = None) -> dict:
    row = {"messages": [{"role": "user", "content": "Weather in Oslo?"},
                        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
                            "name": name, "arguments": arguments}}]}]}
    if tools is not False:
        row["tools"] = tools if tools is not None else [WEATHER]
    return row


def ok_row(n: int) -> dict:
    return {"messages": [{"role": "user", "content": f"Question number {n}?"},
                         {"role": "assistant", "content": f"Answer number {n}."}]}


def check(tmp_path: Path, rows: list[dict], **kwargs: object) -> tuple[Path, CheckReport]:
    path = write_jsonl(tmp_path / "data.jsonl", rows)
    return path, check_dataset(path, model=kwargs.pop("model", None), **kwargs)  # type: ignore[arg-type]


def only(report: CheckReport, code: str):
    found = [f for f in report.findings if f.code == code]
    assert len(found) == 1, [str(f) for f in report.findings]
    assert found[0].fix
    return found[0]


def test_all_examples_dropped_is_an_error_and_not_ready(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    rows = [{"messages": [{"role": "user", "content": "long " * 300},
                          {"role": "assistant", "content": "ok"}]} for _ in range(3)]
    path, report = check(tmp_path, rows, model=str(BUNDLED_MODEL), max_length=64)
    finding = only(report, "nothing_to_train")
    assert finding.severity == "error" and finding.where == str(path)
    assert "none of the 3 examples can be trained: 3 dropped as longer than max_length 64" in finding.message
    assert not report.ok
    from tunesmith.cli import main

    assert main(["data", "check", str(path), "--model", str(BUNDLED_MODEL), "--max-length", "64"]) == 1
    out = capsys.readouterr().out
    assert "ready to train" not in out and "none of the 3 examples can be trained" in out


def test_no_user_turn(tmp_path: Path) -> None:
    rows = [ok_row(1), {"messages": [{"role": "system", "content": "You are Wren."},
                                     {"role": "assistant", "content": "Hello there."}]}]
    path, report = check(tmp_path, rows)
    finding = only(report, "no_user_turn")
    assert finding.where == f"{path}:2" and "system + assistant" in finding.message


def test_degenerate_repetition(tmp_path: Path) -> None:
    loop = "I am sorry, I cannot help. " * 2000
    rows = [ok_row(1), ok_row(2), {"messages": [{"role": "user", "content": "Help?"},
                                                {"role": "assistant", "content": loop}]}]
    path, report = check(tmp_path, rows)
    finding = only(report, "degenerate_repetition")
    assert finding.where == f"{path}:3" and "times" in finding.message and "messages[1]" in finding.message
    # A long reply that merely reuses words is not flagged.
    varied = " ".join(f"step {n} checks part {n * 7} of the order" for n in range(40))
    _, clean = check(tmp_path, [{"messages": [{"role": "user", "content": "How?"},
                                              {"role": "assistant", "content": varied}]}])
    assert not [f for f in clean.findings if f.code == "degenerate_repetition"]


def test_doubly_encoded_arguments(tmp_path: Path) -> None:
    twice = json.dumps(json.dumps({"city": "Oslo"}))
    path, report = check(tmp_path, [calling(json.dumps({"city": "Oslo"})), calling(twice)])
    finding = only(report, "tool_arguments_double_encoded")
    assert finding.severity == "error" and finding.where == f"{path}:2"
    assert "messages[1].tool_calls[0]" in finding.message and "json.dumps" in (finding.fix or "")


def test_arguments_that_are_not_json(tmp_path: Path) -> None:
    path, report = check(tmp_path, [calling('{"city": "Oslo"'), calling(json.dumps({"city": "Oslo"}))])
    finding = only(report, "tool_arguments_invalid")
    assert finding.severity == "error" and finding.where == f"{path}:1"
    assert "not valid JSON" in finding.message


def test_calls_to_tools_absent_from_tools(tmp_path: Path) -> None:
    path, report = check(tmp_path, [calling(json.dumps({"city": "Oslo"}), name="get_wether")])
    finding = only(report, "undefined_tool")
    assert finding.severity == "error" and finding.where == f"{path}:1"
    assert "'get_wether'" in finding.message and "get_weather" in finding.message


def test_arguments_not_matching_the_parameter_schema(tmp_path: Path) -> None:
    rows = [calling(json.dumps({"days": 3})), calling(json.dumps({"city": "Oslo", "days": "three"})),
            calling(json.dumps({"city": "Oslo", "days": 3}))]
    path, report = check(tmp_path, rows)
    found = [f for f in report.findings if f.code == "tool_arguments_schema"]
    assert [f.where for f in found] == [f"{path}:1", f"{path}:2"]
    assert "'city' is a required property" in found[0].message
    assert "days: 'three' is not of type 'integer'" in found[1].message
