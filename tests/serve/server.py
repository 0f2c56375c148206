"""A real `tunesmith serve` process on a free loopback port with its own tunesmith home."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

import tunesmith

SOURCES = Path(tunesmith.__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TUNESMITH_DATABASE_URL"}
    env["TUNESMITH_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join([str(SOURCES), env.get("PYTHONPATH", "")])
    return env


def cli(home: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "tunesmith", *args], env=environment(home), check=True,
                          capture_output=True, text=True, timeout=120)
    return done.stdout


class Server:
    """Started with a short poll and a short stale limit so a killed server's job is picked
    up again within seconds."""

    def __init__(self, home: Path, log: Path, args: tuple[str, ...] = (), cwd: Path | None = None,
                 env: dict[str, str] | None = None):
        self.home = home
        self.log = log
        self.args = args
        self.cwd = cwd
        self.env = env or {}
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 90) -> Server:
        command = [sys.executable, "-m", "tunesmith", "serve", "--port", str(self.port),
                   "--poll-seconds", "0.2", "--stale-seconds", "5", "--grace-seconds", "20",
                   "--max-concurrent-generations", "2", *self.args]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, env={**environment(self.home), **self.env}, stdout=log,
                                            stderr=subprocess.STDOUT, cwd=self.cwd)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        stop_process(self.process)  # never left running behind a failed test
        raise RuntimeError(f"server did not start within {timeout} s: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


def stop_process(process: subprocess.Popen[bytes], grace: float = 60) -> None:
    """SIGTERM, then SIGKILL if it has not ended within `grace` seconds; reaped either way."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for(check: Any, timeout: float = 240, every: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {check}")
