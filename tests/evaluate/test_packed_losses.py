"""Held-out losses are computed packed (several examples per forward) with the same numbers
as one forward per example; evaluation at the end of training uses the model in memory."""

from __future__ import annotations

import json

import pytest

from tests.conftest import colour_chats, write_jsonl
from tunesmith.recipe import load_recipe
from tunesmith.train.loop import train
from tunesmith.train.run import RunDir

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def test_packed_example_losses_equal_one_forward_per_example(tiny_model_path, assets_dir,
                                                            one_torch_thread) -> None:
    from tunesmith.data.load import load_dataset
    from tunesmith.data.render import Renderer
    from tunesmith.evaluate.models import example_losses
    from tunesmith.model.inference import load_trained
    from tunesmith.train.loop import evaluate
    from tunesmith.train.objectives import make_objective

    loaded = load_trained(tiny_model_path)
    renderer = Renderer(loaded.tokenizer)
    records = load_dataset(assets_dir / "data" / "support" / "validation.jsonl").records[:10]
    examples = [renderer.render(r) for r in records]
    examples.insert(3, None)  # an example that could not be rendered keeps its place
    longest = max(len(e) for e in examples if e is not None)
    # Their common system prompt is held once per row where the model can take that.
    from tunesmith.data.pack import collate_packed
    from tunesmith.train.loss import shares_prefix

    assert shares_prefix(loaded.model) and collate_packed(examples[:3], share_prefix=True).shared_prefix
    packed = example_losses(loaded, examples, 64, "cpu", budget=longest * 3)  # several rows, several each

    objective = make_objective("sft", 64)
    for example, got in zip(examples, packed, strict=True):
        if example is None:
            assert got["tokens"] == 0.0 and got["loss_sum"] != got["loss_sum"]  # NaN
            continue
        alone = evaluate(loaded.model, objective, [example], len(example), loaded.model.device)
        assert got["tokens"] == alone["tokens"] > 0
        assert got["correct"] == pytest.approx(alone["token_accuracy"] * alone["tokens"], abs=1e-6)
        assert got["loss_sum"] == pytest.approx(alone["loss"] * alone["tokens"], rel=1e-5)


def test_evaluation_after_training_uses_the_model_in_memory(random_model_path, tmp_path, monkeypatch,
                                                            one_torch_thread) -> None:
    """No reload from disk: loading a trained model is made to fail, and the report still comes,
    with the same held-out loss as a later `tunesmith eval` that loads final/ from disk."""
    from tunesmith.evaluate.runner import evaluate_model
    from tunesmith.model import inference

    train_file = write_jsonl(tmp_path / "train.jsonl", colour_chats(16, seed=1))
    heldout = write_jsonl(tmp_path / "heldout.jsonl", colour_chats(4, seed=2))
    recipe = load_recipe(None, [
        f"base_model={random_model_path}", f"data.train={train_file}", f"data.validation={heldout}",
        f"output.dir={tmp_path}", "output.name=run", "training.batch_size=8", "training.max_steps=2",
        "training.learning_rate=0.01", "training.dtype=float32", "evaluation.enabled=true",
        "evaluation.max_new_tokens=4", "evaluation.bootstrap_samples=50", "evaluation.max_train_examples=8"])
    real_load = inference.load_trained

    def no_reload(target, device="cpu"):
        raise AssertionError(f"reloaded {target} from disk")

    monkeypatch.setattr(inference, "load_trained", no_reload)
    result = train(recipe)
    records = RunDir(result.run_dir).metrics()
    assert not [r for r in records if r["type"] == "event" and r.get("level") == "warning"], records
    assert any(r["type"] == "evaluation" for r in records)
    in_memory = json.loads((result.run_dir / "report.json").read_text())

    monkeypatch.setattr(inference, "load_trained", real_load)
    reloaded, _ = evaluate_model(result.run_dir, heldout, recipe.evaluation, out_dir=tmp_path / "again")
    assert in_memory["loss"]["tuned"]["loss"] == pytest.approx(reloaded["loss"]["tuned"]["loss"], rel=1e-5)
    assert in_memory["loss"]["base"]["loss"] == pytest.approx(reloaded["loss"]["base"]["loss"], rel=1e-5)
