"""User Python graders run in a child process, one per grader, fed one sample at a time.

The child compiles the user's `grade(sample, item)` once and answers JSON lines. A grade
that raises, returns a non-number, crashes the child or runs past its timeout gives a
score of 0 with the error recorded; the child is then restarted for the next sample.
Nothing the user wrote runs inside the evaluating (or serving) process. This isolates
crashes and hangs; it is not a security sandbox, so run only grader code you trust.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

_CHILD = r"""
import json, math, sys
source = sys.stdin.readline()
namespace = {"__name__": "tunesmith_grader"}
try:
    exec(compile(json.loads(source), "<grader>", "exec"), namespace)
    grade = namespace["grade"]
except BaseException as exc:
    print(json.dumps({"error": f"grader source failed: {type(exc).__name__}: {exc}"}), flush=True)
    sys.exit(0)
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    try:
        value = grade(request["sample"], request["item"])
        score = float(value)
        if not math.isfinite(score):
            raise ValueError(f"grade returned {value!r}")
        print(json.dumps({"score": score}), flush=True)
    except BaseException as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
"""


class PythonGraderProcess:
    """A child process holding one grader's `grade` function."""

    def __init__(self, source: str, timeout: float):
        self.source = source
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir = Path()
        self._finalizer: weakref.finalize | None = None
        self._pending = b""

    def grade(self, sample: dict[str, Any], item: dict[str, Any]) -> tuple[float, str | None]:
        """(score, error): the score is 0 whenever error is set."""
        try:
            started = self._ensure_started()
            if started is not None:
                return 0.0, started
            request = json.dumps({"sample": sample, "item": item}, default=str)
        except (TypeError, ValueError) as exc:
            return 0.0, f"cannot send the item to the grader: {exc}"
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(request.encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return 0.0, self._died()
        answer, error = self._read_line()
        if error is not None:
            return 0.0, error
        if "error" in answer:
            return 0.0, str(answer["error"])
        score = float(answer["score"])
        if not 0.0 <= score <= 1.0:
            return min(1.0, max(0.0, score)), f"grade returned {score}, clipped to [0, 1]"
        return score, None

    def _ensure_started(self) -> str | None:
        if self.proc is not None and self.proc.poll() is None:
            return None
        self.close()
        self._pending = b""
        self.workdir = Path(tempfile.mkdtemp(prefix="tunesmith-grader-"))
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0", "HOME": str(self.workdir)}
        # stderr goes to a file: a pipe nobody reads would fill up and stall a chatty grader.
        with open(self.workdir / "stderr.txt", "wb") as stderr:
            self.proc = subprocess.Popen(  # -I: no user site, no PYTHON* variables, no cwd on sys.path
                [sys.executable, "-I", "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=stderr, cwd=self.workdir, env=env, start_new_session=True)
        self._finalizer = weakref.finalize(self, _kill, self.proc, self.workdir)
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(self.source).encode() + b"\n")
        self.proc.stdin.flush()
        answer, error = self._read_line()
        if error is None and "error" in answer:
            error = str(answer["error"])
        if error is not None:
            self.close()
            return error
        return None

    def _read_line(self) -> tuple[dict[str, Any], str | None]:
        """The child's next answer, read from the raw pipe (a buffered reader would hide
        lines from select) and skipping anything else the user's code printed."""
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + self.timeout
        while True:
            while b"\n" in self._pending:
                line, self._pending = self._pending.split(b"\n", 1)
                try:
                    answer = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
                if isinstance(answer, dict) and answer.keys() & {"score", "error", "ready"}:
                    return answer, None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close()
                return {}, f"timed out after {self.timeout:g}s"
            ready, _, _ = select.select([self.proc.stdout], [], [], remaining)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    return {}, self._died()
                self._pending += chunk

    def _died(self) -> str:
        assert self.proc is not None
        stderr = ""
        try:
            self.proc.wait(timeout=1)
            stderr = (self.workdir / "stderr.txt").read_text(errors="replace")
        except (subprocess.TimeoutExpired, OSError):
            pass
        code = self.proc.returncode
        self.close()
        tail = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        reason = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return f"grader process crashed ({reason}){': ' + tail if tail else ''}"

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        self.proc = None


def _kill(proc: subprocess.Popen[bytes], workdir: Path) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    shutil.rmtree(workdir, ignore_errors=True)

