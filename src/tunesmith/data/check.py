"""The pre-flight check: everything a user should know about a dataset before spending
compute on it, from one streaming pass over the file.

Per example only a few numbers are kept (fingerprints, a line number, a token count:
about 30 bytes), so a file of a million lines is checked in bounded memory. Repeated
findings are grouped by code: the first few locations are kept with a total count.

Token counts come from the model's own tokenizer and chat template. Texts are rendered
and tokenized in batches; the exact loss mask (which tokens are trained) is computed
with `Renderer.render` for every example of a small dataset and for an evenly spread
sample of a large one, plus every example near `max_length` so truncation is exact.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tunesmith.data.content import content_findings
from tunesmith.data.dedup import (
    FingerprintBuilder,
    Fingerprints,
    exact_duplicates,
    exact_overlap,
    near_duplicates,
    near_overlap,
)
from tunesmith.data.findings import Finding, error, warning
from tunesmith.data.load import Parsed, iter_parsed
from tunesmith.data.pack import PackingStats, packing_stats
from tunesmith.data.records import (
    ChatRecord,
    CompletionRecord,
    Format,
    PreferenceRecord,
    Record,
    ReinforcementRecord,
    Source,
    TextRecord,
)
from tunesmith.data.render import RenderedExample, Renderer, fit_length
from tunesmith.data.sensitive import CARD, SECRET, Hit, find_sensitive
from tunesmith.data.templates import apply_chat_template_choice
from tunesmith.errors import DataError, TunesmithError
from tunesmith.model.loading import load_tokenizer, resolve_model
from tunesmith.recipe import BUNDLED_MODEL
from tunesmith.train.auto import auto_epochs

MAX_LOCATIONS = 20
"""Findings kept per code; the rest are counted."""
FEW_EXAMPLES = 50
HOSTED_MINIMUM = 10
TOKENIZE_BATCH = 512
EXACT_LIMIT = 5_000
"""Examples whose loss mask is rendered exactly; beyond it, an evenly spread sample."""
LENGTH_SLACK = 2
"""Examples this close to max_length are rendered exactly: rendering may add an EOS."""
PREVIEW_TOKENS = 1024
PREVIEW_CONTEXT = 6
PROGRESS_EVERY = 2000

TEMPLATED = (Format.CHAT, Format.PREFERENCE, Format.REINFORCEMENT)
SENSITIVE_FIX = {
    SECRET: "remove the secret and revoke it: a fine-tuned model can repeat what it saw",
    CARD: "remove payment card numbers: a fine-tuned model can repeat what it saw",
}
CONTACT_FIX = "replace personal contact details with placeholders unless the model must learn them"


# --- the report ----------------------------------------------------------------------


@dataclass(slots=True)
class Counts:
    rows: int = 0
    examples: int = 0
    """Rows that can be trained on."""
    with_errors: int = 0


@dataclass(frozen=True, slots=True)
class TokenStats:
    examples: int
    mean: float
    p50: int
    p95: int
    max: int
    total: int
    """Tokens trained on per epoch, after truncating or dropping overlong examples."""
    trained: int
    """Tokens that carry loss (exact, or estimated from a sample when trained_exact is False)."""
    trained_exact: bool
    billed: int
    epochs: int
    max_length: int
    over_max_length: int
    truncated: int
    dropped: int


PreviewToken = tuple[str, bool]


@dataclass(slots=True)
class CheckReport:
    path: str
    format: str | None
    counts: Counts
    findings: list[Finding]
    """Every file's findings (the validation file's and leakage included), at most
    MAX_LOCATIONS per code and file; `where` names the file."""
    finding_counts: dict[str, int]
    """Total per code, including the findings not kept."""
    model: str | None = None
    tokens: TokenStats | None = None
    packing: PackingStats | None = None
    preview: list[PreviewToken] | None = None
    preview_where: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    validation: CheckReport | None = None
    """The validation file's counts and tokens; its findings are in `findings` above."""

    @property
    def valid_examples(self) -> int:
        return self.counts.examples

    def count(self, severity: str) -> int:
        """Findings of one severity, counting those not kept."""
        codes = dict.fromkeys(f.code for f in self.findings if f.severity == severity)
        return sum(self.finding_counts.get(code, 0) for code in codes)

    @property
    def errors(self) -> int:
        return self.count("error")

    @property
    def warnings(self) -> int:
        return self.count("warning")

    @property
    def ok(self) -> bool:
        """No errors in the data or the validation data: training can start."""
        return self.errors == 0

    def groups(self) -> Iterator[tuple[str, list[Finding], int]]:
        """(code, kept findings, total) per code, in order of first appearance."""
        by_code: dict[str, list[Finding]] = {}
        for finding in self.findings:
            by_code.setdefault(finding.code, []).append(finding)
        for code, kept in by_code.items():
            yield code, kept, max(len(kept), self.finding_counts.get(code, 0))

    def to_dict(self) -> dict[str, Any]:
        data = {
            "path": self.path,
            "format": self.format,
            "ok": self.ok,
            "model": self.model,
            "counts": asdict(self.counts),
            "errors": self.errors,
            "warnings": self.warnings,
            "findings": [f.to_dict() for f in self.findings],
            "finding_counts": dict(self.finding_counts),
            "tokens": asdict(self.tokens) if self.tokens else None,
            "packing": asdict(self.packing) if self.packing else None,
            "preview": [list(token) for token in self.preview] if self.preview else None,
            "preview_where": self.preview_where,
            "settings": dict(self.settings),
            "validation": None,
        }
        if self.validation is not None:
            nested = self.validation.to_dict()
            for key in ("findings", "finding_counts", "errors", "warnings", "ok", "settings"):
                nested.pop(key)
            data["validation"] = nested
        return data


# --- small bounded containers --------------------------------------------------------


class FindingLog:
    """Keeps the first MAX_LOCATIONS findings of each code and counts all of them."""

    def __init__(self, keep: int = MAX_LOCATIONS):
        self.keep = keep
        self.kept: dict[str, list[Finding]] = {}
        self.counts: Counter[str] = Counter()

    def add(self, finding: Finding) -> None:
        self.counts[finding.code] += 1
        kept = self.kept.setdefault(finding.code, [])
        if len(kept) < self.keep:
            kept.append(finding)

    def add_many(self, code: str, total: int, make: Callable[[int], Finding]) -> None:
        """`total` findings of one code, building only the ones kept."""
        if total <= 0:
            return
        for index in range(min(total, self.keep)):
            self.add(make(index))
        self.counts[code] += max(0, total - self.keep)

    def extend(self, other: FindingLog) -> None:
        for code, kept in other.kept.items():
            for finding in kept:
                self.add(finding)
            self.counts[code] += other.counts[code] - len(kept)

    def findings(self) -> list[Finding]:
        return [finding for kept in self.kept.values() for finding in kept]


class _IntColumn:
    """A growing column of integers stored as numpy chunks (8 bytes a value, not ~36)."""

    def __init__(self, flush_at: int = 65_536):
        self._flush_at = flush_at
        self._buffer: list[int] = []
        self._chunks: list[np.ndarray] = []

    def append(self, value: int) -> None:
        self._buffer.append(value)
        if len(self._buffer) >= self._flush_at:
            self._chunks.append(np.asarray(self._buffer, dtype=np.int64))
            self._buffer = []

    def array(self) -> np.ndarray:
        if self._buffer:
            self._chunks.append(np.asarray(self._buffer, dtype=np.int64))
            self._buffer = []
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0] if self._chunks else np.zeros(0, dtype=np.int64)


class _Sources:
    """file:line of every example, as two integer columns and a short list of paths."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self._ids: dict[str, int] = {}
        self._files = _IntColumn()
        self._lines = _IntColumn()
        self._frozen: tuple[np.ndarray, np.ndarray] | None = None

    def add(self, source: Source) -> None:
        file_id = self._ids.setdefault(source.path, len(self.paths))
        if file_id == len(self.paths):
            self.paths.append(source.path)
        self._files.append(file_id)
        self._lines.append(source.line)

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._frozen is None:
            self._frozen = (self._files.array(), self._lines.array())
        return self._frozen

    def where(self, index: int) -> str:
        files, lines = self._arrays()
        return f"{self.paths[files[index]]}:{lines[index]}"

    def ref(self, index: int, seen_from: int) -> str:
        """'line N' when in the same file as example `seen_from`, else file:line."""
        files, lines = self._arrays()
        if files[index] == files[seen_from]:
            return f"line {lines[index]}"
        return self.where(index)


class _TrainedSample:
    """Exact trained-token counts for an evenly spread, bounded sample of examples.

    Every example is taken until `limit` are held; then the stride doubles and only
    examples at multiples of it are kept, so the sample always spans the whole file.
    """

    def __init__(self, limit: int = EXACT_LIMIT):
        self.limit = limit
        self.stride = 1
        self._index: list[int] = []
        self._tokens: list[int] = []
        self._trained: list[int] = []

    def wants(self, index: int) -> bool:
        return index % self.stride == 0

    def add(self, index: int, tokens: int, trained: int) -> None:
        self._index.append(index)
        self._tokens.append(tokens)
        self._trained.append(trained)
        if len(self._index) > self.limit:
            self.stride *= 2
            keep = [k for k, i in enumerate(self._index) if i % self.stride == 0]
            self._index = [self._index[k] for k in keep]
            self._tokens = [self._tokens[k] for k in keep]
            self._trained = [self._trained[k] for k in keep]

    @property
    def exact(self) -> bool:
        return self.stride == 1

    def trained(self, total_tokens: int) -> int:
        if self.exact:
            return sum(self._trained)
        sampled = sum(self._tokens)
        return round(total_tokens * sum(self._trained) / sampled) if sampled else 0


# --- what is in a record -------------------------------------------------------------


def record_texts(record: Record) -> Iterator[tuple[str, str, str]]:
    """(field path, role or field name, text) for every piece of text in a record."""
    if isinstance(record, CompletionRecord):
        yield "prompt", "prompt", record.prompt
        yield "completion", "completion", record.completion
    elif isinstance(record, TextRecord):
        yield "text", "text", record.text
    elif isinstance(record, PreferenceRecord):
        yield from _message_texts(record.prompt, "prompt")
        yield from _message_texts(record.chosen, "chosen", tag="chosen")
        yield from _message_texts(record.rejected, "rejected", tag="rejected")
    elif isinstance(record, ChatRecord | ReinforcementRecord):
        yield from _message_texts(record.messages, "messages")
        if isinstance(record, ReinforcementRecord):
            for key, value in record.fields.items():
                text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
                yield key, key, text


def _message_texts(messages: list[dict[str, Any]], key: str,
                   tag: str | None = None) -> Iterator[tuple[str, str, str]]:
    for index, message in enumerate(messages):
        role = tag or message["role"]
        if message.get("content"):
            yield f"{key}[{index}]", role, message["content"]
        if message.get("tool_calls"):
            calls = json.dumps(message["tool_calls"], sort_keys=True)
            yield f"{key}[{index}].tool_calls", role, calls


def _fingerprint_texts(texts: list[tuple[str, str, str]]) -> tuple[str, str]:
    """The text compared for exact repeats, and for near repeats the same without system
    prompts (shared by many examples, they would make every pair look alike)."""
    exact = "\n".join(f"{role}: {text}" for _, role, text in texts)
    near = "\n".join(text for _, role, text in texts if role not in ("system", "developer"))
    return exact, near or exact


# --- one file ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Settings:
    max_length: int
    overlong: Literal["truncate", "drop"]
    is_validation: bool = False


class _Scan:
    """State of one pass over one dataset: small counters, columns and a finding log."""

    def __init__(self, path: str, settings: _Settings, renderer: Renderer | None,
                 progress: Callable[[int], None] | None):
        self.path = path
        self.settings = settings
        self.renderer = renderer
        self.progress = progress
        self.log = FindingLog()
        self.counts = Counts()
        self.formats: Counter[Format] = Counter()
        self.sources = _Sources()
        self.prints_builder = FingerprintBuilder()
        self.prints = Fingerprints.empty()
        self.lengths = _IntColumn()
        self.sample = _TrainedSample(EXACT_LIMIT)
        self.pending: list[Record] = []
        self.tokenized = 0
        self.over_max = self.truncated = self.dropped = 0
        self.preview: list[PreviewToken] | None = None
        self.preview_where: str | None = None

    # --- the pass ----------------------------------------------------------------------

    def run(self, fmt: Format | str) -> _Scan:
        for parsed in iter_parsed(self.path, fmt):
            self._row(parsed)
            if self.progress and self.counts.rows % PROGRESS_EVERY == 0:
                self.progress(self.counts.rows)
        self._measure_pending()
        self.prints = self.prints_builder.finish()
        self._duplicates()
        self._dataset_findings()
        return self

    def _row(self, parsed: Parsed) -> None:
        self.counts.rows += 1
        for finding in parsed.findings:
            self.log.add(finding)
        record = parsed.record
        if record is None or any(f.severity == "error" for f in parsed.findings):
            self.counts.with_errors += 1
            return
        content = content_findings(record)
        for finding in content:
            self.log.add(finding)
        if any(f.severity == "error" for f in content):
            self.counts.with_errors += 1
            return
        self.counts.examples += 1
        self.formats[record.format] += 1
        self.sources.add(record.source)
        texts = list(record_texts(record))
        self._sensitive(texts, record.source)
        self.prints_builder.add(*_fingerprint_texts(texts))
        if self.renderer is not None:
            self.pending.append(record)
            if len(self.pending) >= TOKENIZE_BATCH:
                self._measure_pending()

    def _sensitive(self, texts: list[tuple[str, str, str]], source: Source) -> None:
        found: dict[str, list[tuple[str, Hit]]] = {}
        for path, _, text in texts:
            for hit in find_sensitive(text):
                found.setdefault(hit.kind, []).append((path, hit))
        for kind, hits in found.items():
            path, hit = hits[0]
            more = f" (and {len(hits) - 1} more)" if len(hits) > 1 else ""
            self.log.add(warning(
                f"sensitive_{kind}", f"{hit.label} {hit.masked} in {path}{more}", source,
                SENSITIVE_FIX.get(kind, CONTACT_FIX)))

    # --- tokens ------------------------------------------------------------------------

    def _measure_pending(self) -> None:
        """Measure a batch: examples in the sample (and the first, for the preview) are
        rendered with their loss mask; the rest are rendered to text and tokenized in one
        call, and rendered in full only when they come near max_length."""
        if not self.pending or self.renderer is None:
            return
        records, self.pending = self.pending, []
        counted: list[tuple[Record, int]] = []
        texts: list[str] = []
        for record in records:
            index = self.tokenized
            self.tokenized += 1
            renderable = not isinstance(record, ReinforcementRecord)
            if renderable and (self.sample.wants(index) or self.preview is None):
                self._measure_rendered(record, index)
                continue
            try:
                texts.append(self.renderer.text_of(record))
            except Exception as exc:  # see _render
                self._render_failed(record, exc)
                continue
            counted.append((record, index))
        encoded = self._tokenize([record for record, _ in counted], texts)
        for (record, index), ids in zip(counted, encoded, strict=True):
            self._measure_counted(record, index, ids)

    def _tokenize(self, records: list[Record], texts: list[str]) -> list[list[int]]:
        """Token ids of every text, one tokenizer call per batch (plain text and completion
        records get the tokenizer's BOS/EOS as `Renderer` gives them; chat templates
        write their own)."""
        assert self.renderer is not None
        tokenizer = self.renderer.tokenizer
        plain = [isinstance(r, CompletionRecord | TextRecord) for r in records]
        ids: list[list[int] | None] = [None] * len(texts)
        for flag in (False, True):
            chosen = [i for i, p in enumerate(plain) if p == flag]
            if not chosen:
                continue
            encoded = tokenizer([texts[i] for i in chosen], add_special_tokens=flag,
                                return_attention_mask=False)["input_ids"]
            for i, row in zip(chosen, encoded, strict=True):
                ids[i] = list(row)
        return [row or [] for row in ids]

    def _render(self, record: Record) -> RenderedExample | None:
        assert self.renderer is not None
        try:
            return self.renderer.render(record)
        # A chat template may raise anything (its own raise_exception, a KeyError on a
        # message shape it does not expect): that is a finding about this example.
        except Exception as exc:
            self._render_failed(record, exc)
            return None

    def _measure_rendered(self, record: Record, index: int) -> None:
        """Exact length and trained tokens, after truncation or dropping."""
        example = self._render(record)
        if example is None:
            return
        if self.preview is None:
            if example.per_turn:
                self._set_turn_preview(example, record.source)
            else:
                self._set_preview(example.input_ids, example.loss_mask, record.source)
        fitted = self._fit(example, record.source)
        if fitted is not None:
            self.lengths.append(len(fitted))
        if self.sample.wants(index):
            self.sample.add(index, len(fitted) if fitted else 0,
                            fitted.trained_tokens if fitted else 0)

    def _measure_counted(self, record: Record, index: int, ids: list[int]) -> None:
        assert self.renderer is not None
        length = len(ids)
        plain = isinstance(record, CompletionRecord | TextRecord)
        if plain and (not ids or ids[-1] != self.renderer.eos_id):
            length += 1  # rendering appends EOS so the model learns to stop
        if isinstance(record, ReinforcementRecord):
            self._measure_prompt(record, index, ids, length)
        elif length > self.settings.max_length - LENGTH_SLACK:
            self._measure_rendered(record, index)
        else:
            self.lengths.append(length)

    def _measure_prompt(self, record: ReinforcementRecord, index: int, ids: list[int],
                        length: int) -> None:
        """Reinforcement examples are prompts: counted, never trained on directly."""
        if self.preview is None:
            self._set_preview(ids, [0] * len(ids), record.source)
        if length > self.settings.max_length:
            self.over_max += 1
            limit = self.settings.max_length
            self.log.add(warning(
                "too_long", f"prompt is {length} tokens, over max_length {limit}",
                record.source, "shorten the prompt or raise data.max_length"))
        self.lengths.append(length)
        if self.sample.wants(index):
            self.sample.add(index, length, 0)

    def _fit(self, example: RenderedExample, source: Source) -> RenderedExample | None:
        """The example as trained: itself, truncated, or None when dropped."""
        max_length, length = self.settings.max_length, len(example)
        if length <= max_length:
            return example
        self.over_max += 1
        fitted = fit_length(example, max_length, self.settings.overlong)
        if fitted is None:
            self.dropped += 1
            why = ("data.overlong is 'drop'" if self.settings.overlong == "drop"
                   else "truncating it would leave no trained tokens")
            self.log.add(warning(
                "too_long_dropped", f"{length} tokens, over max_length {max_length}: dropped, "
                f"since {why}", source, "shorten the example or raise data.max_length"))
            return None
        self.truncated += 1
        lost = example.trained_tokens - fitted.trained_tokens
        self.log.add(warning(
            "too_long", f"{length} tokens, over max_length {max_length}: truncated to "
            f"{max_length}, cutting {lost} of {example.trained_tokens} trained tokens", source,
            "shorten the example or raise data.max_length"))
        return fitted

    def _render_failed(self, record: Record, exc: Exception) -> None:
        self.counts.examples -= 1
        self.counts.with_errors += 1
        if isinstance(exc, DataError):
            self.log.add(error("render_failed", exc.message, record.source, exc.fix))
        else:
            self.log.add(error(
                "render_failed", f"the chat template cannot render this example: {exc}",
                record.source, "check the example's messages against the model's chat template"))

    def _set_turn_preview(self, example: RenderedExample, source: Source) -> None:
        """A conversation trained turn by turn: each rendering under its own heading."""
        assert self.renderer is not None
        parts = example.parts()
        budget = min(PREVIEW_TOKENS, self.settings.max_length)
        pieces: list[PreviewToken] = []
        for number, (ids, mask) in enumerate(parts, 1):
            if budget <= 0:
                break
            heading = (f"── rendering {number} of {len(parts)}: trained turn {number} as inference "
                       "renders it (the template is not prefix-stable) ──\n")
            pieces.append(("\n" + heading if number > 1 else heading, False))
            pieces += preview_tokens(self.renderer.tokenizer, ids[:budget], mask[:budget])
            budget -= len(ids)
        self.preview = pieces
        self.preview_where = str(source)

    def _set_preview(self, ids: list[int], mask: list[int], source: Source) -> None:
        assert self.renderer is not None
        limit = min(PREVIEW_TOKENS, self.settings.max_length)
        self.preview = preview_tokens(self.renderer.tokenizer, ids[:limit], mask[:limit])
        self.preview_where = str(source)

    # --- after the pass ----------------------------------------------------------------

    def _duplicates(self) -> None:
        sources, log = self.sources, self.log
        repeat, first = exact_duplicates(self.prints.exact)
        log.add_many("duplicate", len(repeat), lambda k: warning(
            "duplicate", f"exact duplicate of {sources.ref(first[k], repeat[k])}",
            sources.where(repeat[k]), "remove repeated examples: they over-weight one answer"))
        repeat, earlier = near_duplicates(self.prints)
        log.add_many("near_duplicate", len(repeat), lambda k: warning(
            "near_duplicate", f"nearly the same text as {sources.ref(earlier[k], repeat[k])}",
            sources.where(repeat[k]), "remove or vary near-repeats unless the variation matters"))

    def _dataset_findings(self) -> None:
        if self.counts.examples == 0:
            self.log.add(error("no_examples", "the dataset holds no usable examples", self.path,
                               "fix the errors above" if self.counts.rows else "add examples"))
        elif self.renderer is not None and not len(self.lengths.array()):
            why = (f"{self.dropped:,} dropped as longer than max_length {self.settings.max_length:,}"
                   if self.dropped else "none of them renders")
            if self.settings.is_validation:
                self.log.add(warning(
                    "nothing_to_evaluate", f"no validation example is usable: {why}", self.path,
                    "shorten the examples or raise data.max_length"))
            else:
                self.log.add(error(
                    "nothing_to_train", f"none of the {self.counts.examples:,} examples can be trained: "
                    f"{why}", self.path, "shorten the examples, raise data.max_length, or use "
                    "data.overlong: truncate"))
        elif self.counts.examples < FEW_EXAMPLES and not self.settings.is_validation:
            self.log.add(warning(
                "too_few_examples",
                f"only {self.counts.examples} examples: hosted fine-tuning APIs require at least "
                f"{HOSTED_MINIMUM} and suggest {FEW_EXAMPLES} or more to see a clear effect",
                self.path, f"add examples (aim for {FEW_EXAMPLES} to 100 to start)"))
        if len(self.formats) > 1:
            shapes = ", ".join(f"{fmt} ({n})" for fmt, n in self.formats.most_common())
            self.log.add(error("mixed_formats", f"the dataset mixes shapes: {shapes}", self.path,
                               "keep one shape per dataset"))
        if self.renderer is not None and self.renderer.used_fallback_template and any(
                fmt in TEMPLATED for fmt in self.formats):
            self.log.add(warning(
                "no_chat_template", "the tokenizer has no chat template, so tunesmith's fallback "
                "template (### User: / ### Assistant:) is used",
                self.renderer.tokenizer.name_or_path,
                "fine: chat with the tuned model uses the same template; or pick a model with one"))

    # --- results -----------------------------------------------------------------------

    @property
    def format(self) -> Format | None:
        return self.formats.most_common(1)[0][0] if self.formats else None

    def token_stats(self, epochs: int) -> TokenStats | None:
        if self.renderer is None:
            return None
        lengths = self.lengths.array()
        total = int(lengths.sum())
        return TokenStats(
            examples=len(lengths),
            mean=round(float(lengths.mean()), 1) if len(lengths) else 0.0,
            p50=int(np.percentile(lengths, 50)) if len(lengths) else 0,
            p95=int(np.percentile(lengths, 95)) if len(lengths) else 0,
            max=int(lengths.max()) if len(lengths) else 0,
            total=total,
            trained=self.sample.trained(total),
            trained_exact=self.sample.exact,
            billed=total * epochs,
            epochs=epochs,
            max_length=self.settings.max_length,
            over_max_length=self.over_max,
            truncated=self.truncated,
            dropped=self.dropped,
        )

    def report(self, epochs: int, batch_size: int, budget: int, model: str | None) -> CheckReport:
        tokens = self.token_stats(epochs)
        packing = None
        if tokens is not None and tokens.examples:
            packing = packing_stats(self.lengths.array().tolist(), batch_size, budget)
        return CheckReport(
            path=self.path,
            format=str(self.format) if self.format else None,
            counts=self.counts,
            findings=self.log.findings(),
            finding_counts=dict(self.log.counts),
            model=model,
            tokens=tokens,
            packing=packing,
            preview=self.preview,
            preview_where=self.preview_where,
        )


# --- preview -------------------------------------------------------------------------


def preview_tokens(tokenizer: Any, ids: list[int], mask: list[int]) -> list[PreviewToken]:
    """Each token's text as it reads in the decoded string, with whether it is trained.

    Tokens are decoded with a few tokens of left context, so leading-space rules and
    byte-level pieces come out as the reader sees them; a token that ends in the middle
    of a character is joined to the token that completes it.
    """
    pieces: list[PreviewToken] = []
    pending = False
    for end in range(1, len(ids) + 1):
        start = max(0, end - 1 - PREVIEW_CONTEXT)
        before = _decode(tokenizer, ids[start:end - 1]).rstrip("\ufffd")
        now = _decode(tokenizer, ids[start:end])
        pending = pending or bool(mask[end - 1])
        if now.endswith("\ufffd") and end < len(ids):
            continue
        pieces.append((_piece(tokenizer, before, now, ids[end - 1]), pending))
        pending = False
    return pieces


def _piece(tokenizer: Any, before: str, now: str, token_id: int) -> str:
    """What decoding one more token added; the raw token when decoding rewrote the text."""
    if now.startswith(before):
        return now[len(before):]
    return str(tokenizer.convert_ids_to_tokens(token_id))


def _decode(tokenizer: Any, ids: list[int]) -> str:
    if not ids:
        return ""
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


# --- two files -----------------------------------------------------------------------


def _leakage(train: _Scan, other: _Scan) -> FindingLog:
    """Validation examples that are also (or nearly) in the training data."""
    log = FindingLog()
    fix = "remove it from one of the files so validation measures unseen examples"
    found, match = exact_overlap(train.prints.exact, other.prints.exact)
    log.add_many("validation_overlap", len(found), lambda k: warning(
        "validation_overlap", f"also in the training data at {train.sources.where(match[k])}",
        other.sources.where(found[k]), fix))
    found, match = near_overlap(train.prints, other.prints)
    log.add_many("validation_near_overlap", len(found), lambda k: warning(
        "validation_near_overlap",
        f"nearly the same as training example {train.sources.where(match[k])}",
        other.sources.where(found[k]), fix))
    return log


EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")


def _experts_note(model: str) -> Finding | None:
    """Mixture-of-experts models: LoRA does not reach fused expert weights (read from the
    model's config.json, without loading it; training names the weights left frozen)."""
    try:
        config = json.loads((Path(resolve_model(model).location) / "config.json").read_text())
    except (OSError, ValueError, TunesmithError):
        return None
    experts = next((config[k] for k in EXPERT_KEYS if isinstance(config.get(k), int) and config[k] > 1), None)
    if experts is None:
        return None
    return warning("moe_experts", f"{model} is a mixture-of-experts model ({experts} experts): LoRA "
                   "and DoRA adapters train its attention, shared experts and routers but not the "
                   "routed experts' fused weights", model,
                   "fine for style and format; to adapt the experts use adapter.kind: full")


def _load_renderer(model: str, loss_on: str, chat_template: str | None = None) -> Renderer:
    tokenizer = load_tokenizer(resolve_model(model))
    apply_chat_template_choice(tokenizer, chat_template)
    _disable_word_cache(tokenizer)
    return Renderer(tokenizer, loss_on)


def _disable_word_cache(tokenizer: Any) -> None:
    """Turn off the BPE model's word cache on our own copy of the tokenizer.

    Tokenizers that do not pre-split text (Llama-2 style, Metaspace with split=False)
    cache every whole text they encode, up to 10,000 of them: ~100 MB for short chats and
    far more for long ones, for no gain in a pass that sees each text once.
    """
    model = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)
    resize = getattr(model, "_resize_cache", None)
    if callable(resize):
        resize(0)


def check_dataset(
    path: str | Path,
    *,
    validation: str | Path | None = None,
    fmt: Format | str = "auto",
    model: str | None = BUNDLED_MODEL,
    max_length: int = 2048,
    epochs: int | Literal["auto"] = 3,
    batch_size: int = 8,
    micro_batch_tokens: int | None = None,
    overlong: Literal["truncate", "drop"] = "truncate",
    loss_on: Literal["assistant", "all"] = "assistant",
    chat_template: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> CheckReport:
    """Check a dataset (and its validation file) in one streaming pass each.

    `model=None` skips tokenization: no token counts, packing or preview. `chat_template`
    is the recipe's `data.chat_template` (a file or a built-in name). `progress` is called
    with the number of rows read every few thousand rows.
    """
    if max_length <= 0 or batch_size <= 0:
        raise DataError("max_length and batch_size must be positive")
    renderer = _load_renderer(model, loss_on, chat_template) if model else None
    settings = _Settings(max_length, overlong)
    train = _Scan(str(path), settings, renderer, progress).run(fmt)
    resolved = auto_epochs(train.counts.examples) if epochs == "auto" else int(epochs)
    budget = micro_batch_tokens or max(max_length, 4096)
    report = train.report(resolved, batch_size, budget, model)
    if model:
        note = _experts_note(model)
        if note is not None:
            report.findings.append(note)
            report.finding_counts[note.code] = 1
    report.settings = {
        "max_length": max_length, "epochs": resolved, "epochs_requested": epochs,
        "batch_size": batch_size, "micro_batch_tokens": budget, "overlong": overlong,
        "loss_on": loss_on, "format": str(fmt), "chat_template": chat_template,
    }
    if validation is not None:
        val = _Scan(str(validation), replace(settings, is_validation=True), renderer,
                    progress).run(fmt)
        val.log.extend(_leakage(train, val))
        report.validation = val.report(resolved, batch_size, budget, model)
        report.findings += report.validation.findings
        report.finding_counts = dict(Counter(report.finding_counts) + val.log.counts)
        if report.format and val.format and str(val.format) != report.format:
            report.findings.append(error(
                "validation_format", f"validation data is {val.format}, training data is "
                f"{report.format}", str(validation), "use the same shape in both files"))
            report.finding_counts["validation_format"] = 1
    return report
