"""bench/gpu_bench.py's CPU smoke mode runs end to end (a tiny Qwen2 built from a config, both
tools, LoRA and full) and writes a table with both tools' figures and the ratios. The GPU path
itself needs a GPU; this checks the script that will run there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # four fresh training processes
def test_gpu_bench_smoke_mode_runs_both_tools(tmp_path) -> None:
    pytest.importorskip("trl")
    output = tmp_path / "gpu.md"
    command = [sys.executable, str(ROOT / "bench" / "gpu_bench.py"), "--smoke", "--output", str(output)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = output.read_text()
    for adapter in ("lora", "full"):
        assert f"| tiny | {adapter} | tunesmith |" in text
        assert f"| tiny | {adapter} | TRL |" in text
        assert f"| tiny | {adapter} | **tunesmith / TRL** |" in text
    rows = json.loads(output.with_suffix(".json").read_text())["rows"]
    for row in rows:
        for tool in ("tunesmith", "TRL"):
            assert row[tool]["tokens_per_s"] > 0 and row[tool]["peak_mib"] > 0 and row[tool]["mfu"] > 0
    assert rows[0]["tunesmith"]["auto"]["dtype"] in ("float32", "bfloat16")  # the probe's choice, recorded
