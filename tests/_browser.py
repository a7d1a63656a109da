"""A real headless Chromium for the web app's end-to-end tests.

The browser is the distribution's ``chromium`` with its ``chromedriver`` (Debian packages
``chromium`` and ``chromium-driver``; ``make browser`` / ``.ci/run`` install them), driven by
selenium pointed at those executables — selenium's own driver download (Selenium Manager) is never
asked for. Where either is missing (a laptop without them), the tests that need a browser skip with
one line saying what to install.
"""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
DRIVER_NAMES = ("chromedriver",)


def _first_on_path(names, env_var: str) -> str | None:
    chosen = os.environ.get(env_var)
    if chosen:
        return chosen if os.access(chosen, os.X_OK) else None
    for name in names:
        found = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
        if found:
            return found
    return None


def browser_missing() -> str | None:
    """Why no browser test can run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if _first_on_path(CHROMIUM_NAMES, "LORADEX_TEST_CHROMIUM") is None:
        return "no Chromium executable (apt-get install chromium chromium-driver, or `make browser`)"
    if _first_on_path(DRIVER_NAMES, "LORADEX_TEST_CHROMEDRIVER") is None:
        return "no chromedriver (apt-get install chromium-driver, or `make browser`)"
    return None


def start_chromium(width: int = 1280, height: int = 900, *, javascript: bool = True):
    """A headless Chromium WebDriver (caller quits it); ``javascript=False``: a browser with
    JavaScript switched off (the pages must work read-only without it). The console is kept
    (``driver.get_log("browser")``: CSP violations show there)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager reach the network
    options = webdriver.ChromeOptions()
    options.binary_location = _first_on_path(CHROMIUM_NAMES, "LORADEX_TEST_CHROMIUM")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-sync", "--metrics-recording-only",
                "--hide-scrollbars", "--force-device-scale-factor=1", f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    service = Service(executable_path=_first_on_path(DRIVER_NAMES, "LORADEX_TEST_CHROMEDRIVER"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    return driver


@pytest.fixture(scope="module")
def chromium():
    """A module-wide headless Chromium; skips the module's browser tests where none is installed."""
    reason = browser_missing()
    if reason:
        pytest.skip(f"browser tests skipped: {reason}")
    driver = start_chromium()
    try:
        yield driver
    finally:
        driver.quit()
