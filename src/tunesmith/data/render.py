"""Render records into token ids and a loss mask, with the model's own chat template.

Masks are found in character space: the conversation is rendered once to text, the
character span of every trained assistant turn is found by rendering the conversation
up to that turn, and each token is trained on when it starts inside a span. This works
with any prefix-stable template without template-specific markers, and it never
tokenizes pieces separately, so token merges at boundaries match inference. A template
that is not prefix-stable gets one rendering per trained turn (history, generation
prompt, reply: what inference renders), packed as segments of one example.

Nothing trained is lost silently: each trained span must hold its message's text and
tool calls (name and arguments), and the prompt must hold the tool definitions; a
template that drops them is an error naming the line and `data.chat_template`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from tunesmith.data.formats import content_text
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
from tunesmith.data.templates import KEY as TEMPLATE_KEY
from tunesmith.errors import DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Used only when a tokenizer ships no chat template (documented in docs/data-formats.md).
# Every assistant turn ends with the EOS token so the model learns to stop. It refuses roles
# it does not know, so a `developer` message reaches it as `system` (data/prompt.py decides
# that for every template).
FALLBACK_CHAT_TEMPLATE = (
    "{{ bos_token or '' }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}### User:\n{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'assistant' %}### Assistant:\n{{ message['content'] }}"
    "{{ eos_token }}\n\n"
    "{% elif message['role'] == 'tool' %}### Tool:\n{{ message['content'] }}\n\n"
    "{% else %}{{ raise_exception('the fallback template has no role ' ~ message['role']) }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}### Assistant:\n{% endif %}"
)


@dataclass(slots=True)
class RenderedExample:
    input_ids: list[int]
    loss_mask: list[int]
    source: Source
    segments: tuple[int, ...] = ()
    """Offsets where another rendering of the same record starts (a conversation whose
    template is not prefix-stable is one rendering per trained turn); positions restart
    there when packed, as at the start of an example."""
    per_turn: bool = False
    """Rendered turn by turn, as inference renders each turn (see `Renderer.render_chat`)."""
    distill: bool = False
    """Trained towards the base model's own next-token distribution on its trained tokens
    rather than towards the tokens themselves (data.replay: keep what the model knew)."""

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def trained_tokens(self) -> int:
        return sum(self.loss_mask)

    def positions(self) -> list[int]:
        """Position ids: 0, 1, ... restarting at every segment."""
        out: list[int] = []
        bounds = [0, *self.segments, len(self.input_ids)]
        for start, end in pairwise(bounds):
            out += range(end - start)
        return out

    def parts(self) -> list[tuple[list[int], list[int]]]:
        """(ids, mask) of each segment."""
        bounds = [0, *self.segments, len(self.input_ids)]
        return [(self.input_ids[a:b], self.loss_mask[a:b]) for a, b in pairwise(bounds)]


def ensure_chat_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Give a template-less tokenizer the fallback template; True when it was needed."""
    if tokenizer.chat_template:
        return False
    tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return True


def special_token_ids(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Named special tokens and every added token marked special (Llama-3's <|eot_id|> is
    one of these without being named anywhere in a base model's tokenizer config)."""
    ids = set(tokenizer.all_special_ids)
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    ids.update(index for index, token in decoder.items() if getattr(token, "special", False))
    return ids


@dataclass(frozen=True, slots=True)
class _Turn:
    """One trained assistant turn: the text inference sees up to and including it (history,
    generation prompt, reply) and where the reply starts and ends in it."""

    text: str
    start: int
    end: int


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
        self.special_ids = special_token_ids(tokenizer)
        self.eos_id = tokenizer.eos_token_id
        if self.eos_id is None:
            raise DataError("the tokenizer has no EOS token", fix="set eos_token in tokenizer_config.json")
        self.eos_text = tokenizer.eos_token or ""
        self._special_texts = tuple(
            t for t in tokenizer.convert_ids_to_tokens(sorted(self.special_ids)) if t and t != self.eos_text)
        self._stable_shapes: dict[Any, bool] = {}

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
            return "".join(self.chat_texts(record.messages, record.tools))
        if isinstance(record, CompletionRecord):
            return record.prompt + record.completion
        if isinstance(record, TextRecord):
            return record.text
        if isinstance(record, PreferenceRecord):
            return self.chat_text(record.prompt + record.chosen, record.tools)
        if isinstance(record, ReinforcementRecord):
            return self.chat_text(record.messages, record.tools, generation_prompt=True)
        raise TypeError(f"unknown record type {type(record).__name__}")

    def chat_texts(self, messages: list[Message], tools: Any = None) -> list[str]:
        """The texts a conversation trains on: itself when its template is prefix-stable,
        else one text per trained turn. Cheap (for counting): stability is judged on the
        first trained turn, once per shape of conversation (its roles, tools and weights),
        since templates branch on those, not on the words; `render` checks every turn."""
        full = self.chat_text(messages, tools)
        trained = self._trained_indices(messages, 0)
        if self.loss_on == "all" or not trained:
            return [full]
        shape = (bool(tools), tuple((m["role"], bool(m.get("tool_calls")), m.get("weight", 1))
                                    for m in messages))
        stable = self._stable_shapes.get(shape)
        if stable is None:
            first = self.chat_text(messages[: trained[0] + 1], tools)
            stable = full.startswith(first[: self._turn_end(first, 0)])
            if len(self._stable_shapes) < 10_000:
                self._stable_shapes[shape] = stable
        if stable:
            return [full]
        return [self.chat_text(messages[: i + 1], tools) for i in trained]

    # --- token ids and masks ----------------------------------------------------------

    def render(self, record: Record) -> RenderedExample:
        """Ids and mask for supervised training; raises DataError when nothing is trained or
        the chat template cannot render the record (its own error, with the record's line)."""
        try:
            return self._render(record)
        except DataError:
            raise
        # A chat template may raise anything (its raise_exception, a TypeError on a shape it
        # does not expect): the user needs the line and the template's words.
        except Exception as exc:
            raise DataError(f"the chat template cannot render this example: {exc}", where=str(record.source),
                            fix="check the example's messages against the chat template, or set "
                                f"{TEMPLATE_KEY}") from exc

    def _render(self, record: Record) -> RenderedExample:
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
        if chosen.segments or rejected.segments:
            raise DataError(
                "with this chat template an answer of several assistant turns cannot be scored as "
                "one sequence (the template renders earlier turns differently later)",
                where=str(record.source), fix="give preferred and non-preferred answers one turn each")
        return chosen, rejected

    def render_chat(self, messages: list[Message], source: Source, tools: Any = None,
                    trained_from: int = 0) -> RenderedExample:
        """One conversation. With a prefix-stable template it is rendered once and every
        trained turn is masked in place. Otherwise (the template renders earlier turns
        differently once later turns exist: Qwen3, Mistral with a system message) every
        trained turn becomes its own segment, rendered exactly as inference renders it:
        the history, the generation prompt and that reply."""
        full = self.chat_text(messages, tools)
        if tools:
            first = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), len(messages))
            before = self.chat_text(messages[:first], tools, True) if first else full
            _check_tools_rendered(before, tools, source)
        if self.loss_on == "all":
            ids = self._encode(full)[0]
            return self._finish(ids, [1] * len(ids), source, ends=[len(ids)])
        turns = [self._turn(messages, index, tools, source)
                 for index in self._trained_indices(messages, trained_from)]
        if all(full.startswith(turn.text[: turn.end]) for turn in turns):
            ids, mask, ends = self._masked(full, [(turn.start, turn.end) for turn in turns])
            return self._finish(ids, mask, source, ends)
        parts = []
        for turn in turns:
            ids, mask, ends = self._masked(turn.text, [(turn.start, turn.end)])
            parts.append(self._finish(ids, mask, source, ends))
        segments, offset = [], 0
        for part in parts[:-1]:
            offset += len(part)
            segments.append(offset)
        return RenderedExample([t for p in parts for t in p.input_ids],
                               [m for p in parts for m in p.loss_mask], source, tuple(segments),
                               per_turn=True)

    def _trained_indices(self, messages: list[Message], trained_from: int) -> list[int]:
        return [index for index, message in enumerate(messages)
                if index >= trained_from and message["role"] == "assistant" and message.get("weight", 1)]

    def _turn(self, messages: list[Message], index: int, tools: Any, source: Source) -> _Turn:
        prompt = self.chat_text(messages[:index], tools, True)
        text = self.chat_text(messages[: index + 1], tools)
        where = f"{source} (messages[{index}])"
        if not text.startswith(prompt):
            # The template renders the history differently when a reply follows (Mistral puts
            # the system message in the last user turn only): the reply as the template writes
            # it, after the prompt inference sends.
            text = prompt + self._reply_text(messages, index, tools, prompt, text, where)
        end = self._turn_end(text, len(prompt))
        missing = missing_fields(messages[index], text[len(prompt):end])
        if missing:
            raise DataError(
                f"the chat template drops {missing} of this assistant turn, so it would not be "
                "trained", where=where,
                fix=f"set {TEMPLATE_KEY}: chatml-tools (or a template file that renders tools and "
                    "tool_calls); see docs/data-formats.md")
        return _Turn(text, len(prompt), end)

    def _reply_text(self, messages: list[Message], index: int, tools: Any, prompt: str, text: str,
                    where: str) -> str:
        """What the template writes for reply `index` after its history: the rendering's
        tail past where it stops matching renderings with a probe reply instead (two probes,
        so a reply that starts like one probe is not cut)."""
        start = len(text)
        for probe in ("a", "b"):
            other = self.chat_text([*messages[:index], {"role": "assistant", "content": probe}], tools)
            start = min(start, len(_common_prefix(text, other)))
        history = self.chat_text(messages[:index], tools, False)
        opener = prompt[len(history):] if prompt.startswith(history) else ""
        if start == len(text) or not text[:start].endswith(opener):
            raise DataError(
                "the chat template's generation prompt does not start its replies the way the "
                f"template writes them (the prompt ends {prompt[-24:]!r}, replies follow "
                f"{text[max(0, start - 24):start]!r}), so this turn cannot be trained as inference "
                "renders it", where=where,
                fix=f"set {TEMPLATE_KEY} to a template whose generation prompt starts each reply "
                    "(built-in: chatml-tools), or data.loss_on: all")
        return text[start:]

    def _turn_end(self, text: str, start: int) -> int:
        """Where a reply's trained text ends: whitespace after the end-of-turn token is not
        the answer, nor an EOS the template appends after the turn's own end-of-turn token
        (Phi-3.5's `<|end|>` then `<|endoftext|>`): inference stops at the former."""
        end = len(text.rstrip())
        if self.eos_text and text[:end].endswith(self.eos_text):
            before = len(text[: end - len(self.eos_text)].rstrip())
            if before > start and text[:before].endswith(self._special_texts):
                end = before
        return max(end, start)

    def _encode(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(encoded["input_ids"]), list(encoded["offset_mapping"])

    def _masked(self, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[int], list[int]]:
        """Token ids of `text`, trained where a token starts inside a span, and the end of
        each span in tokens."""
        ids, offsets = self._encode(text)
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
        return ids, mask, ends

    def _render_plain(self, prompt: str, target: str, source: Source) -> RenderedExample:
        encoded = self.tokenizer(prompt + target, add_special_tokens=True, return_offsets_mapping=True)
        ids = list(encoded["input_ids"])
        boundary = 0 if self.loss_on == "all" else len(prompt)
        mask = [int(start >= boundary and end > start) for start, end in encoded["offset_mapping"]]
        if ids and ids[-1] == self.eos_id:
            mask[-1] = 1
        return self._finish(ids, mask, source, ends=[len(ids)])

    def _finish(self, ids: list[int], mask: list[int], source: Source, ends: list[int]) -> RenderedExample:
        """Make sure every answer ends in a learned end-of-turn token (any special token, named
        or added), and never train on the first token (nothing predicts it)."""
        for end in reversed(ends):
            if end > 0 and (ids[end - 1] in self.special_ids and mask[end - 1]):
                continue
            ids.insert(end, self.eos_id)
            mask.insert(end, 1)
        if mask:
            mask[0] = 0
        return RenderedExample(ids, mask, source)


def _common_prefix(a: str, b: str) -> str:
    limit = min(len(a), len(b))
    index = 0
    while index < limit and a[index] == b[index]:
        index += 1
    return a[:index]


# --- what must survive the template ---------------------------------------------------


def missing_fields(message: Message, span: str) -> str | None:
    """What of an assistant message its rendered span lacks (None: all of it is there).

    Content is compared line by line (templates trim and re-space text, and split reasoning
    out of `<think>` tags); each tool call needs its function name and its arguments, found
    as JSON in any spacing or key order, or failing that every argument value as text.
    """
    content = content_text(message.get("content")) or ""
    for line in content.replace("<think>", "\n").replace("</think>", "\n").splitlines():
        if line.strip() and line.strip() not in span:
            return f"the reply's text ({_short(line.strip())!r})"
    for call in message.get("tool_calls") or []:
        function = call.get("function", call) if isinstance(call, dict) else {}
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name and name not in span:
            return f"the tool call {name!r}"
        if isinstance(function, dict) and not _arguments_in(function.get("arguments"), span):
            return f"the arguments of the tool call {name!r}"
    return None


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _arguments_in(arguments: Any, span: str) -> bool:
    if arguments is None or arguments == "" or arguments == {}:
        return True
    value = arguments
    if isinstance(arguments, str):
        if arguments.strip() in span:
            return True
        try:
            value = json.loads(arguments)
        except json.JSONDecodeError:
            return False
    for dumped in _dumps(value):
        if dumped in span:
            return True
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[{\[]", span):
        try:
            found, _ = decoder.raw_decode(span, match.start())
        except json.JSONDecodeError:
            continue
        if _contains(found, value):
            return True
    return all(leaf in span for leaf in _leaves(value))


def _dumps(value: Any) -> list[str]:
    out = []
    for sort_keys in (False, True):
        for separators in ((", ", ": "), (",", ":")):
            for ascii_only in (False, True):
                out.append(json.dumps(value, sort_keys=sort_keys, separators=separators,
                                      ensure_ascii=ascii_only))
    return out


def _contains(found: Any, value: Any) -> bool:
    if found == value:
        return True
    if isinstance(found, dict):
        return any(_contains(v, value) for v in found.values())
    if isinstance(found, list):
        return any(_contains(v, value) for v in found)
    if isinstance(found, str) and isinstance(value, dict | list):
        try:
            return json.loads(found) == value
        except json.JSONDecodeError:
            return False
    return False


def _leaves(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    if value is None or isinstance(value, bool):
        return []
    return [str(value)]


def _check_tools_rendered(text: str, tools: list[dict[str, Any]], source: Source) -> None:
    """A template that ignores `tools` teaches calls the model never sees defined."""
    names = [tool.get("function", tool).get("name") for tool in tools if isinstance(tool, dict)]
    names = [n for n in names if isinstance(n, str) and n]
    lost = [n for n in names if n not in text]
    if lost:
        raise DataError(
            f"the chat template drops the tool definitions ({', '.join(map(repr, lost[:3]))} not "
            "rendered), so the model would learn calls without seeing the tools", where=str(source),
            fix=f"set {TEMPLATE_KEY}: chatml-tools (or a template file that renders tools); "
                "see docs/data-formats.md")


def fit_length(example: RenderedExample, max_length: int, overlong: str) -> RenderedExample | None:
    """Apply the recipe's overlong policy; None when the example must be dropped
    (overlong="drop", or truncation cut away every trained token)."""
    if len(example) <= max_length:
        return example
    if overlong == "drop":
        return None
    segments = tuple(start for start in example.segments if start < max_length)
    cut = RenderedExample(example.input_ids[:max_length], example.loss_mask[:max_length], example.source,
                          segments, example.per_turn)
    return cut if cut.trained_tokens else None
