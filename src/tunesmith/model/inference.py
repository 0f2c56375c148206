"""Load a trained model for use, and generate replies with its chat template.

Shared by `tunesmith chat`, evaluation and the server so all three see the same model.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunesmith.data.records import Message
from tunesmith.data.render import Renderer
from tunesmith.errors import ModelError
from tunesmith.model.loading import ModelRef, load_model, load_tokenizer, resolve_model


@dataclass(slots=True)
class LoadedModel:
    model: Any
    tokenizer: Any
    renderer: Renderer
    name: str


def load_trained(target: str | Path, device: str = "cpu") -> LoadedModel:
    """A run directory (its final model), a PEFT adapter folder, or any base model."""
    path = Path(target)
    base_name: str | None = None
    trust = False
    if (path / "recipe.yaml").exists():
        from tunesmith.train.run import RunDir

        run = RunDir(path)
        recipe = run.read_recipe()
        base_name, trust = recipe.base_model, recipe.trust_remote_code
        if not run.final.exists():
            raise ModelError(f"run {path} has no final model yet (status: {run.info().get('status')})",
                             fix=f"finish it with `tunesmith train --resume {path}`")
        path = run.final
    if (path / "adapter_config.json").exists():
        from peft import PeftModel

        if base_name is None:
            base_name = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
        base_ref = resolve_model(base_name)
        # The adapter folder carries the tokenizer (and chat template) it was trained with.
        has_tokenizer = (path / "tokenizer_config.json").exists()
        tokenizer = load_tokenizer(ModelRef(str(path), str(path)) if has_tokenizer else base_ref, trust)
        base = load_model(base_ref, trust, torch.float32)
        model = PeftModel.from_pretrained(base, str(path))
    else:
        ref = resolve_model(str(path) if path.exists() else str(target))
        tokenizer = load_tokenizer(ref, trust)
        model = load_model(ref, trust, torch.float32)
    model.to(device).eval()
    return LoadedModel(model, tokenizer, Renderer(tokenizer), str(target))


def _generation_kwargs(loaded: LoadedModel, max_new_tokens: int, temperature: float,
                       top_p: float) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens,
                              "eos_token_id": loaded.tokenizer.eos_token_id,
                              "pad_token_id": loaded.tokenizer.pad_token_id}
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return kwargs


class _TextStream:
    """Receives generated token ids from `generate` and yields text as it becomes whole.

    Written here because byte-level tokenizers split a character such as "—" over several
    tokens: decoding token by token would emit replacement characters, so the text is
    decoded in full each time and held back while it ends inside a character.
    """

    def __init__(self, tokenizer: Any, prompt_length: int):
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length
        self.ids: list[int] = []
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.sent = 0
        self.skipped_prompt = False

    def put(self, value: torch.Tensor) -> None:
        if not self.skipped_prompt:  # generate() first sends the prompt itself
            self.skipped_prompt = True
            return
        self.ids += value.reshape(-1).tolist()
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return
        if len(text) > self.sent:
            self.queue.put(text[self.sent :])
            self.sent = len(text)

    def end(self) -> None:
        # A reply cut at max_new_tokens can stop inside a character: drop that part-character.
        text = _whole_characters(self.tokenizer.decode(self.ids, skip_special_tokens=True))
        if len(text) > self.sent:
            self.queue.put(text[self.sent :])
        self.queue.put(None)

    def __iter__(self) -> Iterator[str]:
        while (piece := self.queue.get()) is not None:
            yield piece


def stream_reply(loaded: LoadedModel, messages: list[Message], max_new_tokens: int = 256,
                 temperature: float = 0.0, top_p: float = 1.0, tools: Any = None) -> Iterator[str]:
    """Yield the reply's text piece by piece as it is generated (tools: OpenAI-shaped function
    definitions, given to the chat template as training gives them)."""
    ids = torch.tensor([loaded.renderer.prompt_ids(messages, tools)], device=loaded.model.device)
    stream = _TextStream(loaded.tokenizer, ids.shape[1])
    kwargs = _generation_kwargs(loaded, max_new_tokens, temperature, top_p)
    failure: list[BaseException] = []

    def generate() -> None:
        try:
            loaded.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=stream,
                                  **kwargs)
        except BaseException as exc:  # surfaced in the caller's thread below
            failure.append(exc)
            stream.end()

    worker = threading.Thread(target=generate, daemon=True)
    worker.start()
    yield from stream
    worker.join()
    if failure:
        raise failure[0]


def reply(loaded: LoadedModel, messages: list[Message], **kwargs: Any) -> str:
    return "".join(stream_reply(loaded, messages, **kwargs))


GENERATION_BATCH = 16
"""Conversations generated together; prompts are sorted by length first so a batch pads little."""


def generate_replies(loaded: LoadedModel, conversations: Sequence[list[Message]], *,
                     max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
                     stop: Sequence[str] = (), seed: int | None = None, n: int = 1) -> list[list[str]]:
    """`n` replies to each conversation, in order: greedy when temperature is 0, sampled otherwise.

    Prompts go through the model's chat template and are left-padded into batches, so each
    reply continues right where its prompt ends. A reply is cut before the first stop
    sequence (which is not included, as in OpenAI's API). With a seed, sampling is
    repeatable and the caller's global random state is left as it was.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    tokenizer, model = loaded.tokenizer, loaded.model
    prompts = [loaded.renderer.prompt_ids(list(messages)) for messages in conversations]
    kwargs = _generation_kwargs(loaded, max_new_tokens, temperature, top_p)
    stops = [s for s in stop if s]
    if stops:
        kwargs.update(stop_strings=stops, tokenizer=tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    replies: list[list[str]] = [[] for _ in prompts]
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=seed is not None), torch.no_grad():
        if seed is not None:
            torch.manual_seed(seed)
        for start in range(0, len(order), GENERATION_BATCH):
            chunk = order[start : start + GENERATION_BATCH]
            width = max(len(prompts[i]) for i in chunk)
            ids = torch.tensor([[pad] * (width - len(prompts[i])) + prompts[i] for i in chunk],
                               device=model.device)
            mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in chunk],
                                device=model.device)
            out = model.generate(input_ids=ids, attention_mask=mask, num_return_sequences=n, **kwargs)
            texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
            for row, text in enumerate(texts):
                replies[chunk[row // n]].append(_cut_at_stop(_whole_characters(text), stops))
    return replies


def _whole_characters(text: str) -> str:
    """The text without a trailing part of a character (decoded as U+FFFD) that the token
    limit cut off: byte-level tokenizers spread one character such as "—" over several tokens."""
    return text.rstrip("\ufffd")


def _cut_at_stop(text: str, stops: Sequence[str]) -> str:
    cuts = [text.find(s) for s in stops if s in text]
    return text[: min(cuts)] if cuts else text
