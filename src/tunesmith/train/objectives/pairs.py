"""Preference pairs as training examples, shared by the methods that train on them: DPO, IPO and
SimPO (dpo.py) and reward models (reward.py). Chosen and rejected are rendered after the same
prompt and packed side by side, sequences 2i and 2i+1 of a row."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tunesmith.data.records import PreferenceRecord, Record, Source
from tunesmith.data.render import RenderedExample, Renderer, fit_length
from tunesmith.errors import DataError
from tunesmith.train.objectives.sequences import SequenceBatch, collate_sequences


@dataclass(slots=True)
class PairExample:
    """A rendered preference pair; `reference` holds precomputed reference log-probs."""

    chosen: RenderedExample
    rejected: RenderedExample
    reference: tuple[float, float] | None = None

    def __len__(self) -> int:
        return len(self.chosen) + len(self.rejected)

    @property
    def trained_tokens(self) -> int:
        return self.chosen.trained_tokens + self.rejected.trained_tokens

    @property
    def source(self) -> Source:
        return self.chosen.source


def render_pair(renderer: Renderer, record: Record, max_length: int,
                overlong: str) -> tuple[PairExample | None, bool]:
    """Both answers rendered after the same prompt; each side is held to max_length."""
    if not isinstance(record, PreferenceRecord):
        raise DataError(f"{record.format} examples cannot train a preference method",
                        where=str(record.source),
                        fix="give preference pairs ({prompt, chosen, rejected} or the hosted "
                            "API's {input, preferred_output, non_preferred_output})")
    chosen, rejected = renderer.render_pair(record)
    for side in (chosen, rejected):
        if side.trained_tokens == 0:
            raise DataError("an answer of the pair has no tokens to learn from", where=str(record.source))
    fitted = [fit_length(side, max_length, overlong) for side in (chosen, rejected)]
    if fitted[0] is None or fitted[1] is None:
        return None, False
    return PairExample(fitted[0], fitted[1]), fitted[0] is not chosen or fitted[1] is not rejected


def collate_pairs(examples: list[PairExample]) -> SequenceBatch:
    """Chosen and rejected of every pair in one packed row: sequences 2i and 2i+1."""
    sequences = [(side.input_ids, side.loss_mask) for e in examples for side in (e.chosen, e.rejected)]
    batch = collate_sequences(sequences)
    if examples and all(e.reference is not None for e in examples):
        batch.extra["reference"] = torch.tensor([v for e in examples for v in e.reference],
                                                dtype=torch.float32)
    return batch


def summarise_pairs(totals: dict[str, float]) -> dict[str, float]:
    pairs = max(totals.get("pairs", 0.0), 1.0)
    return {"loss": totals.get("loss", 0.0) / pairs,
            "chosen_reward": totals.get("chosen_reward", 0.0) / pairs,
            "rejected_reward": totals.get("rejected_reward", 0.0) / pairs,
            "reward_margin": totals.get("reward_margin", 0.0) / pairs,
            "reward_accuracy": totals.get("reward_accuracy", 0.0) / pairs,
            "pairs": totals.get("pairs", 0.0), "tokens": totals.get("tokens", 0.0)}
