"""Chat templates chosen by the recipe (`data.chat_template`): a file or a built-in name.

A model's own template is the default. Some templates drop fields a user trains on (many
ChatML templates ignore `tools` and `tool_calls`), so a recipe may name another one. The
chosen template is set on the tokenizer before anything is rendered, and the tokenizer is
saved with the trained adapter, so chat, evaluation, export and serving render exactly
what training rendered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunesmith.errors import RecipeError

TEXT_MACRO = (
    "{%- macro text(content) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- elif content is iterable -%}{%- for part in content -%}"
    "{%- if part.type == 'text' -%}{{ part.text }}{%- endif -%}{%- endfor -%}"
    "{%- endif -%}{%- endmacro -%}"
)
"""Jinja macro `text(content)`: a message's content, a string or its text parts joined."""

HERMES_TOOL_CALL = (
    "{%- set call = tc.function if tc.function is defined else tc -%}"
    "{%- if body or not loop.first -%}{{- '\\n' -}}{%- endif -%}"
    "{{- '<tool_call>\\n{\"name\": ' ~ (call.name | tojson) ~ ', \"arguments\": ' -}}"
    "{%- if call.arguments is string -%}{{- call.arguments -}}"
    "{%- else -%}{{- call.arguments | tojson -}}{%- endif -%}"
    "{{- '}\\n</tool_call>' -}}"
)
"""Jinja for one tool call `tc` of an assistant turn whose text is `body`, in the Hermes style
(JSON inside <tool_call> tags, on a line of its own after any text). The one source of this
block: chatml-tools below and the bundled tiny model's template (scripts/tiny_chat_model.py)
both use it, so model/tool_calls.py reads back what either renders."""

# ChatML with tools and tool calls in the Hermes style (tool definitions in a <tools> block
# of the system turn, each call as JSON inside <tool_call> tags, results inside
# <tool_response> tags of a user turn). Written here because tunesmith must offer one
# template that keeps every field of OpenAI's chat format; it follows the layout that
# Qwen2.5 and NousResearch's Hermes models were trained on. It knows the roles those models
# know and refuses any other: how a `developer` message reaches it (as `system`) is decided
# in one place for every template, data/prompt.py's developer_role.
CHATML_TOOLS = (
    TEXT_MACRO
    + "{%- for message in messages -%}"
    "{%- if message.role not in ['system', 'user', 'assistant', 'tool'] -%}"
    "{{- raise_exception('chatml-tools renders the roles system, user, assistant and tool, not ' "
    "~ message.role) -}}"
    "{%- endif -%}{%- endfor -%}"
    "{%- set ns = namespace(start=0) -%}"
    "{%- if tools -%}"
    "{{- '<|im_start|>system\\n' -}}"
    "{%- if messages and messages[0].role == 'system' -%}"
    "{%- set ns.start = 1 -%}{{- text(messages[0].content) ~ '\\n\\n' -}}{%- endif -%}"
    "{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n'"
    " ~ 'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' -}}"
    "{%- for tool in tools -%}{{- '\\n' ~ (tool | tojson) -}}{%- endfor -%}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and '"
    " ~ 'arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n'"
    " ~ '{\"name\": <function-name>, \"arguments\": <args-json-object>}\\n</tool_call><|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages[ns.start:] -%}"
    "{%- if message.role == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- set body = text(message.content) -%}{{- body -}}"
    "{%- for tc in message.tool_calls or [] -%}"
    + HERMES_TOOL_CALL
    + "{%- endfor -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- elif message.role == 'tool' -%}"
    "{%- if loop.first or messages[ns.start + loop.index0 - 1].role != 'tool' -%}"
    "{{- '<|im_start|>user' -}}{%- endif -%}"
    "{{- '\\n<tool_response>\\n' ~ text(message.content) ~ '\\n</tool_response>' -}}"
    "{%- if loop.last or messages[ns.start + loop.index0 + 1].role != 'tool' -%}"
    "{{- '<|im_end|>\\n' -}}{%- endif -%}"
    "{%- else -%}"
    "{{- '<|im_start|>' ~ message.role ~ '\\n' ~ text(message.content) ~ '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

BUILTIN_TEMPLATES: dict[str, str] = {"chatml-tools": CHATML_TOOLS}
"""Built-in templates by name (docs/data-formats.md)."""

KEY = "data.chat_template"


def is_builtin(value: str) -> bool:
    return value in BUILTIN_TEMPLATES


def resolve_chat_template(value: str) -> str:
    """The Jinja text of a recipe's `data.chat_template`: a built-in name or a file
    (a .jinja/.txt template, or a tokenizer_config.json whose chat_template is used)."""
    if value in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[value]
    path = Path(value).expanduser()
    names = ", ".join(BUILTIN_TEMPLATES)
    if not path.is_file():
        raise RecipeError(f"chat template {value!r} is neither a built-in template nor a file",
                          where=KEY, fix=f"use a built-in ({names}) or the path of a .jinja file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"cannot read chat template {path}: {exc}", where=KEY) from None
    if path.suffix == ".json":
        import json

        try:
            text = json.loads(text).get("chat_template") or ""
        except (json.JSONDecodeError, AttributeError):
            text = ""
        if not isinstance(text, str) or not text:
            raise RecipeError(f"{path} holds no chat_template string", where=KEY,
                              fix="point it at a .jinja file or a tokenizer_config.json with one")
    if not text.strip():
        raise RecipeError(f"chat template file {path} is empty", where=KEY)
    return text


def apply_chat_template_choice(tokenizer: Any, value: str | None) -> bool:
    """Set the recipe's template on the tokenizer (it is saved with it); True when set."""
    if not value:
        return False
    tokenizer.chat_template = resolve_chat_template(value)
    return True
