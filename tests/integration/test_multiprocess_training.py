"""Multi-process training on CPU (gloo) with real processes on a tiny random Llama:

- 2 processes under plain torchrun give the single process's loss curve for the same global
  batch (relative tolerance 1e-5; measured differences are about 1e-7, float sums in another
  order), and only rank 0 writes the run folder and the registry;
- a checkpoint written by 2 processes (DCP) resumes in 1 process and continues that curve, and
  a single-process checkpoint resumes in 2 processes (through `launch`, i.e. `--nproc 2`);
- a rank that dies mid-run ends the job with an error naming that rank, instead of hanging.

Dropout is 0: dropout masks are drawn per rank, so with dropout the runs would differ by design.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import tunesmith
from tests.conftest import colour_chats, write_jsonl
from tunesmith.recipe import load_recipe
from tunesmith.train import checkpoint as ckpt
from tunesmith.train.launch import launch
from tunesmith.train.loop import train
from tunesmith.train.run import RunDir

pytestmark = pytest.mark.slow  # several real training processes per test

RELATIVE = 1e-5
CHILD_TIMEOUT_S = 300  # a bound on a hang, not a timing assertion: a healthy run takes seconds


def child_env(home: Path, extra_path: Path | None = None) -> dict[str, str]:
    """The training processes import this checkout's tunesmith and use an isolated home."""
    paths = [str(Path(tunesmith.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
    if extra_path is not None:
        paths.insert(0, str(extra_path))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p),
           "TUNESMITH_HOME": str(home), "OMP_NUM_THREADS": "1"}
    env.pop("TUNESMITH_DATABASE_URL", None)
    return env


def write_recipe(folder: Path, model: Path) -> Path:
    # 41 examples in steps of 8: the last step holds one example, so rank 1 runs a filler pass.
    write_jsonl(folder / "train.jsonl", colour_chats(41, seed=1))
    write_jsonl(folder / "validation.jsonl", colour_chats(11, seed=2))
    recipe = folder / "recipe.yaml"
    recipe.write_text(textwrap.dedent(f"""
        base_model: {model}
        data: {{train: train.jsonl, validation: validation.jsonl}}
        adapter: {{kind: lora, dropout: 0}}
        training: {{batch_size: 8, epochs: 1, learning_rate: 0.01, warmup_ratio: 0, eval_every: 3,
                   save_every: 2, keep_checkpoints: 10}}
        output: {{dir: {folder / "runs"}}}
    """))
    return recipe


def interrupted_copy(run_dir: Path, dest: Path, step: int) -> Path:
    """A copy of a finished run as if it had stopped after the checkpoint of `step`."""
    shutil.copytree(run_dir, dest)
    for checkpoint in ckpt.complete_checkpoints(dest / "checkpoints"):
        if checkpoint.step > step:
            shutil.rmtree(checkpoint.path)
    shutil.rmtree(dest / "final")
    return dest


def curve(run_dir: Path, kind: str = "train") -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in RunDir(run_dir).metrics() if r["type"] == kind]


def assert_same_curve(got: list[tuple[int, float]], expected: list[tuple[int, float]]) -> None:
    assert [s for s, _ in got] == [s for s, _ in expected]
    assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=RELATIVE)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, random_model_path) -> tuple[Path, Path, Path]:
    """One run with 2 processes under plain torchrun; (recipe, run folder, tunesmith home)."""
    folder = tmp_path_factory.mktemp("dist")
    home = tmp_path_factory.mktemp("dist-home")
    recipe = write_recipe(folder, random_model_path)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "tunesmith", "train", str(recipe), "--set", "output.name=two"],
        env=child_env(home), capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return recipe, folder / "runs" / "two", home


@pytest.fixture(scope="module")
def one_process_run(two_process_run) -> Path:
    recipe = two_process_run[0]
    return train(load_recipe(recipe, ["output.name=one"])).run_dir


def test_two_processes_follow_the_single_process_curve(two_process_run, one_process_run) -> None:
    _, two, _ = two_process_run
    assert_same_curve(curve(two), curve(one_process_run))
    assert_same_curve(curve(two, "eval"), curve(one_process_run, "eval"))
    train_records = [r for r in RunDir(two).metrics() if r["type"] == "train"]
    single = [r for r in RunDir(one_process_run).metrics() if r["type"] == "train"]
    # Metrics are reduced over ranks: the tokens of each global step, not one rank's half.
    assert [r["trained_tokens"] for r in train_records] == [r["trained_tokens"] for r in single]
    assert [r["real_tokens"] for r in train_records] == [r["real_tokens"] for r in single]
    # Adam hides a gradient off by a constant factor from the loss curve; the norm shows it.
    assert [r["grad_norm"] for r in train_records] == pytest.approx([r["grad_norm"] for r in single],
                                                                    rel=RELATIVE)
    got = load_file(two / "final" / "adapter_model.safetensors")
    expected = load_file(one_process_run / "final" / "adapter_model.safetensors")
    assert got.keys() == expected.keys()
    for key in expected:
        # Adam divides by the gradient's own scale, so float-order noise of 1e-7 in the loss moves
        # weights of size ~0.2 by ~1e-5 over 6 steps at lr 0.01; a wrong normalisation moves them ~1e-2.
        assert torch.allclose(got[key], expected[key], atol=1e-4), key


def test_only_rank_zero_writes_the_run_and_the_registry(two_process_run, monkeypatch) -> None:
    _, two, home = two_process_run
    lines = (two / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in lines if json.loads(line)["type"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]  # one writer: no step twice
    assert RunDir(two).info()["status"] == "succeeded"
    checkpoint = ckpt.latest_checkpoint(two / "checkpoints")
    assert checkpoint.step == 6 and checkpoint.state["world_size"] == 2
    assert {"rng-0.pt", "rng-1.pt", "dcp"} <= {p.name for p in checkpoint.path.iterdir()}
    from tunesmith.store import open_registry

    monkeypatch.setenv("TUNESMITH_HOME", str(home))
    jobs = open_registry().jobs()
    assert [job.status for job in jobs] == ["succeeded"]
    assert Path(jobs[0].run_dir) == two.resolve()


def test_two_process_checkpoint_resumes_in_one_process(two_process_run, one_process_run, tmp_path) -> None:
    _, two, _ = two_process_run
    resumed = interrupted_copy(two, tmp_path / "resumed", step=3)
    assert ckpt.latest_checkpoint(resumed / "checkpoints").state["world_size"] == 2

    result = train(resume_dir=resumed)
    assert result.status == "succeeded" and result.steps == 6
    assert RunDir(resumed).info()["resumed_from"] == 3
    assert_same_curve(curve(resumed), curve(one_process_run))
    assert_same_curve(curve(resumed, "eval"), curve(one_process_run, "eval"))


DIE_ON_RANK_1 = textwrap.dedent("""
    # Test-only: rank 1 dies abruptly in its third optimizer step.
    import os
    if os.environ.get("RANK") == "1":
        import tunesmith.train.loop as loop
        real, calls = loop._train_step, [0]
        def dying(*args, **kwargs):
            calls[0] += 1
            if calls[0] == 3:
                os._exit(3)
            return real(*args, **kwargs)
        loop._train_step = dying
""")


def test_resume_in_two_processes_then_a_dead_rank_ends_the_job(one_process_run, tmp_path) -> None:
    """One multi-process run shows two things: `launch` resumes a single-process checkpoint
    (step 2) with 2 processes on the single-process curve, and when rank 1 then dies (its third
    step, global step 5) the job ends with an error naming rank 1 instead of hanging."""
    run_dir = interrupted_copy(one_process_run, tmp_path / "dies", step=2)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(DIE_ON_RANK_1)
    home = tmp_path / "home"
    child = launch(run_dir, 2, env=child_env(home, hook), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                   text=True)
    try:
        out, err = child.communicate(timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        pytest.fail("the job hung after a rank died")
    assert child.returncode == 2, out[-2000:] + err[-2000:]
    message = " ".join(err.split())
    assert "training process rank 1 failed (exit code 3)" in message, err[-2000:]

    run = RunDir(run_dir)
    assert run.info()["status"] == "interrupted" and run.info()["resumed_from"] == 2
    assert_same_curve(curve(run_dir), curve(one_process_run)[:4])  # steps 1-2 kept, 3-4 by 2 ranks
    latest = ckpt.latest_checkpoint(run.checkpoints)
    assert latest.step == 4 and latest.state["world_size"] == 2  # what was saved survives, resumable
    from tunesmith.store import open_registry

    os.environ["TUNESMITH_HOME"] = str(home)  # restored by the autouse fixture's monkeypatch
    assert [job.status for job in open_registry().jobs()] == ["failed"]


@pytest.mark.slow
def test_full_fine_tuning_on_two_cpu_processes_follows_one(two_process_run, tmp_path) -> None:
    """Full fine-tuning on CPU runs under DDP (FSDP2 is for GPUs): the same curve as one process."""
    recipe = two_process_run[0]
    overrides = ["--set", "adapter.kind=full", "--set", "training.learning_rate=0.003"]
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
         "tunesmith", "train", str(recipe), "--set", "output.name=full-two", *overrides],
        env=child_env(tmp_path / "home"), capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    one = train(load_recipe(recipe, ["output.name=full-one", "adapter.kind=full",
                                     "training.learning_rate=0.003"])).run_dir
    two = recipe.parent / "runs" / "full-two"
    assert_same_curve(curve(two), curve(one))
    assert (two / "final" / "model.safetensors").exists()
