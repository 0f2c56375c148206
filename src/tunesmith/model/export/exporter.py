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
DTYPES = {"adapter": ("f32",), "merged": ("f32", "f16", "bf16"), "gguf": ("f32", "f16", "bf16", "q8_0")}
MANIFEST = "export.json"
Progress = Callable[[str], None]


@dataclass(slots=True)
class ExportResult:
    out: Path
    format: str
    dtype: str
    files: list[str]
    parity: list[parity.Comparison]


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
        comparisons = _write(fmt, dtype, source, loaded, staging, max_shard_size, reference, say)
        parity.check(comparisons)
        files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
        files = sorted({*files, "README.md", MANIFEST})
        reports = [c.as_dict() for c in comparisons]
        atomic_write_text(staging / "README.md", model_card(source, fmt, dtype, files, reports))
        atomic_write_text(staging / MANIFEST, json.dumps(
            {"format": fmt, "dtype": dtype, "source": source.ref, "name": source.name,
             "base_model": source.base_model, "tunesmith_version": __version__, "parity": reports},
            indent=1))
        _replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(out, fmt, dtype, files, comparisons)


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
    comparisons = [_check_folder(manifest["format"], manifest["dtype"], Path(out), reference, prompts,
                                 tokenizer)]
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
           reference: parity.Reference, say: Progress) -> list[parity.Comparison]:
    from tunesmith.model.export.merged import merge, save_merged

    prompts = [seq[:n] for seq, n in zip(reference.sequences, reference.prompt_lengths, strict=True)]
    if fmt == "adapter":
        for file in source.weights.iterdir():
            if file.is_file() and file.name != "README.md":
                shutil.copy2(file, staging / file.name)
        return [_check_folder("adapter", dtype, staging, reference, prompts)]
    merged = merge(loaded.model)
    if fmt == "merged":
        save_merged(merged, loaded.tokenizer, staging, dtype, max_shard_size)
        del merged, loaded.model
        say("checking parity")
        return [_check_folder("merged", dtype, staging, reference, prompts)]
    from tunesmith.model.export.gguf import write_gguf
    from tunesmith.model.export.ollama import write_modelfile

    in_memory = parity.compare(reference, merged, "merged weights", "f32")
    gguf_file = staging / f"model-{dtype}.gguf"
    write_gguf(merged, loaded.tokenizer, gguf_file, dtype, name=source.name)
    write_modelfile(loaded.tokenizer, staging / "Modelfile", gguf_file.name)
    del merged, loaded.model
    say("checking parity")
    return [in_memory, _check_folder("gguf", dtype, staging, reference, prompts, loaded.tokenizer)]


def _check_folder(fmt: str, dtype: str, folder: Path, reference: parity.Reference,
                  prompts: list[list[int]], trained_tokenizer: Any = None) -> parity.Comparison:
    """Load the export the way its users will, and compare it with the reference."""
    import torch

    if fmt == "adapter":
        from tunesmith.model.inference import load_trained

        model = load_trained(folder).model
        return parity.compare(reference, model, "adapter", "f32")
    if fmt == "merged":
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        return parity.compare(reference, model.eval(), "merged folder (transformers)", dtype)
    from tunesmith.model.export.gguf import load_gguf_with_transformers

    gguf_file = next(folder.glob("*.gguf"), None)
    if gguf_file is None:
        raise ExportError(f"{folder} holds no .gguf file", where=str(folder))
    model, tokenizer = load_gguf_with_transformers(gguf_file)
    result = parity.compare(reference, model, "gguf file (transformers' GGUF loader)", dtype)
    for prompt in prompts:
        text = tokenizer.decode(prompt)
        if tokenizer(text, add_special_tokens=False)["input_ids"] != prompt:
            result.notes.append("the GGUF file's tokenizer splits the sample prompts differently")
            break
    if trained_tokenizer is not None:
        from tunesmith.model.export.ollama import check_modelfile

        result.notes += check_modelfile(trained_tokenizer, folder / "Modelfile")
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
