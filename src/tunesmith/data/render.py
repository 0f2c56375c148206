"""Render records into token ids and a loss mask, with the model's own chat template.

Masks are found in character space: the conversation is rendered once to text, the
character span of every trained assistant turn is found by rendering the conversation
up to that turn, and each token is trained on when it starts inside a span. This works
with any prefix-stable template (nearly all of them) without template-specific markers,
and it never tokenizes pieces separately, so token merges at boundaries match inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tunesmith.data.prompt import developer_role, template_messages
from tunesmith.data.records import (
    ChatRecord,
    CompletionRecord,
    Message,
    PreferenceRecord,
    Record,
    ReinforcementRecord,
    Source,
    TextRecord,
)
from tunesmith.errors import DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Used only when a tokenizer ships no chat template (documented in docs/data-formats.md).
# Every assistant turn ends with the EOS token so the model learns to stop.
FALLBACK_CHAT_TEMPLATE = (
    "{{ bos_token or '' }}"
    "{% for message in messages %}"
    "{% if message['role'] in ['system', 'developer'] %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}### User:\n{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'assistant' %}### Assistant:\n{{ message['content'] }}"
    "{{ eos_token }}\n\n"
    "{% else %}### {{ message['role'] | capitalize }}:\n{{ message['content'] }}\n\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}### Assistant:\n{% endif %}"
)


@dataclass(slots=True)
class RenderedExample:
    input_ids: list[int]
    loss_mask: list[int]
    source: Source

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def trained_tokens(self) -> int:
        return sum(self.loss_mask)


def ensure_chat_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Give a template-less tokenizer the fallback template; True when it was needed."""
    if tokenizer.chat_template:
        return False
    tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return True


class Renderer:
    """Turns records into `RenderedExample`s for one tokenizer.

    loss_on="assistant" trains on assistant turns with weight 1 (chat), on the completion
    (prompt/completion) and on all text (raw text); loss_on="all" trains on every token.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, loss_on: str = "assistant"):
        self.tokenizer = tokenizer
        self.loss_on = loss_on
        self.used_fallback_template = ensure_chat_template(tokenizer)
        self.developer = developer_role(tokenizer)  # shared with generation: see data/prompt.py
        self.special_ids = set(tokenizer.all_special_ids)
        self.eos_id = tokenizer.eos_token_id
        if self.eos_id is None:
            raise DataError("the tokenizer has no EOS token", fix="set eos_token in tokenizer_config.json")

    # --- text -------------------------------------------------------------------------

    def chat_text(self, messages: list[Message], tools: Any = None, generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(
            template_messages(messages, self.developer), tools=tools, tokenize=False,
            add_generation_prompt=generation_prompt)

    def prompt_ids(self, messages: list[Message], tools: Any = None) -> list[int]:
        """Token ids of a conversation followed by the assistant's generation prompt."""
        text = self.chat_text(messages, tools, generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def text_of(self, record: Record) -> str:
        """The full training text of a record, for token counting and previews."""
        if isinstance(record, ChatRecord):
            return self.chat_text(record.messages, record.tools)
        if isinstance(record, CompletionRecord):
            return record.prompt + record.completion
        if isinstance(record, TextRecord):
            return record.text
        if isinstance(record, PreferenceRecord):
            return self.chat_text(record.prompt + record.chosen, record.tools)
        if isinstance(record, ReinforcementRecord):
            return self.chat_text(record.messages, record.tools, generation_prompt=True)
        raise TypeError(f"unknown record type {type(record).__name__}")

    # --- token ids and masks ----------------------------------------------------------

    def render(self, record: Record) -> RenderedExample:
        """Ids and mask for supervised training; raises DataError when nothing is trained."""
        if isinstance(record, ChatRecord):
            example = self.render_chat(record.messages, record.source, record.tools)
        elif isinstance(record, CompletionRecord):
            example = self._render_plain(record.prompt, record.completion, record.source)
        elif isinstance(record, TextRecord):
            example = self._render_plain("", record.text, record.source)
        elif isinstance(record, PreferenceRecord):
            example = self.render_chat(record.prompt + record.chosen, record.source, record.tools)
        else:
            raise DataError(
                f"{record.format} examples are not trained with supervised fine-tuning",
                where=str(record.source), fix="use method: grpo for reinforcement data")
        if example.trained_tokens == 0:
            raise DataError("example has no tokens to learn from (empty loss mask)",
                            where=str(record.source),
                            fix="check that the assistant reply survives the chat template")
        return example

    def render_pair(self, record: PreferenceRecord) -> tuple[RenderedExample, RenderedExample]:
        """The preferred and non-preferred conversations, for preference objectives."""
        chosen = self.render_chat(record.prompt + record.chosen, record.source, record.tools,
                                  trained_from=len(record.prompt))
        rejected = self.render_chat(record.prompt + record.rejected, record.source, record.tools,
                                    trained_from=len(record.prompt))
        return chosen, rejected

    def render_chat(self, messages: list[Message], source: Source, tools: Any = None,
                    trained_from: int = 0) -> RenderedExample:
        full = self.chat_text(messages, tools)
        spans = []
        for index, message in enumerate(messages):
            if index < trained_from or message["role"] != "assistant" or not message.get("weight", 1):
                continue
            start = len(self._checked_prefix(full, messages[:index], tools, True, source))
            end = len(self._checked_prefix(full, messages[: index + 1], tools, False, source))
            # Whitespace the template puts after the end-of-turn token is not the answer.
            spans.append((start, start + len(full[start:end].rstrip())))
        encoded = self.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        ids: list[int] = list(encoded["input_ids"])
        offsets = encoded["offset_mapping"]
        if self.loss_on == "all":
            return self._finish(ids, [1] * len(ids), source, ends=[len(ids)])
        mask = [0] * len(ids)
        ends = []
        cursor = 0
        for start, end in spans:
            last = None
            while cursor < len(ids) and offsets[cursor][0] < end:
                if offsets[cursor][0] >= start and offsets[cursor][1] > offsets[cursor][0]:
                    mask[cursor] = 1
                    last = cursor
                cursor += 1
            if last is not None:
                ends.append(last + 1)
        return self._finish(ids, mask, source, ends)

    def _checked_prefix(self, full: str, messages: list[Message], tools: Any, generation_prompt: bool,
                        source: Source) -> str:
        prefix = self.chat_text(messages, tools, generation_prompt) if messages or generation_prompt else ""
        if not full.startswith(prefix):
            raise DataError(
                "the chat template renders earlier turns differently once later turns are added, "
                "so assistant turns cannot be located", where=str(source),
                fix="use a prefix-stable chat template (data.loss_on: all trains on every token)")
        return prefix

    def _render_plain(self, prompt: str, target: str, source: Source) -> RenderedExample:
        encoded = self.tokenizer(prompt + target, add_special_tokens=True, return_offsets_mapping=True)
        ids = list(encoded["input_ids"])
        boundary = 0 if self.loss_on == "all" else len(prompt)
        mask = [int(start >= boundary and end > start) for start, end in encoded["offset_mapping"]]
        if ids and ids[-1] == self.eos_id:
            mask[-1] = 1
        return self._finish(ids, mask, source, ends=[len(ids)])

    def _finish(self, ids: list[int], mask: list[int], source: Source, ends: list[int]) -> RenderedExample:
        """Make sure every answer ends in a learned end-of-turn token, and never train on
        the first token (nothing predicts it)."""
        for end in reversed(ends):
            if end > 0 and (ids[end - 1] in self.special_ids and mask[end - 1]):
                continue
            ids.insert(end, self.eos_id)
            mask.insert(end, 1)
        if mask:
            mask[0] = 0
        return RenderedExample(ids, mask, source)


def fit_length(example: RenderedExample, max_length: int, overlong: str) -> RenderedExample | None:
    """Apply the recipe's overlong policy; None when the example must be dropped
    (overlong="drop", or truncation cut away every trained token)."""
    if len(example) <= max_length:
        return example
    if overlong == "drop":
        return None
    cut = RenderedExample(example.input_ids[:max_length], example.loss_mask[:max_length], example.source)
    return cut if cut.trained_tokens else None
