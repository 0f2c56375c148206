"""The comparison and advice pages in a real headless Chromium: two jobs trained through the API
with different learning rates are picked on the page; their validation curves are overlaid, the
metrics table has a row each and the recipe differences name the learning rate. Advice made
through POST /v1/advice shows its recommendation, systems and evidence."""

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


def test_advice_page_shows_the_recommendation_and_its_numbers(browser: Any, dashboard_server: Server) -> None:
    import json

    from tests.iterate.tasks import pets

    origin = f"http://127.0.0.1:{dashboard_server.port}"
    ids = []
    for name, rows in zip(("pets.jsonl", "pets-heldout.jsonl"), pets(), strict=True):
        body = "".join(json.dumps(r) + "\n" for r in rows).encode()
        uploaded = httpx.post(f"{origin}/v1/files", files={"file": (name, body)},
                              data={"purpose": "fine-tune"}, headers={"Origin": origin}, timeout=60)
        ids.append(uploaded.json()["id"])
    advice = httpx.post(f"{origin}/v1/advice", timeout=TIMEOUT, json={
        "model": "tunesmith/tiny-chat", "training_file": ids[0], "validation_file": ids[1],
        "max_new_tokens": 8, "probe_steps": 1})
    assert advice.status_code == 200, advice.text
    open_page(browser, dashboard_server, "#/advice")
    card = f'section.advice[data-advice="{advice.json()["id"]}"]'
    find(browser, card)
    heading = texts(browser, f"{card} h2")[0]
    assert advice.json()["recommendation"].replace("_", " ") in heading
    rows = texts(browser, f"{card} table:not(.kv) tbody tr")
    assert [r.split()[0] for r in rows] == ["zero_shot", "few_shot", "retrieval"]
    assert texts(browser, f"{card} .evidence li")
