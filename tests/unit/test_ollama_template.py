"""The Ollama TEMPLATE renders the same prompt text as the chat template used in training;
templates tunesmith cannot translate are refused by name; the Go-template renderer follows
Go's text/template rules for the part tunesmith uses."""

from __future__ import annotations

import pytest

from tunesmith.model.export import gotemplate
from tunesmith.model.export.errors import ExportError
from tunesmith.model.export.ollama import FAMILIES, go_prompt, jinja_prompt, modelfile, translate

CONVERSATIONS = [
    [{"role": "user", "content": "Où est mon colis ? 📦"}],
    [{"role": "system", "content": "You are Wren, Brightloom's support assistant.\nBe warm."},
     {"role": "user", "content": "My order #4412 never arrived."}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Refund, please.\n\nThanks"}, {"role": "assistant", "content": "Done."},
     {"role": "user", "content": "  trailing spaces  "}],
    [{"role": "user", "content": "{{ not a template }} {% raw %} <|im_start|> text"}],
]

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']"
          " + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\\n' }}{% endif %}")
CHATML_WITH_DEFAULT_SYSTEM = ("{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are helpful."
                              "<|im_end|>\n{% endif %}" + CHATML)
LLAMA2 = ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
          "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}{{ ' ' + message['content'] + ' '"
          " + eos_token }}{% endif %}{% endfor %}")


@pytest.fixture
def tokenizer(tiny_model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_path)


def assert_same_prompts(tokenizer) -> str:
    family, template = translate(tokenizer)
    for messages in CONVERSATIONS:
        assert go_prompt(template, messages) == jinja_prompt(tokenizer, messages)
    return family.name


def test_bundled_template_renders_the_same_in_ollama(tokenizer) -> None:
    assert assert_same_prompts(tokenizer) == "chatml"
    text = modelfile(tokenizer, "model-f16.gguf")
    assert "FROM ./model-f16.gguf" in text and 'PARAMETER stop "<|im_end|>"' in text
    template = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    assert go_prompt(template, CONVERSATIONS[1]) == jinja_prompt(tokenizer, CONVERSATIONS[1])


def test_plain_chatml_template(tokenizer) -> None:
    tokenizer.chat_template = CHATML
    assert assert_same_prompts(tokenizer) == "chatml"


def test_tunesmith_fallback_template(tokenizer) -> None:
    from tunesmith.data.render import FALLBACK_CHAT_TEMPLATE

    tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    assert assert_same_prompts(tokenizer) == "tunesmith-fallback"


def test_a_default_system_prompt_is_carried_into_the_go_template(tokenizer) -> None:
    """SmolLM2 and Qwen2.5 write a system prompt when the conversation has none."""
    from tests.gguf_families import SMOLLM2

    for template in (CHATML_WITH_DEFAULT_SYSTEM, SMOLLM2):
        tokenizer.chat_template = template
        assert assert_same_prompts(tokenizer) == "chatml-default-system"
    assert "You are a helpful AI assistant named SmolLM" in translate(tokenizer)[1]


LLAMA3_NO_TRIM = ("{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
                  "'<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}{% endfor %}"
                  "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
                  "{% endif %}")
GEMMA_NO_TRIM = ("{{ bos_token }}{% for message in messages %}"
                 "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
                 "{{ '<start_of_turn>' + role + '\\n' + message['content'] + '<end_of_turn>\\n' }}"
                 "{% endfor %}"
                 "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}")


def test_family_templates_render_the_same_in_ollama(tokenizer) -> None:
    from tests.gguf_families import MISTRAL, PHI3

    for template, family in ((LLAMA3_NO_TRIM, "llama3"), (MISTRAL, "mistral"), (GEMMA_NO_TRIM, "gemma"),
                             (PHI3, "phi3")):
        tokenizer.chat_template = template
        assert assert_same_prompts(tokenizer) == family, family
        stops = next(f for f in FAMILIES if f.name == family).stops(tokenizer)
        assert all(stops), family


@pytest.mark.parametrize("template", [LLAMA2])
def test_untranslatable_templates_are_refused_with_the_difference(tokenizer, template) -> None:
    tokenizer.chat_template = template
    with pytest.raises(ExportError, match="renders sample conversation 1") as caught:
        translate(tokenizer)
    assert template[:30] in caught.value.message


def test_trimming_templates_are_refused_saying_so(tokenizer) -> None:
    """Llama 3's and Gemma's own templates trim the content; Ollama's Go templates cannot."""
    from tests.gguf_families import GEMMA, LLAMA3

    for template in (LLAMA3, GEMMA):
        tokenizer.chat_template = template
        with pytest.raises(ExportError, match="trims each message's content"):
            translate(tokenizer)


def test_templates_that_refuse_a_conversation_are_refused_saying_which(tokenizer) -> None:
    tokenizer.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}"
                               "{{ raise_exception('System role not supported') }}{% endif %}"
                               "{{ m['content'] }}{% endfor %}")
    with pytest.raises(ExportError, match=r"refuses sample conversation 2 \(system, user\)"):
        translate(tokenizer)


@pytest.mark.parametrize(("template", "data", "expected"), [
    ("a  {{- .X }}", {"X": "b"}, "ab"),
    ("a {{ .X -}}  \n b", {"X": "1"}, "a 1b"),
    ("{{- range .M }}[{{ .R }}|{{ $.T }}]{{ end }}", {"M": [{"R": 1}, {"R": 2}], "T": "t"}, "[1|t][2|t]"),
    ('{{ if eq .R "a" }}A{{ else if eq .R "b" "c" }}BC{{ else }}?{{ end }}', {"R": "c"}, "BC"),
    ('{{ if or (eq .R "x") (not .E) }}yes{{ end }}', {"R": "y", "E": ""}, "yes"),
    ('{{ if and .A .B }}both{{ else }}not both{{ end }}', {"A": 1, "B": 0}, "not both"),
    ('{{- range $i, $m := .M }}{{ if eq $i 0 }}first {{ end }}{{ $m.R }}{{ .R }}{{ end }}',
     {"M": [{"R": "a"}, {"R": "b"}]}, "first aabb"),
    ('{{ range $m := .M }}{{ $m.R }}{{ $.T }}{{ end }}', {"M": [{"R": 1}, {"R": 2}], "T": "t"}, "1t2t"),
])
def test_go_template_rules(template, data, expected) -> None:
    assert gotemplate.render(template, data) == expected


@pytest.mark.parametrize("template", ["{{ with .X }}x{{ end }}", "{{ if .X }}open", "{{ len .X }}",
                                      "{{ $undefined }}"])
def test_go_template_refuses_what_it_does_not_know(template) -> None:
    with pytest.raises(gotemplate.GoTemplateError):
        gotemplate.render(template, {"X": [1]})
