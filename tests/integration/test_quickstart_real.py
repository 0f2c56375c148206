"""The real quickstart: SmolLM2-135M-Instruct learns the routing slip, shows it on graded
held-out replies against every baseline, and keeps its everyday answers (verdict green).
Minutes on 2 CPU cores, so slow-marked; it runs where SmolLM2 is already pulled (in
~/.tunesmith, or the folder named by TUNESMITH_TEST_SMOLLM2), never downloading."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tunesmith.cli import main

NAME = "smollm2-135m-instruct"


def pulled_smollm2() -> Path | None:
    folder = os.environ.get("TUNESMITH_TEST_SMOLLM2")
    if folder:
        return Path(folder)
    home = Path.home() / ".tunesmith"
    if not (home / "registry.db").exists():
        return None
    from tunesmith.store import open_registry
    from tunesmith.store.base_models import registered_base

    registry = open_registry(home=home)
    try:
        row = registered_base(NAME, registry)
    finally:
        registry.close()
    return Path(row.location, row.gguf_file or "") if row else None


@pytest.mark.slow
def test_the_real_quickstart_beats_every_baseline(tmp_path: Path, capsys) -> None:
    model = pulled_smollm2()
    if model is None or not model.exists():
        pytest.skip("SmolLM2 is not pulled here (tunesmith models pull smollm2-135m-instruct)")
    assert main(["models", "add-base", NAME, str(model)]) == 0
    assert main(["quickstart", "--out", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "\ufffd" not in out and "verdict:" in out
    run_dir = next(p for p in (tmp_path / "runs").iterdir() if p.is_dir())
    report = json.loads((run_dir / "report.json").read_text())
    graded = [c for c in report["comparisons"] if c["metric"] != "loss"]
    assert {c["baseline"] for c in graded} == {"base", "fewshot", "retrieval"}
    assert all(c["verdict"] == "better" for c in graded), graded
    assert not report["forgetting"]["regressed"], report["forgetting"]
    assert report["summary"]["status"] == "green"
