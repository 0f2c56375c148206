"""One real `tunesmith serve` process and one headless Chromium shared by the browser tests.

The browser is Debian's chromium driven by its chromedriver (scripts/install_browser.sh puts
them there); nothing is downloaded. Set TUNESMITH_SCREENSHOTS=DIR to keep a screenshot of
every page the tests visit.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serve.server import Server

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,1000")


def _missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            return f"{path} is missing: run scripts/install_browser.sh (as root) for the browser tests"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[dev]'"
    return None


@pytest.fixture(scope="session")
def dashboard_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    home = tmp_path_factory.mktemp("dashboard-home")
    running = Server(home, home / "server.log").start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def browser(dashboard_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    options.set_capability("goog:loggingPrefs", {"browser": "SEVERE"})
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="session")
def browser_logs() -> list[dict[str, Any]]:
    """Every entry of the browser's log in this session (reading the log empties it)."""
    return []


@pytest.fixture(autouse=True)
def keep_browser_log(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each browser test, its log entries move to `browser_logs`, so a check of the whole
    session's log sees them whatever order the tests ran in."""
    if "browser" not in request.fixturenames:
        yield
        return
    logs, browser = request.getfixturevalue("browser_logs"), request.getfixturevalue("browser")
    yield
    logs.extend(browser.get_log("browser"))


@pytest.fixture(scope="session")
def screenshot(browser: Any) -> Any:
    folder = os.environ.get("TUNESMITH_SCREENSHOTS")

    def take(name: str) -> None:
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(Path(folder) / f"{name}.png"))
    return take
