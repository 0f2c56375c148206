"""Recipe: defaults < YAML < --set, unknown keys and bad values named, full write-back."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tunesmith.errors import RecipeError
from tunesmith.recipe import Recipe, apply_override, build_recipe, load_recipe, save_recipe


def test_yaml_and_overrides_round_trip(tmp_path: Path) -> None:
    (tmp_path / "recipe.yaml").write_text(
        "base_model: org/model\nadapter:\n  kind: dora\n  rank: 8\n"
        "data:\n  train: data/train.jsonl\ntraining:\n  epochs: 2\n  learning_rate: auto\n"
    )
    recipe = load_recipe(
        tmp_path / "recipe.yaml",
        ["training.epochs=5", "adapter.target_modules=[q_proj, v_proj]", "training.report_to=[tensorboard]"],
    )
    assert recipe.adapter.kind == "dora" and recipe.adapter.rank == 8
    assert recipe.training.epochs == 5  # --set beats YAML
    assert recipe.training.learning_rate == "auto"
    assert recipe.adapter.target_modules == ["q_proj", "v_proj"]
    assert recipe.data.train == str(tmp_path / "data" / "train.jsonl")  # relative to the recipe file
    assert recipe.training.schedule == "cosine"  # default filled
    save_recipe(recipe, tmp_path / "resolved.yaml")
    written = yaml.safe_load((tmp_path / "resolved.yaml").read_text())
    assert set(written) == set(Recipe.model_fields)
    assert set(written["training"]) == set(Recipe.model_fields["training"].annotation.model_fields)
    assert build_recipe(written) == recipe


@pytest.mark.parametrize(
    ("override", "key", "hint"),
    [
        ("training.epochz=3", "training.epochz", "did you mean 'epochs'"),
        ("adapter.kind=qlora", "adapter.kind", "'lora', 'dora' or 'full'"),
        ("training.epochs=0", "training.epochs", "greater than 0"),
        ("training.learning_rate=fast", "training.learning_rate", "'auto'"),
        ("colour=blue", "colour", "allowed: base_model"),
        ("data.overlong=wrap", "data.overlong", "'truncate' or 'drop'"),
    ],
)
def test_bad_keys_and_values_name_the_key(override: str, key: str, hint: str) -> None:
    with pytest.raises(RecipeError) as caught:
        load_recipe(None, [override])
    text = str(caught.value)
    assert f"'{key}'" in text and hint in text


def test_override_needs_key_and_value() -> None:
    with pytest.raises(RecipeError, match="key=value"):
        apply_override({}, "training.epochs")


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  epochs: 3\n  lr: [1, 2\n")
    with pytest.raises(RecipeError, match=r"bad.yaml:\d"):
        load_recipe(path)


def test_unknown_nested_key_in_yaml(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("adapter:\n  rnak: 4\n")
    with pytest.raises(RecipeError, match=r"adapter.rnak.*did you mean 'rank'"):
        load_recipe(path)
