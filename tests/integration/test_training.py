"""The training loop on a tiny random Llama: learning, adapters, accumulation, checkpoints,
resume after SIGKILL, NaN handling, early stopping and pre-flight errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import tunesmith
from tests.conftest import colour_chats, write_jsonl
from tunesmith.errors import DataError, ModelError, RecipeError
from tunesmith.recipe import load_recipe
from tunesmith.train import checkpoint as ckpt
from tunesmith.train.loop import TrainingDiverged, train
from tunesmith.train.run import RunDir


@pytest.fixture
def colour_data(tmp_path: Path) -> tuple[Path, Path]:
    return (
        write_jsonl(tmp_path / "train.jsonl", colour_chats(48, seed=1)),
        write_jsonl(tmp_path / "validation.jsonl", colour_chats(12, seed=2)),
    )


def recipe_for(model: Path, data: tuple[Path, Path], out: Path, *overrides: str):
    return load_recipe(
        None,
        [
            f"base_model={model}",
            f"data.train={data[0]}",
            f"data.validation={data[1]}",
            f"output.dir={out}",
            "output.name=run",
            "training.batch_size=8",
            "training.epochs=2",
            "training.learning_rate=0.01",
            "training.eval_every=2",
            "training.save_every=2",
            "training.warmup_ratio=0",
            *overrides,
        ],
    )


def losses(run_dir: Path, kind: str = "train") -> list[float]:
    return [r["loss"] for r in RunDir(run_dir).metrics() if r["type"] == kind]


def test_lora_loss_falls_and_base_weights_stay(tiny_model_path, colour_data, tmp_path) -> None:
    """On a real pretrained model, as users run it."""
    result = train(recipe_for(tiny_model_path, colour_data, tmp_path, "training.epochs=3"))
    assert result.status == "succeeded"
    evals = [r for r in RunDir(result.run_dir).metrics() if r["type"] == "eval"]
    assert evals[0]["step"] == 0 and evals[0]["baseline"]
    assert evals[-1]["loss"] < 0.5 * evals[0]["loss"]
    from tunesmith.model.inference import load_trained

    base = {k: v.float() for k, v in load_file(tiny_model_path / "model.safetensors").items()}

    tuned = load_trained(result.run_dir).model.get_base_model().state_dict()
    for name, tensor in base.items():
        peft_name = name.replace(".weight", ".base_layer.weight")
        match = tuned.get(peft_name, tuned.get(name))
        assert match is not None, name
        assert torch.equal(match, tensor), f"{name} changed"


@pytest.mark.parametrize("kind", ["dora", "full"])
def test_dora_and_full_train(kind, random_model_path, colour_data, tmp_path) -> None:
    extra = ["training.learning_rate=0.003"] if kind == "full" else []
    result = train(recipe_for(random_model_path, colour_data, tmp_path, f"adapter.kind={kind}", *extra))
    assert result.status == "succeeded"
    evals = losses(result.run_dir, "eval")
    assert evals[-1] < evals[0]
    if kind == "full":
        assert (result.final_dir / "model.safetensors").exists()
        assert not (result.final_dir / "adapter_config.json").exists()
    else:
        assert json.loads((result.final_dir / "adapter_config.json").read_text())["use_dora"] is True


def test_full_fine_tuning_keeps_frozen_layers(random_model_path, colour_data, tmp_path) -> None:
    result = train(
        recipe_for(
            random_model_path,
            colour_data,
            tmp_path,
            "adapter.kind=full",
            "adapter.freeze_layers=[0]",
            "training.epochs=1",
        )
    )
    before = load_file(random_model_path / "model.safetensors")
    after = load_file(result.final_dir / "model.safetensors")
    layer0 = [n for n in before if n.startswith("model.layers.0.")]
    layer1 = [n for n in before if n.startswith("model.layers.1.") and "proj" in n]
    assert layer0 and all(torch.equal(before[n], after[n]) for n in layer0)
    assert any(not torch.equal(before[n], after[n]) for n in layer1)


def test_saved_adapter_loads_with_plain_peft_and_matches(random_model_path, colour_data, tmp_path) -> None:
    """The validation loss tunesmith measured at the end equals what PEFT + transformers
    compute from the saved files alone."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.data.load import load_dataset
    from tunesmith.data.pack import collate_padded
    from tunesmith.data.render import Renderer

    result = train(recipe_for(random_model_path, colour_data, tmp_path, "training.epochs=1"))
    final_eval = [r for r in RunDir(result.run_dir).metrics() if r["type"] == "eval"][-1]
    base = AutoModelForCausalLM.from_pretrained(random_model_path, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, result.final_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(result.final_dir)
    renderer = Renderer(tokenizer)
    examples = [renderer.render(r) for r in load_dataset(colour_data[1]).records]
    batch = collate_padded(examples, tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(), ignore_index=-100
    )
    assert abs(float(loss) - final_eval["loss"]) < 1e-4


def test_accumulation_split_gives_same_training(random_model_path, tmp_path) -> None:
    """8 examples per step in one micro-batch equals the same 8 in two micro-batches of 4."""
    rows = [{"text": f"sample number {i:03d} says hello"} for i in range(32)]
    data = write_jsonl(tmp_path / "text.jsonl", rows)
    from tunesmith.data.render import Renderer
    from tunesmith.model.loading import load_tokenizer, resolve_model

    renderer = Renderer(load_tokenizer(resolve_model(str(random_model_path))))
    from tunesmith.data.records import TextRecord

    # Texts tokenize to different lengths: size the budget by the longest so 8 always fit in one
    # micro-batch and any 4 in half of it.
    length = max(len(renderer.render(TextRecord(row["text"], None))) for row in rows)  # type: ignore[arg-type]
    curves, weights = [], []
    for name, budget in (("one", 8 * length), ("two", 4 * length)):
        recipe = load_recipe(
            None,
            [
                f"base_model={random_model_path}",
                f"data.train={data}",
                "data.validation_split=0",
                f"output.dir={tmp_path}",
                f"output.name={name}",
                "training.batch_size=8",
                "training.epochs=1",
                f"training.micro_batch_tokens={budget}",
                "training.learning_rate=0.01",
                "adapter.dropout=0",
            ],
        )  # dropout would draw different masks per split
        result = train(recipe)
        metrics = [r for r in RunDir(result.run_dir).metrics() if r["type"] == "train"]
        assert {r["micro_batches"] for r in metrics} == ({1.0} if name == "one" else {2.0})
        curves.append([r["loss"] for r in metrics])
        weights.append(load_file(result.final_dir / "adapter_model.safetensors"))
    assert curves[0] == pytest.approx(curves[1], abs=1e-5)
    for key in weights[0]:
        # Float sums in another order, amplified by Adam's normalisation over 4 steps at lr 0.01,
        # move weights of size ~0.1 by ~1e-5; a wrong normalisation moves them by ~1e-2.
        assert torch.allclose(weights[0][key], weights[1][key], atol=1e-4)


CHILD = textwrap.dedent("""
    import sys, time
    from tunesmith.recipe import load_recipe
    from tunesmith.train.loop import train

    class Slow:  # gives the parent time to kill mid-run
        def report(self, record):
            if record["type"] == "train":
                time.sleep(0.15)
        def close(self):
            pass

    train(load_recipe(None, sys.argv[1:]), reporters=[Slow()])
""")


@pytest.mark.slow  # kill-and-resume of a real process
def test_resume_after_sigkill_reproduces_the_curve(random_model_path, colour_data, tmp_path) -> None:
    args = [
        f"base_model={random_model_path}",
        f"data.train={colour_data[0]}",
        f"data.validation={colour_data[1]}",
        "training.batch_size=4",
        "training.epochs=2",
        "training.learning_rate=0.01",
        "training.save_every=3",
        "training.eval_every=5",
        "adapter.dropout=0.1",
        "training.keep_checkpoints=2",
    ]
    reference = train(load_recipe(None, [*args, f"output.dir={tmp_path}", "output.name=reference"]))

    killed_dir = tmp_path / "killed"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, *args, f"output.dir={tmp_path}", "output.name=killed"],
        # The child imports the same tunesmith sources as this process, not whatever is installed.
        env={**os.environ,
             "PYTHONPATH": os.pathsep.join([str(Path(tunesmith.__file__).parents[1]), os.getcwd()])},
    )
    deadline = time.time() + 120
    while time.time() < deadline and not any(
        c.step >= 6 for c in ckpt.complete_checkpoints(killed_dir / "checkpoints")
    ):
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    steps_done = max(r["step"] for r in RunDir(killed_dir).metrics() if r["type"] == "train")
    assert 6 <= steps_done < reference.steps, "the child was not killed mid-run"

    resumed = train(resume_dir=killed_dir)
    assert resumed.status == "succeeded" and resumed.steps == reference.steps
    expected = [(r["step"], r["loss"]) for r in RunDir(reference.run_dir).metrics() if r["type"] == "train"]
    got = [(r["step"], r["loss"]) for r in RunDir(killed_dir).metrics() if r["type"] == "train"]
    assert [s for s, _ in got] == [s for s, _ in expected]
    assert [loss for _, loss in got] == pytest.approx([loss for _, loss in expected], abs=1e-5)


def test_truncated_newest_checkpoint_is_skipped(random_model_path, colour_data, tmp_path) -> None:
    result = train(
        recipe_for(
            random_model_path, colour_data, tmp_path, "training.keep_checkpoints=3", "training.eval_every=100"
        )
    )
    folder = result.run_dir / "checkpoints"
    complete = ckpt.complete_checkpoints(folder)
    assert len(complete) == 3
    newest = complete[-1]
    weights = newest.path / ckpt.WEIGHTS
    weights.write_bytes(weights.read_bytes()[:100])
    assert ckpt.latest_checkpoint(folder).step == complete[-2].step
    (complete[-2].path / ckpt.MARKER).unlink()
    assert ckpt.latest_checkpoint(folder).step == complete[-3].step


def test_prune_keeps_best_and_drops_leftovers(tmp_path) -> None:
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint(tmp_path, step, {"w": torch.ones(2) * step}, {}, {"progress": {}})
    (tmp_path / ".tmp-step-00000005-1").mkdir()
    (tmp_path / "step-00000006").mkdir()  # no marker: a write that died
    ckpt.prune(tmp_path, keep=1, protect={2})
    assert [c.step for c in ckpt.complete_checkpoints(tmp_path)] == [2, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000002", "step-00000004"]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(
    random_model_path, colour_data, tmp_path, monkeypatch
) -> None:
    from tunesmith.train.objectives.sft import SupervisedObjective

    original = SupervisedObjective.__call__
    calls = {"n": 0}

    def poisoned(self, model, batch):
        calls["n"] += 1
        loss, metrics = original(self, model, batch)
        if model.training and calls["n"] > 4:
            loss = loss * float("nan")
            metrics["loss"] = float("nan")
        return loss, metrics

    monkeypatch.setattr(SupervisedObjective, "__call__", poisoned)
    with pytest.raises(TrainingDiverged, match="nan"):
        train(
            recipe_for(
                random_model_path,
                colour_data,
                tmp_path,
                "training.save_every=1",
                "training.eval_every=100",
                "data.validation=null",
                "data.validation_split=0",
            )
        )
    run = RunDir(tmp_path / "run")
    assert run.info()["status"] == "failed"
    assert not run.final.exists()
    assert ckpt.latest_checkpoint(run.checkpoints).step == 4
    weights = load_file(ckpt.latest_checkpoint(run.checkpoints).path / ckpt.WEIGHTS)
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_early_stopping_keeps_the_best_checkpoint(
    random_model_path, colour_data, tmp_path, monkeypatch
) -> None:
    import tunesmith.train.loop as loop

    fake = iter([5.0, 4.0, 3.0, 3.5, 3.6, 3.7, 3.8, 3.9])
    real = loop.evaluate

    def scripted(*args, **kwargs):
        result = real(*args, **kwargs)
        return {**result, "loss": next(fake)}

    monkeypatch.setattr(loop, "evaluate", scripted)
    result = train(
        recipe_for(
            random_model_path,
            colour_data,
            tmp_path,
            "training.early_stopping_patience=2",
            "training.eval_every=1",
            "training.keep_checkpoints=1",
            "training.epochs=3",
        )
    )
    assert result.best_step == 2 and result.steps == 4
    assert RunDir(result.run_dir).info()["early_stopped"] is True
    assert 2 in [c.step for c in ckpt.complete_checkpoints(result.run_dir / "checkpoints")]


def test_preflight_errors_come_before_compute(random_model_path, colour_data, tmp_path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        train(recipe_for(tmp_path / "missing-model", colour_data, tmp_path))
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    with pytest.raises(ModelError, match="not a causal language model"):
        train(recipe_for(bert, colour_data, tmp_path))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{oops\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2"):
        train(recipe_for(random_model_path, (bad, colour_data[1]), tmp_path))
    with pytest.raises(RecipeError, match="micro_batch_tokens"):
        train(recipe_for(random_model_path, colour_data, tmp_path, "training.micro_batch_tokens=8"))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_remote_code_is_refused_unless_allowed(random_model_path, colour_data, tmp_path) -> None:
    custom = tmp_path / "custom"
    custom.mkdir()
    for file in random_model_path.iterdir():
        (custom / file.name).write_bytes(file.read_bytes())
    config = json.loads((custom / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"}
    (custom / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="trust_remote_code"):
        train(recipe_for(custom, colour_data, tmp_path))


def test_not_enough_disk_is_refused(random_model_path, colour_data, tmp_path, monkeypatch) -> None:
    import shutil

    from tunesmith.errors import TunesmithError

    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    with pytest.raises(TunesmithError, match="not enough disk"):
        train(recipe_for(random_model_path, colour_data, tmp_path))


def test_gradient_checkpointing_gives_the_same_curve(random_model_path, colour_data, tmp_path) -> None:
    curves = []
    for name, flag in (("plain", "false"), ("ckpt", "true")):
        result = train(
            recipe_for(
                random_model_path,
                colour_data,
                tmp_path,
                f"output.name={name}",
                f"training.gradient_checkpointing={flag}",
                "adapter.dropout=0",
                "training.epochs=1",
            )
        )
        curves.append(losses(result.run_dir))
    assert curves[0] == pytest.approx(curves[1], abs=1e-5)


def test_full_fine_tuning_with_checkpointing_keeps_the_tied_embedding_path(
        random_model_path, colour_data, tmp_path, monkeypatch) -> None:
    """The random model ties its embedding to the head: with gradient checkpointing on, full
    fine-tuning still adds the embedding's rows in place, and the curve is the plain run's."""
    from tunesmith.train import loss as loss_module

    lookup, taken = loss_module._tied_embedding_lookup, []

    def spy(lm: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor | None:
        embedded = lookup(lm, ids)
        taken.append(embedded is not None)
        return embedded

    monkeypatch.setattr(loss_module, "_tied_embedding_lookup", spy)
    curves = []
    for name, flag in (("plain", "false"), ("ckpt", "true")):
        taken.clear()
        result = train(recipe_for(random_model_path, colour_data, tmp_path, f"output.name={name}",
                                  f"training.gradient_checkpointing={flag}", "adapter.kind=full",
                                  "training.learning_rate=0.001", "training.epochs=1",
                                  "evaluation.enabled=false"))
        curves.append(losses(result.run_dir))
        assert True in taken  # training steps (evaluation runs without gradients, so never)
    assert curves[0] == pytest.approx(curves[1], abs=1e-5)


def test_tensorboard_and_mlflow_receive_metrics(
    random_model_path, colour_data, tmp_path, monkeypatch
) -> None:
    import types

    logged: list[tuple[dict, int]] = []
    fake = types.SimpleNamespace(
        start_run=lambda run_name: None,
        log_params=lambda params: None,
        log_metrics=lambda metrics, step: logged.append((metrics, step)),
        end_run=lambda: None,
    )
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    pytest.importorskip("tensorboard")
    result = train(
        recipe_for(
            random_model_path,
            colour_data,
            tmp_path,
            "training.report_to=[tensorboard, mlflow]",
            "training.epochs=1",
        )
    )
    assert list((result.run_dir / "tensorboard").glob("events.out.tfevents.*"))
    steps = [step for metrics, step in logged if "loss" in metrics]
    assert steps == list(range(1, result.steps + 1))
    assert any("eval_loss" in metrics for metrics, _ in logged)


def test_stopped_named_run_resumes_automatically(random_model_path, colour_data, tmp_path) -> None:
    """A stop request ends at a step boundary with a checkpoint; training the same named
    recipe again continues from it instead of starting over."""
    recipe = recipe_for(random_model_path, colour_data, tmp_path, "training.eval_every=100")
    seen = []

    class Counter:
        def report(self, record):
            if record["type"] == "train":
                seen.append(record["step"])

        def close(self):
            pass

    stopped = train(recipe, reporters=[Counter()], should_stop=lambda: len(seen) >= 5)
    assert stopped.status == "stopped" and stopped.steps == 5 and stopped.final_dir is None
    assert ckpt.latest_checkpoint(stopped.run_dir / "checkpoints").step == 5
    seen.clear()
    finished = train(recipe, reporters=[Counter()])
    assert finished.status == "succeeded" and seen[0] == 6 and finished.steps == 12


def test_training_can_start_from_a_trained_adapter(random_model_path, colour_data, tmp_path) -> None:
    """adapter.init_from (retrain --from-weights): the new run's untrained held-out loss is the
    first run's final one, not the base model's."""
    first = train(recipe_for(random_model_path, colour_data, tmp_path / "a", "adapter.dropout=0"))
    evals = [r for r in RunDir(first.run_dir).metrics() if r["type"] == "eval"]
    second = train(recipe_for(random_model_path, colour_data, tmp_path / "b", "adapter.dropout=0",
                              "training.max_steps=1", f"adapter.init_from={first.final_dir}"))
    start = next(r for r in RunDir(second.run_dir).metrics() if r["type"] == "eval")
    assert start["baseline"] and start["loss"] == pytest.approx(evals[-1]["loss"], rel=1e-5)
    assert start["loss"] < evals[0]["loss"] - 0.1
    with pytest.raises(RecipeError, match="no PEFT adapter"):
        train(recipe_for(random_model_path, colour_data, tmp_path / "c",
                         f"adapter.init_from={tmp_path}"))


def test_resume_can_end_the_run_sooner_and_refuses_other_changes(random_model_path, colour_data,
                                                                 tmp_path) -> None:
    """A stopped run resumed with a shorter training.max_steps finishes there (each step logged
    once); a change that would alter what the checkpoint means is refused naming the key."""
    recipe = recipe_for(random_model_path, colour_data, tmp_path, "training.eval_every=100")
    stopped = train(recipe, should_stop=lambda: len(losses(tmp_path / "run")) >= 3)
    assert stopped.status == "stopped" and stopped.steps == 3
    with pytest.raises(RecipeError, match=r"cannot change training\.learning_rate"):
        train(resume_dir=stopped.run_dir, overrides=["training.learning_rate=0.5", "training.max_steps=5"])
    with pytest.raises(RecipeError, match="before its last checkpoint"):
        train(resume_dir=stopped.run_dir, overrides=["training.max_steps=2"])
    finished = train(resume_dir=stopped.run_dir, overrides=["training.max_steps=5", "training.save_every=1"])
    assert finished.status == "succeeded" and finished.steps == 5 and finished.final_dir is not None
    assert [r["step"] for r in RunDir(stopped.run_dir).metrics() if r["type"] == "train"] == [1, 2, 3, 4, 5]
    assert RunDir(stopped.run_dir).read_recipe().training.max_steps == 5  # the run says how it ended
    assert [c.step for c in ckpt.complete_checkpoints(stopped.run_dir / "checkpoints")][-1] == 5


def test_a_run_folder_deleted_mid_training_fails_the_job_and_stays_gone(random_model_path, colour_data,
                                                                        tmp_path) -> None:
    import shutil

    from tunesmith.store import open_registry
    from tunesmith.store.tracking import train_tracked
    from tunesmith.train.run import RunFolderGone

    class Deleter:
        def report(self, record):
            if record["type"] == "train" and record["step"] == 1:
                shutil.rmtree(tmp_path / "run")

        def close(self):
            pass

    registry = open_registry()
    with pytest.raises(RunFolderGone, match="deleted while training"):
        train_tracked(registry, recipe_for(random_model_path, colour_data, tmp_path), reporters=[Deleter()])
    assert not (tmp_path / "run").exists()  # not a checkpoints/ or run.json without the rest
    (job,) = registry.jobs()
    assert job.status == "failed" and "deleted while training" in job.error


def test_replay_is_trained_every_epoch_but_never_held_out(random_model_path, colour_data, tmp_path) -> None:
    replay = write_jsonl(tmp_path / "replay.jsonl", [
        {"messages": [{"role": "user", "content": f"Say {n}."}, {"role": "assistant", "content": f"{n}."}]}
        for n in range(10)])
    run = train(recipe_for(random_model_path, colour_data, tmp_path, f"data.replay={replay}",
                           "training.max_steps=2")).run_dir
    start = next(r for r in RunDir(run).metrics() if r["type"] == "start")["data"]
    assert (start["train_examples"], start["replay_examples"], start["validation_examples"]) == (58, 10, 12)
    # Without a validation file the split is taken from the task's examples before replay joins.
    split = recipe_for(random_model_path, colour_data, tmp_path / "split", f"data.replay={replay}",
                       "data.validation=null", "training.max_steps=1")
    start = next(r for r in RunDir(train(split).run_dir).metrics() if r["type"] == "start")["data"]
    assert (start["train_examples"], start["validation_examples"]) == (44 + 10, 4)

    text = write_jsonl(tmp_path / "text.jsonl", [{"text": "plain words"}] * 3)
    with pytest.raises(DataError, match="replay holds text examples but the training data is chat"):
        train(recipe_for(random_model_path, colour_data, tmp_path / "text", f"data.replay={text}"))
    with pytest.raises(RecipeError, match=r"data\.replay"):
        recipe_for(random_model_path, colour_data, tmp_path, f"data.replay={replay}", "method=dpo")
