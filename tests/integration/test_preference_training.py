"""Preference, reward-model and GRPO runs through the one training loop on the bundled
tiny-chat model and its sample preference data."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import write_jsonl
from tunesmith.recipe import load_recipe
from tunesmith.train.loop import train
from tunesmith.train.run import RunDir

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def evals(run_dir: Path) -> list[dict]:
    return [r for r in RunDir(run_dir).metrics() if r["type"] == "eval"]


def preference_recipe(assets_dir: Path, out: Path, method: str, *overrides: str):
    data = assets_dir / "data" / "support_preference"
    return load_recipe(None, [
        f"method={method}", "base_model=tunesmith/tiny-chat", f"data.train={data / 'train.jsonl'}",
        f"data.validation={data / 'validation.jsonl'}", f"output.dir={out}", "output.name=run",
        "training.batch_size=8", "training.max_steps=4", "training.learning_rate=0.001",
        "training.warmup_ratio=0", "training.eval_every=4", *overrides])


def test_dpo_raises_held_out_reward_accuracy(assets_dir, tmp_path) -> None:
    result = train(preference_recipe(assets_dir, tmp_path, "dpo"))
    assert result.status == "succeeded" and result.steps == 4
    first, last = evals(result.run_dir)[0], evals(result.run_dir)[-1]
    assert first["baseline"] and first["pairs"] == last["pairs"] == 30
    assert last["reward_accuracy"] >= 0.9 > first["reward_accuracy"]
    assert last["reward_margin"] > first["reward_margin"] and last["loss"] < first["loss"]
    assert last["chosen_reward"] > 0
    train_records = [r for r in RunDir(result.run_dir).metrics() if r["type"] == "train"]
    reported = {"loss", "reward_accuracy", "reward_margin", "chosen_reward", "rejected_reward"}
    assert reported <= set(train_records[0])
    resolved = RunDir(result.run_dir).read_recipe()
    assert resolved.preference.beta == 0.1
    assert (result.final_dir / "adapter_config.json").exists()

    # The registry's held-out check of the saved model (reference: its adapter switched off)
    # gives the numbers training reported for its final weights.
    from tunesmith.store.heldout import heldout_losses

    model = SimpleNamespace(recipe=resolved.model_dump(mode="json"), path=str(result.final_dir))
    (again,) = heldout_losses(model, [assets_dir / "data" / "support_preference" / "validation.jsonl"])
    for key in ("loss", "reward_accuracy", "reward_margin", "chosen_reward"):
        assert again[key] == pytest.approx(last[key], rel=1e-3, abs=1e-4), key


def test_reward_model_scores_preferred_answers_higher(assets_dir, tmp_path) -> None:
    from tunesmith.train.objectives.grpo import make_graders
    from tunesmith.train.objectives.reward_model import load_reward_scorer

    result = train(preference_recipe(assets_dir, tmp_path, "reward", "training.max_steps=6",
                                     "training.eval_every=6"))
    first, last = evals(result.run_dir)[0], evals(result.run_dir)[-1]
    assert last["reward_accuracy"] >= 0.9 > first["reward_accuracy"]
    config = json.loads((result.final_dir / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS"

    scorer = load_reward_scorer(result.run_dir)
    rows = [json.loads(line) for line in
            (assets_dir / "data" / "support_preference" / "validation.jsonl").read_text().splitlines()]
    right = 0
    for row in rows:
        item = {"messages": row["input"]["messages"]}
        chosen = scorer(row["preferred_output"][0]["content"], item)
        rejected = scorer(row["non_preferred_output"][0]["content"], item)
        assert 0.0 <= rejected <= 1.0 and 0.0 <= chosen <= 1.0
        right += chosen > rejected
    assert right / len(rows) == pytest.approx(last["reward_accuracy"])
    from tunesmith.store.heldout import heldout_losses

    stored = SimpleNamespace(recipe=RunDir(result.run_dir).read_recipe().model_dump(mode="json"),
                             path=str(result.final_dir))
    (again,) = heldout_losses(stored, [assets_dir / "data" / "support_preference" / "validation.jsonl"])
    assert again["reward_accuracy"] == pytest.approx(last["reward_accuracy"])
    assert again["loss"] == pytest.approx(last["loss"], rel=1e-4)
    (grader,) = make_graders([{"type": "reward_model", "path": str(result.run_dir)}])
    item = {"messages": rows[0]["input"]["messages"]}
    assert grader("Hi!", item) == pytest.approx(scorer("Hi!", item))


def test_grpo_raises_the_mean_grade(assets_dir, tmp_path) -> None:
    """Toy task: every reply must mention a delivery time in days, checked by an exact
    string grader; the base model does so in about a quarter of its samples."""
    questions = [json.loads(line)["input"]["messages"][-1]["content"] for line in
                 (assets_dir / "data" / "support_preference" / "train.jsonl").read_text().splitlines()]

    def rows(items: list[str]) -> list[dict]:
        return [{"messages": [{"role": "user", "content": q}], "must_mention": "days"} for q in items]

    train_file = write_jsonl(tmp_path / "train.jsonl", rows(questions[:16]))
    valid_file = write_jsonl(tmp_path / "valid.jsonl", rows(questions[100:108]))
    grader = ('[{type: string_check, name: mentions, operation: ilike, input: "{{sample.output_text}}", '
              'reference: "{{item.must_mention}}"}]')
    result = train(load_recipe(None, [
        "method=grpo", f"data.train={train_file}", f"data.validation={valid_file}",
        f"reinforcement.graders={grader}", "reinforcement.group_size=8", "reinforcement.max_new_tokens=24",
        "reinforcement.kl_coef=0.01", f"output.dir={tmp_path}", "training.epochs=1", "training.batch_size=4",
        "training.learning_rate=0.003", "training.warmup_ratio=0", "training.eval_every=4"]))
    assert result.status == "succeeded" and result.steps == 4
    first, last = evals(result.run_dir)[0], evals(result.run_dir)[-1]
    assert first["completions"] == last["completions"] == 8 * 8
    assert last["reward"] > first["reward"] + 0.2
    assert last["loss"] == pytest.approx(1 - last["reward"])
    steps = [r for r in RunDir(result.run_dir).metrics() if r["type"] == "train"]
    assert steps[0]["kl"] == pytest.approx(0.0, abs=1e-6) and steps[-1]["kl"] > 0
    assert all(0 < r["completion_length"] <= 24 for r in steps)


@pytest.mark.parametrize("precompute", [False, True])
def test_full_dpo_resumes_against_the_untrained_reference(precompute, random_model_path, tmp_path) -> None:
    """Under full fine-tuning the reference is a frozen copy (or precomputed log-probs) of
    the base; a resumed run must take it from the base, not from the checkpoint it loads,
    so its curve matches an uninterrupted run."""
    rows = [{"prompt": f"Which colour is box {i}?", "chosen": f"Box {i} is red.", "rejected": "No idea."}
            for i in range(24)]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)

    def recipe(name: str):
        return load_recipe(None, [
            f"base_model={random_model_path}", "method=dpo", "adapter.kind=full", f"data.train={data}",
            "data.validation_split=0", f"output.dir={tmp_path}", f"output.name={name}",
            "training.batch_size=4", "training.epochs=1", "training.learning_rate=0.001",
            "training.warmup_ratio=0", "training.save_every=3",
            f"preference.precompute_reference={str(precompute).lower()}"])

    def curve(run_dir: Path) -> list[float]:
        return [r["reward_margin"] for r in RunDir(run_dir).metrics() if r["type"] == "train"]

    whole = train(recipe("whole"))
    steps: list[int] = []

    class Counter:
        def report(self, record: dict) -> None:
            steps.extend([record["step"]] if record["type"] == "train" else [])

        def close(self) -> None:
            pass

    stopped = train(recipe("split"), reporters=[Counter()], should_stop=lambda: len(steps) >= 3)
    assert stopped.status == "stopped"
    resumed = train(recipe("split"))
    assert resumed.status == "succeeded" and resumed.steps == whole.steps == 6
    assert curve(resumed.run_dir) == pytest.approx(curve(whole.run_dir), rel=1e-4, abs=1e-6)
    assert curve(whole.run_dir)[-1] > 0

    # The registry's held-out check measures the saved full model against the base (were the
    # saved model its own reference, every reward would be exactly 0).
    from tunesmith.store.heldout import heldout_losses

    stored = SimpleNamespace(recipe=RunDir(whole.run_dir).read_recipe().model_dump(mode="json"),
                             path=str(whole.final_dir))
    (again,) = heldout_losses(stored, [data])
    assert again["reward_margin"] > 0 and again["chosen_reward"] != 0 and again["pairs"] == 24


def test_fully_fine_tuned_reward_model_loads_as_a_scorer(random_model_path, tmp_path) -> None:
    from tunesmith.train.objectives.reward_model import load_reward_scorer

    rows = [{"prompt": f"Rate box {i}.", "chosen": "A fine box.", "rejected": "Bad."} for i in range(8)]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    result = train(load_recipe(None, [
        f"base_model={random_model_path}", "method=reward", "adapter.kind=full", f"data.train={data}",
        "data.validation_split=0", f"output.dir={tmp_path}", "training.batch_size=4",
        "training.max_steps=2"]))
    config = json.loads((result.final_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    assert len(config["id2label"]) == 1  # one output: a scalar score
    score = load_reward_scorer(result.final_dir)
    item = {"messages": [{"role": "user", "content": "Rate box 1."}]}
    assert 0.0 < score("A fine box.", item) < 1.0
    assert score("A fine box.", item) != score("Bad.", item)
