"""The one generation engine: `tunesmith chat`, evaluation, GRPO sampling and the server all
generate through here, so a model answers the same way wherever it is asked.

A `Completion` is one reply being generated: iterate it for text pieces as they become
whole, or call `result()`; afterwards it holds its finish reason, its token ids and counts.
`run_batch` generates many completions as one left-padded batch: each row has its own
sampling settings, its own torch.Generator (a seed repeats whatever else shares the batch,
and no generation touches the process-wide random state), its own stop sequences and token
limit, and stops at the chat template's end-of-turn token as well as at EOS.

    completions = generate(loaded, conversations, Sampling(max_new_tokens=64))
    texts = [c.result() for group in completions for c in group]
"""

from __future__ import annotations

import contextlib
import queue
import secrets
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tunesmith.data.records import Message

GENERATION_BATCH = 16
"""Rows generated together by `generate`; prompts are sorted by length first so a batch pads little."""


@dataclass(frozen=True, slots=True)
class Sampling:
    """How one completion is drawn: greedy when temperature is 0, else temperature then
    nucleus (top-p) sampling as the hosted API defines them (no top-k)."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    """Text the reply is cut before (not included, as in the hosted API)."""
    seed: int | None = None
    """Repeatable sampling; None draws a fresh seed."""


class StopScanner:
    """Cuts streamed text at the first stop sequence, holding back any tail that could still
    become one, so a reader never sees part of a stop sequence.

    One Knuth-Morris-Pratt matcher per stop sequence, fed each new character once: the work
    is linear in the text generated, whatever the stop sequences' lengths (a rescan of the
    held-back tail for every prefix of every stop was quadratic in their length)."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.tables = [_failure(s) for s in self.stops]
        self.states = [0] * len(self.stops)
        """Per stop: how many of its first characters the text now ends with."""
        self.buffer = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        text = self.buffer + piece
        offset = len(self.buffer)
        for index, char in enumerate(piece):
            starts = []
            for j, stop in enumerate(self.stops):
                state, table = self.states[j], self.tables[j]
                while state and stop[state] != char:
                    state = table[state - 1]
                if stop[state] == char:
                    state += 1
                self.states[j] = state
                if state == len(stop):
                    starts.append(offset + index + 1 - len(stop))
            if starts:
                self.stopped = True
                self.buffer = ""
                return text[:min(starts)]
        cut = len(text) - max(self.states, default=0)
        out, self.buffer = text[:cut], text[cut:]
        return out

    def flush(self) -> str:
        out, self.buffer = ("" if self.stopped else self.buffer), ""
        return out


def _failure(pattern: str) -> list[int]:
    """table[i]: the length of the longest proper prefix of pattern[:i + 1] that is also its suffix."""
    table = [0] * len(pattern)
    state = 0
    for i in range(1, len(pattern)):
        while state and pattern[i] != pattern[state]:
            state = table[state - 1]
        if pattern[i] == pattern[state]:
            state += 1
        table[i] = state
    return table


class Completion:
    """One reply being generated: the streaming object every caller reads.

    Iterate for text pieces (each whole characters, never part of a stop sequence); or
    `result()` for the whole text. Once done: `finish_reason` ("stop" at an end-of-turn
    token or a stop sequence, "length" at the token limit), `ids` (the generated tokens up to
    and including the end-of-turn token that ended it), `prompt_tokens`, `completion_tokens`.
    `cancel()` (or setting `abandoned`) ends it at its next token."""

    def __init__(self, tokenizer: Any, prompt_ids: list[int], sampling: Sampling,
                 abandoned: threading.Event | None = None, constraint: Any = None):
        self.tokenizer = tokenizer
        self.prompt_ids = list(prompt_ids)
        self.sampling = sampling
        self.abandoned = abandoned or threading.Event()
        self.constraint = constraint
        """Optional (prompt + generated ids) -> the ids allowed next (model/structured.py)."""
        self.ids: list[int] = []
        self.text = ""
        """The text emitted so far (the whole reply once done)."""
        self.finish_reason: str | None = None
        self.failure: BaseException | None = None
        self.done = threading.Event()
        self.worker: threading.Thread | None = None
        """The thread generating it, where `stream` started one: join it before the process ends
        (the row is done a moment before the thread leaves torch)."""
        self._cancel = threading.Event()
        self._pieces: queue.Queue[str | None] = queue.Queue()
        self._scanner = StopScanner(sampling.stop)
        self._decoded = 0
        self._stop_ids: frozenset[int] = frozenset()

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def completion_tokens(self) -> int:
        return len(self.ids)

    @property
    def finished(self) -> bool:
        """True once nothing more is to be generated for it."""
        return self.finish_reason is not None or self._cancel.is_set() or self.abandoned.is_set()

    def cancel(self) -> None:
        self._cancel.set()

    def __iter__(self) -> Iterator[str]:
        while (piece := self._pieces.get()) is not None:
            yield piece
        if self.failure is not None:
            raise self.failure

    def result(self, timeout: float | None = None) -> str:
        """The whole reply, once generated."""
        if not self.done.wait(timeout):
            raise TimeoutError("the generation did not finish in time")
        if self.failure is not None:
            raise self.failure
        return self.text

    # --- fed by run_batch, in the generating thread --------------------------------------

    def _put(self, token: int) -> None:
        self.ids.append(token)
        if token in self._stop_ids:
            self._finish("stop")
            return
        self._emit(self._decode(final=False))
        if self._scanner.stopped:
            self._finish("stop")
        elif len(self.ids) >= self.sampling.max_new_tokens:
            self._finish("length")

    def _decode(self, final: bool) -> str:
        """The text not yet given to the scanner. Decoded in full each time because byte-level
        tokenizers split a character such as "—" over several tokens: a text ending inside
        a character (U+FFFD) is held back until it is whole, or dropped at the very end."""
        ids = self.ids[:-1] if self.ids and self.ids[-1] in self._stop_ids else self.ids
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            if not final:
                return ""
            text = text.rstrip("\ufffd")
        new, self._decoded = text[self._decoded:], max(self._decoded, len(text))
        return new

    def _emit(self, new: str) -> None:
        if new and (out := self._scanner.feed(new)):
            self.text += out
            self._pieces.put(out)

    def _finish(self, reason: str) -> None:
        if self.finish_reason is not None:
            return
        if not self._scanner.stopped:
            self._emit(self._decode(final=True))
        if tail := self._scanner.flush():
            self.text += tail
            self._pieces.put(tail)
        self.finish_reason = reason
        self._pieces.put(None)
        self.done.set()

    def _fail(self, failure: BaseException) -> None:
        if self.finish_reason is None:
            self.failure = failure
            self.finish_reason = "error"
            self._pieces.put(None)
            self.done.set()


def stop_token_ids(tokenizer: Any, model: Any = None) -> frozenset[int]:
    """The tokens a reply ends at: EOS, the model's generation config's EOS ids, and the chat
    template's own end-of-turn token (ChatML's <|im_end|>, Llama-3's <|eot_id|>, Phi's <|end|>)
    when it is not EOS, found by rendering one reply and reading the special token after it."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is not None:
        ids.update(int(i) for i in (configured if isinstance(configured, list | tuple) else [configured]))
    key = id(tokenizer)
    if key not in _TURN_ENDS:
        _TURN_ENDS[key] = _turn_end(tokenizer)
    if _TURN_ENDS[key] is not None:
        ids.add(_TURN_ENDS[key])  # type: ignore[arg-type]
    return frozenset(ids)


_TURN_ENDS: dict[int, int | None] = {}
_PROBE = "tunesmith-end-of-turn-probe"


def _turn_end(tokenizer: Any) -> int | None:
    from tunesmith.data.render import special_token_ids

    if not getattr(tokenizer, "chat_template", None):
        return None
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"},
                                              {"role": "assistant", "content": _PROBE}], tokenize=False)
    except Exception:  # a template that refuses the probe: EOS alone ends replies
        return None
    if not isinstance(text, str) or _PROBE not in text:
        return None
    after = text[text.rindex(_PROBE) + len(_PROBE):]
    special = special_token_ids(tokenizer)
    for token in tokenizer(after, add_special_tokens=False)["input_ids"]:
        if token in special:
            return int(token)
        if tokenizer.decode([token]).strip():
            return None  # text before any special token: the template has no end-of-turn token
    return None


def run_batch(model: Any, tokenizer: Any, completions: Sequence[Completion],
              stop_ids: frozenset[int] | None = None) -> None:
    """Generate every completion as one left-padded batch, in the calling thread; each
    completion is fed its tokens as they come and is done when this returns. A failure
    ends every completion with it (and is raised)."""
    import torch
    from transformers import LogitsProcessorList, StoppingCriteriaList

    rows = [c for c in completions if not c.finished]
    for c in completions:
        if c.finished:  # cancelled or abandoned before it started
            c._finish("stop")
    if not rows:
        return
    stops = stop_token_ids(tokenizer, model) if stop_ids is None else stop_ids
    for c in rows:
        c._stop_ids = stops
    try:
        device = model.device
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        width = max(len(c.prompt_ids) for c in rows)
        ids = torch.tensor([[pad] * (width - len(c.prompt_ids)) + c.prompt_ids for c in rows], device=device)
        mask = torch.tensor([[0] * (width - len(c.prompt_ids)) + [1] * len(c.prompt_ids) for c in rows],
                            device=device)
        generators = [_generator(c.sampling.seed, device) for c in rows]
        model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=max(c.sampling.max_new_tokens for c in rows),
            do_sample=False, temperature=None, top_p=None, top_k=None, num_beams=1,
            eos_token_id=sorted(stops), pad_token_id=pad, use_cache=True,
            logits_processor=LogitsProcessorList([_RowSampler(rows, generators)]),
            stopping_criteria=StoppingCriteriaList([_RowsFinished(rows)]), streamer=_Feed(rows))
    except BaseException as exc:
        for c in rows:
            c._fail(exc)
        raise
    for c in rows:  # rows stopped by cancellation, or generate's own limit
        c._finish("length" if len(c.ids) >= c.sampling.max_new_tokens else "stop")


def _generator(seed: int | None, device: Any) -> Any:
    import torch

    generator = torch.Generator(device=device)
    generator.manual_seed(secrets.randbits(63) if seed is None else seed % 2**64)
    return generator


class _RowSampler:
    """A logits processor that picks each row's next token itself and leaves only that token
    for greedy search: argmax for greedy rows, a draw with the row's own generator otherwise.

    Written here because transformers' sampling draws from the process-wide random state and
    applies one temperature to a whole batch: a seed set with torch.manual_seed is consumed by
    every generation running at the same time, and requests with different settings could
    not share a batch."""

    def __init__(self, rows: Sequence[Completion], generators: list[Any]):
        self.rows = rows
        self.generators = generators

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        for index, row in enumerate(self.rows):
            if row.constraint is not None and not row.finished:
                # nothing allowed (the constraint is stuck): the reply ends here
                allowed = list(row.constraint(row.prompt_ids + row.ids)) or sorted(row._stop_ids)
                keep = torch.full_like(scores[index], float("-inf"))
                keep[torch.tensor(allowed, device=scores.device)] = 0.0
                scores[index] = scores[index] + keep
        chosen = scores.argmax(dim=-1, keepdim=True)
        for index, (row, generator) in enumerate(zip(self.rows, self.generators, strict=True)):
            temperature, top_p = row.sampling.temperature, row.sampling.top_p
            if temperature <= 0 or row.finished:
                continue
            logits = scores[index].float() / temperature
            if top_p < 1:
                ordered, order = torch.sort(logits, descending=False)
                drop = ordered.softmax(dim=-1).cumsum(dim=-1) <= (1 - top_p)
                drop[-1:] = False  # the likeliest token always stays
                logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
            chosen[index, 0] = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)[0]
        return torch.full_like(scores, float("-inf")).scatter(-1, chosen, 0.0)


class _RowsFinished:
    """Stopping criteria: a row is done when its completion is (end token, stop sequence,
    its own token limit, cancelled or abandoned)."""

    def __init__(self, rows: Sequence[Completion]):
        self.rows = rows

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.tensor([c.finished for c in self.rows], dtype=torch.bool, device=input_ids.device)


class _Feed:
    """The streamer `generate` calls: the prompt first (skipped), then one token per row."""

    def __init__(self, rows: Sequence[Completion]):
        self.rows = rows
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for row, token in zip(self.rows, value.reshape(-1).tolist(), strict=True):
            if not row.finished:
                row._put(int(token))

    def end(self) -> None:
        pass


# --- the callers' entry points ---------------------------------------------------------------


def generate_ids(model: Any, tokenizer: Any, prompts: Sequence[list[int]], samplings: Sequence[Sampling],
                 stop_ids: frozenset[int] | None = None,
                 batch_size: int = GENERATION_BATCH) -> list[Completion]:
    """One finished completion per tokenized prompt, in order, generated in left-padded
    batches of prompts of similar length."""
    completions = [Completion(tokenizer, p, s) for p, s in zip(prompts, samplings, strict=True)]
    stops = stop_token_ids(tokenizer, model) if stop_ids is None else stop_ids
    order = sorted(range(len(completions)), key=lambda i: len(completions[i].prompt_ids))
    for start in range(0, len(order), batch_size):
        run_batch(model, tokenizer, [completions[i] for i in order[start : start + batch_size]], stops)
    return completions


def generate(loaded: Any, conversations: Sequence[list[Message]], sampling: Sampling, *, n: int = 1,
             tools: Sequence[Any] | None = None) -> list[list[Completion]]:
    """`n` finished completions of each conversation (a LoadedModel's chat template), in
    order. `tools`, one entry per conversation, are given to the template as training gives
    them. With a seed, completion k of every conversation is drawn with seed + k."""
    if n < 1:
        raise ValueError("n must be at least 1")
    tools = list(tools) if tools is not None else [None] * len(conversations)
    prompts = [loaded.renderer.prompt_ids(list(m), t) for m, t in zip(conversations, tools, strict=True)]
    samplings = [choice(sampling, k) for _ in prompts for k in range(n)]
    done = generate_ids(loaded.model, loaded.tokenizer, [p for p in prompts for _ in range(n)], samplings)
    return [done[i * n : (i + 1) * n] for i in range(len(prompts))]


def choice(sampling: Sampling, index: int) -> Sampling:
    """The settings of the index-th of n completions of one prompt: seed + index."""
    return sampling if sampling.seed is None or index == 0 else replace(sampling, seed=sampling.seed + index)


def stream(loaded: Any, messages: list[Message], sampling: Sampling, tools: Any = None) -> Completion:
    """One completion generated in a background thread; iterate it for text as it comes."""
    completion = Completion(loaded.tokenizer, loaded.renderer.prompt_ids(messages, tools), sampling)
    completion.worker = start_batch(loaded.model, loaded.tokenizer, [completion])
    return completion


def start_batch(model: Any, tokenizer: Any, completions: Sequence[Completion]) -> threading.Thread:
    """run_batch in a daemon thread (it ends with the batch); failures reach the completions."""

    def work() -> None:
        # a failure is recorded on every completion and raised to whoever reads it
        with contextlib.suppress(BaseException):
            run_batch(model, tokenizer, completions)

    thread = threading.Thread(target=work, daemon=True, name="tunesmith-generation")
    thread.start()
    return thread
