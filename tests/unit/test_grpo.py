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
