"""`tunesmith export MODEL --format adapter|merged|gguf`: ship a tuned model, checked for parity."""

from __future__ import annotations

import argparse

# Kept in step with tunesmith.model.export (tested) without importing torch at start-up.
FORMATS = ("adapter", "merged", "gguf")
DTYPE_CHOICES = ("f32", "f16", "bf16", "q8_0", "q4_0")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="export a tuned model: adapter, merged weights or GGUF (+ Ollama Modelfile)",
        description="Export a run, adapter folder or registry model, then check that the export gives "
                    "the same greedy tokens and logits (within a per-dtype tolerance) as the trained "
                    "model. A mismatch fails the export. See docs/export.md.")
    parser.add_argument("model", help="run directory, adapter folder, or model name, id or alias")
    parser.add_argument("--format", choices=FORMATS, default="merged", help="what to write (default: merged)")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES,
                        help="weight type: merged f32|f16|bf16 (default: the base model's), "
                             "gguf f32|f16|bf16|q8_0|q4_0 (default f16)")
    parser.add_argument("--out", help="folder to write (default: exports/NAME-FORMAT)")
    parser.add_argument("--max-shard-size", default="2GB",
                        help="merged: largest safetensors file before sharding (default 2GB)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    parser.add_argument("--verify", action="store_true",
                        help="only check an existing export in --out against MODEL")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tunesmith.commands.console import console
    from tunesmith.model.export import ExportError, export_model, verify_export

    def say(text: str) -> None:
        console.print(f"[dim]{text}[/]", highlight=False)

    if args.verify:
        if not args.out:
            raise ExportError("--verify needs the export to check", where="--out", fix="add --out DIR")
        comparisons = verify_export(args.model, Path(args.out), progress=say)
        out = Path(args.out)
    else:
        result = export_model(args.model, args.format, Path(args.out) if args.out else None, dtype=args.dtype,
                              max_shard_size=args.max_shard_size, force=args.force, progress=say)
        comparisons, out = result.parity, result.out
        for name in result.files:
            console.print(f"  {out / name}", highlight=False)
        for note in result.notes:
            console.print(f"[yellow]note[/] {note}", highlight=False)
    for comparison in comparisons:
        console.print(f"[green]parity[/] {comparison.summary()}", highlight=False)
    console.print(f"[bold]{'verified' if args.verify else 'exported'}[/] {out}", highlight=False)
    return 0
