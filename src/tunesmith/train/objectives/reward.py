"""Reward models: a scalar head on the base, trained on preference pairs (Bradley-Terry).

The model is the base loaded as a one-output sequence classifier (transformers'
...ForSequenceClassification, num_labels=1): a linear score head on the hidden state of a
conversation's last trained token (the answer's end-of-turn token). Under LoRA, PEFT's
SEQ_CLS task trains and saves that head in full beside the adapter, so the result loads
with plain transformers + PEFT. The loss is -log s(r(chosen) - r(rejected)) (Bradley-Terry),
with optional label smoothing; pairs are packed into padding-free rows like every method.

`load_reward_scorer` turns a trained reward model into a grader: a callable
`(sample_text, item) -> float` in [0, 1] (the sigmoid of the score), where `item` holds the
prompt `messages` (and optionally `tools`) the sample answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tunesmith.data.records import Source
from tunesmith.data.render import Renderer
from tunesmith.errors import ModelError
from tunesmith.recipe import PreferenceConfig
from tunesmith.train.loss import causal_lm, hidden_states
from tunesmith.train.objectives.preference import PairExample, collate_pairs, render_pair, summarise_pairs
from tunesmith.train.objectives.sequences import SequenceBatch, collate_sequences

Scorer = Callable[[str, dict[str, Any]], float]


def sequence_scores(model: torch.nn.Module, batch: SequenceBatch) -> torch.Tensor:
    """The scalar score of every sequence of a packed row, read at its last trained token."""
    hidden = hidden_states(model, batch.input_ids, batch.position_ids)
    head = causal_lm(model).score
    return head(hidden[0, batch.last_trained]).squeeze(-1).float()


class RewardObjective:
    name = "reward"
    head = "score"
    render_example = staticmethod(render_pair)
    summarise = staticmethod(summarise_pairs)

    def __init__(self, config: PreferenceConfig | None = None):
        self.label_smoothing = config.label_smoothing if config is not None else 0.0

    def prepare(self, model: torch.nn.Module, tokenizer: Any, datasets: list[list[PairExample]],
                budget: int, device: torch.device) -> None:
        """A reward model needs no reference."""

    def collate(self, examples: list[PairExample]) -> SequenceBatch:
        return collate_pairs(examples)

    def units(self, batch: SequenceBatch) -> int:
        return batch.num_seqs // 2

    def __call__(self, model: torch.nn.Module, batch: SequenceBatch) -> tuple[torch.Tensor, dict[str, float]]:
        scores = sequence_scores(model, batch)
        chosen, rejected = scores[0::2], scores[1::2]
        margin = chosen - rejected
        smooth = self.label_smoothing
        losses = -(1 - smooth) * F.logsigmoid(margin) - smooth * F.logsigmoid(-margin)
        loss_sum = losses.sum()
        margin = margin.detach()
        return loss_sum, {"loss": float(loss_sum.detach()), "chosen_reward": float(chosen.detach().sum()),
                          "rejected_reward": float(rejected.detach().sum()),
                          "reward_margin": float(margin.sum()), "reward_accuracy": float((margin > 0).sum()),
                          "pairs": float(losses.numel()), "tokens": float(batch.token_seq.numel())}


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
