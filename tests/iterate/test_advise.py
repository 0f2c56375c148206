"""`tunesmith advise` on the bundled tiny model: a task where retrieval wins (facts only the
retrieved examples hold) and one where it does not (a house voice every example shows), each
with its recommendation, the cost probe against the loop's own auto values, and the advice
recorded in the registry with the dataset version."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.conftest import write_jsonl
from tests.iterate.tasks import pets, support
from tunesmith.cli import main
from tunesmith.iterate.advise import advice_recipe, advise, recommend
from tunesmith.store import open_registry
from tunesmith.store.advice import advice_list
from tunesmith.train.auto import auto_batch_size, auto_epochs

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.usefixtures("one_torch_thread")]
FAST = ["evaluation.max_new_tokens=16", "evaluation.bootstrap_samples=300", "training.device=cpu"]


def _write(folder: Path, name: str, task: tuple[list[dict], list[dict]]) -> tuple[Path, Path]:
    train, heldout = task
    return (write_jsonl(folder / f"{name}.jsonl", train),
            write_jsonl(folder / f"{name}-heldout.jsonl", heldout))


def _comparison(advice: dict, system: str, versus: str, metric: str) -> dict:
    return next(c for c in advice["comparisons"]
                if (c["system"], c["versus"], c["metric"]) == (system, versus, metric))


def test_retrieval_wins_on_facts_only_the_retrieved_examples_hold(tmp_path, capsys) -> None:
    train, heldout = _write(tmp_path, "pets", pets())
    code = main(["advise", str(train), "--model", "tunesmith/tiny-chat", "--heldout", str(heldout),
                 "--probe-steps", "2", "--json", *(a for s in FAST for a in ("--set", s))])
    assert code == 0
    advice = json.loads(capsys.readouterr().out)
    assert advice["recommendation"] == "retrieval", advice["reason"]
    real = _comparison(advice, "retrieval", "few_shot", "loss")
    assert real["verdict"] == "better" and real["difference"]["low"] > 0
    assert any(line.startswith("retrieval vs few_shot on loss") for line in advice["evidence"])
    assert set(advice["systems"]) == {"zero_shot", "few_shot", "retrieval"}
    assert advice["examples"] == 16
    # recorded with the dataset version of the training file (and of the held-out file)
    registry = open_registry()
    rows = advice_list(registry)
    assert [r.id for r in rows] == [advice["id"]]
    assert rows[0].dataset_id == registry.add_dataset(train).id == advice["dataset_id"]
    assert rows[0].heldout_dataset_id == registry.add_dataset(heldout).id
    assert rows[0].recommendation == "retrieval"
    assert rows[0].report["comparisons"] == advice["comparisons"]


def test_a_house_voice_is_behaviour_retrieval_does_not_win_fine_tune(tmp_path, assets_dir) -> None:
    train, heldout = _write(tmp_path, "support", support(assets_dir))
    recipe = advice_recipe(str(train), "tunesmith/tiny-chat", [*FAST, "data.max_length=512"])
    advice = advise(recipe, heldout=str(heldout), probe_steps=2)
    assert advice["recommendation"] == "fine_tune", advice["reason"]
    versus = [c for c in advice["comparisons"] if (c["system"], c["versus"]) == ("retrieval", "few_shot")]
    assert versus and all(c["verdict"] != "better" for c in versus)
    assert {"rouge_l", "token_f1"} <= set(advice["systems"]["few_shot"]["scores"])
    best = max(advice["systems"].values(), key=lambda s: s["scores"]["rouge_l"]["value"])
    assert best["scores"]["rouge_l"]["high"] < advice["settings"]["ceiling"]

    # The cost: the loop's own auto values for 60 examples, timed by a two-step probe.
    cost = advice["cost"]
    assert cost["train_examples"] == 60 and cost["probe_steps"] == 2
    assert cost["epochs"] == auto_epochs(60)
    assert cost["total_steps"] == math.ceil(60 / auto_batch_size(60)) * auto_epochs(60)
    assert cost["tokens"] == cost["tokens_per_epoch"] * cost["epochs"] > 0
    assert cost["estimated_seconds"] == pytest.approx(cost["seconds_per_step"] * cost["total_steps"])
    assert cost["memory"]["peak_bytes"] > 0


def _measured(scores: dict[str, tuple[float, float, float]]) -> dict:
    return {"systems": {name: {"loss": None, "scores": {"exact": {"value": v, "low": lo, "high": hi}}}
                        for name, (v, lo, hi) in scores.items()}, "comparisons": []}


def test_no_headroom_and_undecided_claim_only_what_the_intervals_support() -> None:
    at_top = _measured({"zero_shot": (0.5, 0.4, 0.6), "few_shot": (0.98, 0.96, 1.0), "retrieval": (1, 1, 1)})
    assert recommend(at_top)["recommendation"] == "nothing_to_gain"
    assert "few_shot" in recommend(at_top)["evidence"][0]
    # near the ceiling but the interval reaches below it: not "nothing to gain"
    near = _measured({"zero_shot": (0.5, 0.4, 0.6), "few_shot": (0.97, 0.9, 1.0), "retrieval": (0.9, 0.8, 1)})
    assert recommend(near)["recommendation"] == "undecided"
    assert recommend({"systems": {}, "comparisons": []})["recommendation"] == "undecided"
    # retrieval ahead on one metric and behind on another: mixed, so not "retrieval"
    middling = (0.5, 0.4, 0.6)
    mixed = _measured({"zero_shot": middling, "few_shot": middling, "retrieval": middling})
    mixed["comparisons"] = [
        {"system": "retrieval", "versus": "few_shot", "metric": m, "items": 10, "wins": 5, "ties": 0,
         "losses": 5, "difference": {"value": d, "low": d - 0.01, "high": d + 0.01}, "verdict": v}
        for m, d, v in (("loss", 0.2, "better"), ("exact", -0.2, "worse"))]
    result = recommend(mixed)
    assert result["recommendation"] == "undecided" and "mixed" in result["reason"]
