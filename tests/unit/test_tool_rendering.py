"""Nothing trained is lost between the user's file and the tokens: OpenAI-format tool-calling
data on a template that drops tools (refused, naming the line and the fix) and on one that
keeps them (trained, with the call inside the trained span)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import BUNDLED_MODEL, write_jsonl
from tunesmith.data.check import check_dataset
from tunesmith.data.load import load_dataset
from tunesmith.data.render import Renderer, missing_fields
from tunesmith.data.templates import CHATML_TOOLS, apply_chat_template_choice, resolve_chat_template
from tunesmith.errors import DataError, RecipeError
from tunesmith.model.loading import ModelRef, load_tokenizer
from tunesmith.recipe import load_recipe

TEMPLATES = Path(__file__).resolve().parents[1] / "fixtures" / "templates"
SMOLLM2 = TEMPLATES / "smollm2.jinja"
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_current_weather", "description": "Get the current weather",
    "parameters": {"type": "object", "properties": {
        "location": {"type": "string"}, "format": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["location", "format"]}}}


def tool_call_row(city: str = "Glasgow, Scotland") -> dict:
    """The shape of OpenAI's function-calling fine-tuning example: tools at the top level and
    an assistant turn with only tool_calls."""
    arguments = json.dumps({"location": city, "format": "celsius"})
    return {"messages": [
        {"role": "system", "content": "Don't make assumptions about what values to plug into functions."},
        {"role": "user", "content": f"What's the weather like today in {city}?"},
        {"role": "assistant", "tool_calls": [{"id": "call_id", "type": "function", "function": {
            "name": "get_current_weather", "arguments": arguments}}]},
    ], "tools": [WEATHER_TOOL]}


@pytest.fixture()
def tokenizer():
    return load_tokenizer(ModelRef("tiny", str(BUNDLED_MODEL)))


def trained_text(tokenizer, example) -> str:
    return tokenizer.decode([t for t, m in zip(example.input_ids, example.loss_mask, strict=True) if m])


def test_template_that_drops_tools_is_refused_with_the_line(tmp_path: Path, tokenizer) -> None:
    path = write_jsonl(tmp_path / "calls.jsonl", [tool_call_row(), tool_call_row("Paris, France")])
    report = check_dataset(path, model=str(BUNDLED_MODEL), chat_template=str(SMOLLM2))
    assert not report.ok
    failed = [f for f in report.findings if f.code == "render_failed"]
    assert [f.where for f in failed] == [f"{path}:1", f"{path}:2"]
    assert "drops the tool definitions" in failed[0].message
    assert "data.chat_template" in (failed[0].fix or "")
    # Training stops with the same error, before any weight is loaded.
    apply_chat_template_choice(tokenizer, str(SMOLLM2))
    record = load_dataset(str(path)).records[0]
    with pytest.raises(DataError, match=rf"{path}:1.*drops the tool definitions"):
        Renderer(tokenizer).render(record)


def test_template_that_drops_the_call_but_not_the_tools_is_refused(tokenizer) -> None:
    # Tools are rendered, the assistant's tool_calls are not: the trained span would be empty.
    tokenizer.chat_template = (
        "{% if tools %}{{ tools | tojson }}{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}\n"
        "{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    from tunesmith.data.formats import parse_record
    from tunesmith.data.records import Format, Source

    record, _ = parse_record(tool_call_row(), Source("calls.jsonl", 3), Format.CHAT)
    with pytest.raises(DataError, match=r"calls.jsonl:3 \(messages\[2\]\).*tool call 'get_current_weather'"):
        Renderer(tokenizer).render(record)


def test_template_that_keeps_tools_trains_the_call(tmp_path: Path, tokenizer) -> None:
    path = write_jsonl(tmp_path / "calls.jsonl", [tool_call_row()])
    report = check_dataset(path, model=str(BUNDLED_MODEL), chat_template="chatml-tools")
    assert report.ok, [str(f) for f in report.findings if f.severity == "error"]
    apply_chat_template_choice(tokenizer, "chatml-tools")
    assert tokenizer.chat_template == CHATML_TOOLS
    example = Renderer(tokenizer).render(load_dataset(str(path)).records[0])
    trained = trained_text(tokenizer, example)
    call = trained[trained.index("{"): trained.rindex("}") + 1]
    assert json.loads(call) == {"name": "get_current_weather",
                                "arguments": {"location": "Glasgow, Scotland", "format": "celsius"}}
    assert trained.startswith("<tool_call>") and trained.endswith("</tool_call><|im_end|>")
    # The definitions are in the prompt, never trained.
    untrained = tokenizer.decode(
        [t for t, m in zip(example.input_ids, example.loss_mask, strict=True) if not m])
    assert '"name": "get_current_weather"' in untrained and "<tools>" in untrained


def test_missing_fields_finds_arguments_in_any_json_spacing() -> None:
    message = {"role": "assistant", "tool_calls": [{"type": "function", "function": {
        "name": "f", "arguments": '{"b": 2, "a": "x"}'}}]}
    assert missing_fields(message, '<call>{"name":"f","arguments":{"a":"x","b":2}}</call>') is None
    assert missing_fields(message, 'f(a="x", b=2)') is None  # every value present as text
    assert missing_fields(message, '<call>{"name": "f", "arguments": {"a": "x"}}</call>') == \
        "the arguments of the tool call 'f'"
    assert missing_fields(message, "<|im_end|>") == "the tool call 'f'"
    assert missing_fields({"role": "assistant", "content": "Hello\nworld"}, "Hello  world") is None
    assert missing_fields({"role": "assistant", "content": "Hello"}, "") == "the reply's text ('Hello')"


def test_recipe_key_accepts_builtins_and_files_relative_to_the_recipe(tmp_path: Path) -> None:
    (tmp_path / "my.jinja").write_text(SMOLLM2.read_text())
    (tmp_path / "recipe.yaml").write_text("data:\n  chat_template: my.jinja\n")
    recipe = load_recipe(tmp_path / "recipe.yaml")
    assert recipe.data.chat_template == str(tmp_path / "my.jinja")
    assert resolve_chat_template(recipe.data.chat_template) == SMOLLM2.read_text()
    (tmp_path / "builtin.yaml").write_text("data:\n  chat_template: chatml-tools\n")
    assert load_recipe(tmp_path / "builtin.yaml").data.chat_template == "chatml-tools"
    with pytest.raises(RecipeError, match="neither a built-in template nor a file") as info:
        resolve_chat_template(str(tmp_path / "absent.jinja"))
    assert info.value.where == "data.chat_template" and "chatml-tools" in (info.value.fix or "")


def test_the_template_trained_with_is_saved_with_the_adapter(tmp_path: Path, tiny_model_path: Path,
                                                              one_torch_thread: None) -> None:
    from tunesmith.model.inference import load_trained
    from tunesmith.train.loop import train

    rows = [tool_call_row(city) for city in ("Glasgow", "Paris", "Oslo", "Lima", "Kyiv", "Rome")]
    path = write_jsonl(tmp_path / "calls.jsonl", rows)
    recipe = load_recipe(None, [f"base_model={tiny_model_path}", f"data.train={path}",
                                "data.chat_template=chatml-tools", "data.validation_split=0",
                                f"output.dir={tmp_path}", "output.name=run", "training.max_steps=1",
                                "training.batch_size=2"])
    result = train(recipe)
    assert result.final_dir is not None
    loaded = load_trained(tmp_path / "run")
    assert loaded.tokenizer.chat_template == CHATML_TOOLS
