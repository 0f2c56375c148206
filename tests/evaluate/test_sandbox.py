"""The python grader sandbox: nothing a grader starts outlives its timeout, and it gets no
environment, no network (where namespaces exist) and its own empty working folder."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from tunesmith.evaluate.sandbox import CHILD_ENV, PythonGraderProcess, SandboxLimits


def survivors(marker: str) -> list[int]:
    """Processes whose command line holds `marker` (read from /proc: Linux only)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def gone(marker: str, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not survivors(marker):
            return True
        time.sleep(0.1)
    return False


def forking_grader(marker: str, detach: bool) -> str:
    """A grader that starts a `sleep` (detached: in a new session, double-forked) and then hangs."""
    detach_code = "os.setsid()\n            if os.fork():\n                os._exit(0)\n            " \
        if detach else ""
    return (
        "import os, time\n"
        "def grade(sample, item):\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        f"            {detach_code}os.execv('/bin/sleep', ['sleep', '{marker}'])\n"
        "    except OSError:\n"
        "        pass\n"
        "    time.sleep(60)\n"
        "    return 1.0\n")


pytestmark = pytest.mark.skipif(not Path("/proc/self/cmdline").exists() or not Path("/bin/sleep").exists(),
                                reason="needs /proc and /bin/sleep")


@pytest.mark.parametrize("limits", [SandboxLimits(), SandboxLimits(processes=None)],
                         ids=["default", "processes-allowed"])
def test_a_detached_child_of_a_grader_does_not_survive_its_timeout(limits: SandboxLimits) -> None:
    marker = f"{1000 + uuid.uuid4().int % 1000}.{os.getpid()}"
    grader = PythonGraderProcess(forking_grader(marker, detach=True), timeout=1.5, limits=limits)
    try:
        score, error = grader.grade({"output_text": "x"}, {})
        assert score == 0.0 and error == "timed out after 1.5s"
        assert gone(marker), f"still running: {survivors(marker)}"
    finally:
        grader.close()
    assert gone(marker)


def test_the_process_group_is_killed_even_without_namespaces() -> None:
    marker = f"{2000 + uuid.uuid4().int % 1000}.{os.getpid()}"
    limits = SandboxLimits(namespaces=False, processes=None)
    grader = PythonGraderProcess(forking_grader(marker, detach=False), timeout=1.5, limits=limits)
    try:
        assert grader.grade({"output_text": "x"}, {})[1] == "timed out after 1.5s"
        assert not grader.namespaces
        assert gone(marker), f"still running: {survivors(marker)}"
    finally:
        grader.close()


def test_a_grader_gets_no_environment_an_empty_folder_and_limits() -> None:
    source = (
        "import os, resource\n"
        "def grade(sample, item):\n"
        "    what = sample['output_text']\n"
        "    if what == 'env':\n"
        "        return len([k for k in os.environ if k not in item['allowed']])\n"
        "    if what == 'numpy':\n"
        "        import numpy\n"
        "        return float(numpy.ones(4).mean()) / 2\n"
        "    if what == 'files':\n"
        "        return len([n for n in os.listdir('.') if n != 'stderr.txt'])\n"
        "    if what == 'memory':\n"
        "        return resource.getrlimit(resource.RLIMIT_AS)[0] == item['memory']\n"
        "    if what == 'big':\n"
        "        bytearray(item['memory'] * 2)\n"
        "    return 0.5\n")
    limits = SandboxLimits(memory_bytes=512 * 2**20)
    grader = PythonGraderProcess(source, timeout=10, limits=limits)
    item = {"memory": limits.memory_bytes, "allowed": [*CHILD_ENV, "LC_CTYPE"]}
    secret = "TUNESMITH_TEST_SECRET"
    os.environ[secret] = "1"
    try:
        assert grader.grade({"output_text": "env"}, item) == (0.0, None)
        assert grader.grade({"output_text": "files"}, item) == (0.0, None)
        assert grader.grade({"output_text": "numpy"}, item) == (0.5, None)
        assert grader.grade({"output_text": "memory"}, item) == (1.0, None)
        score, error = grader.grade({"output_text": "big"}, item)
        assert score == 0.0 and error.startswith("MemoryError")
        assert grader.grade({"output_text": "after"}, item) == (0.5, None)
    finally:
        del os.environ[secret]
        workdir = grader.workdir
        grader.close()
    assert not workdir.exists()


def test_a_grader_has_no_network_where_namespaces_exist() -> None:
    source = (
        "import socket\n"
        "def grade(sample, item):\n"
        "    socket.create_connection(('127.0.0.1', item['port']), timeout=2)\n"
        "    return 1.0\n")
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    grader = PythonGraderProcess(source, timeout=10)
    try:
        score, error = grader.grade({"output_text": "x"}, {"port": listener.getsockname()[1]})
        if not grader.namespaces:
            pytest.skip("this machine gives unprivileged processes no user namespaces")
        assert score == 0.0 and error.startswith("OSError")
    finally:
        grader.close()
        listener.close()


def test_a_grader_ends_with_the_process_that_started_it(tmp_path: Path) -> None:
    """A job killed at cancel (SIGKILL) cannot reach its grader's timeout: the grader, and all it
    started, must end with it anyway."""
    import signal
    import subprocess
    import sys

    marker = f"{4000 + uuid.uuid4().int % 1000}.{os.getpid()}"
    script, source = tmp_path / "job.py", tmp_path / "grader.py"  # the marker only in sleep's arguments
    source.write_text(forking_grader(marker, detach=True))
    script.write_text(
        "import pathlib, sys\n"
        "from tunesmith.evaluate.sandbox import PythonGraderProcess\n"
        "grader = PythonGraderProcess(pathlib.Path(sys.argv[1]).read_text(), timeout=120)\n"
        "print('grading', flush=True)\n"
        "grader.grade({'output_text': 'x'}, {})\n")
    job = subprocess.Popen([sys.executable, str(script), str(source)], stdout=subprocess.PIPE)
    try:
        assert job.stdout is not None and job.stdout.readline() == b"grading\n"
        deadline = time.monotonic() + 30
        while not survivors(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert survivors(marker), "the grader's child started"
    finally:
        job.send_signal(signal.SIGKILL)
        job.wait()
    assert gone(marker), f"still running: {survivors(marker)}"
