"""Data iteration on the bundled tiny model: a run trained on data with a few wrong labels
exports its worst-fit training examples (the wrong labels among them) and its worst held-out
items; the user's fixes go back into a copy of the training file; `retrain` on that copy shows
before/after on the same held-out set."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import colour_chats, write_jsonl
from tunesmith.cli import main
from tunesmith.errors import DataError, TunesmithError
from tunesmith.iterate.fixes import REVIEW, apply_fixes, export_fixes
from tunesmith.recipe import load_recipe
from tunesmith.store import open_registry
from tunesmith.store.tracking import train_tracked

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.usefixtures("one_torch_thread")]
WRONG = {3, 9, 15, 21, 27, 33}  # 1-based lines whose reply names another colour
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]  # colour_chats' own


def _data(folder: Path) -> tuple[Path, Path]:
    rows = colour_chats(40, seed=1)
    for line in WRONG:
        reply = rows[line - 1]["messages"][1]
        colour = re.search(r"is (\w+)\.", reply["content"]).group(1)
        wrong = COLOURS[(COLOURS.index(colour) + 1) % len(COLOURS)]
        reply["content"] = reply["content"].replace(colour, wrong)
    return (write_jsonl(folder / "train.jsonl", rows),
            write_jsonl(folder / "val.jsonl", colour_chats(12, seed=2)))


def _fix(row: dict) -> dict:
    """What the user does: the reply names the colour the question asks about."""
    colour = re.search(r"the (\w+) box", row["messages"][0]["content"]).group(1)
    row["messages"][1]["content"] = f"The box is {colour}. Thank you for asking!"
    return row


@pytest.mark.slow  # two trainings and an evaluation (about 50 s on a shared machine)
def test_export_fix_apply_and_retrain_shows_before_after_on_the_same_heldout(tmp_path, capsys) -> None:
    train, val = _data(tmp_path)
    recipe = load_recipe(None, [
        "base_model=tunesmith/tiny-chat", f"data.train={train}", f"data.validation={val}",
        f"output.dir={tmp_path / 'runs'}", "output.name=colours", "training.epochs=6",
        "training.batch_size=4", "training.learning_rate=0.003", "training.eval_every=1000",
        "training.save_every=1000", "evaluation.enabled=true", "evaluation.max_new_tokens=8",
        "evaluation.bootstrap_samples=200", "evaluation.max_train_examples=40",
        "evaluation.worst_examples=6"])
    tracked = train_tracked(open_registry(), recipe)
    assert tracked.model is not None

    fixes = tmp_path / "fixes.jsonl"
    assert main(["fixes", "export", str(tracked.result.run_dir), "--out", str(fixes)]) == 0
    rows = [json.loads(line) for line in fixes.read_text().splitlines()]
    training = [r for r in rows if r[REVIEW]["kind"] == "training"]
    heldout = [r for r in rows if r[REVIEW]["kind"] == "heldout"]
    assert len(training) == 6 and heldout
    flagged = {int(r[REVIEW]["source"].rsplit(":", 1)[1]) for r in training}
    assert len(flagged & WRONG) >= 4, flagged  # the wrong labels are what the model fits worst
    assert all("messages" in r for r in rows)  # the original rows, editable
    assert all(r[REVIEW]["reply"] is not None for r in heldout)

    # The user fixes the flagged rows (and drops one) and applies the file.
    for row in training:
        _fix(row)
    training[-1][REVIEW]["drop"] = True
    fixes.write_text("".join(json.dumps(r) + "\n" for r in rows))
    fixed = tmp_path / "train.fixed.jsonl"
    assert main(["fixes", "apply", str(fixes), "--data", str(train), "--out", str(fixed)]) == 0
    before, after = train.read_text().splitlines(), fixed.read_text().splitlines()
    assert len(after) == len(before) - 1
    wrong_left = [n for n, line in enumerate(after, 1) if _fix(json.loads(line)) != json.loads(line)]
    assert len(wrong_left) == len(WRONG - flagged)  # only the wrong rows nobody flagged remain

    capsys.readouterr()
    assert main(["retrain", tracked.model.id, "--data", str(fixed), "--set", "evaluation.enabled=false",
                 "--json"]) == 0
    printed = capsys.readouterr().out  # the progress lines, then the JSON
    outcome = json.loads(printed[printed.index("\n{\n") + 1:])
    comparisons = outcome["verdict"]["comparisons"]
    validation = open_registry().add_dataset(val).id
    assert [c["dataset"] for c in comparisons] == [f"previous {validation}"]  # the same held-out set
    assert all(c["parent_loss"] > 0 and c["child_loss"] > 0 for c in comparisons)


def test_a_fix_for_another_file_is_refused_with_its_line(tmp_path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", colour_chats(3))
    other = tmp_path / "other.jsonl"
    fixes = write_jsonl(tmp_path / "fixes.jsonl", [
        {**colour_chats(1)[0], REVIEW: {"kind": "training", "source": f"{other}:1"}}])
    with pytest.raises(DataError) as caught:
        apply_fixes(fixes, train, tmp_path / "out.jsonl")
    assert caught.value.where == f"{fixes}:1" and "other.jsonl:1" in caught.value.message
    with pytest.raises(DataError, match="review"):
        apply_fixes(write_jsonl(tmp_path / "bare.jsonl", colour_chats(1)), train, tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()
    with pytest.raises(TunesmithError, match=r"no report\.json"):
        export_fixes(tmp_path, tmp_path / "x.jsonl")
