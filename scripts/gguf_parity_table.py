"""Measure GGUF export of every family x dtype in llama.cpp and print the table docs/export.md keeps.

Builds the tiny models of tests/gguf_families.py (random weights, real tokenizer types),
exports each at every GGUF dtype with tunesmith's own parity check (which runs llama.cpp when
scripts/install_llamacpp.sh has installed it), and prints one Markdown row per export.
Run by hand: `.venv/bin/python scripts/gguf_parity_table.py [--json FILE]` (about 15 minutes
on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    import torch

    from tests.gguf_families import CASES, build_model
    from tunesmith.model.export import ExportError, export_model
    from tunesmith.model.export.exporter import DTYPES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--only", nargs="*", default=[], help="case names to run (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    print("| family (tokenizer) | dtype | written | llama.cpp max logit diff (tol.) | llama.cpp greedy equal "
          "| near ties | transformers' loader max diff | Ollama Modelfile |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as root:
        for index, case in enumerate(CASES):
            if args.only and case.name not in args.only:
                continue
            folder = build_model(case, Path(root) / f"m{index}")
            for dtype in DTYPES["gguf"]:
                row = {"case": case.name, "dtype": dtype}
                try:
                    out = Path(root) / f"out{index}-{dtype}"
                    result = export_model(str(folder), "gguf", out, dtype=dtype)
                except ExportError as exc:
                    row["refused"] = exc.message
                else:
                    for c in result.parity:
                        key = "llamacpp" if "llama.cpp" in c.name else "transformers" if "transformers" in \
                            c.name else None
                        if key:
                            row[key] = c.as_dict()
                    row["modelfile"] = (result.out / "Modelfile").exists()
                    row["notes"] = result.notes
                rows.append(row)
                print(_markdown(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


def _markdown(row: dict) -> str:
    if "refused" in row:
        return f"| {row['case']} | {row['dtype']} | refused: {row['refused'][:160]} | | | | | |"
    cpp, hf = row.get("llamacpp"), row.get("transformers")
    cpp_diff = f"{cpp['max_logit_diff']:.3g} ({cpp['tolerance']:.3g})" if cpp else "not run"
    equal = (f"{cpp['tokens_compared'] - cpp['token_mismatches'] - cpp['near_ties']}/{cpp['tokens_compared']}"
             if cpp else "")
    ties = str(cpp["near_ties"]) if cpp else ""
    hf_diff = (f"{hf['max_logit_diff']:.3g}" + ("" if hf["passed"] else " (over its tolerance)")
               if hf else "cannot load")
    modelfile = "yes" if row["modelfile"] else "no: " + next(
        (n.split(":", 2)[-1].strip()[:90] for n in row["notes"] if n.startswith("no Ollama")), "")
    cells = [row["case"], row["dtype"], "yes", cpp_diff, equal, ties, hf_diff, modelfile]
    return "| " + " | ".join(cells) + " |"


if __name__ == "__main__":
    raise SystemExit(main())
