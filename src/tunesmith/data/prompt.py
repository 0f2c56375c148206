"""One prompt preparation for training's renderer and for generation (chat, evaluation, the
server): which roles the chat template is given, what of a message reaches it, and which
messages a request may hold. Kept in one place so a tuned model is asked in the shape it
was trained on (a server that renamed `developer` to `system` while training did not was
train/serve skew)."""

from __future__ import annotations

from typing import Any

from tunesmith.data.findings import Finding
from tunesmith.data.records import Message, Source

_PROBE = "tunesmith-developer-probe"


def developer_role(tokenizer: Any) -> str:
    """The role a `developer` message is given to this tokenizer's chat template: itself when
    the template renders it, else `system` (many templates drop a role they do not know, or
    refuse it, which would lose the instruction without a word). The one place this is decided:
    tunesmith's own templates (data/templates.py's chatml-tools, data/render.py's fallback) name
    no `developer` role and refuse roles they do not know, so it reaches them as `system`."""
    probe = [{"role": "developer", "content": _PROBE}, {"role": "user", "content": "hi"}]
    try:
        text = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
    except Exception:  # a template that raises on a role it does not know
        return "system"
    return "developer" if isinstance(text, str) and _PROBE in text else "system"


def template_messages(messages: list[Message], developer: str = "developer") -> list[Message]:
    """The messages as the chat template sees them: tunesmith's own keys (weights) left out,
    `developer` given the role the template renders (see developer_role)."""
    prepared = []
    for message in messages:
        copy = {k: v for k, v in message.items() if k != "weight"}
        if copy.get("role") == "developer":
            copy["role"] = developer
        prepared.append(copy)
    return prepared


API_NULL_KEYS = ("refusal", "audio", "function_call", "annotations")
"""Keys the hosted API puts on the assistant messages it returns; a client that sends such a
message back carries them, empty. Empty they say nothing; with content they are refused."""


def request_messages(raw: list[dict[str, Any]], where: str = "messages") -> tuple[list[Message],
                                                                               list[Finding]]:
    """A request's messages, checked and normalised exactly like a training file's chat
    messages (roles, text content parts joined, tool_calls, tool_call_id, name), so a
    conversation reaches the template the same way at training and at generation time.
    Empty content is allowed here (a request may send it); `weight` is not (it is a
    training-file key)."""
    from tunesmith.data.findings import error
    from tunesmith.data.formats import _parse_messages

    source = Source(where, 0)
    findings: list[Finding] = []
    cleaned = []
    for index, message in enumerate(raw):
        if isinstance(message, dict):
            if "weight" in message:
                findings.append(error("unknown_key", f"unknown key 'weight' in {where}[{index}] (a "
                                      "training-file key)", source, "remove it"))
            message = {k: v for k, v in message.items() if not (k in API_NULL_KEYS and not v)}
        cleaned.append(message)
    messages, parsed = _parse_messages(cleaned, source, where)
    findings += [f for f in parsed if f.code != "missing_content"]
    return messages, findings
