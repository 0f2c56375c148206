"""Preference optimisation from (prompt, chosen, rejected) pairs: DPO, IPO and SimPO.

With policy log-probabilities pi(y|x) summed over the answer's tokens and the reference's
ref(y|x), h = [pi(c) - ref(c)] - [pi(r) - ref(r)]:

    sigmoid (DPO, Rafailov et al. 2023)  -(1 - eps) log s(beta h) - eps log s(-beta h)
    ipo (Azar et al. 2023)               (h_avg - 1 / (2 beta))^2
    simpo (Meng et al. 2024)             as sigmoid, on beta [avg pi(c) - avg pi(r)] - gamma

IPO takes the log-ratios averaged per answer token, h_avg = [pi(c) - ref(c)] / |c| -
[pi(r) - ref(r)] / |r|: the form of the IPO paper's experiments and of TRL, for which beta's
default of 0.1 is chosen (summed log-ratios grow with the answer's length and would push h
far past 1 / (2 beta) on long answers). It is the only IPO form offered.

SimPO is the reference-free variant: it needs no reference pass at all (half the forward
work of DPO, no frozen copy under full fine-tuning) and its length-normalised log-probability
is the quantity generation ranks by, so it does not reward longer answers for being longer.
ORPO, the other candidate, mixes an SFT term into the loss and would need a second, token-
level objective in the same pass. Label smoothing (conservative DPO) applies to sigmoid and
simpo; IPO's squared loss has no labels to smooth.

The implicit rewards are beta [pi(y) - ref(y)] (per token for IPO, beta avg pi(y) for SimPO); the reward
accuracy is the fraction of pairs whose chosen answer gets the higher reward.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tunesmith.data.pack import pack_indices
from tunesmith.errors import RecipeError
from tunesmith.recipe import PreferenceConfig
from tunesmith.train.logprobs import sequence_logprobs
from tunesmith.train.objectives.pairs import PairExample, collate_pairs, render_pair, summarise_pairs
from tunesmith.train.objectives.reference import Reference
from tunesmith.train.objectives.sequences import SequenceBatch

DEFAULT_BETA = {"sigmoid": 0.1, "ipo": 0.1, "simpo": 2.0}


def resolve_beta(config: PreferenceConfig) -> float:
    return DEFAULT_BETA[config.loss] if config.beta == "auto" else float(config.beta)


def preference_loss(config: PreferenceConfig, policy: torch.Tensor, reference: torch.Tensor | None,
                    policy_mean: torch.Tensor, counts: torch.Tensor | None = None,
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair losses and (chosen, rejected) rewards from per-sequence summed log-probs laid
    out chosen, rejected, chosen, rejected, ...; `counts` are the trained tokens of each
    sequence (IPO averages per token)."""
    beta, smooth = resolve_beta(config), config.label_smoothing
    if config.loss == "simpo":
        chosen, rejected = beta * policy_mean[0::2], beta * policy_mean[1::2]
        logits = chosen - rejected - config.simpo_gamma
    else:
        assert reference is not None
        ratio = policy - reference
        if config.loss == "ipo":
            assert counts is not None, "IPO averages log-ratios per token: pass counts"
            ratio = ratio / counts.clamp(min=1)
        chosen, rejected = beta * ratio[0::2], beta * ratio[1::2]
        logits = chosen - rejected
    if config.loss == "ipo":
        losses = (logits / beta - 1 / (2 * beta)) ** 2
    else:
        losses = -(1 - smooth) * F.logsigmoid(logits) - smooth * F.logsigmoid(-logits)
    return losses, chosen.detach(), rejected.detach()


class PreferenceObjective:
    name = "dpo"
    head = "causal_lm"
    render_example = staticmethod(render_pair)
    summarise = staticmethod(summarise_pairs)

    def __init__(self, config: PreferenceConfig, chunk_tokens: int = 1024):
        if config.loss == "ipo" and config.label_smoothing:
            raise RecipeError("label smoothing does not apply to the IPO loss",
                              where="preference.label_smoothing", fix="set it to 0, or use loss: sigmoid")
        self.config = config
        self.chunk_tokens = chunk_tokens
        self.reference = Reference()
        self.needs_reference = config.loss != "simpo"

    def prepare(self, model: torch.nn.Module, tokenizer: Any, datasets: list[list[PairExample]],
                budget: int, device: torch.device) -> None:
        if not self.needs_reference:
            return
        if self.config.precompute_reference:
            for examples in datasets:
                self.precompute(model, examples, budget, device)
        else:
            self.reference.attach(model)

    def precompute(self, model: torch.nn.Module, examples: list[PairExample], budget: int,
                   device: torch.device) -> None:
        """Reference log-probs of every pair, once, before training changes the model."""
        was_training = model.training
        model.eval()
        lengths = [len(e) for e in examples]
        for micro in pack_indices(range(len(examples)), lengths, budget):
            part = [examples[i] for i in micro]
            values = self._reference_logps(model, collate_pairs(part).to(device), untrained=True).tolist()
            for index, example in enumerate(part):
                example.reference = (values[2 * index], values[2 * index + 1])
        model.train(was_training)

    def _reference_logps(self, model: torch.nn.Module, batch: SequenceBatch,
                         untrained: bool = False) -> torch.Tensor:
        with self.reference.use(model, untrained) as ref:
            return sequence_logprobs(ref, batch.input_ids, batch.labels, batch.position_ids, batch.token_seq,
                                     batch.num_seqs, self.chunk_tokens).total

    def collate(self, examples: list[PairExample]) -> SequenceBatch:
        return collate_pairs(examples)

    def units(self, batch: SequenceBatch) -> int:
        return batch.num_seqs // 2

    def __call__(self, model: torch.nn.Module, batch: SequenceBatch) -> tuple[torch.Tensor, dict[str, float]]:
        policy = sequence_logprobs(model, batch.input_ids, batch.labels, batch.position_ids, batch.token_seq,
                                   batch.num_seqs, self.chunk_tokens)
        reference = None
        if self.needs_reference:
            reference = batch.extra.get("reference")
            if reference is None:
                reference = self._reference_logps(model, batch)
        losses, chosen, rejected = preference_loss(self.config, policy.total, reference, policy.mean,
                                                   policy.count)
        loss_sum = losses.sum()
        return loss_sum, {"loss": float(loss_sum.detach()), "chosen_reward": float(chosen.sum()),
                          "rejected_reward": float(rejected.sum()),
                          "reward_margin": float((chosen - rejected).sum()),
                          "reward_accuracy": float((chosen > rejected).sum()),
                          "pairs": float(losses.numel()), "tokens": float(batch.token_seq.numel())}
