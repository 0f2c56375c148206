"""The run folder's safety rules without a model: which settings a resume may change, checkpoints
replaced without a moment where none is complete, metrics of killed attempts cut, a deleted
run folder never re-created, and signals turned into a stop at a step boundary."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from tunesmith.errors import RecipeError, TunesmithError
from tunesmith.recipe import build_recipe, save_recipe
from tunesmith.train import checkpoint as ckpt
from tunesmith.train.run import RunDir, RunFolderGone, resumable
from tunesmith.train.stopping import StopOnSignal, unwinding


def run_folder(tmp_path: Path) -> RunDir:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    recipe = build_recipe({"training": {"epochs": 2, "max_steps": 10, "learning_rate": 0.01}})
    save_recipe(recipe, run.recipe_file)
    return run


def test_resume_takes_the_safe_settings(tmp_path: Path) -> None:
    run = run_folder(tmp_path)
    recipe = run.resume_recipe(["training.max_steps=4", "training.epochs=5", "training.eval_every=2",
                                "training.save_every=1", "training.report_to=[tensorboard]",
                                "evaluation.enabled=true"])
    training = recipe.training
    assert (training.max_steps, training.epochs, training.eval_every, training.save_every) == (4, 5, 2, 1)
    assert training.report_to == ["tensorboard"] and recipe.evaluation.enabled
    assert training.learning_rate == 0.01  # the rest is the run's own
    assert run.resume_recipe([]).training.max_steps == 10


def test_resume_refuses_the_rest_naming_every_key(tmp_path: Path) -> None:
    run = run_folder(tmp_path)
    with pytest.raises(RecipeError) as caught:
        run.resume_recipe(["training.learning_rate=0.1", "training.max_steps=4", "adapter.rank=4",
                           "evaluation.data=other.jsonl"])
    message = str(caught.value)
    assert "training.learning_rate, adapter.rank, evaluation.data" in message
    assert "training.max_steps" in message  # named among what may change
    assert not resumable("data.train") and not resumable("training.seed") and resumable("training.max_steps")
    with pytest.raises(RecipeError, match=r"training\.max_steps"):
        run.resume_recipe(["training.max_steps=-1"])  # a safe key still gets its value checked


def save(folder: Path, step: int, value: float) -> ckpt.Checkpoint:
    return ckpt.save_checkpoint(folder, step, {"w": torch.full((2,), value)}, {}, {"progress": {"v": value}})


def test_saving_a_step_again_replaces_it_with_no_gap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "checkpoints"
    tmp_path.joinpath("checkpoints").mkdir()
    save(folder, 4, 1.0)
    renames: list[tuple[str, bool]] = []
    real_replace = os.replace

    def watching(src, dst):
        # At every rename, step 4 must have a complete copy somewhere.
        renames.append((Path(dst).name, [c.step for c in ckpt.complete_checkpoints(folder)] == [4]))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", watching)
    save(folder, 4, 2.0)
    monkeypatch.undo()
    assert renames and all(ok for _, ok in renames)
    (only,) = ckpt.complete_checkpoints(folder)
    assert only.path.name == "step-00000004" and only.state["progress"]["v"] == 2.0
    assert sorted(p.name for p in folder.iterdir()) == ["step-00000004"]


def test_a_crash_between_the_renames_keeps_the_old_copy(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    save(folder, 2, 0.5)
    save(folder, 4, 1.0)
    real_replace = os.replace

    def dies_on_the_second(src, dst):
        if Path(src).name.startswith(".tmp-"):
            raise KeyboardInterrupt  # the process stops after moving the old copy aside
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", dies_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        save(folder, 4, 2.0)
    monkeypatch.undo()
    assert not (folder / "step-00000004").exists()
    latest = ckpt.latest_checkpoint(folder)
    assert latest.step == 4 and latest.state["progress"]["v"] == 1.0  # the moved-aside copy counts
    ckpt.prune(folder, keep=5)
    assert ckpt.latest_checkpoint(folder).path == latest.path  # and prune keeps it
    save(folder, 4, 3.0)
    ckpt.prune(folder, keep=5)
    assert sorted(p.name for p in folder.iterdir()) == ["step-00000002", "step-00000004"]
    assert ckpt.latest_checkpoint(folder).state["progress"]["v"] == 3.0


def test_a_checkpoint_gets_its_name_only_when_complete(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    seen = []
    real_replace = os.replace

    def watching(src, dst):
        if Path(dst).name.startswith(ckpt.PREFIX):
            seen.append(ckpt.is_complete(Path(src)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", watching)
    save(folder, 1, 1.0)
    assert seen == [True]


def test_metrics_of_killed_attempts_are_cut(tmp_path: Path) -> None:
    run = run_folder(tmp_path)
    rows = [{"type": "start", "step": 0}, {"type": "eval", "step": 0, "loss": 3.0},
            *({"type": "train", "step": s, "loss": 1.0} for s in range(1, 6))]
    run.metrics_file.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"type": "tra')
    assert [r["step"] for r in run.metrics() if r["type"] == "train"] == [1, 2, 3, 4, 5]  # a cut last line
    run.truncate_metrics(3)
    assert [(r["type"], r["step"]) for r in run.metrics()][-2:] == [("train", 2), ("train", 3)]
    assert run.metrics_file.read_text().endswith("}\n")
    run.truncate_metrics(0)  # killed before its first checkpoint: it starts again from nothing
    assert run.metrics() == []
    run.metrics_file.write_text('{"type": "train"}\nnot json\n{"type": "train"}\n')
    with pytest.raises(TunesmithError, match="line 2 is not JSON"):
        run.metrics()


def test_a_deleted_run_folder_is_not_re_created(tmp_path: Path) -> None:
    import shutil

    run = run_folder(tmp_path)
    run.update_info(status="running")
    shutil.rmtree(run.path)
    with pytest.raises(RunFolderGone, match="deleted while training"):
        run.update_info(status="interrupted")
    with pytest.raises(FileNotFoundError):
        ckpt.temp_folder(run.checkpoints, 1, "x")
    assert not run.path.exists()


def test_signals_ask_for_a_stop_then_interrupt() -> None:
    told = []
    with StopOnSignal(told.append) as stop:
        assert not stop()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop() and told == ["SIGTERM"] and stop.signal_number == signal.SIGTERM
        with unwinding():
            os.kill(os.getpid(), signal.SIGINT)  # held back while records are written
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler runs at the next bytecode boundary
                pass
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
