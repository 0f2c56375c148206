"""The one helper that stops a test's server or worker process: SIGTERM first, SIGKILL for a
process that ignores it, and the process reaped either way."""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.serve.server import stop_process

IGNORES_TERM = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('ready', flush=True); time.sleep(120)")


def _started(code: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    return process


def test_a_process_that_ends_on_sigterm_is_terminated() -> None:
    process = _started("import time; print('ready', flush=True); time.sleep(120)")
    stop_process(process)
    assert process.returncode == -signal.SIGTERM


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    process = _started(IGNORES_TERM)
    stop_process(process, grace=0.5)
    assert process.returncode == -signal.SIGKILL


def test_a_process_already_ended_is_left_alone() -> None:
    process = _started("print('ready', flush=True)")
    process.wait()
    stop_process(process)
    assert process.returncode == 0
