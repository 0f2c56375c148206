"""The dashboard in a real headless Chromium against a real server: a bad file shows its
errors with line numbers, a job started from the form draws its loss curve while the page
stays open, the model page shows its evaluation and report, the playground asks both models,
and with a key configured the login form guards every page. The tests share one server and one
browser; each makes what it needs (the `trained` fixture trains a model through the API when no
earlier test did), so each passes alone and in any order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import colour_chats, write_jsonl
from tests.serve.server import Server, cli, wait_for

pytestmark = pytest.mark.slow  # a real server and a headless browser

TIMEOUT = 240


def wait(browser: Any, check: Any, timeout: float = 60) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, poll_frequency=0.2).until(check)


def find(browser: Any, css: str, timeout: float = 60) -> Any:
    from selenium.webdriver.common.by import By

    return wait(browser, lambda b: (found := b.find_elements(By.CSS_SELECTOR, css)) and found[0], timeout)


def texts(browser: Any, css: str) -> list[str]:
    """Read in the page in one step: job pages re-render while polling, so element handles
    taken earlier can go stale."""
    return browser.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText)", css)


def attribute(browser: Any, css: str, name: str) -> str | None:
    return browser.execute_script(
        "const e = document.querySelector(arguments[0]); return e && e.getAttribute(arguments[1])", css, name)


def text_of(browser: Any, css: str, contains: str, timeout: float = 60) -> str:
    return wait(browser, lambda b: next((t for t in texts(b, css) if contains in t), False), timeout)


def open_page(browser: Any, server: Server, hash_route: str) -> None:
    """A fresh load of the page (going to the same #route again would not re-render it)."""
    browser.get("about:blank")
    browser.get(f"http://127.0.0.1:{server.port}/{hash_route}")


def submit_job(browser: Any, server: Server, data: Path, steps: int | None = None,
               epochs: int | None = None) -> None:
    from selenium.webdriver.support.ui import Select

    open_page(browser, server, "#/new")
    find(browser, "#training-file").send_keys(str(data))
    base = Select(find(browser, "#base-model"))
    assert "tunesmith/tiny-chat" in [o.get_attribute("value") for o in base.options]
    base.select_by_value("tunesmith/tiny-chat")
    find(browser, "#suffix").send_keys("colours")
    if steps:
        find(browser, "#max-steps").send_keys(str(steps))
    if epochs:
        find(browser, "#epochs").send_keys(str(epochs))
    find(browser, "#start").click()


@pytest.fixture(scope="module")
def trained(dashboard_server: Server, data: dict[str, Path]) -> str:
    """A succeeded job with a model named ft:tiny-chat:colours:..., with colours.jsonl and
    no_reply.jsonl among the uploaded files; made through the API. The job's id."""
    origin = f"http://127.0.0.1:{dashboard_server.port}"
    api = f"{origin}/v1"
    same_site = {"Origin": origin}  # a form upload needs its Origin, as the dashboard's own does
    ids = {}
    for name in ("good", "bad"):
        with data[name].open("rb") as handle:
            reply = httpx.post(f"{api}/files", files={"file": (data[name].name, handle)},
                               data={"purpose": "fine-tune"}, headers=same_site, timeout=60)
        assert reply.status_code == 200, reply.text
        ids[name] = reply.json()["id"]
    job = httpx.post(f"{api}/fine_tuning/jobs", timeout=60, json={
        "model": "tunesmith/tiny-chat", "training_file": ids["good"], "suffix": "colours",
        "tunesmith": {"set": {"training.max_steps": 20}}}).json()
    done = wait_for(lambda: (got := httpx.get(f"{api}/fine_tuning/jobs/{job['id']}", timeout=30).json())
                    ["status"] in ("succeeded", "failed", "cancelled") and got, TIMEOUT)
    assert done["status"] == "succeeded", done
    return str(job["id"])


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("dashboard-data")
    bad = colour_chats(6)
    bad[2] = {"messages": [{"role": "user", "content": "what colour is the sky?"}]}  # line 3: no reply
    (folder / "broken.jsonl").write_text('{"messages": []}\n{"messages": [\n', encoding="utf-8")
    return {"good": write_jsonl(folder / "colours.jsonl", colour_chats(24)),
            "bad": write_jsonl(folder / "no_reply.jsonl", bad), "broken": folder / "broken.jsonl"}


def test_bad_data_shows_its_errors_with_line_numbers(browser: Any, dashboard_server: Server,
                                                     data: dict[str, Path], screenshot: Any) -> None:
    submit_job(browser, dashboard_server, data["broken"])
    message = text_of(browser, "#form-status .error", "line 2")
    assert "not valid JSON" in message

    submit_job(browser, dashboard_server, data["bad"])
    findings = text_of(browser, "#findings", "no_reply.jsonl line 3", TIMEOUT)
    assert "no assistant message" in findings
    text_of(browser, "#check .error", "1 error:")
    screenshot("data-errors")
    assert "#/new" in browser.current_url  # nothing was started


def test_job_from_the_form_draws_its_loss_curve(browser: Any, dashboard_server: Server,
                                                data: dict[str, Path], screenshot: Any) -> None:
    submit_job(browser, dashboard_server, data["good"], steps=20)
    wait(browser, lambda b: "#/jobs/ftjob-" in b.current_url, TIMEOUT)
    first_status = text_of(browser, "h1 .badge", "")
    assert first_status in ("validating_files", "queued", "running")
    # The page polls: the curve appears and grows without a reload.
    curve = '#loss-chart path[data-series="training loss"]'
    wait(browser, lambda b: attribute(b, curve, "data-points"), TIMEOUT)
    text_of(browser, "h1 .badge", "succeeded", TIMEOUT)
    assert attribute(browser, curve, "data-points") == "20"
    assert attribute(browser, curve, "d").count("L") == 19
    assert "20/20" in text_of(browser, "#job-summary", "progress")
    text_of(browser, "#events", "The job has successfully completed")
    text_of(browser, "#hyperparameters", "training.max_steps")
    assert attribute(browser, "#cancel", "disabled") is not None
    screenshot("job")

    open_page(browser, dashboard_server, "#/jobs")
    rows = text_of(browser, "#jobs", "succeeded")
    assert "tunesmith/tiny-chat" in rows
    from selenium.webdriver.support.ui import Select

    Select(find(browser, "#filter-status")).select_by_value("failed")
    text_of(browser, "main", "No jobs match")
    assert texts(browser, "#jobs") == []
    screenshot("jobs-filtered")


def test_model_page_shows_evaluation_lineage_and_report(browser: Any, dashboard_server: Server,
                                                        trained: str, screenshot: Any) -> None:
    open_page(browser, dashboard_server, "#/jobs")
    find(browser, "#jobs a[href^='#/models/']").click()
    evaluation = text_of(browser, "#evaluation", "steps")
    assert "no report yet" in evaluation.lower()
    text_of(browser, "#lineage", "ft:tiny-chat:colours:")
    screenshot("model-no-report")

    # What `tunesmith eval` leaves in the run folder: the page shows it once it exists.
    job_id = find(browser, "a[href^='#/jobs/']").text
    run = dashboard_server.home / "runs" / job_id
    report = {"metrics": {"tuned": {"exact_match": 0.75}, "base": {"exact_match": 0.1}},
              "baselines": {"few_shot": {"exact_match": 0.3}}, "forgetting": {"general_loss_change": 0.02},
              "summary": {"status": "not_proven", "lines": ["not proven: no held-out reply was graded"]}}
    (run / "report.json").write_text(json.dumps(report), encoding="utf-8")
    html = "<h1>Evaluation of colours</h1><p>forgetting: fine</p>"
    (run / "report.html").write_text(html, encoding="utf-8")
    browser.refresh()
    summary = text_of(browser, "#report-summary", "forgetting")
    assert "few_shot" in summary and "0.75" in summary
    verdict = find(browser, "#report-summary .badge.verdict.not_proven")  # styled like a job's status
    assert verdict.text == "not proven"
    assert verdict.value_of_css_property("background-color") not in ("rgba(0, 0, 0, 0)", "transparent")
    find(browser, "#open-report").click()
    frame = find(browser, "iframe.report")
    wait(browser, lambda b: "Evaluation of colours" in (frame.get_attribute("srcdoc") or ""))
    screenshot("model-report")


def test_datasets_page_and_playground(browser: Any, dashboard_server: Server, trained: str,
                                      screenshot: Any) -> None:
    open_page(browser, dashboard_server, "#/datasets")
    text_of(browser, "#files", "no_reply.jsonl")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    link = next(a for a in browser.find_elements(By.CSS_SELECTOR, "#files a")
                if "colours.jsonl" in a.find_element(By.XPATH, "../..").text)
    link.click()
    text_of(browser, "#check", "Ready to train", TIMEOUT)
    bars = browser.find_elements(By.CSS_SELECTOR, "#histogram rect.bar")
    assert bars and sum(1 for b in bars if float(b.get_attribute("height")) > 0) >= 1
    screenshot("data-check")

    open_page(browser, dashboard_server, "#/chat")
    assert find(browser, "#left-model").get_attribute("value") == "tunesmith/tiny-chat"
    right = find(browser, "#right-model")
    assert right.get_attribute("value").startswith("ft:tiny-chat:")  # a tuned model faces the base
    # other browser tests register models too, so pick this test's own run by name
    colours = [o.get_attribute("value") for o in right.find_elements(By.TAG_NAME, "option")
               if o.get_attribute("value").startswith("ft:tiny-chat:colours:")]
    assert colours, "the colours run's model is not offered in the playground"
    Select(right).select_by_value(colours[0])
    find(browser, "#prompt").send_keys("What colour is the sky?")
    find(browser, "#send").click()
    for side in ("#left-reply", "#right-reply"):
        text_of(browser, side, "tokens in", TIMEOUT)
    screenshot("playground")


def test_pause_resume_and_cancel_buttons(browser: Any, dashboard_server: Server, data: dict[str, Path],
                                        screenshot: Any) -> None:
    submit_job(browser, dashboard_server, data["good"], steps=100_000, epochs=10_000)  # stopped by hand
    wait(browser, lambda b: "#/jobs/ftjob-" in b.current_url, TIMEOUT)
    curve = '#loss-chart path[data-series="training loss"]'
    wait(browser, lambda b: attribute(b, curve, "data-points"), TIMEOUT)  # running and reporting
    find(browser, "#pause").click()
    text_of(browser, "h1 .badge", "paused", TIMEOUT)
    paused_at = int(attribute(browser, curve, "data-points"))
    wait(browser, lambda b: attribute(b, "#resume", "disabled") is None)
    find(browser, "#resume").click()
    # Training continues from the checkpoint: the curve grows past where it stopped.
    wait(browser, lambda b: int(attribute(b, curve, "data-points")) > paused_at + 2, TIMEOUT)
    wait(browser, lambda b: attribute(b, "#cancel", "disabled") is None)
    find(browser, "#cancel").click()
    text_of(browser, "h1 .badge", "cancelled", TIMEOUT)
    text_of(browser, "#events", "Job cancel")  # "Job cancel requested..." or "Job cancelled"
    screenshot("job-cancelled")


def test_with_a_key_the_dashboard_asks_for_it(browser: Any, dashboard_server: Server, trained: str,
                                              screenshot: Any) -> None:
    key = cli(dashboard_server.home, "keys", "create", "--name", "browser").split()
    secret = next(word for word in key if word.startswith("tsk-"))
    api = f"http://127.0.0.1:{dashboard_server.port}/dashboard/api/jobs"
    try:
        wait(browser, lambda _: httpx.get(api).status_code == 401)  # the server re-reads keys each second
        browser.execute_script("sessionStorage.clear()")
        open_page(browser, dashboard_server, "#/models")
        browser.refresh()
        field = find(browser, "#api-key", 30)
        screenshot("login")
        field.send_keys("tsk-wrong")
        find(browser, "#login button").click()
        text_of(browser, "#login .error", "not accepted")
        field.clear()
        field.send_keys(secret)
        find(browser, "#login button").click()
        text_of(browser, "#models", "ft:tiny-chat:colours:")
        assert browser.execute_script("return sessionStorage.getItem('tunesmith.apiKey')") == secret
    finally:  # the tests after this one find the server open again
        cli(dashboard_server.home, "keys", "revoke", "browser")
        wait(browser, lambda _: httpx.get(api).status_code == 200)
        browser.execute_script("sessionStorage.clear()")


def test_pages_raised_no_script_errors(browser: Any, dashboard_server: Server,
                                       browser_logs: list[dict[str, Any]]) -> None:
    """Failed requests the tests caused on purpose (a wrong key, bad files, a missing file) are
    logged by the browser as resource errors; anything else at SEVERE level is a bug in the
    page's code. Every page is opened here too, so the check means something when run alone;
    the log of the browser tests that ran before is checked as well (conftest's browser_logs)."""
    for route in ("#/jobs", "#/new", "#/models", "#/datasets", "#/chat"):
        open_page(browser, dashboard_server, route)
        find(browser, "main")
    browser.execute_async_script(  # a failed request the browser logs: proof the log is read
        "const done = arguments[arguments.length - 1];"
        "fetch('/dashboard/static/no-such-file.js').then(() => done(), () => done());")
    logs = [*browser_logs, *browser.get_log("browser")]
    assert any("404" in e["message"] for e in logs), "the browser's log was not captured"
    errors = [e["message"] for e in logs
              if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]]
    assert errors == []
