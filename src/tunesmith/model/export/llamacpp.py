"""Run a GGUF file in llama.cpp itself, for the parity check.

The runtime is the prebuilt linux-x64 CPU build of llama.cpp that npm's node-llama-cpp
ships (scripts/install_llamacpp.sh puts it in a cache folder; nothing is compiled). It runs
in a child process (llamacpp_runner.mjs), so a crash or an abort inside llama.cpp fails the
check with llama.cpp's own message instead of taking the caller down. The child only
reports what llama.cpp computed: logits at every position of given token ids, its own
tokenization of given texts, and its greedy continuation of given prompts. parity.py judges.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tunesmith.model.export.errors import ExportError

VERSION = "3.22.1"                 # node-llama-cpp; scripts/install_llamacpp.sh installs the same
RUNNER = Path(__file__).with_name("llamacpp_runner.mjs")
INSTALL_HINT = "run scripts/install_llamacpp.sh (needs node and npm; about 85 MB, no compiling)"
TIMEOUT_S = 600


@dataclass(slots=True)
class Answer:
    """What llama.cpp computed for one request."""

    logits: list[np.ndarray]            # per sequence: positions x vocabulary
    tokenized: list[list[int]]          # per text: llama.cpp's token ids (special tokens parsed)
    generated: list[list[int]]          # per prompt: llama.cpp's greedy tokens


def runtime_dir() -> Path:
    """Where the runtime is (or would be) installed: $TUNESMITH_LLAMACPP_DIR, else the cache."""
    if os.environ.get("TUNESMITH_LLAMACPP_DIR"):
        return Path(os.environ["TUNESMITH_LLAMACPP_DIR"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "tunesmith" / "llama.cpp" / f"node-llama-cpp-{VERSION}"


def missing_reason() -> str | None:
    """Why llama.cpp cannot be run here, or None when it can."""
    if shutil.which("node") is None:
        return f"node is not installed; {INSTALL_HINT}"
    package = runtime_dir() / "node_modules" / "node-llama-cpp" / "package.json"
    if not package.exists():
        return f"llama.cpp (node-llama-cpp {VERSION}) is not installed in {runtime_dir()}; {INSTALL_HINT}"
    if json.loads(package.read_text()).get("version") != VERSION:
        return f"{package.parent} is not node-llama-cpp {VERSION}; {INSTALL_HINT}"
    return None


def run(model: Path, *, sequences: list[list[int]], texts: list[str], prompts: list[list[int]],
        new_tokens: int) -> Answer:
    """Load `model` in llama.cpp and evaluate the sequences, tokenize the texts, continue the prompts."""
    reason = missing_reason()
    if reason:
        raise ExportError(f"cannot run llama.cpp: {reason}", where="llama.cpp")
    with tempfile.TemporaryDirectory(prefix="tunesmith-llamacpp-") as folder:
        request = Path(folder) / "request.json"
        request.write_text(json.dumps({"runtime": str(runtime_dir()), "model": str(Path(model).resolve()),
                                       "sequences": sequences, "texts": texts,
                                       "generate": {"prompts": prompts, "tokens": new_tokens}}))
        try:
            done = subprocess.run(["node", str(RUNNER), str(request), folder], capture_output=True, text=True,
                                  timeout=TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ExportError(f"llama.cpp did not finish with {model.name} in {TIMEOUT_S} s",
                              where="llama.cpp") from exc
        answer_file = Path(folder) / "answer.json"
        if done.returncode != 0 or not answer_file.exists():
            raise ExportError(f"llama.cpp refused {model.name}: {_reason(done.stderr)}", where="llama.cpp",
                              fix="this is a bug in tunesmith's GGUF writer: report it with the model's "
                                  "config.json; the merged format (--format merged) is not affected")
        answer = json.loads(answer_file.read_text())
        width = answer["vocab"]
        logits = [np.fromfile(Path(folder) / name, dtype="<f4").reshape(-1, width)
                  for name in answer["logits"]]
    return Answer(logits, answer["tokenized"], answer["generated"])


def _reason(stderr: str) -> str:
    """llama.cpp's own error lines (it says exactly what it refused), else the last lines."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not line.startswith("    at ")]
    errors = [line for line in lines if "error" in line.lower()]
    return " | ".join(dict.fromkeys(errors or lines[-3:]))[:600] or "no message"
