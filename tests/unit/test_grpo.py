"""GRPO's parts that need no model: graders from configs, templates, group advantages,
and the recipe sections of the preference and reinforcement methods."""

from __future__ import annotations

import pytest
import torch

from tunesmith.errors import RecipeError
from tunesmith.recipe import ReinforcementConfig, load_recipe
from tunesmith.train.objectives import make_objective
from tunesmith.train.objectives.grpo import group_advantages, make_graders

ITEM = {"messages": [{"role": "user", "content": "2+2?"}], "answer": "4", "meta": {"unit": "Days"}}


def check(operation: str, reference: str = "{{item.answer}}") -> dict:
    return {"type": "string_check", "operation": operation, "input": "{{sample.output_text}}",
            "reference": reference}


def test_graders_read_the_sample_and_nested_item_fields() -> None:
    (grader,) = make_graders([check("eq", "{{ item.meta.unit }}")])
    assert grader("Days", ITEM) == 1.0 and grader("days", ITEM) == 0.0


@pytest.mark.parametrize(("operation", "sample", "grade"), [
    ("eq", "4", 1.0), ("eq", " 4\n", 1.0), ("eq", "4.", 0.0), ("ne", "5", 1.0), ("ne", "4", 0.0),
    ("like", "it is 4.", 1.0), ("like", "four", 0.0)])
def test_string_check_operations(operation, sample, grade) -> None:
    (grader,) = make_graders([check(operation)])
    assert grader(sample, ITEM) == grade


def test_ilike_ignores_case() -> None:
    (grader,) = make_graders([check("ilike", "{{item.meta.unit}}")])
    assert grader("within 3 DAYS", ITEM) == 1.0 and grader("soon", ITEM) == 0.0
    (strict,) = make_graders([check("like", "{{item.meta.unit}}")])
    assert strict("within 3 days", ITEM) == 0.0


@pytest.mark.parametrize(("config", "where"), [
    ({"type": "score_model", "model": "judge"}, "reinforcement.graders[0].type"),
    ({**check("eq"), "extra": 1}, "reinforcement.graders[0].extra"),
    (check("regex"), "reinforcement.graders[0].operation"),
    ({"type": "string_check", "operation": "eq", "input": "{{sample.output_text}}"},
     "reinforcement.graders[0].reference"),
    ({"type": "reward_model"}, "reinforcement.graders[0].path")])
def test_bad_grader_configs_name_the_key(config, where) -> None:
    with pytest.raises(RecipeError) as caught:
        make_graders([config])
    assert caught.value.where == where


def test_group_advantages_are_relative_to_their_group() -> None:
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5]])
    advantages = group_advantages(rewards)
    std = torch.tensor([1.0, 0.0, 0.0, 1.0]).std()
    torch.testing.assert_close(advantages[0], (rewards[0] - 0.5) / (std + 1e-4))
    assert torch.equal(advantages[1], torch.zeros(4))  # a group graded alike teaches nothing


def test_grpo_needs_graders() -> None:
    with pytest.raises(RecipeError) as caught:
        make_objective("grpo", 1024)
    assert caught.value.where == "reinforcement.graders"
    objective = make_objective("grpo", 1024, load_recipe(None, ["method=grpo", "reinforcement.graders=[" +
                                                                   '{type: string_check, operation: eq, '
                                                                   'input: a, reference: b}]']))
    assert objective.name == "grpo" and len(objective.graders) == 1


def test_recipe_sections_reject_unknown_keys_and_bad_values() -> None:
    with pytest.raises(RecipeError, match="did you mean 'beta'"):
        load_recipe(None, ["preference.betta=0.2"])
    with pytest.raises(RecipeError, match=r"preference\.loss"):
        load_recipe(None, ["preference.loss=kto"])
    with pytest.raises(RecipeError, match=r"reinforcement\.group_size"):
        load_recipe(None, ["reinforcement.group_size=1"])
    recipe = load_recipe(None, ["method=dpo", "preference.loss=simpo"])
    assert recipe.preference.beta == "auto" and ReinforcementConfig().group_size == 8


def test_reward_model_grader_paths_are_relative_to_the_recipe(tmp_path) -> None:
    recipe_file = tmp_path / "sub" / "recipe.yaml"
    recipe_file.parent.mkdir()
    recipe_file.write_text("method: grpo\nreinforcement:\n  graders:\n    - {type: reward_model, path: rm}\n"
                           "    - {type: reward_model, path: /abs/rm}\n")
    graders = load_recipe(recipe_file).reinforcement.graders
    assert graders[0]["path"] == str(tmp_path / "sub" / "rm") and graders[1]["path"] == "/abs/rm"


def test_hosted_api_methods_map_onto_recipes() -> None:
    from tunesmith.recipe import build_recipe
    from tunesmith.serve.methods import apply_api_method

    raw = {"data": {"train": "t.jsonl"}}
    dpo = build_recipe(apply_api_method(raw, {"type": "dpo", "dpo": {"hyperparameters": {
        "beta": 0.2, "n_epochs": 2, "learning_rate_multiplier": 0.5}}}))
    assert (dpo.method, dpo.preference.beta, dpo.training.epochs) == ("dpo", 0.2, 2)
    assert dpo.training.learning_rate == pytest.approx(1e-4)
    grader = check("eq")
    rft = build_recipe(apply_api_method(raw, {"type": "reinforcement", "reinforcement": {
        "grader": grader, "hyperparameters": {"reasoning_effort": "auto", "eval_interval": 3}}}))
    assert rft.method == "grpo" and rft.reinforcement.graders == [grader] and rft.training.eval_every == 3
    assert build_recipe(apply_api_method(raw, {"type": "supervised"})).method == "sft"
    assert raw == {"data": {"train": "t.jsonl"}}
    with pytest.raises(RecipeError) as caught:
        apply_api_method(raw, {"type": "dpo", "dpo": {"hyperparameters": {"gamma": 1}}})
    assert caught.value.where == "method.dpo.hyperparameters.gamma"


def test_clipped_token_loss_follows_the_grpo_formula() -> None:
    """Against the formula written out per token, including where the clip stops the gradient."""
    from tunesmith.train.objectives.grpo import clipped_token_loss

    logp = torch.tensor([-1.0, -2.0, -0.5, -3.0], requires_grad=True)
    sampling = torch.tensor([-1.0, -2.5, -0.2, -2.0])  # ratios 1, e^0.5, e^-0.3, e^-1
    ref = torch.tensor([-1.2, -2.0, -0.1, -2.5])
    advantage = torch.tensor([1.0, 1.0, -1.0, -1.0])
    loss, kl = clipped_token_loss(logp, sampling, ref, advantage, 0.2, 0.1)
    expected = []
    rows = zip(logp.tolist(), sampling.tolist(), ref.tolist(), advantage.tolist(), strict=True)
    for lp, old, rf, adv in rows:
        rho = torch.exp(torch.tensor(lp - old))
        surrogate = min(rho * adv, min(max(rho, 0.8), 1.2) * adv)
        d = rf - lp
        expected.append(-surrogate + 0.1 * (torch.exp(torch.tensor(d)) - d - 1))
    torch.testing.assert_close(loss.detach(), torch.stack(expected).float())
    assert kl[1] == 0.0 and kl[0] > 0
    loss.sum().backward()
    # rho = e^0.5 > 1.2 with A > 0, rho = e^-0.3 and e^-1 < 0.8 with A < 0: clipped, only KL pulls.
    kl_grad = 0.1 * (1 - torch.exp(ref - logp.detach()))
    torch.testing.assert_close(logp.grad[1:], kl_grad[1:])
    assert abs(logp.grad[0] - (-1.0 + kl_grad[0])) < 1e-6  # rho = 1: the plain policy gradient -A


def _tiny_llama(attn: str = "sdpa") -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    config._attn_implementation = attn
    return LlamaForCausalLM(config).double()


def test_prompt_shared_layout_gives_the_separate_layouts_logprobs_and_gradients() -> None:
    """The training forward computes each group's prompt once (collate_groups); the per-token
    log-probs, and the gradient of a loss weighting each token differently, must equal those of
    every prompt + completion packed separately (collate_sequences)."""
    from tunesmith.train.logprobs import sequence_logprobs
    from tunesmith.train.objectives.grpo import collate_groups, shares_prompts
    from tunesmith.train.objectives.sequences import collate_sequences

    model = _tiny_llama()
    assert shares_prompts(model) and not shares_prompts(_tiny_llama("eager"))
    generator = torch.Generator().manual_seed(1)
    prompts = [[5, 9, 11, 3], [7], [2, 4, 6, 8, 10, 12]]  # a one-token prompt has no shared prefix
    groups = [[torch.randint(1, 64, (n,), generator=generator).tolist() for n in sizes]
              for sizes in ([3, 1, 5], [2, 4, 2], [6, 1, 3])]

    def run(packed, mask):
        model.zero_grad(set_to_none=True)
        out = sequence_logprobs(model, packed.input_ids, packed.labels, packed.position_ids,
                                packed.token_seq, packed.num_seqs, 4, mask)
        weights = torch.linspace(-1.0, 2.0, out.tokens.numel(), dtype=out.tokens.dtype)
        (out.tokens * weights).sum().backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters()}
        return out, grads

    separate = collate_sequences([(p + c, [0] * len(p) + [1] * len(c))
                                  for p, g in zip(prompts, groups, strict=True) for c in g])
    shared = collate_groups(prompts, groups, pad_id=0)
    assert torch.equal(shared.token_seq, separate.token_seq) and shared.num_seqs == separate.num_seqs == 9
    assert int(shared.extra["real_tokens"]) < separate.num_tokens  # each prompt but its last token once
    ours, our_grads = run(shared, shared.extra["attention_mask"])
    theirs, their_grads = run(separate, None)
    torch.testing.assert_close(ours.tokens, theirs.tokens)
    torch.testing.assert_close(ours.count, theirs.count)
    for name, grad in their_grads.items():
        # the head scores in float32 (train/logprobs.py), so gradients agree to float32 precision
        torch.testing.assert_close(our_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)
