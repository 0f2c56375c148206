"""Tools, refused parameters and seeds through the official openai client against a real
`tunesmith serve` process."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.serve.forced import forced_model
from tests.serve.server import Server
from tests.serve.test_security import babbler

CALL = '\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
HERMES = ["Let me look.", "<tool_call>", CALL, "</tool_call>"]
LLAMA = ['{"name": "get_weather", "parameters": {"city": "Paris"}}']
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}}]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def _register(server: Server, folder: Path, suffix: str) -> str:
    from tunesmith.store import open_registry

    registry = open_registry(home=server.home)
    try:
        return registry.add_model(base_model="tunesmith/tiny-chat", kind="full", recipe={}, suffix=suffix,
                                  path=str(folder)).name
    finally:
        registry.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    home = tmp_path_factory.mktemp("tools-home")
    server = Server(home, home / "server.log", ("--no-worker",), env={"HF_HUB_OFFLINE": "1"}).start()
    models = {"hermes": _register(server, forced_model(home / "hermes", HERMES), "hermes"),
              "llama": _register(server, forced_model(home / "llama", LLAMA), "llama"),
              "babbler-a": _register(server, babbler(home / "babbler-a"), "babbler-a"),
              "babbler-b": _register(server, babbler(home / "babbler-b"), "babbler-b")}
    yield server, models
    server.stop()


@pytest.fixture(scope="module")
def client(served: tuple[Server, dict[str, str]]) -> openai.OpenAI:
    return openai.OpenAI(base_url=served[0].url, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def models(served: tuple[Server, dict[str, str]]) -> dict[str, str]:
    return served[1]


def test_hermes_tool_calls_reach_the_client(client: openai.OpenAI, models: dict[str, str]) -> None:
    done = client.chat.completions.create(model=models["hermes"], messages=ASK, tools=TOOLS)
    choice = done.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me look."
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}


def test_llama_json_tool_calls_reach_the_client(client: openai.OpenAI, models: dict[str, str]) -> None:
    done = client.chat.completions.create(model=models["llama"], messages=ASK, tools=TOOLS)
    choice = done.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls] == \
        [("get_weather", {"city": "Paris"})]


def test_streamed_tool_calls_arrive_as_the_hosted_api_sends_them(client: openai.OpenAI,
                                                                 models: dict[str, str]) -> None:
    chunks = list(client.chat.completions.create(model=models["hermes"], messages=ASK, tools=TOOLS,
                                                 stream=True))
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    assert content == "Let me look."  # no piece of the call leaked into the text
    first, second = deltas
    assert first.index == 0 and first.id.startswith("call_") and first.function.name == "get_weather"
    assert first.function.arguments == "" and second.id is None and second.function.name is None
    assert json.loads(second.function.arguments) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_a_tool_conversation_goes_back_to_the_model(client: openai.OpenAI, models: dict[str, str]) -> None:
    """The assistant message the client got back, its tool result, then the next reply."""
    done = client.chat.completions.create(model=models["hermes"], messages=ASK, tools=TOOLS)
    message = done.choices[0].message
    call = message.tool_calls[0]
    again = client.chat.completions.create(
        model=models["hermes"], tools=TOOLS,
        messages=[*ASK, message.model_dump(), {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    assert again.choices[0].finish_reason == "tool_calls"


def test_tool_choice_none_reads_no_calls(client: openai.OpenAI, models: dict[str, str]) -> None:
    done = client.chat.completions.create(model=models["hermes"], messages=ASK, tools=TOOLS,
                                          tool_choice="none")
    assert done.choices[0].message.tool_calls is None and done.choices[0].finish_reason == "stop"
    assert "<tool_call>" in done.choices[0].message.content  # the text as the model wrote it


def test_parallel_tool_calls_false_gives_at_most_one_call(client: openai.OpenAI, tmp_path: Path,
                                                          served: tuple[Server, dict[str, str]]) -> None:
    # each piece must be its own token, so the second call is written slightly differently
    pieces = ["<tool_call>", CALL, "</tool_call>", "\n<tool_call>", CALL.strip(), "</tool_call>\n"]
    twice = _register(served[0], forced_model(tmp_path / "twice", pieces), "twice")
    many = client.chat.completions.create(model=twice, messages=ASK, tools=TOOLS)
    one = client.chat.completions.create(model=twice, messages=ASK, tools=TOOLS, parallel_tool_calls=False)
    assert len(many.choices[0].message.tool_calls) == 2
    assert len(one.choices[0].message.tool_calls) == 1


def _deep(levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


@pytest.mark.parametrize(("fields", "param"), [
    ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ({"response_format": {"type": "json_object", "schema": {}}}, "response_format.schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}}},
     "response_format.json_schema.name"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "$ref": "https://example.com/schema.json"}}}}, "response_format.json_schema.schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": _deep(40)}}},
     "response_format.json_schema.schema"),
    ({"response_format": {"type": "json_object"}, "tools": TOOLS}, "response_format"),
    ({"tools": TOOLS, "tool_choice": "required"}, "tool_choice"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
     "tool_choice"),
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "x", "strict": True}}]},
     "tools[0].function.strict"),
    ({"frequency_penalty": 0.5}, "frequency_penalty"),
    ({"logprobs": True}, "logprobs"),
    ({"logit_bias": {"42": 5}}, "logit_bias"),
    ({"extra_body": {"best_of": 3}}, "best_of"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages"),
    ({"messages": [*ASK, {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "x"}}]}]},
     "messages[1].tool_calls[0]"),
])
def test_what_the_server_does_not_honour_is_refused(client: openai.OpenAI, models: dict[str, str],
                                                    fields: dict, param: str) -> None:
    arguments = {"model": models["hermes"], "messages": ASK, **fields}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**arguments)
    assert caught.value.status_code == 400
    assert caught.value.body["param"] == param and caught.value.body["message"]


def test_default_values_of_unimplemented_parameters_are_served(client: openai.OpenAI,
                                                               models: dict[str, str]) -> None:
    done = client.chat.completions.create(model=models["hermes"], messages=ASK, frequency_penalty=0,
                                          presence_penalty=0, logprobs=False,
                                          response_format={"type": "text"}, max_tokens=4)
    assert done.choices[0].message.content


def test_a_template_that_ignores_tools_is_refused(client: openai.OpenAI, tmp_path: Path,
                                                  served: tuple[Server, dict[str, str]]) -> None:
    folder = forced_model(tmp_path / "plain", ["hello"])
    (folder / "chat_template.jinja").write_text(
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    plain = _register(served[0], folder, "plain")
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=plain, messages=ASK, tools=TOOLS)
    assert caught.value.body["param"] == "tools"
    assert client.chat.completions.create(model=plain, messages=ASK).choices[0].message.content == "hello"


def _sample(client: openai.OpenAI, model: str, seed: int) -> str:
    done = client.chat.completions.create(model=model, messages=ASK, seed=seed, temperature=1.0,
                                          max_tokens=48)
    return done.choices[0].message.content or ""


def test_seeded_requests_are_reproducible_under_concurrency(client: openai.OpenAI,
                                                            models: dict[str, str]) -> None:
    """Two models (two bases, so two generations really run at once), each asked with its own
    seed alone and then at the same time as the other: every reply is the one it gave alone."""
    seeds = {"babbler-a": 7, "babbler-b": 11}
    alone = {name: _sample(client, models[name], seed) for name, seed in seeds.items()}
    assert alone["babbler-a"] != _sample(client, models["babbler-a"], 8)  # the seed matters
    together: dict[str, list[str]] = {"babbler-a": [], "babbler-b": []}
    barrier = threading.Barrier(2)

    def ask(name: str, seed: int) -> None:
        for _ in range(3):
            barrier.wait(timeout=60)
            together[name].append(_sample(client, models[name], seed))

    threads = [threading.Thread(target=ask, args=("babbler-a", 7)), threading.Thread(target=ask,
                                                                                     args=("babbler-b", 11))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert together == {name: [text] * 3 for name, text in alone.items()}


def test_tunesmith_chat_takes_an_alias_and_tools(served: tuple[Server, dict[str, str]],
                                                 models: dict[str, str], tmp_path: Path) -> None:
    """`tunesmith chat NAME@label --tools FILE`: the registry alias resolves like eval's and
    export's, the tools reach the template, the call is shown and its result goes back."""
    from tests.serve.server import cli
    from tunesmith.store import open_registry

    server = served[0]
    registry = open_registry(home=server.home)
    try:
        registry.set_alias("weather-bot@production", models["hermes"])
    finally:
        registry.close()
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps(TOOLS))
    out = cli(server.home, "chat", "weather-bot@production", "--tools", str(tools), "-m", "Weather in Paris?",
              "-m", "sunny")
    assert 'tool call get_weather({"city": "Paris"})' in out
    assert "tool get_weather> sunny" in out  # the second line answered the call
    with pytest.raises(subprocess.CalledProcessError) as caught:
        cli(server.home, "chat", "weather-bot@staging", "-m", "hi")
    assert "weather-bot@staging" in caught.value.stderr
    client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)
    done = client.chat.completions.create(model="weather-bot@production", messages=ASK, tools=TOOLS)
    assert done.choices[0].message.tool_calls[0].function.name == "get_weather"  # the server reads it too


SCHEMA = {"type": "object", "properties": {"colour": {"type": "string", "enum": ["red", "blue"]},
                                           "ok": {"type": "boolean"}}, "required": ["colour", "ok"]}


@pytest.mark.parametrize("response_format", [
    {"type": "json_object"},
    {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True}}])
def test_response_format_holds_every_reply_to_json(client: openai.OpenAI, response_format: dict) -> None:
    """Constrained decoding: every reply that ends by itself is valid JSON (of the schema), sampled
    or greedy, streamed or not; the tiny model left alone writes no JSON at all."""
    import jsonschema

    free = client.chat.completions.create(model="tunesmith/tiny-chat", messages=ASK, max_tokens=40,
                                          temperature=0)
    assert not _is_json(free.choices[0].message.content or "")
    done = client.chat.completions.create(model="tunesmith/tiny-chat", messages=ASK, max_tokens=240,
                                          temperature=1.0, seed=3, n=3, response_format=response_format)
    ended = [c for c in done.choices if c.finish_reason == "stop"]
    assert ended, [c.message.content for c in done.choices]
    for choice in ended:
        value = json.loads(choice.message.content or "")
        assert isinstance(value, dict)
        if response_format["type"] == "json_schema":
            jsonschema.validate(value, SCHEMA)
    for choice in done.choices:
        if choice.finish_reason == "length":  # cut by max_tokens: a prefix of JSON, as the hosted API gives
            assert (choice.message.content or "").lstrip().startswith("{")
    pieces = client.chat.completions.create(model="tunesmith/tiny-chat", messages=ASK, max_tokens=240,
                                            temperature=0, response_format=response_format, stream=True)
    text, finish = "", None
    for chunk in pieces:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    if finish == "stop":
        assert isinstance(json.loads(text), dict)
    else:
        assert text.lstrip().startswith("{")


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
