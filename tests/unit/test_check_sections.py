"""check_dataset takes the recipe's typed sections: a job is checked with its own settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import write_jsonl
from tunesmith.data.check import check_dataset
from tunesmith.errors import DataError
from tunesmith.recipe import BUNDLED_MODEL, DataConfig, TrainingConfig, build_recipe
from tunesmith.train.auto import auto_batch_size, auto_epochs


def chats(count: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"question number {i} about yarn"},
                          {"role": "assistant", "content": f"answer {i}: " + "wool " * (i % 7 + 1)}]}
            for i in range(count)]


def test_the_data_and_training_sections_set_what_is_measured(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", chats(40))
    data = DataConfig(train=str(path), max_length=32, overlong="drop")
    training = TrainingConfig(epochs=2, batch_size=4, micro_batch_tokens=96)
    report = check_dataset(data, training=training, model=str(BUNDLED_MODEL))
    assert {k: report.settings[k] for k in ("max_length", "overlong", "epochs", "batch_size",
                                            "micro_batch_tokens")} == \
        {"max_length": 32, "overlong": "drop", "epochs": 2, "batch_size": 4, "micro_batch_tokens": 96}
    assert report.tokens is not None and report.tokens.max <= 32
    # The same check from a path and keywords (the command line) gives the same report.
    keywords = check_dataset(path, max_length=32, overlong="drop", epochs=2, batch_size=4,
                             micro_batch_tokens=96, model=str(BUNDLED_MODEL))
    assert keywords.to_dict() == report.to_dict()


def test_auto_training_values_are_resolved_as_training_resolves_them(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", chats(70))
    report = check_dataset(DataConfig(train=str(path)), training=TrainingConfig(), model=None)
    assert report.settings["epochs"] == auto_epochs(70) and report.settings["epochs_requested"] == "auto"
    assert report.settings["batch_size"] == auto_batch_size(70)
    # Unset keys keep the recipe's defaults, stated once in recipe.py.
    assert report.settings["max_length"] == DataConfig().max_length


def test_a_stored_job_recipe_is_checked_with_its_settings(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", chats(20))
    recipe = build_recipe({"data": {"train": str(path), "max_length": 48},
                           "training": {"batch_size": 2, "epochs": 1}})
    report = check_dataset(recipe.data, training=recipe.training, model=None)
    assert (report.settings["max_length"], report.settings["batch_size"]) == (48, 2)


def test_bad_keywords_name_the_key(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", chats(5))
    with pytest.raises(DataError, match="positive"):
        check_dataset(path, max_length=0, model=None)
    with pytest.raises(DataError) as caught:
        check_dataset(path, overlong="squash", model=None)  # type: ignore[arg-type]
    assert caught.value.where == "data.overlong"
    with pytest.raises(DataError, match="no train file"):
        check_dataset(DataConfig(), model=None)
