"""The pre-flight check: everything a user should know about a dataset before spending
compute on it, from one streaming pass over the file.

Per example only a few numbers are kept (fingerprints, a line number, a token count:
about 30 bytes), so a file of a million lines is checked in bounded memory. Repeated
findings are grouped by code: the first few locations are kept with a total count.

Token counts come from the model's own tokenizer and chat template. Texts are rendered
and tokenized in batches; the exact loss mask (which tokens are trained) is computed
with `Renderer.render` for every example of a small dataset and for an evenly spread
sample of a large one, plus every example near `max_length` so truncation is exact.

One pass over one file is check_scan.py, its bounded containers and a record's texts
check_parts.py, the report check_report.py; here: both files together (leakage), model notes
and `check_dataset`, which takes the recipe's data section.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from tunesmith.data.check_parts import FindingLog
from tunesmith.data.check_report import CheckReport
from tunesmith.data.check_scan import Scan, ScanSettings
from tunesmith.data.dedup import exact_overlap, near_overlap
from tunesmith.data.findings import Finding, error, warning
from tunesmith.data.records import Format
from tunesmith.data.render import Renderer
from tunesmith.data.templates import apply_chat_template_choice
from tunesmith.errors import DataError, TunesmithError
from tunesmith.model.loading import load_tokenizer, resolve_model
from tunesmith.recipe import BUNDLED_MODEL, DataConfig, TrainingConfig
from tunesmith.train.auto import CPU_MICRO_BATCH_TOKENS, auto_batch_size, auto_epochs


def _leakage(train: Scan, other: Scan) -> FindingLog:
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
    data: DataConfig | str | Path,
    *,
    training: TrainingConfig | None = None,
    model: str | None = BUNDLED_MODEL,
    progress: Callable[[int], None] | None = None,
    validation: str | Path | None = None,
    fmt: Format | str | None = None,
    max_length: int | None = None,
    epochs: int | Literal["auto"] | None = None,
    batch_size: int | None = None,
    micro_batch_tokens: int | None = None,
    overlong: Literal["truncate", "drop"] | None = None,
    loss_on: Literal["assistant", "all"] | None = None,
    chat_template: str | None = None,
) -> CheckReport:
    """Check a recipe's data section (its train, validation and replay files) in one streaming
    pass each, with the packing its training section would get.

    `data` is the recipe's `data` section; a path stands for a section with that train file, and
    the keywords after `progress` set its keys (the command line's flags), the rest keeping the
    recipe's defaults. `training` gives epochs, batch size and micro-batch tokens ("auto" as
    training resolves it; without a section: 3 epochs of 8 examples). `model=None` skips
    tokenization: no token counts, packing or preview. `progress` is called with the number of
    rows read every few thousand rows.
    """
    data = _data_section(data, validation=validation, format=fmt, max_length=max_length,
                         overlong=overlong, loss_on=loss_on, chat_template=chat_template)
    if data.train is None:
        raise DataError("the data section names no train file", where="data.train")
    epochs = epochs if epochs is not None else training.epochs if training is not None else 3
    batch_size = batch_size if batch_size is not None else (
        training.batch_size if training is not None else 8)
    if micro_batch_tokens is None and training is not None and training.micro_batch_tokens != "auto":
        micro_batch_tokens = int(training.micro_batch_tokens)
    if batch_size != "auto" and int(batch_size) <= 0:
        raise DataError("max_length and batch_size must be positive")
    max_length, overlong, fmt = data.max_length, data.overlong, data.format
    renderer = _load_renderer(model, data.loss_on, data.chat_template) if model else None
    settings = ScanSettings(max_length, overlong)
    train = Scan(data.train, settings, renderer, progress).run(fmt)
    resolved = auto_epochs(train.counts.examples) if epochs == "auto" else int(epochs)
    batch = auto_batch_size(train.counts.examples) if batch_size == "auto" else int(batch_size)
    budget = micro_batch_tokens or max(max_length, CPU_MICRO_BATCH_TOKENS)
    report = train.report(resolved, batch, budget, model)
    if model:
        note = _experts_note(model)
        if note is not None:
            report.findings.append(note)
            report.finding_counts[note.code] = 1
    report.settings = {
        "max_length": max_length, "epochs": resolved, "epochs_requested": epochs,
        "batch_size": batch, "micro_batch_tokens": budget, "overlong": overlong,
        "loss_on": data.loss_on, "format": str(fmt), "chat_template": data.chat_template,
    }
    packing = (resolved, batch, budget, model)
    if data.validation is not None:
        val = Scan(data.validation, replace(settings, is_validation=True), renderer,
                   progress).run(fmt)
        val.log.extend(_leakage(train, val))
        report.validation = _join(report, val, "validation", data.validation, packing,
                                  "use the same shape in both files")
    if data.replay is not None:
        replay = Scan(data.replay, replace(settings, is_replay=True), renderer, progress).run(fmt)
        report.replay = _join(report, replay, "replay", data.replay, packing,
                              "give replay examples in the training data's format")
    return report


def _join(report: CheckReport, scan: Scan, role: str, path: str, packing: tuple[Any, ...],
          fix: str) -> CheckReport:
    """A second file's report (validation, replay): its findings join the training report's,
    and a shape other than the training data's is an error."""
    part = scan.report(*packing)
    report.findings += part.findings
    report.finding_counts = dict(Counter(report.finding_counts) + scan.log.counts)
    if report.format and scan.format and str(scan.format) != report.format:
        report.findings.append(error(f"{role}_format", f"{role} data is {scan.format}, training data is "
                                     f"{report.format}", path, fix))
        report.finding_counts[f"{role}_format"] = 1
    return part


def _data_section(data: DataConfig | str | Path, **keys: Any) -> DataConfig:
    """The section itself, or one built from a path and the keys given (None: the default)."""
    given = {key: str(value) if isinstance(value, Path) else value
             for key, value in keys.items() if value is not None}
    if isinstance(data, DataConfig):
        return data.model_copy(update=given) if given else data
    if given.get("max_length") is not None and int(given["max_length"]) <= 0:
        raise DataError("max_length and batch_size must be positive")
    try:
        return DataConfig(train=str(data), **given)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        raise DataError(f"{first['msg']}", where=f"data.{key}") from None
