"""A trained reward model (method: reward) read back and used as a grader: `load_reward_scorer`
gives a callable `(sample_text, item) -> float` in [0, 1] (the sigmoid of the score), where
`item` holds the prompt `messages` (and optionally `tools`) the sample answers. Evaluation and
GRPO reach it through the `reward_model` grader kind (evaluate/graders.py); the registry's
held-out loss loads the model with `load_reward_model`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tunesmith.data.records import Source
from tunesmith.data.render import Renderer
from tunesmith.errors import ModelError
from tunesmith.train.objectives.reward import sequence_scores
from tunesmith.train.objectives.sequences import collate_sequences

Scorer = Callable[[str, dict[str, Any]], float]


def _final_folder(path: Path) -> Path:
    if (path / "recipe.yaml").exists():
        from tunesmith.train.run import RunDir

        run = RunDir(path)
        if not run.final.exists():
            raise ModelError(f"run {path} has no final model yet", where=str(path),
                             fix=f"finish it with `tunesmith train --resume {path}`")
        return run.final
    return path


def load_reward_model(path: str | Path, device: str = "cpu") -> tuple[Any, Any]:
    """The trained reward model and its tokenizer from a run folder or its final/ folder."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = _final_folder(Path(path))
    adapter = folder / "adapter_config.json"
    if adapter.exists():
        from peft import PeftModel

        from tunesmith.model.loading import resolve_model

        config = json.loads(adapter.read_text())
        if config.get("task_type") != "SEQ_CLS":
            raise ModelError(f"{folder} is not a reward model (a {config.get('task_type')} adapter)",
                             fix="train one with method: reward")
        base = resolve_model(config["base_model_name_or_path"])
        model = AutoModelForSequenceClassification.from_pretrained(base.location, num_labels=1,
                                                                   dtype=torch.float32)
        model = PeftModel.from_pretrained(model, str(folder))
    elif (folder / "config.json").exists():
        architectures = json.loads((folder / "config.json").read_text()).get("architectures") or []
        if not any(a.endswith("ForSequenceClassification") for a in architectures):
            raise ModelError(f"{folder} is not a reward model ({', '.join(architectures) or 'unknown'})",
                             fix="train one with method: reward")
        model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1, dtype=torch.float32)
    else:
        raise ModelError(f"no reward model in {folder}", fix="point at a run trained with method: reward")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return model.to(device).eval(), tokenizer


def load_reward_scorer(path: str | Path, device: str = "cpu") -> Scorer:
    """A grader from a trained reward model: `(sample_text, item) -> sigmoid(score)` in [0, 1]."""
    model, tokenizer = load_reward_model(path, device)
    renderer = Renderer(tokenizer)
    source = Source(str(path), 0)

    @torch.no_grad()
    def score(sample_text: str, item: dict[str, Any]) -> float:
        prompt = list(item.get("messages") or [])
        conversation = [*prompt, {"role": "assistant", "content": sample_text}]
        example = renderer.render_chat(conversation, source, item.get("tools"), trained_from=len(prompt))
        batch = collate_sequences([(example.input_ids, example.loss_mask)]).to(model.device)
        return float(torch.sigmoid(sequence_scores(model, batch))[0])

    return score
