"""`tunesmith quickstart`'s "where everything is" on an 80-column terminal: short paths, no
line wider than the terminal where a shorter form exists, and every path and command whole on
one line, so what the user copies works."""

from __future__ import annotations

import io
import shlex
from pathlib import Path

import pytest
from rich.console import Console

from tunesmith.commands.quickstart import where_everything_is

RUN = "20261201-174512-smollm2-135m-instruct-sft"


def _section(run_dir: Path, width: int = 80) -> list[str]:
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=False, color_system=None)
    where_everything_is(console, run_dir, run_dir / "final", RUN, "3m12s")
    return out.getvalue().splitlines()


def _command(lines: list[str], words: str) -> list[str]:
    (line,) = [line for line in lines if words in line]
    return shlex.split(line[line.index(words):])


def test_paths_under_the_working_folder_are_relative_and_fit(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "runs" / RUN
    lines = _section(run_dir)
    assert max(len(line) for line in lines) <= 80, "\n".join(lines)
    assert str(tmp_path) not in "\n".join(lines)
    assert f"runs/{RUN}/final" in lines[1] and lines[1].startswith("adapter (PEFT)")
    # each command is whole on one line and names the run folder from here
    for words in ("tunesmith report", "tunesmith chat"):
        argv = _command(lines, words)
        assert (tmp_path / argv[2]).resolve() == run_dir
    assert _command(lines, "tunesmith report")[3:] == ["--open"]


def test_a_path_in_the_home_folder_is_shortened_and_still_pastes(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home" / "someone"
    monkeypatch.setenv("HOME", str(home))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    run_dir = home / "a [b]" / RUN  # a space and brackets: quoted for the shell, not read as markup
    lines = _section(run_dir)
    assert max(len(line) for line in lines) <= 80, "\n".join(lines)
    assert any(line.endswith(f"~/a [b]/{RUN}") for line in lines)
    line = next(line for line in lines if "tunesmith chat" in line)
    assert line.strip() == f"tunesmith chat ~/'a [b]/{RUN}'"  # ~ outside the quotes: the shell expands it


def test_a_long_path_elsewhere_gets_a_line_of_its_own_never_broken(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    run_dir = tmp_path / ("deep-" * 12) / RUN
    lines = _section(run_dir)
    assert str(run_dir) in lines[1] and lines[0] == "run directory"  # too wide beside its label
    argv = _command(lines, "tunesmith chat")
    assert Path(argv[2]).resolve() == run_dir.resolve()
    wide = _section(run_dir, width=200)  # a wide terminal keeps label and value on one line
    assert wide[0].startswith("run directory") and str(run_dir) in wide[0]


def test_the_training_start_lines_fit_and_say_where_the_validation_comes_from(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tunesmith.commands.progress import ConsoleProgress

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "validation.jsonl").write_text("{}\n")
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=False, color_system=None)
    reason = ("bf16 1.32 GFLOP/s vs fp32 93.5 GFLOP/s on this CPU (matmul fp32 2048x1024x1024, bf16 "
              "256x256x256): bf16 is not at least 1.25x faster")
    ConsoleProgress(console).report({
        "type": "start", "step": 0, "total_steps": 42, "run_dir": str(tmp_path / "runs" / RUN),
        "trainable_parameters": 4884480,
        "auto": {"micro_batch_tokens": 4096, "dtype": "float32", "dtype_reason": reason},
        "data": {"format": "chat", "train_examples": 168, "replay_examples": 48, "validation_examples": 30,
                 "validation_source": str(tmp_path / "data" / "validation.jsonl")}})
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80, "\n".join(lines)
    assert str(tmp_path) not in out.getvalue()
    assert lines[0] == "training 120 + 48 replayed examples (chat), 4,884,480 trainable parameters"
    assert lines[1] == "  validation: data/validation.jsonl (30)"
    assert lines[2] == "  auto: micro_batch_tokens=4096, dtype=float32"
    why = [line for line in lines if line.startswith("    ")]
    assert " ".join(line.strip() for line in why) == f"why float32: {reason}"
    assert lines[-1] == f"  run: runs/{RUN}"


def test_wrapped_lines_keep_a_long_path_whole_on_a_line_of_its_own() -> None:
    from tunesmith.commands.console import print_indented

    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=False, color_system=None)
    path = "/tmp/" + "deep/" * 20 + "hf"  # longer than the line
    print_indented(console, f"registered smollm2-135m-instruct -> {path}", "    ", first="  ")
    assert out.getvalue().splitlines() == ["  registered smollm2-135m-instruct ->", f"    {path}"]
