"""Verdicts only from evidence: tool-call items are graded by tool-call graders, an item
nothing could grade is counted and shown, and with no graded item the verdict is "not
proven", whatever held-out loss says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import write_jsonl
from tunesmith.cli import main
from tunesmith.evaluate.graders import build_grader, reply_tool_calls
from tunesmith.evaluate.report import summarise

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

CITIES = ["Oslo", "Lima", "Rome", "Kyiv", "Doha", "Baku", "Riga", "Bern", "Oran", "Pune", "Nice", "Graz"]
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def call_row(city: str) -> dict:
    return {"messages": [{"role": "user", "content": f"Weather in {city}?"},
                         {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {
                             "name": "get_weather", "arguments": json.dumps({"city": city})}}]}],
            "tools": [WEATHER]}


def test_the_false_green_report_is_not_proven() -> None:
    # The case: better held-out loss against every baseline, every reference empty,
    # nothing generated, nothing graded. It used to read "green".
    report = {"examples": 4, "loss": {"tuned": {"loss": 0.4}, "base": {"loss": 2.1}}, "scores": {},
              "graded_items": 0, "ungraded_items": 4, "ungraded_sources": ["h.jsonl:1", "h.jsonl:2"],
              "comparisons": [{"baseline": b, "metric": "loss", "verdict": "better", "wins": 4, "ties": 0,
                               "losses": 0} for b in ("base", "fewshot", "retrieval")]}
    summary = summarise(report)
    assert summary["status"] == "not_proven"
    assert summary["lines"][0].startswith("not proven: no held-out reply was graded")
    assert any("4 of 4 held-out items could not be graded" in line and "h.jsonl:1" in line
               for line in summary["lines"])
    # Graded evidence that beats every baseline is what makes it green.
    graded = {**report, "graded_items": 4, "ungraded_items": 0, "comparisons": report["comparisons"] + [
        {"baseline": "base", "metric": "tool_call_arguments", "verdict": "better", "wins": 4, "ties": 0,
         "losses": 0}]}
    assert summarise(graded)["status"] == "green"
    # Harm stays visible without grades: worse loss is red.
    worse = {**report, "loss": {"tuned": {"loss": 3.0}, "base": {"loss": 2.1}}}
    assert summarise(worse)["status"] == "red"


def test_tool_call_graders_compare_function_and_arguments_as_json() -> None:
    item = {"tool_calls": [{"type": "function", "function": {"name": "get_weather",
                                                            "arguments": '{"city": "Oslo", "days": 2}'}}]}
    name = build_grader({"type": "tool_call_name"})
    arguments = build_grader({"type": "tool_call_arguments"})
    hermes = '<tool_call>\n{"name": "get_weather", "arguments": {"days": 2, "city": "Oslo"}}\n</tool_call>'
    assert reply_tool_calls(hermes) == [("get_weather", {"days": 2, "city": "Oslo"})]
    assert name(hermes, item) == 1.0 and arguments(hermes, item) == 1.0
    wrong_city = hermes.replace("Oslo", "Bergen")
    assert name(wrong_city, item) == 1.0 and arguments(wrong_city, item) == 0.0
    assert arguments('[{"name": "get_weather", "parameters": {"city": "Oslo", "days": 2}}]', item) == 1.0
    extra = hermes + hermes.replace("get_weather", "get_time")
    assert name(extra, item) == 0.5  # one right call out of two made
    grade = name.grade("It is sunny in Oslo.", item)
    assert grade.score == 0.0 and grade.error == "the reply holds no tool call"


@pytest.mark.usefixtures("one_torch_thread")
def test_train_prints_the_verdict_and_eval_uses_the_runs_validation_split(
        tmp_path: Path, tiny_model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_jsonl(tmp_path / "calls.jsonl", [call_row(city) for city in CITIES * 2])
    # No validation file: the run holds out its automatic split, and evaluates on it.
    code = main(["train", "--set", f"base_model={tiny_model_path}", "--set", f"data.train={data}",
                 "--set", f"output.dir={tmp_path}", "--set", "output.name=run",
                 "--set", "training.max_steps=2",
                 "--set", "training.batch_size=4", "--set", "evaluation.enabled=true",
                 "--set", "evaluation.max_new_tokens=24", "--set", "evaluation.bootstrap_samples=50",
                 "--set", "evaluation.max_train_examples=4"])
    assert code == 0
    out = capsys.readouterr().out
    assert "verdict: " in out and "tool_call_arguments" in out
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["examples"] == 2 and report["graded_items"] == 2
    assert set(report["scores"]) == {"tool_call_name", "tool_call_arguments"}
    assert "validation split" in report["data"]
    held = {i["source"] for i in report["examples_detail"]["items"]}
    assert all(source.startswith(str(data)) for source in held)

    # The same run with no grader: nothing graded, so not proven, and said so.
    code = main(["eval", str(tmp_path / "run"), "--set", "graders=[]", "--set", "bootstrap_samples=50",
                 "--set", "max_train_examples=4", "--out", str(tmp_path / "again")])
    assert code == 0
    out = capsys.readouterr().out
    assert "verdict: not proven" in out and "2 of 2 held-out items could not be graded" in out
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    assert again["summary"]["status"] == "not_proven" and again["ungraded_items"] == 2
