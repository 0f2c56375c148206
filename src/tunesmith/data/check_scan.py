"""One pass of the dataset check over one file: rows read, validated, fingerprinted, scanned
for sensitive data and content problems and tokenized in batches; and the token preview."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from tunesmith.data.check_parts import (
    FindingLog,
    IntColumn,
    Sources,
    TrainedSample,
    fingerprint_texts,
    record_texts,
)
from tunesmith.data.check_report import CheckReport, Counts, PreviewToken, TokenStats
from tunesmith.data.content import content_findings
from tunesmith.data.dedup import (
    FingerprintBuilder,
    Fingerprints,
    exact_duplicates,
    near_duplicates,
)
from tunesmith.data.findings import error, warning
from tunesmith.data.load import Parsed, iter_parsed
from tunesmith.data.pack import packing_stats
from tunesmith.data.records import (
    CompletionRecord,
    Format,
    Record,
    ReinforcementRecord,
    Source,
    TextRecord,
)
from tunesmith.data.render import RenderedExample, Renderer, fit_length
from tunesmith.data.sensitive import CARD, SECRET, Hit, find_sensitive
from tunesmith.errors import DataError

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


@dataclass(frozen=True, slots=True)
class ScanSettings:
    max_length: int
    overlong: Literal["truncate", "drop"]
    is_validation: bool = False
    is_replay: bool = False
    """data.replay: trained, but a handful of general chats is enough, so no size warning."""


class Scan:
    """State of one pass over one dataset: small counters, columns and a finding log."""

    def __init__(self, path: str, settings: ScanSettings, renderer: Renderer | None,
                 progress: Callable[[int], None] | None):
        self.path = path
        self.settings = settings
        self.renderer = renderer
        self.progress = progress
        self.log = FindingLog()
        self.counts = Counts()
        self.formats: Counter[Format] = Counter()
        self.sources = Sources()
        self.prints_builder = FingerprintBuilder()
        self.prints = Fingerprints.empty()
        self.lengths = IntColumn()
        self.sample = TrainedSample(EXACT_LIMIT)
        self.pending: list[Record] = []
        self.tokenized = 0
        self.over_max = self.truncated = self.dropped = 0
        self.preview: list[PreviewToken] | None = None
        self.preview_where: str | None = None

    # --- the pass ----------------------------------------------------------------------

    def run(self, fmt: Format | str) -> Scan:
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
        self.prints_builder.add(*fingerprint_texts(texts))
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
        elif self.counts.examples < FEW_EXAMPLES and not (
                self.settings.is_validation or self.settings.is_replay):
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
