"""The Ollama Modelfile: a Go TEMPLATE that builds the same prompt text as the chat template
tunesmith trained with.

Jinja chat templates cannot be translated in general, so tunesmith knows a few template
families, each as a Go template. A family is used only after rendering sample
conversations both ways gives identical text; otherwise the export fails and names the
template, rather than shipping a Modelfile that prompts the model differently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.fsutil import atomic_write_text
from tunesmith.model.export import gotemplate
from tunesmith.model.export.errors import ExportError

PROBES: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "Hello"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
    [{"role": "user", "content": " spaced \n out "}, {"role": "assistant", "content": "Yes.\n\nTwo lines."},
     {"role": "user", "content": "And now?"}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"},
     {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}],
]


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    template: Callable[[Any], str]       # tokenizer -> Go template
    stops: Callable[[Any], list[str]]


def _chatml(tokenizer: Any) -> str:
    return ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
            "{{ end }}<|im_start|>assistant\n")


def _tunesmith_fallback(tokenizer: Any) -> str:
    return (
        (tokenizer.bos_token or "")
        + "{{- range .Messages }}"
        "{{- if or (eq .Role \"system\") (eq .Role \"developer\") }}{{ .Content }}\n\n"
        "{{ else if eq .Role \"user\" }}### User:\n{{ .Content }}\n\n"
        "{{ else if eq .Role \"assistant\" }}### Assistant:\n{{ .Content }}" + tokenizer.eos_token + "\n\n"
        "{{ else if eq .Role \"tool\" }}### Tool:\n{{ .Content }}\n\n"
        "{{ end }}{{ end }}### Assistant:\n")


FAMILIES = [
    Family("chatml", _chatml, lambda t: ["<|im_end|>", "<|im_start|>"]),
    Family("tunesmith-fallback", _tunesmith_fallback, lambda t: [t.eos_token, "### User:"]),
]


def jinja_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def go_prompt(template: str, messages: list[dict[str, str]]) -> str:
    """What Ollama renders: its messages carry .Role and .Content."""
    return gotemplate.render(template, {"Messages": [{"Role": m["role"], "Content": m["content"]}
                                                     for m in messages]})


def translate(tokenizer: Any) -> tuple[Family, str]:
    """The family whose Go template renders every probe exactly as the chat template does."""
    expected = [jinja_prompt(tokenizer, probe) for probe in PROBES]
    for family in FAMILIES:
        template = family.template(tokenizer)
        if all(go_prompt(template, probe) == text for probe, text in zip(PROBES, expected, strict=True)):
            return family, template
    first_line = (tokenizer.chat_template or "").strip().splitlines()[0][:120]
    raise ExportError(
        "the chat template is not one tunesmith can translate for Ollama "
        f"(known: {', '.join(f.name for f in FAMILIES)}); it begins: {first_line!r}",
        where="--format gguf",
        fix="the GGUF file itself carries the chat template (llama.cpp reads it); for Ollama write the "
            "Modelfile TEMPLATE by hand, or export with --format merged")


def modelfile(tokenizer: Any, gguf_name: str) -> str:
    family, template = translate(tokenizer)
    lines = [f"# Ollama Modelfile written by tunesmith; TEMPLATE: {family.name} (checked against the "
             "chat template used in training)", f"FROM ./{gguf_name}", f'TEMPLATE """{template}"""']
    lines += [f'PARAMETER stop "{stop}"' for stop in family.stops(tokenizer) if stop]
    lines.append("PARAMETER temperature 0")
    return "\n".join(lines) + "\n"


def write_modelfile(tokenizer: Any, path: Path, gguf_name: str) -> None:
    atomic_write_text(path, modelfile(tokenizer, gguf_name))


def check_modelfile(tokenizer: Any, path: Path) -> list[str]:
    """Problems with a written Modelfile: its TEMPLATE must render the sample conversations
    exactly as the chat template does (empty list when it does)."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if 'TEMPLATE """' not in text:
        return [f"{path.name} is missing or has no TEMPLATE"]
    template = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    for probe in PROBES:
        try:
            rendered = go_prompt(template, probe)
        except gotemplate.GoTemplateError as exc:
            return [f"{path.name} TEMPLATE cannot be rendered: {exc}"]
        if rendered != jinja_prompt(tokenizer, probe):
            return [f"{path.name} TEMPLATE renders a different prompt than the chat template"]
    return []
