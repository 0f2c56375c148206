"""The Ollama Modelfile: a Go TEMPLATE that builds the same prompt text as the chat template
tunesmith trained with.

Jinja chat templates cannot be translated in general, so tunesmith knows a few template
families, each as a Go template. A family is used only after rendering sample
conversations both ways gives identical text; otherwise the export fails and names the
template, rather than shipping a Modelfile that prompts the model differently.
"""

from __future__ import annotations

import re
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
    template: Callable[[Any], str | None]   # tokenizer -> Go template (None: not this family)
    stops: Callable[[Any], list[str]]


def _chatml(tokenizer: Any) -> str:
    return ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
            "{{ end }}<|im_start|>assistant\n")


def _chatml_default_system(tokenizer: Any) -> str | None:
    """ChatML that writes a default system prompt when the conversation has none (SmolLM2, Qwen2.5)."""
    head = "<|im_start|>system\n"
    text = _render_or_none(tokenizer, [{"role": "user", "content": "Hello"}]) or ""
    if not text.startswith(head) or "<|im_end|>" not in text:
        return None
    default = text[len(head):text.index("<|im_end|>")]
    if "{{" in default or "}}" in default:
        return None
    return ("{{- range $i, $m := .Messages }}{{ if and (eq $i 0) (ne $m.Role \"system\") }}"
            "<|im_start|>system\n" + default + "<|im_end|>\n{{ end }}"
            "<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n")


def _llama3(tokenizer: Any) -> str:
    return ((tokenizer.bos_token or "") + "{{- range .Messages }}<|start_header_id|>{{ .Role }}"
            "<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{ end }}"
            "<|start_header_id|>assistant<|end_header_id|>\n\n")


def _mistral(tokenizer: Any) -> str:
    return ((tokenizer.bos_token or "") + "{{- range .Messages }}"
            "{{- if eq .Role \"system\" }}[SYSTEM_PROMPT]{{ .Content }}[/SYSTEM_PROMPT]"
            "{{- else if eq .Role \"user\" }}[INST]{{ .Content }}[/INST]"
            "{{- else if eq .Role \"assistant\" }}{{ .Content }}" + (tokenizer.eos_token or "") +
            "{{- end }}{{ end }}")


def _gemma(tokenizer: Any) -> str:
    return ((tokenizer.bos_token or "") + "{{- range .Messages }}<start_of_turn>"
            "{{ if eq .Role \"assistant\" }}model{{ else }}{{ .Role }}{{ end }}\n"
            "{{ .Content }}<end_of_turn>\n"
            "{{ end }}<start_of_turn>model\n")


def _phi3(tokenizer: Any) -> str:
    return "{{- range .Messages }}<|{{ .Role }}|>\n{{ .Content }}<|end|>\n{{ end }}<|assistant|>\n"


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
    Family("chatml-default-system", _chatml_default_system, lambda t: ["<|im_end|>", "<|im_start|>"]),
    Family("llama3", _llama3, lambda t: ["<|eot_id|>", "<|start_header_id|>"]),
    Family("mistral", _mistral, lambda t: [t.eos_token, "[INST]"]),
    Family("gemma", _gemma, lambda t: ["<end_of_turn>", "<start_of_turn>"]),
    Family("phi3", _phi3, lambda t: ["<|end|>", "<|user|>", "<|assistant|>"]),
    Family("tunesmith-fallback", _tunesmith_fallback, lambda t: [t.eos_token, "### User:"]),
]


def _render_or_none(tokenizer: Any, messages: list[dict[str, str]]) -> str | None:
    try:
        return jinja_prompt(tokenizer, messages)
    except Exception:  # a template may refuse a conversation (raise_exception); then no default is read
        return None


def jinja_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def go_prompt(template: str, messages: list[dict[str, str]]) -> str:
    """What Ollama renders: its messages carry .Role and .Content."""
    return gotemplate.render(template, {"Messages": [{"Role": m["role"], "Content": m["content"]}
                                                     for m in messages]})


def translate(tokenizer: Any) -> tuple[Family, str]:
    """The family whose Go template renders every probe exactly as the chat template does."""
    expected = []
    for number, probe in enumerate(PROBES, 1):
        try:
            expected.append(jinja_prompt(tokenizer, probe))
        except Exception as exc:  # jinja2 raises TemplateError, templates raise_exception(...)
            raise _refusal(tokenizer, f"the chat template refuses sample conversation {number} "
                                      f"({_roles(probe)}): {exc}") from exc
    closest: tuple[int, str] = (-1, "")
    for family in FAMILIES:
        template = family.template(tokenizer)
        if template is None:
            continue
        for number, (probe, text) in enumerate(zip(PROBES, expected, strict=True), 1):
            got = go_prompt(template, probe)
            if got != text:
                at = next((i for i, (a, b) in enumerate(zip(got, text, strict=False)) if a != b),
                          min(len(got), len(text)))
                score = (number - 1) * 100000 + at
                if score > closest[0]:
                    closest = (score, f"the nearest, {family.name}, renders sample conversation {number} "
                                      f"({_roles(probe)}) differently from character {at}: Jinja gives "
                                      f"{text[at:at + 40]!r}, the Go template {got[at:at + 40]!r}")
                break
        else:
            return family, template
    reasons = [why for pattern, why in UNTRANSLATABLE if re.search(pattern, tokenizer.chat_template or "")]
    raise _refusal(tokenizer, "; ".join([*reasons, closest[1]]))


# Jinja features a Go template cannot reproduce, named when a template matches no family.
UNTRANSLATABLE = [
    (r"\|\s*trim\b|\.strip\(\)", "it trims each message's content (Jinja trim/strip), which Ollama's Go "
                                  "templates cannot do"),
    (r"strftime_now|Today Date", "it writes the current date"),
    (r"raise_exception", "it refuses some conversations (raise_exception)"),
    (r"\btools\b", "it renders tool definitions"),
]


def _roles(probe: list[dict[str, str]]) -> str:
    return ", ".join(m["role"] for m in probe)


def _refusal(tokenizer: Any, why: str) -> ExportError:
    first_line = (tokenizer.chat_template or "").strip().splitlines()[0][:80]
    return ExportError(
        f"the chat template cannot be written as an Ollama TEMPLATE that renders the same prompts: {why} "
        f"(known families: {', '.join(f.name for f in FAMILIES)}; the template begins {first_line!r})",
        where="--format gguf",
        fix="the GGUF file carries the chat template itself (llama.cpp and LM Studio read it); for Ollama "
            "write the Modelfile TEMPLATE by hand")


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
