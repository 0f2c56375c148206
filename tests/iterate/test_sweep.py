"""`tunesmith sweep`: a 4-trial grid on the bundled tiny model, pruned on validation loss through
the loop's reporter and should_stop hooks; every trial a registered run; a leaderboard of
held-out losses with intervals that marks which differences from the best are real; --alias."""

from __future__ import annotations

import json

import pytest

from tunesmith.cli import main
from tunesmith.errors import RecipeError
from tunesmith.iterate.sweep import check_searches, parse_search
from tunesmith.store import open_registry

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.usefixtures("one_torch_thread")]


def test_search_specs_are_checked_before_any_training(assets_dir) -> None:
    assert parse_search("training.learning_rate=1e-4,3e-4").values == [1e-4, 3e-4]
    assert parse_search("adapter.kind=lora,dora").values == ["lora", "dora"]
    with pytest.raises(RecipeError, match="KEY=V1,V2"):
        parse_search("training.learning_rate")
    recipe = assets_dir / "recipes" / "quickstart.yaml"
    with pytest.raises(RecipeError, match="learnig_rate"):
        check_searches(recipe, [], [parse_search("training.learnig_rate=1e-4")])
    with pytest.raises(RecipeError):
        check_searches(recipe, [], [parse_search("adapter.rank=-3")])
    with pytest.raises(RecipeError, match="names its trials"):
        check_searches(recipe, [], [parse_search("output.dir=/tmp/x")])


@pytest.mark.slow  # four real trainings and three evaluations (about 30 s of CPU, 85 s on a shared machine)
def test_four_trial_sweep_prunes_ranks_and_aliases_the_best(tmp_path, assets_dir, capsys) -> None:
    code = main(["sweep", str(assets_dir / "recipes" / "quickstart.yaml"),
                 "--search", "training.learning_rate=0.003,0.00001", "--search", "adapter.rank=4,8",
                 *(a for s in (f"output.dir={tmp_path}", "training.max_steps=8", "training.eval_every=2",
                               "training.batch_size=4", "data.max_length=256", "evaluation.max_examples=8",
                               "evaluation.max_new_tokens=8", "evaluation.bootstrap_samples=300")
                   for a in ("--set", s)),
                 "--name", "lr-rank", "--alias", "tiny@best", "--json"])
    assert code == 0
    board = json.loads(capsys.readouterr().out)
    trials = board["trials"]
    assert len(trials) == 4
    states = [t["state"] for t in trials]
    assert "pruned" in states and states.count("complete") >= 2
    registry = open_registry()
    for trial in trials:  # every trial is an ordinary registered run
        job = registry.job(trial["job_id"])
        assert job.run_dir == trial["run_dir"]
        if trial["state"] == "pruned":
            assert job.status == "cancelled" and trial["model_id"] is None
            notes = [e.message or "" for e in registry.events(job.id, ["event"])]
            assert any(n.startswith("pruned by sweep lr-rank") for n in notes)
            assert trial["pruned_at_step"] < 8
        else:
            assert job.status == "succeeded" and registry.model(trial["model_id"]).job_id == job.id
    ranked = [t for t in trials if t.get("rank")]
    losses = [t["heldout"]["loss"] for t in ranked]
    assert losses == sorted(losses) and [t["rank"] for t in ranked] == list(range(1, len(ranked) + 1))
    best = ranked[0]
    assert best["versus_best"] is None and board["best"] == best["trial"]
    for row in ranked[1:]:
        d = row["versus_best"]["difference"]
        assert row["versus_best"]["real"] == (d["high"] < 0 or d["low"] > 0)
        assert row["heldout"]["low"] <= row["heldout"]["loss"] <= row["heldout"]["high"]
    # a learning rate of 1e-5 for 8 steps barely moves the model: really worse than the best
    slow = [t for t in ranked if t["params"]["training.learning_rate"] == 0.00001]
    assert slow and all(t["versus_best"]["real"] for t in slow)
    assert registry.model("tiny@best").id == best["model_id"]
    assert (tmp_path / "lr-rank-leaderboard" / "leaderboard.json").exists()
