"""A real browser for tests: Debian's Chromium, headless, driven through selenium's ChromeDriver."""
from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                  "--hide-scrollbars")


def chromium(window: str = "1400,1000") -> Any:
    """A headless Chromium (the caller quits it). Missing: a failure in CI (the set-up installs
    it), a skip elsewhere."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        if os.environ.get("CI"):
            pytest.fail("chromium/chromedriver missing: deploy/install_system_deps.sh installs them")
        pytest.skip("chromium/chromedriver not installed (make system-deps)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag if not flag.startswith("--window-size") else
                             f"--window-size={window}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)
