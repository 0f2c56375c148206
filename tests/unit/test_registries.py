"""Registries as data: the objectives table and the grader kinds, reward models among them."""

from __future__ import annotations

import pytest

from tunesmith.errors import RecipeError
from tunesmith.evaluate.graders import KINDS, RewardModel, build_graders
from tunesmith.recipe import Recipe, load_recipe
from tunesmith.train.objectives import OBJECTIVES, make_objective


def test_every_recipe_method_has_an_objective_named_after_it() -> None:
    methods = set(Recipe.model_fields["method"].annotation.__args__)
    assert set(OBJECTIVES) == methods
    for method in methods - {"grpo"}:  # grpo needs graders (tests/unit/test_grpo.py)
        objective = make_objective(method, 256)
        assert objective.name == method
        assert type(objective).__module__ == f"tunesmith.train.objectives.{method}"


def test_an_unknown_method_names_the_choices() -> None:
    with pytest.raises(RecipeError) as caught:
        make_objective("kto", 256)
    assert caught.value.where == "method" and "sft, dpo, reward, grpo" in (caught.value.fix or "")


def test_reward_model_graders_are_a_kind_evaluation_accepts(tmp_path) -> None:
    assert KINDS["reward_model"] is RewardModel
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text("evaluation:\n  graders:\n    - {type: reward_model, name: rm, path: rm}\n")
    graders = load_recipe(recipe_file).evaluation.graders
    assert graders[0]["path"] == str(tmp_path / "rm")  # relative to the recipe, like data paths
    with pytest.raises(RecipeError, match=r"evaluation\.graders\[0\]\.path"):
        load_recipe(None, ["evaluation.graders=[{type: reward_model}]"])


def test_a_reward_model_grader_scores_through_the_callers_loader() -> None:
    loaded: list[str] = []

    def load(path: str):
        loaded.append(path)
        return lambda text, item: 2.0 if text == item["reference"] else -1.0

    nested = [{"type": "weighted", "name": "w",
               "graders": {"rm": {"type": "reward_model", "path": "runs/rm"}}}]
    (grader,) = build_graders(nested, load_reward=load)
    assert loaded == ["runs/rm"]
    assert grader("yes", {"reference": "yes"}) == 1.0 and grader("no", {"reference": "yes"}) == 0.0
    (checked,) = build_graders([{"type": "reward_model", "path": "runs/rm"}])  # as reading a recipe does
    with pytest.raises(RuntimeError, match="without a loader"):
        checked("yes", {})
