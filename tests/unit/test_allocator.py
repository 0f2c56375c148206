"""The allocator settings a training process applies to itself (tunesmith/allocator.py)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from tunesmith import allocator

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


class FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, option: int, value: int) -> int:
        self.calls.append((option, value))
        return 1


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> FakeLibc:
    """A process that has not tuned yet, with no operator setting, and a libc that records."""
    monkeypatch.setattr(allocator, "_applied", None)
    for name in (allocator.ALLOCATOR_ENV, "THP_MEM_ALLOC_ENABLE", *allocator._GLIBC_ENV):
        monkeypatch.delenv(name, raising=False)
    libc = FakeLibc()
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda _name: libc)
    return libc


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_it_sets_huge_pages_and_both_glibc_thresholds_once(fresh: FakeLibc) -> None:
    applied = allocator.tune()
    assert os.environ["THP_MEM_ALLOC_ENABLE"] == "1"
    assert fresh.calls == [(allocator.M_MMAP_THRESHOLD, allocator.MMAP_THRESHOLD),
                           (allocator.M_TRIM_THRESHOLD, allocator.TRIM_THRESHOLD)]
    assert applied == ["THP_MEM_ALLOC_ENABLE=1", f"mallopt mmap_threshold={allocator.MMAP_THRESHOLD} "
                       f"trim_threshold={allocator.TRIM_THRESHOLD}"]
    assert allocator.tune() == applied and len(fresh.calls) == 2  # the second call changes nothing


def test_default_leaves_the_process_as_it_was(fresh: FakeLibc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(allocator.ALLOCATOR_ENV, "default")
    assert allocator.tune() == []
    assert "THP_MEM_ALLOC_ENABLE" not in os.environ and fresh.calls == []


def test_an_unknown_value_is_refused_naming_the_variable(fresh: FakeLibc,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from tunesmith import cli
    from tunesmith.errors import TunesmithError

    monkeypatch.setenv(allocator.ALLOCATOR_ENV, "off")
    with pytest.raises(TunesmithError, match="TUNESMITH_ALLOCATOR: unknown value 'off'"):
        allocator.tune()
    assert "THP_MEM_ALLOC_ENABLE" not in os.environ and fresh.calls == []
    assert cli.main(["runs", "list"]) == 2  # a command prints the error, not a traceback


def test_the_environment_form_holds_the_same_settings() -> None:
    assert allocator.as_environment() == {"THP_MEM_ALLOC_ENABLE": "1",
                                          "MALLOC_MMAP_THRESHOLD_": str(16 << 20),
                                          "MALLOC_TRIM_THRESHOLD_": str(256 << 20)}


def test_an_operators_own_settings_win(fresh: FakeLibc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "0")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert allocator.tune() == []
    assert os.environ["THP_MEM_ALLOC_ENABLE"] == "0" and fresh.calls == []


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_the_real_libc_takes_both_settings_in_a_fresh_process() -> None:
    code = ("import os; from tunesmith import allocator; done = allocator.tune(); import torch; "
            "x = torch.ones(4 << 20); assert float(x.sum()) == 4 << 20; print(done)")
    env = {k: v for k, v in os.environ.items()
           if k not in ("THP_MEM_ALLOC_ENABLE", allocator.ALLOCATOR_ENV, *allocator._GLIBC_ENV)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert "THP_MEM_ALLOC_ENABLE=1" in out.stdout and "mallopt mmap_threshold" in out.stdout


def test_every_command_and_every_training_run_tunes_first(monkeypatch: pytest.MonkeyPatch) -> None:
    from tunesmith import cli
    from tunesmith.train import loop

    calls: list[str] = []
    monkeypatch.setattr(allocator, "tune", lambda: calls.append("tune") or [])
    assert cli.main(["data", "check", "/nonexistent/tunesmith-data.jsonl"]) == 2  # a clear error
    assert calls == ["tune"]
    with pytest.raises(TypeError, match="needs a recipe"):
        loop.train(None)
    assert calls == ["tune", "tune"]
