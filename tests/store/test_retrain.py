"""Retraining: the recipe carried over, lineage recorded, and the alias guard."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.store.conftest import chat, make_run, write_jsonl
from tunesmith.store import Registry
from tunesmith.store.errors import AliasGuardError
from tunesmith.store.retrain import compare_models, move_alias, retrain_recipe
from tunesmith.store.runs import register_run


@pytest.fixture
def family(registry: Registry, tmp_path: Path):
    old_val = write_jsonl(tmp_path / "old-val.jsonl", [chat("Old?", "old")])
    new_val = write_jsonl(tmp_path / "new-val.jsonl", [chat("New?", "new")])
    parent = register_run(registry, make_run(tmp_path / "runs" / "bot", write_jsonl(
        tmp_path / "v1.jsonl", [chat("A?", "a")]), old_val))
    child = register_run(registry, make_run(tmp_path / "runs" / "bot-2", write_jsonl(
        tmp_path / "v2.jsonl", [chat("A?", "a"), chat("B?", "b")]), new_val), parent_id=parent.id)
    registry.set_alias("bot@production", parent.id)
    return parent, child


def fake_losses(table: dict[tuple[str, str], float]):
    """losses(model, paths) from a table keyed by (model id, file content)."""
    def losses(model, paths: list[Path]) -> list[dict[str, float]]:
        return [{"loss": table[(model.id, Path(p).read_text())]} for p in paths]
    return losses


def test_retrain_recipe_keeps_the_parents_choices(registry: Registry, family, tmp_path: Path) -> None:
    parent, _ = family
    new = write_jsonl(tmp_path / "v3.jsonl", [chat("C?", "c")])
    recipe = retrain_recipe(parent, new, overrides=["training.epochs=2"])
    assert recipe.data.train == str(new.resolve()) and recipe.data.validation is None
    assert recipe.adapter.rank == 8 and recipe.training.epochs == 2
    assert recipe.output.name.startswith("bot-retrain-")


def test_lineage_of_a_retrained_model(registry: Registry, family) -> None:
    parent, child = family
    chain = registry.lineage(child.id)
    assert [m.id for m in chain] == [child.id, parent.id]
    roles = [{d.role for d in m.datasets} for m in chain]
    assert roles == [{"train", "validation"}, {"train", "validation"}]


def test_alias_guard_refuses_a_regressed_model(registry: Registry, family) -> None:
    parent, child = family
    old, new = '{"messages":[{"content":"Old?",', '{"messages":[{"content":"New?",'
    sets = {Path(p).read_text()[:31]: Path(p).read_text() for p in
            (registry.dataset_path(registry.dataset(d.dataset_id)) for m in family for d in m.datasets
             if d.role == "validation")}
    # Better on the new held-out set, 5% worse on the previous one: refused at 2%.
    losses = fake_losses({(parent.id, sets[old]): 1.00, (child.id, sets[old]): 1.05,
                          (parent.id, sets[new]): 2.00, (child.id, sets[new]): 1.00})
    verdict = compare_models(registry, parent, child, 0.02, losses)
    assert [c.dataset.split()[0] for c in verdict.comparisons] == ["previous", "new"]
    assert not verdict.passed and [c.dataset.split()[0] for c in verdict.regressions] == ["previous"]
    with pytest.raises(AliasGuardError, match=r"\+5.0% held-out loss"):
        move_alias(registry, "bot@production", child, verdict)
    assert registry.model("bot@production").id == parent.id
    assert compare_models(registry, parent, child, 0.10, losses).passed
    move_alias(registry, "bot@production", child, verdict, force=True)
    assert registry.model("bot@production").id == child.id


def test_alias_guard_refuses_a_model_that_forgot(registry: Registry, family) -> None:
    parent, child = family
    def same(model, paths: list[Path]) -> list[dict[str, float]]:
        return [{"loss": 1.0} for _ in paths]

    assert compare_models(registry, parent, child, 0.02, same).passed
    report = {"status": "red", "forgetting": "regressed"}
    child = registry.update_model(child.id, evaluation={**child.evaluation, "report": report})
    verdict = compare_models(registry, parent, child, 0.02, same)
    assert verdict.forgetting == "regressed" and not verdict.passed and not verdict.regressions
    with pytest.raises(AliasGuardError, match="forgot too much"):
        move_alias(registry, "bot@production", child, verdict)
    assert registry.model("bot@production").id == parent.id


def test_retrain_from_weights_starts_from_the_parents_adapter(registry: Registry, family,
                                                              tmp_path: Path) -> None:
    parent, _ = family
    new = write_jsonl(tmp_path / "v3.jsonl", [chat("C?", "c")])
    assert retrain_recipe(parent, new).adapter.init_from is None
    assert retrain_recipe(parent, new, from_weights=True).adapter.init_from == parent.path
