"""The model card: README.md in every export, saying what the model is and how it was made."""

from __future__ import annotations

import json
from typing import Any

from tunesmith import __version__
from tunesmith.model.export.source import ExportSource
from tunesmith.recipe import DATA_ROLES

EVALUATION_LABELS = {
    "baseline_validation_loss": "held-out loss of the base model",
    "final_validation_loss": "held-out loss after training",
    "best_validation_loss": "best held-out loss",
    "best_step": "step of the best held-out loss",
    "final_token_accuracy": "held-out token accuracy after training",
    "train_loss": "last training loss",
    "steps": "optimizer steps",
    "trained_tokens": "trained tokens",
}


def model_card(source: ExportSource, fmt: str, dtype: str, files: list[str],
               parity: list[dict[str, Any]], notes: list[str] | None = None) -> str:
    recipe = source.recipe or {}
    adapter = (recipe.get("adapter") or {}).get("kind", "lora" if source.is_adapter else "full")
    lines = [
        "---",
        f"base_model: {json.dumps(source.base_model)}",
        "library_name: " + ("peft" if fmt == "adapter" else "transformers"),
        "tags: [tunesmith, fine-tuned" + (", gguf" if fmt == "gguf" else "") + "]",
        "---",
        "",
        f"# {source.name}",
        "",
        f"Fine-tuned from `{source.base_model}` with tunesmith {__version__} "
        f"({recipe.get('method', 'sft')}, {adapter}); exported as **{fmt}** ({dtype}).",
        "",
        "## Intended use",
        "",
        "Answering in the style and format of the examples it was trained on (the data below), "
        "for the team that owns that data. It inherits the base model's knowledge, limits and "
        "licence; it was not evaluated for uses beyond its held-out data. Check its answers "
        "before relying on them.",
        "",
        "## Data",
        "",
    ]
    data = recipe.get("data") or {}
    if source.datasets or data:
        for role in DATA_ROLES:
            version = source.datasets.get(role)
            path = data.get(role)
            if version or path:
                lines.append(f"- {role}: {f'`{version}`' if version else 'version not recorded'}"
                             + (f" (from `{path}`)" if path else ""))
        if not data.get("validation"):
            lines.append("- validation: held out from the training data")
    else:
        lines.append("Not recorded (exported from a bare folder, not a run or a registry model).")
    lines += ["", "## Evaluation", ""]
    shown = [(label, source.evaluation[key]) for key, label in EVALUATION_LABELS.items()
             if source.evaluation.get(key) is not None]
    if shown:
        lines += ["| measure | value |", "| --- | --- |"]
        lines += [f"| {label} | {_number(value)} |" for label, value in shown]
    else:
        lines.append("No evaluation recorded.")
    lines += ["", "## Export parity", "",
              "The same prompts through the trained model and this export "
              "(see tunesmith's docs/export.md):", ""]
    lines += [f"- {p['name']} ({p['dtype']}): max logit difference {p['max_logit_diff']:.3g} "
              f"(tolerance {p['tolerance']:.3g}), greedy tokens "
              f"{p['tokens_compared'] - p['token_mismatches'] - p['near_ties']}/{p['tokens_compared']} equal"
              for p in parity]
    lines += [f"- {note}" for note in notes or []]
    lines += ["", "## Files", ""] + [f"- `{name}`" for name in files]
    if recipe:
        lines += ["", "## Recipe", "", "```json", json.dumps(recipe, indent=2, default=str), "```"]
    return "\n".join(lines) + "\n"


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
