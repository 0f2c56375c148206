"""Parity: does an exported model compute what the trained model computes?

The trained model (base + adapter, float32) is the reference. For each sample prompt it
decodes a greedy continuation; then the prompt and that continuation are run through each
exported model in one forward pass. Two things are compared:

* logits at every position, as the largest absolute difference, against a tolerance
  that depends on the weight format (TOLERANCES, stated in docs/export.md);
* the greedy tokens: the exported model's argmax at each continuation position must be
  the reference's token. Given the same prefix, that argmax is exactly what greedy
  decoding would pick, so this equals comparing greedy generations up to the first
  difference, without letting one early difference hide the rest. A different token is
  accepted only at a near tie: where the reference's two best logits are closer than
  twice the tolerance, any model within the tolerance may pick either.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from tunesmith.model.export.errors import ParityError

# Largest absolute logit difference allowed, by the dtype the exported weights are stored in.
# Measured on tunesmith's tiny models (docs/export.md gives the numbers) and set with margin:
# float32 differs only by summation order; 16-bit formats round every weight; q8_0 rounds
# each block of 32 weights to 8 bits with one f16 scale.
TOLERANCES = {"f32": 1e-3, "f16": 0.05, "bf16": 0.25, "q8_0": 0.5, "q4_0": 2.0}
# llama.cpp computes differently from transformers even at f32: its CPU matrix products round
# the activations to the weights' type (f16, bf16, or 8-bit blocks for q8_0 and q4_0) and its KV
# cache is f16. Its rounding error grows with the size of the logits, so its tolerance is relative:
# this factor times the logit spread (the mean over positions of the reference logits' standard
# deviation). Measured on every family and on SmolLM2-135M (docs/export.md), set with margin:
# 30 layers round more than 2, so SmolLM2 at q8_0 reached 0.79 spreads with every greedy token equal.
LLAMACPP_TOLERANCES = {"f32": 0.03, "f16": 0.06, "bf16": 0.25, "q8_0": 1.0, "q4_0": 3.0}
# Greedy tokens llama.cpp may pick differently at near ties, out of each export's 30: 4-bit
# weights move logits by several times 8-bit's, so more ties flip (docs/export.md).
LLAMACPP_NEAR_TIES = {"f32": 1, "f16": 2, "bf16": 3, "q8_0": 4, "q4_0": 8}

SAMPLE_CONVERSATIONS: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "Hello! Can you help me with my order?"}],
    [{"role": "system", "content": "You are a helpful assistant."},
     {"role": "user", "content": "What colour is the blue box?"}],
    [{"role": "user", "content": "Where is my parcel?"},
     {"role": "assistant", "content": "Let me check that for you."},
     {"role": "user", "content": "Thanks — order 4412 was due on Monday, 2024-11-03."}],
]


@dataclass(slots=True)
class Reference:
    """The trained model's answers: token ids per prompt and the logits over them."""

    sequences: list[list[int]]
    prompt_lengths: list[int]
    logits: list[torch.Tensor]


@dataclass(slots=True)
class Comparison:
    name: str
    dtype: str
    tolerance: float
    max_logit_diff: float
    tokens_compared: int
    token_mismatches: int          # greedy tokens that differ where the reference had no near tie
    near_ties: int                 # greedy tokens that differ at a near tie (accepted)
    notes: list[str] = field(default_factory=list)
    required: bool = True          # False: reported, but another runtime is the check (see exporter)
    near_ties_allowed: int | None = None   # None: any number of near ties is accepted

    @property
    def passed(self) -> bool:
        return (self.max_logit_diff <= self.tolerance and self.token_mismatches == 0
                and (self.near_ties_allowed is None or self.near_ties <= self.near_ties_allowed)
                and not self.notes)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def summary(self) -> str:
        state = "ok" if self.passed else "MISMATCH"
        equal = self.tokens_compared - self.token_mismatches - self.near_ties
        text = (f"{self.name} ({self.dtype}): {state}, max logit difference {self.max_logit_diff:.3g} "
                f"(tolerance {self.tolerance:.3g}), greedy tokens {equal}/{self.tokens_compared} equal")
        if self.near_ties or self.near_ties_allowed is not None:
            text += f", {self.near_ties} differ at near ties"
            if self.near_ties_allowed is not None:
                text += f" (at most {self.near_ties_allowed} allowed)"
        if not self.required:
            text += " (informational, not required)"
        return "; ".join([text, *self.notes])


def sample_prompts(tokenizer: Any) -> list[list[int]]:
    """The sample conversations through the tokenizer's own chat template, as in training."""
    from tunesmith.data.render import Renderer

    renderer = Renderer(tokenizer)
    return [renderer.prompt_ids(messages) for messages in SAMPLE_CONVERSATIONS]


def sample_texts(tokenizer: Any) -> list[str]:
    """The text of each sample prompt (what sample_prompts tokenizes)."""
    from tunesmith.data.render import Renderer

    renderer = Renderer(tokenizer)
    return [renderer.chat_text(messages, generation_prompt=True) for messages in SAMPLE_CONVERSATIONS]


@torch.no_grad()
def reference_outputs(model: Any, prompts: list[list[int]], eos_id: int | None,
                      new_tokens: int = 10) -> Reference:
    sequences, logits = [], []
    for prompt in prompts:
        ids = torch.tensor([prompt])
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                             do_sample=False, temperature=None, top_p=None, top_k=None,
                             eos_token_id=eos_id, pad_token_id=eos_id)
        sequence = out[0].tolist()
        sequences.append(sequence)
        logits.append(forward_logits(model, sequence))
    return Reference(sequences, [len(p) for p in prompts], logits)


@torch.no_grad()
def forward_logits(model: Any, sequence: list[int]) -> torch.Tensor:
    ids = torch.tensor([sequence])
    return model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits[0].float()


def compare(reference: Reference, model: Any, name: str, dtype: str) -> Comparison:
    """A transformers model, run on the reference's sequences in one forward pass each."""
    return compare_logits(reference, [forward_logits(model, seq) for seq in reference.sequences], name, dtype,
                          TOLERANCES[dtype])


def compare_logits(reference: Reference, logits: list[Any], name: str, dtype: str,
                   tolerance: float) -> Comparison:
    """Logits computed by any runtime over the reference's sequences, judged against the reference."""
    result = Comparison(name, dtype, tolerance, 0.0, 0, 0, 0)
    for sequence, start, expected, got in zip(reference.sequences, reference.prompt_lengths, reference.logits,
                                              logits, strict=True):
        got = torch.as_tensor(got).float()
        if got.shape != expected.shape:
            result.notes.append(f"logits have shape {tuple(got.shape)}, expected {tuple(expected.shape)}")
            continue
        result.max_logit_diff = max(result.max_logit_diff, float((got - expected).abs().max()))
        # Position i predicts token i + 1: the continuation's tokens are predicted from start - 1 on.
        for position in range(start - 1, len(sequence) - 1):
            result.tokens_compared += 1
            if int(got[position].argmax()) == sequence[position + 1]:
                continue
            if near_tie(expected[position], tolerance):
                result.near_ties += 1
            else:
                result.token_mismatches += 1
    return result


def logit_spread(reference: Reference) -> float:
    """The mean over positions of the reference logits' standard deviation: their scale."""
    return float(torch.cat(reference.logits).std(dim=-1).mean())


def near_tie(logits: torch.Tensor, tolerance: float) -> bool:
    """The two best logits are so close that any model within the tolerance may pick either."""
    top2 = logits.topk(2).values
    return float(top2[0] - top2[1]) <= 2 * tolerance


def compare_generation(reference: Reference, generated: list[list[int]], tolerance: float) -> list[str]:
    """A runtime's own greedy decoding against the reference's continuation, up to the first
    difference (after it the prefixes differ and nothing more is comparable). A difference is
    accepted at a near tie; anything else is returned as a problem."""
    problems = []
    for index, (sequence, start, expected, tokens) in enumerate(zip(
            reference.sequences, reference.prompt_lengths, reference.logits, generated, strict=True)):
        continuation = sequence[start:]
        for offset, want in enumerate(continuation):
            got = tokens[offset] if offset < len(tokens) else None
            if got == want:
                continue
            if not near_tie(expected[start - 1 + offset], tolerance):
                problems.append(f"greedy decoding of sample {index + 1} gives token {got} where the trained "
                                f"model gives {want} (token {offset + 1} of {len(continuation)})")
            break
    return problems


def check(comparisons: list[Comparison]) -> None:
    """Raise a ParityError naming every exported model that did not match."""
    failed = [c for c in comparisons if c.required and not c.passed]
    if failed:
        worst = max(c.max_logit_diff for c in failed)
        raise ParityError(
            "the exported model does not match the trained model (max logit difference "
            f"{worst:.4g}): " + " | ".join(c.summary() for c in failed),
            fix="re-export; if it persists, report it with the model's config.json")
