"""The pieces of multi-process training that need no process group: sharding a step across
ranks, naming the failed rank, the launch command, nested checkpoint markers, CLI guards."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch

from tunesmith.data.pack import pack_indices, plan_epoch
from tunesmith.errors import RecipeError
from tunesmith.train import checkpoint as ckpt
from tunesmith.train import distributed as dist
from tunesmith.train import launch


def ranks(world: int) -> list[dist.Distributed]:
    return [dist.Distributed(rank=r, world_size=world) for r in range(world)]


@pytest.mark.parametrize("world", [2, 3, 4])
def test_every_example_of_a_step_is_trained_once_across_ranks(world) -> None:
    lengths = [5 + (i * 7) % 23 for i in range(29)]
    budget = 40
    for step in plan_epoch(lengths, batch_size=6, budget=budget, seed=3, epoch=0):
        expected = sorted(i for micro in step for i in micro)
        shares = [dist.shard_step(ctx, step, lengths, budget) for ctx in ranks(world)]
        real = sorted(i for share in shares for micro, is_real in share if is_real for i in micro)
        assert real == expected
        # Every rank runs as many passes as the busiest one; only fillers make up the difference.
        assert len({len(share) for share in shares}) == 1
        for share in shares:
            assert all(sum(lengths[i] for i in micro) <= budget for micro, _ in share)
            reals = [is_real for _, is_real in share]
            assert reals == sorted(reals, reverse=True)  # fillers come last


def test_a_rank_without_examples_gets_one_filler_pass() -> None:
    lengths = [9, 4, 6]
    shares = [dist.shard_step(ctx, [[1]], lengths, 20) for ctx in ranks(2)]
    assert shares[0] == [([1], True)]
    assert shares[1] == [([1], False)]


def test_ranks_get_similar_token_counts() -> None:
    lengths = [100, 90, 80, 10, 10, 10, 10, 10, 5, 5]
    shares = dist.deal(range(len(lengths)), lengths, 2)
    loads = [sum(lengths[i] for i in share) for share in shares]
    assert abs(loads[0] - loads[1]) <= max(lengths)
    assert sorted(shares[0] + shares[1]) == list(range(len(lengths)))


def test_single_process_keeps_the_plan_as_is() -> None:
    lengths = [3, 8, 2, 7, 5, 1]
    step = pack_indices(range(6), lengths, 10)
    assert dist.shard_step(dist.SINGLE, step, lengths, 10) == [(micro, True) for micro in step]
    assert dist.shard_examples(dist.SINGLE, range(6), lengths, 10) == [(m, True) for m in step]


def failure(timestamp: int, exitcode: int) -> types.SimpleNamespace:
    return types.SimpleNamespace(timestamp=timestamp, exitcode=exitcode)


def test_the_rank_that_failed_first_is_named() -> None:
    # Same second: the rank stopped by the agent's SIGTERM is a consequence, not the cause.
    assert launch.root_failure({0: failure(100, 143), 1: failure(100, 3)})[0] == 1
    assert launch.root_failure({0: failure(100, -15), 1: failure(100, 1)})[0] == 1
    assert launch.root_failure({0: failure(99, 1), 1: failure(100, 3)})[0] == 0
    assert launch.describe_exit(3) == "exit code 3"
    assert launch.describe_exit(-9) == "stopped by SIGKILL"
    assert launch.describe_exit(143) == "stopped by SIGTERM"


def test_launch_command_for_a_recipe_and_for_a_run_folder(tmp_path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("{}")
    command = launch.train_command(recipe, 4, ["--set", "training.epochs=1"])
    assert command[1:] == ["-m", "tunesmith", "train", str(recipe), "--nproc", "4",
                           "--set", "training.epochs=1"]
    assert launch.train_command(tmp_path, 2)[4:6] == ["--resume", str(tmp_path)]
    with pytest.raises(RecipeError, match="at least 1"):
        launch.launch(recipe, 0)


def test_lost_peer_becomes_a_short_error(monkeypatch) -> None:
    monkeypatch.setattr(dist, "PEER_LOST_GRACE_S", 0)
    two = dist.Distributed(rank=0, world_size=2)
    lost = dist.peer_lost(two, RuntimeError("[pair.cc:537] Read error: Connection reset by peer"))
    assert isinstance(lost, dist.PeerLost) and "rank 0 lost contact" in lost.message
    assert dist.peer_lost(two, RuntimeError("shape mismatch in matmul")) is None
    assert dist.peer_lost(dist.SINGLE, RuntimeError("Connection reset by peer")) is None


def test_marker_covers_files_in_sub_folders(tmp_path) -> None:
    folder = tmp_path / "checkpoints"
    tmp = ckpt.temp_folder(folder, 7, "test")
    (tmp / "dcp").mkdir()
    (tmp / "dcp" / "__0_0.distcp").write_bytes(b"x" * 100)
    saved = ckpt.seal(folder, tmp, 7, {"progress": {}})
    assert ckpt.latest_checkpoint(folder).step == 7
    assert not tmp.exists() and (saved.path / "trainer_state.json").exists()
    (saved.path / "dcp" / "__0_0.distcp").write_bytes(b"x" * 10)
    assert ckpt.latest_checkpoint(folder) is None


def test_timeout_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv(dist.TIMEOUT_ENV, "42")
    assert dist.collective_timeout().total_seconds() == 42
    monkeypatch.setenv(dist.TIMEOUT_ENV, "soon")
    with pytest.raises(dist.RecipeError, match=dist.TIMEOUT_ENV):
        dist.collective_timeout()


def test_cli_refuses_bad_nproc(monkeypatch, capsys, tmp_path: Path) -> None:
    from tunesmith.cli import main

    assert main(["train", "--set", "training.epochs=1", "--nproc", "0"]) == 2
    assert "--nproc must be at least 1" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "--set", "training.epochs=1", "--nproc", "2"]) == 2
    assert "inside a torchrun job" in capsys.readouterr().err


def test_single_process_setup_needs_no_group(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = dist.setup()
    assert ctx is dist.SINGLE and ctx.is_main and not ctx.enabled
    assert not torch.distributed.is_initialized()
    assert dist.sum_metrics(ctx, {"a": 1.5}) == {"a": 1.5} and dist.agree(ctx, True)
