"""Reinforcement fine-tuning from graders, GRPO-style (Shao et al. 2024).

For every prompt a group of G completions is sampled with the model's chat template and
scored by the recipe's graders (their mean grade, each in [0, 1]). A completion's advantage
is its grade relative to its group, A = (r - mean) / (std + eps), so no value model is
needed. The loss per completion is the mean over its tokens of

    -min(rho A, clip(rho, 1 - eps_clip, 1 + eps_clip) A) + kl_coef KL_t

with rho = pi(token) / pi_sampling(token) and KL_t = exp(ref - pi) - (ref - pi) - 1 (the
unbiased, always-positive estimator), the reference being the base with the adapter
switched off (a frozen copy under full fine-tuning). Samples are drawn fresh for every
optimizer step from the weights being trained, so rho is 1 in value and clipping only
starts to matter if samples were reused for several steps; the gradient is A grad log pi.

Held-out evaluation samples G completions per prompt in the same way and reports the mean
grade; its "loss" is 1 - mean grade, so best-checkpoint selection and early stopping work
unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tunesmith.data.records import Record, ReinforcementRecord, Source
from tunesmith.data.render import Renderer
from tunesmith.errors import DataError, RecipeError
from tunesmith.recipe import ReinforcementConfig
from tunesmith.train.logprobs import token_logprobs
from tunesmith.train.loss import shares_prefix
from tunesmith.train.objectives.reference import Reference, unwrap
from tunesmith.train.objectives.sequences import SequenceBatch, collate_continuations, collate_sequences

Grader = Callable[[str, dict[str, Any]], float]
"""`grader(sample_text, item) -> float` in [0, 1]; `item` is the reinforcement row (messages
plus its free-form fields)."""

ADVANTAGE_EPS = 1e-4

# --- graders ---------------------------------------------------------------------------

def make_graders(configs: Sequence[dict[str, Any]]) -> list[Grader]:
    """Graders from their recipe configs: every kind evaluation grades with (the table in
    tunesmith.evaluate.graders: the hosted API's string_check, text_similarity, python, multi,
    tunesmith's own, and reward_model, a model trained with method: reward), so training and
    evaluation grade alike."""
    from tunesmith.evaluate.graders import build_grader
    from tunesmith.train.objectives.reward_model import load_reward_scorer

    return [build_grader(config, f"reinforcement.graders[{index}]", load_reward_scorer)
            for index, config in enumerate(configs)]


# --- examples and batches ----------------------------------------------------------------


@dataclass(slots=True)
class PromptExample:
    """A rendered prompt and the row its graders read. Its length is what its group of
    completions can occupy in a packed row, so packing budgets hold after sampling."""

    prompt_ids: list[int]
    item: dict[str, Any]
    source: Source
    footprint: int

    def __len__(self) -> int:
        return self.footprint

    @property
    def trained_tokens(self) -> int:
        return 0  # known only once completions are sampled


@dataclass(slots=True)
class PromptBatch:
    examples: list[PromptExample]
    device: torch.device | str = "cpu"
    num_tokens: int = 0
    """Prompt tokens, then (once sampled) every token of the packed completions."""

    def to(self, device: torch.device | str) -> PromptBatch:
        self.device = device
        return self


def group_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """(r - mean) / (std + eps) within each group; rewards are [groups, G]."""
    return (rewards - rewards.mean(dim=1, keepdim=True)) / (rewards.std(dim=1, keepdim=True) + ADVANTAGE_EPS)


def clipped_token_loss(logp: torch.Tensor, sampling_logp: torch.Tensor, ref_logp: torch.Tensor | None,
                       advantage: torch.Tensor, clip_epsilon: float,
                       kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token GRPO loss -min(rho A, clip(rho) A) + kl_coef KL, and the KL estimate itself."""
    ratio = torch.exp(logp - sampling_logp)
    clipped = ratio.clamp(1 - clip_epsilon, 1 + clip_epsilon)
    loss = -torch.min(ratio * advantage, clipped * advantage)
    if ref_logp is None:
        return loss, torch.zeros_like(loss)
    delta = ref_logp - logp
    kl = torch.exp(delta) - delta - 1
    return loss + kl_coef * kl, kl


class GroupRelativeObjective:
    name = "grpo"
    head = "causal_lm"

    def __init__(self, config: ReinforcementConfig, chunk_tokens: int = 1024):
        if not config.graders:
            raise RecipeError("method grpo needs at least one grader", where="reinforcement.graders",
                              fix='e.g. [{type: string_check, operation: eq, '
                                  'input: "{{sample.output_text}}", reference: "{{item.answer}}"}]')
        self.config = config
        self.chunk_tokens = chunk_tokens
        self.graders = make_graders(config.graders)
        self.reference = Reference()
        self.tokenizer: Any = None

    # --- the objective's hooks ------------------------------------------------------------

    def render_example(self, renderer: Renderer, record: Record, max_length: int,
                       overlong: str) -> tuple[PromptExample | None, bool]:
        """Overlong prompts are dropped (a cut prompt would lose its template's structure)."""
        if not isinstance(record, ReinforcementRecord):
            raise DataError(f"{record.format} examples cannot train method grpo", where=str(record.source),
                            fix="give reinforcement rows ({messages: [...], <fields your graders read>}); "
                                "rows with messages only need data.format: reinforcement")
        ids = renderer.prompt_ids(record.messages, record.tools)
        if len(ids) > max_length:
            return None, False
        item = {**record.fields, "messages": record.messages}
        if record.tools:
            item["tools"] = record.tools
        footprint = self.config.group_size * (len(ids) + self.config.max_new_tokens)
        return PromptExample(ids, item, record.source, footprint), False

    def prepare(self, model: torch.nn.Module, tokenizer: Any, datasets: list[list[Any]], budget: int,
                device: torch.device) -> None:
        self.tokenizer = tokenizer
        if self.config.kl_coef:
            self.reference.attach(model)

    def collate(self, examples: list[PromptExample]) -> PromptBatch:
        return PromptBatch(examples, num_tokens=sum(len(e.prompt_ids) for e in examples))

    def units(self, batch: PromptBatch) -> int:
        return len(batch.examples) * self.config.group_size

    def summarise(self, totals: dict[str, float]) -> dict[str, float]:
        count = max(totals.get("completions", 0.0), 1.0)
        out = {key: totals.get(key, 0.0) / count
               for key in ("loss", "reward", "reward_std", "kl", "completion_length")}
        return {**out, "completions": totals.get("completions", 0.0), "tokens": totals.get("tokens", 0.0)}

    # --- sampling, grading and the loss ---------------------------------------------------

    @torch.no_grad()
    def sample(self, model: torch.nn.Module, examples: list[PromptExample],
               device: torch.device | str) -> list[list[list[int]]]:
        """G completions of every prompt, each ending at its first end-of-turn token (EOS or the
        template's own), through the one generation engine: the micro-batch's prompts, G rows
        each, are sampled as one left-padded batch. Each row's seed is drawn from the global
        random state, so the recipe's seed makes a run repeatable."""
        from tunesmith.model.generation import Sampling, generate_ids

        config, size = self.config, self.config.group_size
        prompts = [e.prompt_ids for e in examples for _ in range(size)]
        seeds = torch.randint(0, 2**62, (len(prompts),)).tolist()
        # From the policy itself, never the model file's repetition penalty or top-k: the loss
        # weighs each completion by the policy's own log-probabilities of it.
        samplings = [Sampling(config.max_new_tokens, config.temperature, config.top_p, seed=int(seed),
                              repetition_penalty=1.0, top_k=0) for seed in seeds]
        was_training = model.training
        model.eval()
        try:
            done = generate_ids(unwrap(model), self.tokenizer, prompts, samplings, batch_size=len(prompts))
        finally:
            model.train(was_training)
        completions = [c.ids for c in done]  # generate_ids keeps the prompts' order
        return [completions[i * size : (i + 1) * size] for i in range(len(examples))]

    def grade(self, text: str, item: dict[str, Any]) -> float:
        return sum(grader(text, item) for grader in self.graders) / len(self.graders)

    def __call__(self, model: torch.nn.Module, batch: PromptBatch) -> tuple[torch.Tensor, dict[str, float]]:
        sequences: list[tuple[list[int], list[int]]] = []  # (prompt + completion, completion)
        rewards = []
        groups = self.sample(model, batch.examples, batch.device)
        for example, group in zip(batch.examples, groups, strict=True):
            for completion in group:
                text = self.tokenizer.decode(completion, skip_special_tokens=True)
                rewards.append(self.grade(text, example.item))
                sequences.append((example.prompt_ids + completion, completion))
        reward = torch.tensor(rewards, dtype=torch.float32).view(len(batch.examples), self.config.group_size)
        lengths = [len(completion) for _, completion in sequences]
        metrics = {"reward": float(reward.sum()), "completions": float(reward.numel()),
                   "reward_std": float(reward.std(dim=1).sum() * self.config.group_size),
                   "completion_length": float(sum(lengths)), "tokens": float(sum(lengths))}
        if not torch.is_grad_enabled():  # held-out evaluation: the grades are the result
            return torch.zeros(()), {**metrics, "loss": float((1 - reward).sum()), "kl": 0.0}
        rows = [row.to(batch.device) for row in self.rows(model, batch.examples, groups)]
        batch.num_tokens = sum(len(ids) for ids, _ in sequences)  # the sequences' tokens, as if unshared
        token_seq = torch.cat([row.token_seq + first for row, first in zip(rows, _firsts(rows), strict=True)])
        logp = self.logprobs(model, rows)
        advantage = group_advantages(reward).flatten().to(logp.device)[token_seq]
        ref_logp = None
        if self.config.kl_coef:
            with self.reference.use(model) as ref:
                ref_logp = self.logprobs(ref, rows)
        # Sampled from the weights being trained: the sampling log-probs are the policy's, detached.
        per_token, kl = clipped_token_loss(logp, logp.detach(), ref_logp, advantage,
                                           self.config.clip_epsilon, self.config.kl_coef)
        count = torch.bincount(token_seq, minlength=len(sequences)).to(logp.dtype).clamp(min=1)
        zeros = logp.new_zeros(len(sequences))
        per_seq = zeros.index_add(0, token_seq, per_token) / count
        kl_seq = zeros.index_add(0, token_seq, kl.detach()) / count
        loss_sum = per_seq.sum()
        return loss_sum, {**metrics, "loss": float(loss_sum.detach()), "kl": float(kl_seq.sum())}

    @staticmethod
    def rows(model: torch.nn.Module, examples: list[PromptExample],
             groups: list[list[list[int]]]) -> list[SequenceBatch]:
        """The training forward's rows. Every completion of a group continues the same prompt, so
        where the model's attention can read such a row (train/loss.py's per-example SDPA) each
        group is one row holding its prompt once: the decoder computes G completions and one
        prompt instead of G prompts, with the same log-probabilities and gradients. Otherwise
        one packed row of (prompt + completion) sequences."""
        pairs = list(zip(examples, groups, strict=True))
        if shares_prefix(model):
            return [collate_continuations(e.prompt_ids, group) for e, group in pairs]
        return [collate_sequences([(e.prompt_ids + c, [0] * len(e.prompt_ids) + [1] * len(c))
                                   for e, group in pairs for c in group])]

    def logprobs(self, model: torch.nn.Module, rows: list[SequenceBatch]) -> torch.Tensor:
        """log p of every trained token of `rows`, in order."""
        return torch.cat([token_logprobs(model, row.input_ids, row.labels, row.position_ids,
                                         self.chunk_tokens, row.shared_prefix) for row in rows])


def _firsts(rows: list[SequenceBatch]) -> list[int]:
    """The index of each row's first sequence among all rows' sequences."""
    firsts, total = [], 0
    for row in rows:
        firsts.append(total)
        total += row.num_seqs
    return firsts
