"""Evaluation end to end on the bundled tiny-chat model and the Brightloom support data:
the report of a LoRA run shows the tuned model beating the zero-shot base on held-out
loss; the forgetting probe flags a destructive full fine-tune and not a gentle LoRA run;
`tunesmith eval` and `tunesmith report` write and show the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import colour_chats, write_jsonl
from tunesmith.cli import main
from tunesmith.evaluate.runner import evaluate_model
from tunesmith.recipe import EvaluationConfig, load_recipe
from tunesmith.store import open_registry
from tunesmith.store.tracking import train_tracked
from tunesmith.train.loop import train
from tunesmith.train.run import RunDir

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def support(assets_dir: Path, name: str) -> Path:
    return assets_dir / "data" / "support" / f"{name}.jsonl"


def small_support(assets_dir: Path, folder: Path, count: int) -> Path:
    lines = support(assets_dir, "validation").read_text(encoding="utf-8").splitlines()[:count]
    return write_jsonl(folder / "heldout.jsonl", [json.loads(line) for line in lines])


def recipe(assets_dir: Path, out: Path, name: str, *overrides: str):
    return load_recipe(assets_dir / "recipes" / "quickstart.yaml", [
        f"output.dir={out}", f"output.name={name}", "training.epochs=1", "training.eval_every=1000",
        "training.save_every=1000", *overrides])


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, assets_dir) -> tuple[Path, dict]:
    """A short LoRA run that evaluates itself at the end (the recipe's evaluation section)."""
    out = tmp_path_factory.mktemp("eval-runs")
    heldout = small_support(assets_dir, out, 6)
    home = out / "home"  # a module fixture runs before the per-test isolated home exists
    home.mkdir()
    registry = open_registry(f"sqlite:///{home / 'registry.db'}", home)
    tracked = train_tracked(registry, recipe(
        assets_dir, out, "lora", "training.max_steps=12", "evaluation.enabled=true",
        f"evaluation.data={heldout}", "evaluation.baselines=[base, fewshot, retrieval]",
        "evaluation.max_new_tokens=12", "evaluation.bootstrap_samples=200",
        "evaluation.max_train_examples=40",
        "evaluation.forgetting=tunesmith/general", "evaluation.few_shot_k=2", "evaluation.retrieval_k=2"))
    assert tracked.result.status == "succeeded"
    assert tracked.model is not None
    return tracked.result.run_dir, tracked.model.evaluation


@pytest.mark.slow  # a real training that evaluates itself with every baseline (lora_run)
def test_lora_report_shows_the_tuned_model_beating_the_base_on_loss(lora_run, assets_dir) -> None:
    lora_run, model_evaluation = lora_run
    report = json.loads((lora_run / "report.json").read_text())
    assert report["systems"] == ["tuned", "base", "fewshot", "retrieval"]
    tuned, base = report["loss"]["tuned"], report["loss"]["base"]
    assert tuned["loss"] < base["loss"]
    assert tuned["high"] < base["low"]  # the intervals do not even overlap
    assert report["summary"]["tuned_beats_base_loss"] is True
    versus_base = next(c for c in report["comparisons"] if c["baseline"] == "base" and c["metric"] == "loss")
    assert versus_base["wins"] == report["examples"] == 6
    # default graders against the reference reply, for every system, with intervals
    assert set(report["scores"]) == {"rouge_l", "token_f1"}
    for by_system in report["scores"].values():
        assert set(by_system) == set(report["systems"])
        assert all(0 <= v["low"] <= v["value"] <= v["high"] <= 1 for v in by_system.values())
    detail = report["examples_detail"]
    assert len(detail["items"]) == 6
    assert all(set(i["reply"]) == set(report["systems"]) for i in detail["items"])
    assert len(detail["worst_by_loss"]) == 5
    assert len(report["noisy_training_examples"]) == 5
    noisy = report["noisy_training_examples"]
    assert Path(noisy[0]["source"].rsplit(":", 1)[0]).resolve() == support(assets_dir, "train")
    assert noisy[0]["loss"] >= noisy[-1]["loss"]
    html = (lora_run / "report.html").read_text()
    assert "<svg" in html and "Forgetting probe" in html and "http" not in html.replace(
        "http://www.w3.org/2000/svg", "")
    # the hook recorded the verdict as an event and the registry model carries the summary
    events = [r for r in RunDir(lora_run).metrics() if r["type"] == "evaluation"]
    assert events and events[0]["status"] == report["summary"]["status"]
    assert model_evaluation["report"]["tuned_beats_base_loss"] is True


@pytest.mark.slow  # two real trainings and their forgetting probes
def test_forgetting_flags_a_destructive_run_and_not_a_gentle_one(tmp_path, assets_dir) -> None:
    heldout = small_support(assets_dir, tmp_path, 4)
    settings = EvaluationConfig(graders=[], forgetting="tunesmith/general", bootstrap_samples=200,
                                max_train_examples=None)
    gentle = train(recipe(assets_dir, tmp_path, "gentle", "training.max_steps=4",
                          "training.learning_rate=0.0005"))
    harsh = train(recipe(assets_dir, tmp_path, "harsh", "training.max_steps=8", "adapter.kind=full",
                         "training.learning_rate=0.01", "training.warmup_ratio=0"))
    gentle_report, _ = evaluate_model(gentle.run_dir, heldout, settings)
    harsh_report, _ = evaluate_model(harsh.run_dir, heldout, settings)
    assert gentle_report["forgetting"]["regressed"] is False
    assert gentle_report["forgetting"]["change"]["value"] < 0.10
    assert harsh_report["forgetting"]["regressed"] is True
    assert harsh_report["forgetting"]["change"]["value"] > 0.10
    assert harsh_report["summary"]["status"] == "red"
    base_loss = gentle_report["forgetting"]["base"]["loss"]
    assert base_loss == pytest.approx(harsh_report["forgetting"]["base"]["loss"])


@pytest.mark.slow  # a real training that evaluates itself with every baseline (lora_run)
def test_eval_and_report_commands(lora_run, tmp_path, assets_dir, capsys) -> None:
    lora_run = lora_run[0]
    heldout = small_support(assets_dir, tmp_path, 3)
    graders = tmp_path / "graders.yaml"
    graders.write_text("- type: string_check\n  name: signed\n  input: '{{sample.output_text}}'\n"
                       "  reference: Wren\n  operation: like\n- type: json_valid\n")
    out = tmp_path / "eval-out"
    code = main(["eval", str(lora_run / "final"), "--data", str(heldout), "--baseline", "base",
                 "--graders", str(graders), "--set", "max_new_tokens=8", "--set", "max_train_examples=5",
                 "--set", "bootstrap_samples=100", "--out", str(out), "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["scores"]) == {"signed", "json_valid"}
    assert printed["systems"] == ["tuned", "base"]
    assert printed["scores"]["json_valid"]["tuned"]["errors"] == 3  # replies are prose, not JSON
    assert (out / "report.json").exists() and (out / "report.html").exists()
    assert main(["report", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "verdict:" in shown and "report.html" in shown
    assert main(["report", str(tmp_path)]) == 2  # no report there: an error that says what to run
    assert "tunesmith eval" in capsys.readouterr().err


def test_a_failed_evaluation_keeps_the_trained_model(random_model_path, tmp_path) -> None:
    rows = colour_chats(16, seed=1)
    train_file = write_jsonl(tmp_path / "train.jsonl", rows)
    result = train(load_recipe(None, [
        f"base_model={random_model_path}", f"data.train={train_file}", f"data.validation={train_file}",
        f"output.dir={tmp_path}", "output.name=run", "training.max_steps=2", "training.batch_size=8",
        "evaluation.enabled=true", f"evaluation.data={tmp_path / 'missing.jsonl'}"]))
    assert result.status == "succeeded" and result.final_dir is not None
    warnings = [r for r in RunDir(result.run_dir).metrics() if r.get("level") == "warning"]
    assert warnings and "evaluation failed" in warnings[0]["message"]
    assert "missing.jsonl" in warnings[0]["message"]
    assert not (result.run_dir / "report.json").exists()


def test_classification_items_graded_by_label_without_a_loss(tmp_path, assets_dir) -> None:
    """Reinforcement-format rows (a prompt and a category) get graded replies and no loss."""
    lines = (assets_dir / "data" / "ticket_triage" / "validation.jsonl").read_text().splitlines()[:4]
    heldout = write_jsonl(tmp_path / "triage.jsonl", [json.loads(line) for line in lines])
    labels = ["shipping", "billing", "account", "product", "returns"]
    settings = EvaluationConfig(max_new_tokens=8, bootstrap_samples=50, max_train_examples=None, graders=[
        {"type": "label", "name": "accuracy", "field": "category", "reference": "{{item.category}}",
         "labels": labels},
        {"type": "json_schema", "name": "format", "schema": {
            "type": "object", "required": ["category"], "properties": {"category": {"enum": labels}}}}])
    report, path = evaluate_model("tunesmith/tiny-chat", heldout, settings, out_dir=tmp_path / "out")
    assert report["loss"] == {}
    assert set(report["scores"]) == {"accuracy", "format"}
    for item in report["examples_detail"]["items"]:
        assert set(item["scores"]) == {"accuracy", "format"}
        assert item["reference"] == ""
    # the untuned tiny model does not answer in JSON: every grade is 0 with the reason recorded
    assert report["scores"]["accuracy"]["tuned"]["errors"] == 4
    assert path == tmp_path / "out" / "report.json"


@pytest.mark.slow  # a real training that evaluates itself with every baseline (lora_run)
def test_forgetting_graders_on_a_chat_reference_set(lora_run, tmp_path, assets_dir) -> None:
    reference = small_support(assets_dir, tmp_path, 3)
    heldout = write_jsonl(tmp_path / "one.jsonl", [json.loads(reference.read_text().splitlines()[0])])
    signed = {"type": "contains", "name": "signed", "reference": "Wren"}
    settings = EvaluationConfig(graders=[], forgetting=str(reference), max_new_tokens=24,
                                bootstrap_samples=50, max_train_examples=None, forgetting_threshold=0.5,
                                forgetting_graders=[signed])
    report, _ = evaluate_model(lora_run[0], heldout, settings, out_dir=tmp_path / "out")
    scores = report["forgetting"]["scores"]["signed"]
    assert set(scores) == {"base", "tuned", "drop", "regressed"}
    assert scores["drop"] == pytest.approx(scores["base"] - scores["tuned"])
    assert scores["regressed"] is (scores["drop"] > 0.5)
    loss_regressed = report["forgetting"]["change"]["value"] > 0.5
    assert report["forgetting"]["regressed"] is (scores["regressed"] or loss_regressed)


@pytest.mark.slow  # a real training that evaluates itself with every baseline (lora_run)
def test_eval_of_a_registered_model_records_the_verdict(lora_run, tmp_path, assets_dir, capsys) -> None:
    from tunesmith.store.runs import register_run

    registry = open_registry()  # this test's own isolated home
    model = register_run(registry, lora_run[0])
    assert model.evaluation["report"]["tuned_beats_base_loss"] is True  # from the run's report.json
    heldout = small_support(assets_dir, tmp_path, 2)
    code = main(["eval", model.name, "--data", str(heldout), "--set", "graders=[]",
                 "--set", "max_train_examples=", "--out", str(tmp_path / "out"), "--check"])
    assert code in (0, 1)
    recorded = registry.model(model.id).evaluation["report"]
    assert recorded["path"] == str(tmp_path / "out" / "report.json")
    # the other settings come from the run's recipe: its baselines and its forgetting probe
    assert recorded["examples"] == 2 and recorded["forgetting"] in ("ok", "regressed")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["systems"] == ["tuned", "base", "fewshot", "retrieval"] and report["scores"] == {}
    assert code == (1 if recorded["status"] == "red" else 0)
    assert "verdict:" in capsys.readouterr().out


def test_every_system_generates_in_one_batch_with_the_replies_of_one_at_a_time(
        lora_run, tmp_path, assets_dir, monkeypatch) -> None:
    """A LoRA run's tuned, base, few-shot and retrieval replies come from one mixed-adapter
    batch (the adapter on for the tuned rows only), and are the replies each system gives
    generating alone."""
    from tunesmith.evaluate.models import Models

    lora_run = lora_run[0]
    heldout = small_support(assets_dir, tmp_path, 4)
    settings = EvaluationConfig(baselines=["base", "fewshot", "retrieval"], max_new_tokens=10,
                                bootstrap_samples=50, max_train_examples=20, few_shot_k=2, retrieval_k=2)

    def replies(out: str) -> tuple[dict, list[str]]:
        said: list[str] = []
        report, _ = evaluate_model(lora_run, heldout, settings, out_dir=tmp_path / out, progress=said.append)
        items = report["examples_detail"]["items"]
        return {s: [i["reply"][s] for i in items] for s in report["systems"]}, said

    together, said = replies("together")
    assert any("together" in line for line in said)
    assert not any("generating" in line and "together" not in line for line in said)
    monkeypatch.setattr(Models, "mixed_adapter", lambda self: None)
    alone, said_alone = replies("alone")
    assert sum("generating" in line for line in said_alone) == 4
    assert together == alone
    assert together["tuned"] != together["base"]  # the adapter was on for the tuned rows only


def test_a_baseline_shown_fewer_examples_to_fit_the_length_says_so(lora_run, tmp_path, assets_dir,
                                                                   monkeypatch) -> None:
    """Few-shot and retrieval prompts that lose examples to fit data.max_length are weaker
    baselines; the report's notes count them, and say nothing when every prompt holds all."""
    import tunesmith.evaluate.runner as runner
    from tunesmith.evaluate.models import Target, target_of

    lora_run = lora_run[0]
    heldout = small_support(assets_dir, tmp_path, 3)
    settings = EvaluationConfig(baselines=["base", "fewshot", "retrieval"], max_new_tokens=4,
                                bootstrap_samples=20, max_train_examples=5, few_shot_k=3, retrieval_k=3)

    def evaluated(max_length: int, out: str) -> dict:
        def target(model, train_data=None, base_model=None) -> Target:
            found = target_of(model, train_data, base_model)
            found.max_length = max_length
            return found

        monkeypatch.setattr(runner, "target_of", target)
        return evaluate_model(lora_run, heldout, settings, out_dir=tmp_path / out)[0]

    full = evaluated(2048, "full")
    assert not any("fewer than" in note for note in full["notes"])
    cut = evaluated(160, "cut")
    notes = [note for note in cut["notes"] if "fewer than 3 examples" in note]
    assert [note.split(":")[0] for note in notes] == ["fewshot", "retrieval"]
    assert all("of 3 prompts" in note and "data.max_length" in note for note in notes)
