"""Every CLI command exercised the way a user types it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import BUNDLED_MODEL, colour_chats, write_jsonl
from tunesmith.cli import main


def test_help_is_fast_and_lists_commands() -> None:
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "tunesmith", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("data", "train", "quickstart", "chat"):
        assert command in out
    # No timing assertion (timings are noisy); heavy libraries must simply not be imported.
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, tunesmith.cli as c; c.build_parser(); "
            "print('torch' in sys.modules, 'transformers' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert probe.split() == ["False", "False"], (
        f"heavy imports at start-up ({time.perf_counter() - started:.1f}s)"
    )


def test_train_then_resume_then_chat(random_model_path: Path, tmp_path: Path, capsys) -> None:
    train_file = write_jsonl(tmp_path / "train.jsonl", colour_chats(24))
    args = [
        "train",
        "--set",
        f"base_model={random_model_path}",
        "--set",
        f"data.train={train_file}",
        "--set",
        f"output.dir={tmp_path}",
        "--set",
        "output.name=cli",
        "--set",
        "training.epochs=1",
        "--set",
        "training.batch_size=4",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "succeeded" in out and "auto: " in out and str(tmp_path / "cli") in out
    assert (tmp_path / "cli" / "final" / "adapter_model.safetensors").exists()
    from tunesmith.store import open_registry

    registry = open_registry()  # the test's own TUNESMITH_HOME
    (job,) = registry.jobs()
    assert job.status == "succeeded" and job.run_dir == str((tmp_path / "cli").resolve())
    saved = sorted(p.name for p in (tmp_path / "cli" / "checkpoints").iterdir())
    assert [Path(c.path).name for c in registry.checkpoints(job.id)][-len(saved):] == saved
    (model,) = registry.models()
    assert model.job_id == job.id and model.name in out
    assert main(args) == 2  # a finished named run is not silently overwritten
    assert "already has this name" in capsys.readouterr().err
    assert registry.job(job.id).status == "succeeded"  # the refused second run left the first alone
    assert [j.status for j in registry.jobs()] == ["failed", "succeeded"]
    assert (
        main(["chat", str(tmp_path / "cli"), "-m", "What colour is the red box?", "--max-tokens", "4"]) == 0
    )
    out = capsys.readouterr().out
    assert "you>" in out and "model>" in out


def test_bad_recipe_value_is_reported_with_the_key(tmp_path: Path, capsys) -> None:
    assert main(["train", "--set", "training.epochz=1"]) == 2
    err = capsys.readouterr().err
    assert "training.epochz" in err and "did you mean 'epochs'" in err
    assert main(["train"]) == 2
    assert "give a recipe file" in capsys.readouterr().err


@pytest.mark.slow  # the whole demo: training, evaluation with baselines, report
@pytest.mark.skipif(not (BUNDLED_MODEL / "config.json").exists(), reason="bundled model not built")
def test_quickstart_tiny_runs_end_to_end(tmp_path: Path, capsys) -> None:
    # A short run of the same loop (the full one takes minutes on a shared machine).
    assert main(["quickstart", "--tiny", "--out", str(tmp_path), "--set", "training.max_steps=6",
                 "--set", "evaluation.max_examples=8", "--set", "evaluation.max_train_examples=8"]) == 0
    out = capsys.readouterr().out
    assert "tunesmith chat" in out and "verdict:" in out and "report.html" in out
    assert "get the base model" not in out  # --tiny never pulls anything
    assert "\ufffd" not in out
    # The data check counts its warnings and lists each of them.
    counted = re.search(r"(\d+) warnings?\b", out)
    assert counted is not None
    assert out.count("  warning ") == int(counted.group(1))
    run_dirs = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(run_dirs) == 1 and (run_dirs[0] / "final" / "adapter_config.json").exists()
    # "where everything is" on the 80 columns of a captured console: each command whole on its line
    assert any(line.endswith(f"tunesmith chat {run_dirs[0]}") for line in out.splitlines())
    # The losses shown for the base and the tuned model are the report's (one number each).
    report = json.loads((run_dirs[0] / "report.json").read_text())
    for system in ("tuned", "base"):
        assert f"{report['loss'][system]['loss']:.3f}" in out
    from tunesmith.train.run import RunDir

    evals = [r for r in RunDir(run_dirs[0]).metrics() if r["type"] == "eval"]
    assert evals[0]["baseline"] and min(r["loss"] for r in evals[1:]) < evals[0]["loss"]
