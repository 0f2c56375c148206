"""The comparison page in a real headless Chromium: two jobs trained through the API with
different learning rates are picked on the page; their validation curves are overlaid, the
metrics table has a row each and the recipe differences name the learning rate."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import colour_chats, write_jsonl
from tests.e2e.test_dashboard import TIMEOUT, attribute, find, open_page, texts, wait
from tests.serve.server import Server, wait_for

pytestmark = pytest.mark.slow  # a real server, two trainings and a headless browser


@pytest.fixture(scope="module")
def two_jobs(dashboard_server: Server, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    origin = f"http://127.0.0.1:{dashboard_server.port}"
    data = write_jsonl(tmp_path_factory.mktemp("compare-data") / "colours.jsonl", colour_chats(24))
    with data.open("rb") as handle:
        uploaded = httpx.post(f"{origin}/v1/files", files={"file": (data.name, handle)},
                              data={"purpose": "fine-tune"}, headers={"Origin": origin}, timeout=60)
    file_id = uploaded.json()["id"]
    ids = []
    for multiplier in (1, 0.01):
        job = httpx.post(f"{origin}/v1/fine_tuning/jobs", timeout=60, json={
            "model": "tunesmith/tiny-chat", "training_file": file_id, "suffix": "compare",
            "hyperparameters": {"learning_rate_multiplier": multiplier},
            "tunesmith": {"set": {"training.max_steps": 8, "training.eval_every": 2}}}).json()
        ids.append(job["id"])
    def finished(job_id: str) -> Any:
        got = httpx.get(f"{origin}/v1/fine_tuning/jobs/{job_id}", timeout=30).json()
        return got["status"] in ("succeeded", "failed", "cancelled") and got

    for job_id in ids:
        done = wait_for(lambda j=job_id: finished(j), TIMEOUT)
        assert done["status"] == "succeeded", done
    return ids


def test_compare_page_overlays_curves_and_shows_metrics_and_differences(
        browser: Any, dashboard_server: Server, two_jobs: list[str], screenshot: Any) -> None:
    open_page(browser, dashboard_server, "#/compare")
    find(browser, "#compare-picks")
    for job_id in two_jobs:
        find(browser, f'#compare-picks input[value="{job_id}"]').click()
    find(browser, "#compare-go").click()
    wait(browser, lambda b: "#/compare?jobs=" in b.current_url)
    find(browser, "#compare-metrics", TIMEOUT)
    for n in (1, 2):  # both validation curves, with every evaluation's point
        points = attribute(browser, f'#compare-chart path[data-series="run {n} validation"]', "data-points")
        assert points is not None and int(points) >= 4
    rows = texts(browser, "#compare-metrics tbody tr")
    assert len(rows) == 2 and all(job_id in " ".join(rows) for job_id in two_jobs)
    differences = " ".join(texts(browser, "#compare-differences tbody tr"))
    assert "training.learning_rate" in differences
    screenshot("compare")
