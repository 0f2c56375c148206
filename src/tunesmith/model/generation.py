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
import logging
import queue
import secrets
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tunesmith.data.records import Message

log = logging.getLogger(__name__)
GENERATION_BATCH = 16
"""Prompts prefilled together by `generate`; sorted by length first so a prefill pads little."""
RUNNING_ROWS = 64
"""Rows `generate` decodes together: on a CPU a decode step reads every weight once whatever the
rows, so more rows cost little more per step, while the cache grows with each."""


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
    repetition_penalty: float | None = None
    """Tokens already in the prompt or reply made less likely (transformers' definition: a
    positive logit divided by it, a negative one multiplied); applies to greedy rows too.
    None: the model's generation_config value, else 1 (off)."""
    top_k: int | None = None
    """Sampling only among the k likeliest tokens (0: off). None: the model's generation_config
    value, else off."""


MODEL_DEFAULTS = ("repetition_penalty", "top_k")
"""The generation_config fields the engine takes as the model's defaults where the caller left
them unset (as transformers' `generate` did). temperature, top_p and do_sample come from the
caller (the API's parameters, the recipe): a request that leaves temperature out gets the
hosted API's default, 1. Any other field the model's file sets (min_p, no_repeat_ngram_size,
typical_p, ...) is not applied; `model_defaults` logs it once per model."""
_NOT_APPLIED = ("min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "no_repeat_ngram_size",
                "encoder_repetition_penalty", "bad_words_ids", "suppress_tokens", "begin_suppress_tokens",
                "sequence_bias", "length_penalty", "num_beams", "forced_bos_token_id", "forced_eos_token_id",
                "exponential_decay_length_penalty", "min_new_tokens", "min_length")
_WARNED: set[int] = set()


def model_defaults(model: Any) -> dict[str, Any]:
    """The MODEL_DEFAULTS values the model's generation_config sets (transformers 5 leaves an
    unset field None); read at each batch's start, so a config changed since is followed."""
    config = getattr(model, "generation_config", None)
    ignored = [name for name in _NOT_APPLIED if getattr(config, name, None) not in (None, [], {}, 1.0, 0)]
    if ignored and id(config) not in _WARNED:
        _WARNED.add(id(config))
        log.warning("the model's generation_config sets %s, which tunesmith's generation does not apply "
                    "(it applies %s)", ", ".join(ignored), ", ".join(MODEL_DEFAULTS))
    return {name: getattr(config, name) for name in MODEL_DEFAULTS if getattr(config, name, None) is not None}


def resolved(sampling: Sampling, defaults: dict[str, Any]) -> Sampling:
    """`sampling` with the model's defaults (`model_defaults`) filled in where it leaves them
    None, then off (penalty 1, top-k 0) where the model has none either."""
    penalty = sampling.repetition_penalty if sampling.repetition_penalty is not None \
        else float(defaults.get("repetition_penalty", 1.0))
    top_k = sampling.top_k if sampling.top_k is not None else int(defaults.get("top_k", 0))
    if penalty == sampling.repetition_penalty and top_k == sampling.top_k:
        return sampling
    return replace(sampling, repetition_penalty=penalty, top_k=top_k)


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

    # --- fed by serve/engine.py, when the generation runs in the engine process ----------

    def _relayed(self, piece: str) -> None:
        self.text += piece
        self._pieces.put(piece)

    def _relayed_end(self, reason: str, ids: list[int], failure: BaseException | None) -> None:
        if self.finish_reason is None:
            self.ids, self.failure, self.finish_reason = list(ids), failure, reason
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
    batch = Batch(model, tokenizer, stop_ids)
    try:
        batch.add(completions)
        while batch.rows:
            batch.step()
    except BaseException as exc:
        for c in completions:
            c._fail(exc)
        raise


BASE_ADAPTER = "__base__"
"""PEFT's name for "no adapter" in a mixed-adapter batch (adapter_names)."""


def mixable(model: Any, adapter: str) -> bool:
    """Whether PEFT's mixed-adapter batch inference (`adapter_names`) takes `adapter`: a LoRA
    adapter, not DoRA, not merged, on no layer PEFT cannot mix (peft's
    LoraLayer._check_forward_args and the layers that override it)."""
    from peft.tuners.lora import LoraLayer

    config = getattr(model, "peft_config", {}).get(adapter)
    if config is None or str(getattr(config, "peft_type", "")) not in ("LORA", "PeftType.LORA"):
        return False
    held = False
    for module in model.modules():
        if isinstance(module, LoraLayer) and (adapter in module.lora_A or adapter in module.lora_embedding_A):
            held = True
            if module.use_dora.get(adapter, False) or module.merged \
                    or type(module).__name__ in ("MultiheadAttention", "ParamWrapper"):
                return False
    return held


class Batch:
    """Rows decoded together one token at a time, by our own loop over the model's forward.

    Rows can join between steps (continuous batching: `add` prefills the newcomers as a
    left-padded batch of their own and merges their KV cache into the running one, left-padding
    the shorter) and leave as soon as they are done (their cache rows are dropped, and columns
    only padding is left in are trimmed). Each row has its own sampling settings, generator,
    stop tokens, token limit and, where `mix` is set, its own PEFT adapter (`adapter_names`,
    PEFT's mixed-adapter batch inference).

    Written here rather than through transformers' `generate`, which fixes its batch when it
    starts (a request arriving a moment later waits for the whole batch), samples from the
    process-wide random state with one temperature for all rows, and costs several times the
    forward pass of a small model in per-step Python (logits processors, stopping criteria,
    streamer). Joining needs every cache layer to be a plain growing one (transformers'
    DynamicLayer); a model with sliding-window or recurrent layers still generates, but a batch
    of it takes no newcomers until it ends (`joinable`)."""

    def __init__(self, model: Any, tokenizer: Any, stop_ids: frozenset[int] | None = None):
        self.model = model
        """Read at every step: the server may wrap its base in a PeftModel between steps."""
        self.mix = False
        """Pass each row's adapter to the forward (PEFT's adapter_names); set by the server."""
        self.stop_ids = stop_ids
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.rows: list[Completion] = []
        self.adapters: list[str] = []
        self.generators: list[Any] = []
        self.cache: Any = None
        self.mask: Any = None
        """[rows, cached positions + 1]: 1 where a position is real, 0 where it is padding."""
        self.last: Any = None
        """[rows, 1]: each row's newest token, not yet run through the model."""
        self.position: Any = None
        """[rows, 1]: that token's position (padding not counted)."""

    @property
    def joinable(self) -> bool:
        """Whether rows can join now: nothing running, or a cache of plain growing layers."""
        return not self.rows or _plain_cache(self.cache)

    def add(self, completions: Sequence[Completion], adapters: Sequence[str | None] | None = None) -> None:
        """Prefill `completions` (with each one's adapter where the batch mixes them; None is the
        base) and merge them into the running rows (see `joinable`); each gets its first token
        before this returns."""
        import torch

        named = list(adapters) if adapters is not None else [None] * len(completions)
        starting = [(c, a) for c, a in zip(completions, named, strict=True) if not c.finished]
        new = [c for c, _ in starting]
        names = [a or BASE_ADAPTER for _, a in starting]
        for c in completions:
            if c.finished:  # cancelled or abandoned before it started
                c._finish("stop")
        if not new:
            return
        if not self.joinable:
            raise RuntimeError("this batch's cache cannot take new rows until it ends")
        defaults = model_defaults(self.model)
        for c in new:  # each row's own tokenizer's end-of-turn token (an adapter may bring its own)
            c._stop_ids = stop_token_ids(c.tokenizer, self.model) if self.stop_ids is None else self.stop_ids
            c.sampling = resolved(c.sampling, defaults)
        device = self.model.device
        generators = [_generator(c.sampling.seed, device) for c in new]
        with torch.inference_mode():
            logits, cache, mask, positions = self._prefill(new, names)
            tokens = _pick(new, generators, logits)
        ones = mask.new_ones((len(new), 1))
        self._merge(new, names, generators, cache, torch.cat([mask, ones], dim=1),
                    tokens.unsqueeze(1), positions[:, -1:] + 1)
        self._feed(tokens)

    def _prefill(self, rows: list[Completion], names: list[str]) -> tuple[Any, Any, Any, Any]:
        """The rows' prompts run through the model as one left-padded batch: (last-position
        logits, cache, mask, positions), one row each. Rows with the same prompt and adapter
        (a GRPO group, `n` completions of one request) share one prefill: each distinct prompt
        runs once and its cache rows are copied to the rest, which is the same arithmetic
        on the same inputs (G - 1 of every G prompt passes saved). Only caches of plain
        growing layers are copied so; for any other cache every row is prefilled."""
        import torch

        first: dict[tuple[tuple[int, ...], str], int] = {}
        source = [first.setdefault((tuple(c.prompt_ids), name), len(first))
                  for c, name in zip(rows, names, strict=True)]
        kind = self._kind()
        if len(first) < len(rows) and _COPIES_PREFILL.get(kind, True):
            distinct = [(list(prompt), name) for prompt, name in first]
            logits, cache, mask, positions = self._prefill_prompts(distinct)
            if _plain_cache(cache):
                select = torch.tensor(source, device=mask.device)
                cache.batch_select_indices(select)
                return logits[select], cache, mask[select], positions[select]
            _COPIES_PREFILL[kind] = False
        return self._prefill_prompts([(c.prompt_ids, name) for c, name in zip(rows, names, strict=True)])

    def _kind(self) -> type:
        """The (base) model's class: what _COPIES_PREFILL is kept per."""
        return type(self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model)

    def _prefill_prompts(self, prompts: list[tuple[list[int], str]]) -> tuple[Any, Any, Any, Any]:
        """A left-padded prefill; where every prompt starts with the same tokens under the same
        adapter (a system prompt, a few-shot prompt's examples), that prefix runs once and its
        cache is copied to every row, the rest padded after it: [prefix, padding, own tokens].
        The mask and positions say exactly what a left-padded row would, so each row attends
        to the same keys at the same positions."""
        import torch

        device = self.model.device
        shared = _shared_prefix(prompts)
        kind = self._kind()
        cache = None
        if shared and _COPIES_PREFILL.get(kind, True):
            head = torch.tensor([prompts[0][0][:shared]], device=device)
            head_mask = torch.ones_like(head)
            _, cache = self._forward(head, head_mask, torch.arange(shared, device=device)[None],
                                     None, [prompts[0][1]], prefill=True)
            if _plain_cache(cache):
                cache.batch_select_indices(torch.zeros(len(prompts), dtype=torch.long, device=device))
            else:
                _COPIES_PREFILL[kind], cache, shared = False, None, 0
        else:
            shared = 0
        own = [p[shared:] for p, _ in prompts]
        width = max(len(p) for p in own)
        ids = torch.tensor([[self.pad] * (width - len(p)) + p for p in own], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in own], device=device)
        positions = shared + (mask.cumsum(-1) - 1).clamp(min=0)
        if shared:
            mask = torch.cat([mask.new_ones((len(own), shared)), mask], dim=1)
        names = [name for _, name in prompts]
        logits, cache = self._forward(ids, mask, positions, cache, names, prefill=True)
        return logits, cache, mask, positions

    def step(self) -> None:
        """One token for every running row."""
        import torch

        if not self.rows:
            return
        with torch.inference_mode():
            logits, self.cache = self._forward(self.last, self.mask, self.position, self.cache, self.adapters)
            tokens = _pick(self.rows, self.generators, logits)
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
        self.last, self.position = tokens.unsqueeze(1), self.position + 1
        self._feed(tokens)

    def fail(self, failure: BaseException) -> None:
        """End every row with `failure` (its readers raise it) and drop them."""
        for c in self.rows:
            c._fail(failure)
        self._clear()

    def _clear(self) -> None:
        self.rows, self.adapters, self.generators = [], [], []
        self.cache = self.mask = self.last = self.position = None

    def _forward(self, ids: Any, mask: Any, positions: Any, cache: Any, adapters: list[str],
                 prefill: bool = False) -> Any:
        takes = _forward_takes(self.model)
        extra: dict[str, Any] = {"cache" if "cache" in takes else "past_key_values": cache}
        if self.mix:
            extra["adapter_names"] = adapters
        if prefill and "logits_to_keep" in takes:
            extra["logits_to_keep"] = 1  # the prompt's last position is the only one sampled from
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **extra)
        cache = getattr(out, "cache", None)
        cache = out.past_key_values if cache is None else cache
        return out.logits[:, -1, :], _with_room(cache) if prefill else cache

    def _feed(self, tokens: Any) -> None:
        """Give each row its token (the newest rows' when `add` fed only them), then drop the done."""
        rows = self.rows[len(self.rows) - len(tokens):]
        for row, token in zip(rows, tokens.tolist(), strict=True):  # the step's one wait for the device
            if not row.finished:
                row._put(int(token))
        self._drop_finished()

    def _merge(self, rows: list[Completion], adapters: list[str], generators: list[Any], cache: Any,
               mask: Any, last: Any, position: Any) -> None:
        import torch

        if not self.rows:
            self.rows, self.adapters, self.generators = list(rows), list(adapters), list(generators)
            self.cache, self.mask, self.last, self.position = cache, mask, last, position
            return
        width = max(self.mask.shape[1], mask.shape[1])
        for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([_left_pad(mine.keys, width - 1), _left_pad(theirs.keys, width - 1)])
            mine.values = torch.cat([_left_pad(mine.values, width - 1), _left_pad(theirs.values, width - 1)])
        self.mask = torch.cat([_left_pad_mask(self.mask, width), _left_pad_mask(mask, width)])
        self.last = torch.cat([self.last, last])
        self.position = torch.cat([self.position, position])
        self.rows += rows
        self.adapters += adapters
        self.generators += generators

    def _drop_finished(self) -> None:
        import torch

        keep = [i for i, c in enumerate(self.rows) if not c.finished]
        if len(keep) == len(self.rows):
            return
        for c in self.rows:
            if c.finished:  # cancelled or abandoned at this step: ended here
                c._finish("length" if len(c.ids) >= c.sampling.max_new_tokens else "stop")
        if not keep:
            self._clear()
            return
        if not self.joinable:  # a cache that cannot be cut: the finished rows ride along, ignored
            return
        index = torch.tensor(keep, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask, self.last, self.position = self.mask[index], self.last[index], self.position[index]
        self.rows = [self.rows[i] for i in keep]
        self.adapters = [self.adapters[i] for i in keep]
        self.generators = [self.generators[i] for i in keep]
        padding = int((self.mask.cumsum(dim=1) == 0).all(dim=0).sum())  # columns no kept row uses
        if padding:
            self.mask = self.mask[:, padding:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[..., padding:, :], layer.values[..., padding:, :]


SHARED_PREFIX = 16
"""Fewest leading tokens common to a prefill's prompts that are run once for all of them."""


def _shared_prefix(prompts: Sequence[tuple[list[int], str]]) -> int:
    """How many leading tokens every prompt shares (0 if fewer than SHARED_PREFIX, one prompt, or
    several adapters); each row keeps at least one token of its own to predict from."""
    from tunesmith.data.pack import shared_length

    if len(prompts) < 2 or len({name for _, name in prompts}) > 1:
        return 0
    length = shared_length([ids for ids, _ in prompts])
    return length if length >= SHARED_PREFIX else 0


_COPIES_PREFILL: dict[type, bool] = {}
"""Per model class: False once its prefill cache proved not plain (no copying tried again)."""


def _plain_cache(cache: Any) -> bool:
    """Whether every layer of `cache` is a plain growing one (transformers' DynamicLayer), whose
    rows can be selected, copied, padded and merged as tensors."""
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:  # a transformers before cache layers
        return False
    layers = getattr(cache, "layers", None)
    roomy = _roomy_layer()
    return layers is not None and all(type(layer) in (DynamicLayer, roomy) for layer in layers)


_ROOMY: list[type] = []


def _roomy_layer() -> type:
    """transformers' DynamicLayer, but growing into spare room instead of by torch.cat.

    DynamicLayer appends each step's keys and values by concatenation, copying the whole
    cache every step: at 32 rows and 300 cached positions that copy was a third of a CPU
    decode step. This layer keeps its keys and values as views of buffers with room to spare
    (half again as many positions), so a step writes only its new positions. Anything that
    replaces the tensors (selecting rows, padding, trimming) is taken as the new contents
    and copied into fresh room at the next step. The numbers are the same: only where they
    are stored differs."""
    if not _ROOMY:
        from transformers.cache_utils import DynamicLayer

        class RoomyLayer(DynamicLayer):
            room: tuple[Any, Any] | None = None

            def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> Any:
                if not self.is_initialized or self.keys.numel() == 0:
                    return super().update(key_states, value_states, *args, **kwargs)
                held, new = self.keys.shape[-2], key_states.shape[-2]
                room = self.room
                if (room is None or room[0].data_ptr() != self.keys.data_ptr()
                        or room[0].shape[:2] != self.keys.shape[:2] or room[0].shape[-2] < held + new):
                    size = held + new + max(32, held // 2)
                    room = tuple(t.new_empty((*t.shape[:-2], size, t.shape[-1]))
                                 for t in (self.keys, self.values))
                    room[0][..., :held, :], room[1][..., :held, :] = self.keys, self.values
                    self.room = room
                room[0][..., held : held + new, :] = key_states
                room[1][..., held : held + new, :] = value_states
                self.keys, self.values = room[0][..., : held + new, :], room[1][..., : held + new, :]
                return self.keys, self.values

        _ROOMY.append(RoomyLayer)
    return _ROOMY[0]


def _with_room(cache: Any) -> Any:
    """A prefill's plain cache, its layers made RoomyLayers (same tensors, same state)."""
    if _plain_cache(cache):
        roomy = _roomy_layer()
        for layer in cache.layers:
            layer.__class__ = roomy  # a subclass that adds no state: only `update` changes
    return cache


def _left_pad(states: Any, length: int) -> Any:
    """[rows, heads, positions, dim] states left-padded with zeros to `length` positions."""
    import torch

    missing = length - states.shape[-2]
    if missing <= 0:
        return states
    return torch.cat([states.new_zeros((*states.shape[:-2], missing, states.shape[-1])), states], dim=-2)


def _left_pad_mask(mask: Any, length: int) -> Any:
    import torch

    missing = length - mask.shape[1]
    return mask if missing <= 0 else torch.cat([mask.new_zeros((mask.shape[0], missing)), mask], dim=1)


_FORWARD_TAKES: dict[type, frozenset[str]] = {}


def _forward_takes(model: Any) -> frozenset[str]:
    """The (base) model's forward parameters, once per class: transformers 5.24 renamed
    past_key_values to cache; logits_to_keep is not in every model."""
    import inspect

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    kind = type(inner)
    if kind not in _FORWARD_TAKES:
        _FORWARD_TAKES[kind] = frozenset(inspect.signature(inner.forward).parameters)
    return _FORWARD_TAKES[kind]


def _generator(seed: int | None, device: Any) -> Any:
    import torch

    generator = torch.Generator(device=device)
    generator.manual_seed(secrets.randbits(63) if seed is None else seed % 2**64)
    return generator


def _pick(rows: Sequence[Completion], generators: Sequence[Any], logits: Any) -> Any:
    """Each row's next token ([rows] on the device): argmax for greedy rows, a draw with the
    row's own generator otherwise (temperature, top-k, then top-p, transformers' order), among
    the tokens its constraint allows, after its repetition penalty.

    Written here because transformers' sampling draws from the process-wide random state and
    applies one temperature to a whole batch: a seed set with torch.manual_seed is consumed by
    every generation running at the same time, and requests with different settings could
    not share a batch."""
    import torch

    for index, row in enumerate(rows):
        penalty = row.sampling.repetition_penalty
        if penalty is not None and penalty != 1.0 and not row.finished:  # as transformers' processor
            seen = torch.tensor(sorted(set(row.prompt_ids) | set(row.ids)), device=logits.device)
            scores = logits[index, seen]
            logits[index, seen] = torch.where(scores < 0, scores * penalty, scores / penalty)
        if row.constraint is not None and not row.finished:
            # nothing allowed (the constraint is stuck): the reply ends here
            allowed = list(row.constraint(row.prompt_ids + row.ids)) or sorted(row._stop_ids)
            keep = torch.full_like(logits[index], float("-inf"))
            keep[torch.tensor(allowed, device=logits.device)] = 0.0
            logits[index] = logits[index] + keep
    chosen = logits.argmax(dim=-1)
    for index, (row, generator) in enumerate(zip(rows, generators, strict=True)):
        temperature, top_p = row.sampling.temperature, row.sampling.top_p
        if temperature <= 0 or row.finished:
            continue
        scaled = logits[index].float() / temperature
        if row.sampling.top_k and row.sampling.top_k < scaled.shape[-1]:
            kth = torch.topk(scaled, row.sampling.top_k).values[-1]
            scaled = scaled.masked_fill(scaled < kth, float("-inf"))
        if top_p < 1:
            ordered, order = torch.sort(scaled, descending=False)
            drop = ordered.softmax(dim=-1).cumsum(dim=-1) <= (1 - top_p)
            drop[-1:] = False  # the likeliest token always stays
            scaled = scaled.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
        chosen[index] = torch.multinomial(scaled.softmax(dim=-1), 1, generator=generator)[0]
    return chosen


# --- the callers' entry points ---------------------------------------------------------------


def generate_ids(model: Any, tokenizer: Any, prompts: Sequence[list[int]], samplings: Sequence[Sampling],
                 stop_ids: frozenset[int] | None = None, batch_size: int = GENERATION_BATCH, *,
                 adapters: Sequence[str | None] | None = None,
                 groups: Sequence[int] | None = None) -> list[Completion]:
    """One finished completion per tokenized prompt, in order. Prompts are prefilled up to
    `batch_size` at a time, of similar length and of one group (callers group prompts that
    share a prefix, which each prefill then runs once), and up to RUNNING_ROWS decode together,
    newcomers joining as earlier rows finish, so a long reply holds up no other batch.
    `adapters` gives each row its PEFT adapter (None: the base) in one mixed batch, for
    adapters `mixable` says PEFT can mix."""
    completions = [Completion(tokenizer, p, s) for p, s in zip(prompts, samplings, strict=True)]
    stops = stop_token_ids(tokenizer, model) if stop_ids is None else stop_ids
    named = list(adapters) if adapters is not None else [None] * len(completions)
    group = list(groups) if groups is not None else [0] * len(completions)
    chunks = []
    for g in dict.fromkeys(group):
        members = sorted((i for i in range(len(completions)) if group[i] == g),
                         key=lambda i: len(completions[i].prompt_ids))
        chunks += [members[start : start + batch_size] for start in range(0, len(members), batch_size)]
    batch = Batch(model, tokenizer, stops)
    batch.mix = any(a is not None for a in named)
    try:
        for chunk in chunks:
            while batch.rows and (not batch.joinable or len(batch.rows) + len(chunk) > RUNNING_ROWS):
                batch.step()
            batch.add([completions[i] for i in chunk], [named[i] for i in chunk])
        while batch.rows:
            batch.step()
    except BaseException as exc:
        for c in completions:
            c._fail(exc)  # those already done keep their reply
        raise
    return completions


def generate(loaded: Any, conversations: Sequence[list[Message]], sampling: Sampling, *, n: int = 1,
             tools: Sequence[Any] | None = None, adapters: Sequence[str | None] | None = None,
             groups: Sequence[int] | None = None) -> list[list[Completion]]:
    """`n` finished completions of each conversation (a LoadedModel's chat template), in
    order. `tools`, one entry per conversation, are given to the template as training gives
    them; `adapters` and `groups`, one per conversation, are generate_ids'. With a seed,
    completion k of every conversation is drawn with seed + k."""
    if n < 1:
        raise ValueError("n must be at least 1")
    tools = list(tools) if tools is not None else [None] * len(conversations)
    prompts = [loaded.renderer.prompt_ids(list(m), t) for m, t in zip(conversations, tools, strict=True)]
    samplings = [choice(sampling, k) for _ in prompts for k in range(n)]

    def each(values: Sequence[Any] | None) -> list[Any] | None:
        return None if values is None else [v for v in values for _ in range(n)]

    done = generate_ids(loaded.model, loaded.tokenizer, [p for p in prompts for _ in range(n)], samplings,
                        adapters=each(adapters), groups=each(groups))
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
