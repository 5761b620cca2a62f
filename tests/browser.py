"""Headless Chromium for the browser tests (Debian's `chromium` + `chromium-driver`, driven by
selenium): one place that finds them, says why a test skips without them, and starts a driver."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

needs_browser = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="needs headless Chromium: apt-get install chromium chromium-driver",
)


@contextmanager
def chromium(window: str = "1280,1400", *, logs: bool = False) -> Iterator[Any]:
    """A headless Chromium driver, quit afterwards; `logs` keeps the console and network logs
    (for tests that assert no console error and no 5xx)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs pip install selenium")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={window}",
    ):
        options.add_argument(arg)
    if logs:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
