"""User Python graders run in a sandboxed child process, one per grader, fed one sample at a time.

The child compiles the user's `grade(sample, item)` once and answers JSON lines. A grade
that raises, returns a non-number, crashes the child or runs past its timeout gives a
score of 0 with the error recorded; the child is then restarted for the next sample.

What the sandbox contains (see docs/server.md, "Security"):
- its own session and process group, killed whole at a timeout or on close; on Linux with
  user namespaces, also its own PID namespace: the grader is the namespace's first process,
  and killing it makes the kernel kill everything it started, even a child that left the
  process group (setsid, double fork); on Linux it also dies with the thread that started
  it (PR_SET_PDEATHSIG), so a job killed at cancel takes its graders along;
- an empty environment, `python -I` (no user site, no PYTHON* variables, no cwd on the
  path), a fresh empty working folder that is removed afterwards;
- resource limits: CPU seconds, address space, no new processes (RLIMIT_NPROC 0; the kernel
  does not enforce this for root, which the PID namespace covers), file size, open files,
  no core dumps;
- no network where user namespaces exist: a new network namespace has no interfaces up.

What it does not contain: files the server's user can read stay readable (there is no
mount namespace or Landlock policy), and where namespaces are unavailable (not Linux, or
unprivileged user namespaces disabled) the network is reachable and a detached grandchild
of a root server can escape the group kill. That is why python graders are refused from
the API unless the operator opts in (`tunesmith serve --allow-python-graders`).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MIB = 2**20
CHILD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""The whole environment a grader gets: nothing of the server's, only one-thread settings so
numeric libraries do not try to start threads the process limit forbids."""


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """Per grader process (it lives across samples, so the CPU budget is a backstop; the
    per-sample wall-clock timeout is the grader's `timeout`)."""

    cpu_seconds: int = 120
    memory_bytes: int = 1024 * MIB
    file_bytes: int = 16 * MIB
    open_files: int = 64
    processes: int | None = 0
    """RLIMIT_NPROC; None leaves it as inherited (used by tests of the group kill)."""
    namespaces: bool = True
    """Try user, PID and network namespaces (Linux); off, only the process group is killed."""


# The child's trusted prelude runs before any user code: it isolates the process (namespaces,
# limits), then reads and runs the grader. Written by hand because no library offers a
# portable, dependency-free sandbox for one function; each step is a documented syscall.
_CHILD = r"""
import json, math, os, sys
config = json.loads(sys.argv[1])


def isolate():
    # unshare(CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET); our uid maps to itself inside
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        uid, gid = os.getuid(), os.getgid()
        if libc.unshare(0x10000000 | 0x20000000 | 0x40000000) != 0:
            return False
        maps = (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1"))
        for name, text in maps:
            with open(f"/proc/self/{name}", "w") as handle:
                handle.write(text)
        return True
    except Exception:
        return False


def die_with_parent():
    # prctl(PR_SET_PDEATHSIG, SIGKILL): when the process that started us ends (a job killed
    # at cancel), so do we, and with the grader the whole PID namespace
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True).prctl(1, 9) == 0
    except Exception:
        return False


def limit():
    import resource
    pairs = [(resource.RLIMIT_CPU, config["cpu_seconds"]), (resource.RLIMIT_AS, config["memory_bytes"]),
             (resource.RLIMIT_FSIZE, config["file_bytes"]), (resource.RLIMIT_NOFILE, config["open_files"]),
             (resource.RLIMIT_CORE, 0)]
    if config["processes"] is not None:
        pairs.append((resource.RLIMIT_NPROC, config["processes"]))
    for kind, value in pairs:
        resource.setrlimit(kind, (value, value))


if sys.platform == "linux" and die_with_parent() and os.getppid() != config["parent"]:
    os._exit(1)  # the parent ended before the death signal was armed
isolated = config["namespaces"] and sys.platform == "linux" and isolate()
if isolated:
    gate_read, gate_write = os.pipe()
    pid = os.fork()  # the grader: first process of the new PID namespace
    if pid:
        os.close(gate_read)
        print(json.dumps({"sandbox": {"pid": pid, "namespaces": True}}), flush=True)
        os.write(gate_write, b"1")
        os.close(gate_write)
        sys.stdin.close()
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
        if os.WIFSIGNALED(status):
            os.kill(os.getpid(), os.WTERMSIG(status))
        os._exit(os.waitstatus_to_exitcode(status) if not os.WIFSIGNALED(status) else 1)
    os.close(gate_write)
    die_with_parent()
    if os.read(gate_read, 1) != b"1":  # released once the pid line is out, so it is always first
        os._exit(1)  # the prelude ended before it released us
    os.close(gate_read)
else:
    print(json.dumps({"sandbox": {"pid": os.getpid(), "namespaces": False}}), flush=True)
limit()
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
    """A sandboxed child process holding one grader's `grade` function."""

    def __init__(self, source: str, timeout: float, limits: SandboxLimits | None = None):
        self.source = source
        self.timeout = timeout
        self.limits = limits or SandboxLimits()
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir = Path()
        self.namespaces = False
        """Whether the running child got its own namespaces (no network, PID namespace)."""
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
        config = json.dumps({**asdict(self.limits), "parent": os.getpid()})
        # stderr goes to a file: a pipe nobody reads would fill up and stall a chatty grader.
        with open(self.workdir / "stderr.txt", "wb") as stderr:
            self.proc = subprocess.Popen(  # -I: no user site, no PYTHON* variables, no cwd on sys.path
                [sys.executable, "-I", "-c", _CHILD, config],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, cwd=self.workdir,
                env=dict(CHILD_ENV), start_new_session=True)
        state = _Kill(self.proc, self.workdir)
        self._finalizer = weakref.finalize(self, state)
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(self.source).encode() + b"\n")
        self.proc.stdin.flush()
        # The first line comes from the trusted prelude before any user code runs: the grader's
        # pid (outside its namespace), held as a pidfd so the kill cannot hit a reused pid.
        answer, error = self._read_line(("sandbox",))
        if error is None and "sandbox" in answer:
            info = answer["sandbox"]
            self.namespaces = bool(info.get("namespaces"))
            if self.namespaces and hasattr(os, "pidfd_open"):
                with contextlib.suppress(OSError):
                    state.pidfd = os.pidfd_open(int(info["pid"]))
            answer, error = self._read_line()
        if error is None and "error" in answer:
            error = str(answer["error"])
        if error is not None:
            self.close()
            return error
        return None

    def _read_line(self, keys: tuple[str, ...] = ("score", "error", "ready")
                   ) -> tuple[dict[str, Any], str | None]:
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
                if isinstance(answer, dict) and answer.keys() & set(keys):
                    return answer, None
                if keys == ("sandbox",):  # the prelude's line must come first
                    return {}, None
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


class _Kill:
    """Ends everything the grader started: the grader itself through its pidfd (the end of
    a PID namespace's first process takes the whole namespace with it), then the process
    group, then the direct child; the working folder is removed."""

    def __init__(self, proc: subprocess.Popen[bytes], workdir: Path):
        self.proc = proc
        self.workdir = workdir
        self.pidfd: int | None = None

    def __call__(self) -> None:
        if self.pidfd is not None:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            os.close(self.pidfd)
            self.pidfd = None
        with contextlib.suppress(OSError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # start_new_session: the group id is its pid
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
