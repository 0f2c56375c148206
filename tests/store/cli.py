"""Run commands through tunesmith.cli.main the way a user types them, capturing the output."""

from __future__ import annotations

import json
from typing import Any

import pytest


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    from tunesmith.cli import main

    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out = run_cli(capsys, *argv, "--json")
    assert code == 0, out
    return json.loads(out)
