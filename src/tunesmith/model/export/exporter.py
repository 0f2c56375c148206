"""Export a trained model as an adapter, a merged Hugging Face folder or a GGUF file, and
prove the export computes what the trained model computes (parity.py).

The export is written into a temporary folder beside --out and renamed into place only
after the parity check passed, so --out is either absent, the old export, or a complete
new one.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith import __version__
from tunesmith.fsutil import atomic_write_text, fsync_dir
from tunesmith.model.export import parity
from tunesmith.model.export.card import model_card
from tunesmith.model.export.errors import ExportError
from tunesmith.model.export.source import ExportSource, resolve_source

FORMATS = ("adapter", "merged", "gguf")
DTYPES = {"adapter": ("f32",), "merged": ("f32", "f16", "bf16"),
          "gguf": ("f32", "f16", "bf16", "q8_0", "q4_0")}
MANIFEST = "export.json"
Progress = Callable[[str], None]


@dataclass(slots=True)
class ExportResult:
    out: Path
    format: str
    dtype: str
    files: list[str]
    parity: list[parity.Comparison]
    notes: list[str]          # what was not written or not checked, and exactly why


def export_model(ref: str, fmt: str, out: Path | None = None, *, dtype: str | None = None,
                 max_shard_size: str = "2GB", force: bool = False,
                 progress: Progress | None = None) -> ExportResult:
    """Export MODEL (run directory, adapter folder or registry model) as `fmt` into `out`."""
    say = progress or (lambda _: None)
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}", where="--format", fix=f"use one of {', '.join(FORMATS)}")
    source = resolve_source(ref)
    if fmt == "adapter" and not source.is_adapter:
        raise ExportError(f"{source.name} was fully fine-tuned: it has no adapter to export",
                          where="--format", fix="export it with --format merged or --format gguf")
    out = Path(out) if out is not None else Path("exports") / f"{_slug(source.name)}-{fmt}"
    if out.exists() and not force:
        raise ExportError(f"{out} already exists", where="--out",
                          fix="choose another --out, or add --force to replace it")
    dtype = _check_dtype(fmt, dtype or _default_dtype(fmt, source))
    say(f"loading {source.name}")
    loaded = _load(source)
    prompts = parity.sample_prompts(loaded.tokenizer)
    reference = parity.reference_outputs(loaded.model, prompts, loaded.tokenizer.eos_token_id)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        say(f"writing {fmt} ({dtype})")
        notes: list[str] = []
        comparisons = _write(fmt, dtype, source, loaded, staging, max_shard_size, reference, say, notes)
        parity.check(comparisons)
        files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
        files = sorted({*files, "README.md", MANIFEST})
        reports = [c.as_dict() for c in comparisons]
        atomic_write_text(staging / "README.md", model_card(source, fmt, dtype, files, reports, notes))
        atomic_write_text(staging / MANIFEST, json.dumps(
            {"format": fmt, "dtype": dtype, "source": source.ref, "name": source.name,
             "base_model": source.base_model, "tunesmith_version": __version__, "parity": reports,
             "notes": notes}, indent=1))
        _replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(out, fmt, dtype, files, comparisons, notes)


def verify_export(ref: str, out: Path, progress: Progress | None = None) -> list[parity.Comparison]:
    """Run the parity check again on an existing export; raises ParityError on a mismatch."""
    say = progress or (lambda _: None)
    manifest_file = Path(out) / MANIFEST
    if not manifest_file.exists():
        raise ExportError(f"{out} is not a tunesmith export (no {MANIFEST})", where="--out",
                          fix="export first: tunesmith export MODEL --format FORMAT --out DIR")
    manifest = json.loads(manifest_file.read_text())
    source = resolve_source(ref)
    say(f"loading {source.name}")
    loaded = _load(source)
    prompts = parity.sample_prompts(loaded.tokenizer)
    reference = parity.reference_outputs(loaded.model, prompts, loaded.tokenizer.eos_token_id)
    tokenizer = loaded.tokenizer
    del loaded
    say(f"checking {manifest['format']} export in {out}")
    prompts = [seq[:n] for seq, n in zip(reference.sequences, reference.prompt_lengths, strict=True)]
    comparisons = _check_folder(manifest["format"], manifest["dtype"], Path(out), reference, prompts, [],
                                tokenizer)
    parity.check(comparisons)
    return comparisons


def _load(source: ExportSource) -> Any:
    from tunesmith.model.inference import load_trained

    return load_trained(source.load_from)


def _default_dtype(fmt: str, source: ExportSource) -> str:
    """adapter: as trained (f32); gguf: f16; merged: the base model's own storage dtype."""
    from tunesmith.model.export.merged import base_dtype

    if fmt == "adapter":
        return "f32"
    if fmt == "gguf":
        return "f16"
    return base_dtype(source.weights if not source.is_adapter else source.base_model)


def _check_dtype(fmt: str, dtype: str) -> str:
    if dtype not in DTYPES[fmt]:
        raise ExportError(f"--dtype {dtype} is not available for --format {fmt}", where="--dtype",
                          fix=f"use one of {', '.join(DTYPES[fmt])}")
    return dtype


def _write(fmt: str, dtype: str, source: ExportSource, loaded: Any, staging: Path, max_shard_size: str,
           reference: parity.Reference, say: Progress, notes: list[str]) -> list[parity.Comparison]:
    from tunesmith.model.export.merged import merge, save_merged

    prompts = [seq[:n] for seq, n in zip(reference.sequences, reference.prompt_lengths, strict=True)]
    if fmt == "adapter":
        for file in source.weights.iterdir():
            if file.is_file() and file.name != "README.md":
                shutil.copy2(file, staging / file.name)
        return _check_folder("adapter", dtype, staging, reference, prompts, notes)
    merged = merge(loaded.model)
    if fmt == "merged":
        save_merged(merged, loaded.tokenizer, staging, dtype, max_shard_size)
        del merged, loaded.model
        say("checking parity")
        return _check_folder("merged", dtype, staging, reference, prompts, notes)
    from tunesmith.model.export.gguf import write_gguf
    from tunesmith.model.export.ollama import write_modelfile

    in_memory = parity.compare(reference, merged, "merged weights", "f32")
    gguf_file = staging / f"model-{dtype}.gguf"
    write_gguf(merged, loaded.tokenizer, gguf_file, dtype, name=source.name)
    try:
        write_modelfile(loaded.tokenizer, staging / "Modelfile", gguf_file.name)
    except ExportError as exc:   # the GGUF file is still good: it carries the chat template itself
        notes.append(f"no Ollama Modelfile: {exc.message}")
    del merged, loaded.model
    say("checking parity")
    return [in_memory, *_check_folder("gguf", dtype, staging, reference, prompts, notes, loaded.tokenizer)]


def _check_folder(fmt: str, dtype: str, folder: Path, reference: parity.Reference, prompts: list[list[int]],
                  notes: list[str], trained_tokenizer: Any = None) -> list[parity.Comparison]:
    """Load the export the way its users will, and compare it with the reference."""
    import torch

    if fmt == "adapter":
        from tunesmith.model.inference import load_trained

        model = load_trained(folder).model
        return [parity.compare(reference, model, "adapter", "f32")]
    if fmt == "merged":
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        return [parity.compare(reference, model.eval(), "merged folder (transformers)", dtype)]
    gguf_file = next(folder.glob("*.gguf"), None)
    if gguf_file is None:
        raise ExportError(f"{folder} holds no .gguf file", where=str(folder))
    texts = parity.sample_texts(trained_tokenizer) if trained_tokenizer is not None else None
    results = [c for c in [_check_in_llamacpp(gguf_file, dtype, reference, prompts, texts, notes)] if c]
    results += _check_gguf_in_transformers(gguf_file, dtype, reference, prompts, notes,
                                           required=not results)
    if trained_tokenizer is not None and (folder / "Modelfile").exists():
        from tunesmith.model.export.ollama import check_modelfile

        results[0].notes += check_modelfile(trained_tokenizer, folder / "Modelfile")
    return results


def _check_gguf_in_transformers(gguf_file: Path, dtype: str, reference: parity.Reference,
                                prompts: list[list[int]], notes: list[str],
                                required: bool) -> list[parity.Comparison]:
    """transformers' GGUF loader: the check when llama.cpp is not installed, else a second
    opinion. It reads only part of some architectures' settings (Qwen3's head size, Gemma's
    query scale and soft caps), so where llama.cpp ran, its result is reported, not required."""
    from tunesmith.model.export.gguf import load_gguf_with_transformers

    try:
        model, tokenizer = load_gguf_with_transformers(gguf_file)
    except ExportError as exc:
        if required:
            raise
        notes.append(f"not checked with transformers' GGUF loader: {exc.message[:300]}")
        return []
    result = parity.compare(reference, model, "gguf file (transformers' GGUF loader)", dtype)
    result.required = required
    if required:
        # Without llama.cpp, transformers' rebuilt tokenizer is the only check of the vocabulary.
        for prompt in prompts:
            text = tokenizer.decode(prompt)
            if tokenizer(text, add_special_tokens=False)["input_ids"] != prompt:
                result.notes.append("the GGUF file's tokenizer (as transformers rebuilds it) splits the "
                                    "sample prompts differently")
                break
    return [result]


def _check_in_llamacpp(gguf_file: Path, dtype: str, reference: parity.Reference, prompts: list[list[int]],
                       texts: list[str] | None, notes: list[str]) -> parity.Comparison | None:
    """The GGUF file in llama.cpp itself: logits, greedy decoding and its tokenization of the
    sample prompts. None (with a note saying why) when llama.cpp is not installed."""
    from tunesmith.model.export import llamacpp

    reason = llamacpp.missing_reason()
    if reason:
        notes.append(f"not checked in llama.cpp: {reason}")
        return None
    new_tokens = max(len(s) - n for s, n in zip(reference.sequences, reference.prompt_lengths, strict=True))
    answer = llamacpp.run(gguf_file, sequences=reference.sequences, texts=texts or [], prompts=prompts,
                          new_tokens=max(new_tokens, 1))
    tolerance = parity.LLAMACPP_TOLERANCES[dtype] * parity.logit_spread(reference)
    result = parity.compare_logits(reference, answer.logits, f"gguf file in llama.cpp (node-llama-cpp "
                                   f"{llamacpp.VERSION})", dtype, tolerance)
    result.near_ties_allowed = parity.LLAMACPP_NEAR_TIES[dtype]
    for index, (want, got) in enumerate(zip(prompts, answer.tokenized, strict=False)):
        if got != want:
            at = next((i for i, (a, b) in enumerate(zip(want, got, strict=False)) if a != b),
                      min(len(want), len(got)))
            result.notes.append(f"llama.cpp tokenizes sample prompt {index + 1} differently from the trained "
                                f"tokenizer (from token {at}: {got[at:at + 4]} instead of {want[at:at + 4]})")
    result.notes += parity.compare_generation(reference, answer.generated, tolerance)
    return result


def _replace(staging: Path, out: Path) -> None:
    """Move the finished export into place; an old export is removed only after that."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{staging.name}")
        out.rename(old)
    staging.rename(out)
    fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-").lower() or "model"
