"""GRPO's training forward holds each group's prompt once (every completion continues it):
the loss, the KL term and every gradient equal those of the plain packed row, where the
prompt is computed once per completion, for a fraction of the decoder's tokens."""

from __future__ import annotations

import pytest
import torch

from tests.unit.test_pack import tiny_llama
from tunesmith.recipe import ReinforcementConfig
from tunesmith.train.objectives import grpo
from tunesmith.train.objectives.grpo import GroupRelativeObjective, PromptBatch, PromptExample
from tunesmith.train.objectives.sequences import collate_continuations, collate_sequences

PROMPTS = [[5, 17, 9, 33, 41, 8, 60], [12, 70, 3, 22, 44]]
GROUPS = [[[7, 11, 2], [13, 7], [14, 15, 16, 17, 2], [7]],  # completions differ in length
          [[20, 21], [7, 22, 23, 2], [24], [25, 7, 26]]]


class Tokens:
    """A tokenizer stand-in: a completion "says x" when it holds token 7, so rewards vary."""

    def decode(self, ids, skip_special_tokens=True):
        return "x" if 7 in ids else "y"


def objective(kl_coef: float) -> GroupRelativeObjective:
    config = ReinforcementConfig(graders=[{"type": "string_check", "operation": "eq",
                                           "input": "{{sample.output_text}}", "reference": "x"}],
                                 group_size=4, max_new_tokens=5, kl_coef=kl_coef)
    made = GroupRelativeObjective(config, chunk_tokens=3)
    made.tokenizer = Tokens()
    made.sample = lambda model, examples, device: GROUPS  # fixed samples: only the layout differs
    return made


def loss_and_grads(model, made: GroupRelativeObjective):
    model.zero_grad()
    batch = PromptBatch([PromptExample(p, {}, None, 0) for p in PROMPTS])
    loss, metrics = made(model, batch)
    loss.backward()
    return loss.detach(), metrics, batch.num_tokens, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("kl_coef", [0.0, 0.5])
def test_prompt_once_rows_equal_the_plain_row(kl_coef, monkeypatch) -> None:
    model = tiny_llama("sdpa").train().double()
    made = objective(kl_coef)
    made.prepare(model, made.tokenizer, [], 0, torch.device("cpu"))  # full fine-tuning: a frozen reference
    with torch.no_grad():  # move the weights off the reference so the KL term is not zero
        for param in model.parameters():
            param.add_(0.01 * torch.randn_like(param))
    rows = GroupRelativeObjective.rows(model, [PromptExample(p, {}, None, 0) for p in PROMPTS], GROUPS)
    assert [row.shared_prefix for row in rows] == [len(p) for p in PROMPTS]
    completions = sum(len(c) for group in GROUPS for c in group)
    assert sum(row.input_ids.numel() for row in rows) == sum(map(len, PROMPTS)) + completions
    ours = loss_and_grads(model, made)
    monkeypatch.setattr(grpo, "shares_prefix", lambda model: False)
    plain_rows = GroupRelativeObjective.rows(model, [PromptExample(p, {}, None, 0) for p in PROMPTS], GROUPS)
    unshared = 4 * sum(map(len, PROMPTS)) + completions
    assert len(plain_rows) == 1 and plain_rows[0].input_ids.numel() == unshared
    theirs = loss_and_grads(model, made)
    torch.testing.assert_close(ours[0], theirs[0])
    assert ours[0] != 0  # the rewards differ within each group: there is a gradient to compare
    assert ours[1]["kl"] == pytest.approx(theirs[1]["kl"]) and (ours[1]["kl"] > 0) == (kl_coef > 0)
    assert ours[2] == theirs[2] == unshared  # credited as if unshared
    assert ours[3].keys() == theirs[3].keys()
    for name, grad in ours[3].items():
        torch.testing.assert_close(grad, theirs[3][name], msg=name)
    assert any(grad.abs().max() > 0 for grad in ours[3].values())


def test_a_continuation_row_predicts_each_first_token_from_the_prompt() -> None:
    row = collate_continuations([1, 2, 3], [[4, 5], [6]])
    assert row.input_ids.tolist() == [[1, 2, 3, 4, 5, 6]]
    assert row.position_ids.tolist() == [[0, 1, 2, 3, 4, 3]]
    assert row.labels.tolist() == [[-100, -100, -100, 4, 5, 6]]
    assert row.token_seq.tolist() == [0, 0, 1] and row.last_trained.tolist() == [4, 5]
    plain = collate_sequences([([1, 2, 3, 4, 5], [0, 0, 0, 1, 1]), ([1, 2, 3, 6], [0, 0, 0, 1])])
    assert plain.token_seq.tolist() == row.token_seq.tolist()  # the same trained tokens, in order
    with pytest.raises(ValueError, match="at least one token"):
        collate_continuations([1, 2], [[3], []])


def test_groups_are_sampled_from_the_policy_not_the_model_files_top_k(tiny_model_path) -> None:
    """The loss weighs each completion by the policy's own log-probabilities, so sampling must
    not take a generation_config's top-k or repetition penalty: with the file's top_k = 1 every
    completion of a group would be the greedy one."""
    from tunesmith.model.inference import load_trained

    loaded = load_trained(str(tiny_model_path))
    loaded.model.generation_config.top_k = 1
    loaded.model.generation_config.repetition_penalty = 30.0
    config = ReinforcementConfig(graders=[{"type": "string_check", "operation": "eq",
                                           "input": "{{sample.output_text}}", "reference": "x"}],
                                 group_size=8, max_new_tokens=8, temperature=3.0)
    made = GroupRelativeObjective(config)
    made.tokenizer = loaded.tokenizer
    torch.manual_seed(0)
    prompt = loaded.renderer.prompt_ids([{"role": "user", "content": "What colour is the sky?"}])
    (group,) = made.sample(loaded.model, [PromptExample(prompt, {}, None, 0)], "cpu")
    assert len({tuple(c) for c in group}) > 1, group
