"""The Locust web UI, driven by a real browser (Debian's Chromium + ChromeDriver)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess

import pandas as pd
import pytest

from support import free_port, records_written, start_locust, wait_until, write_config
from support.browser import chromium

pytestmark = pytest.mark.slow


def _browser():
    return chromium()


def test_ramping_by_hand_in_the_web_ui_records_every_request(stub, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url = stub(ttft_ms=10, itl_ms=3)
    cfg = write_config(tmp_path / "ep.json", [{"label": "A", "base_url": url,
                                               "model": "stub-model"}])
    run_dir = tmp_path / "run"
    port = free_port()
    log = open(tmp_path / "locust.out", "wb")
    locust = start_locust(
        cfg, run_dir, "--web-host", "127.0.0.1", "--web-port", str(port),
        stdout=log, stderr=subprocess.STDOUT,
        # if Locust hangs, say where: gevent reports a greenlet that blocks the hub for over
        # 2 s, and SIGABRT (sent before the kill below) dumps every thread's stack
        env={**os.environ, "PYTHONFAULTHANDLER": "1", "GEVENT_MONITOR_THREAD_ENABLE": "1",
             "GEVENT_MAX_BLOCKING_TIME": "2"})
    browser = None
    try:
        browser = _browser()
        browser.set_page_load_timeout(30)
        wait_until(lambda: _reachable(port), 30, "the web UI")
        browser.get(f"http://127.0.0.1:{port}/")
        users = wait_until(lambda: browser.find_elements(By.NAME, "userCount"), 20, "the start form")[0]
        users.send_keys(Keys.CONTROL, "a")
        users.send_keys("3")
        rate = browser.find_element(By.NAME, "spawnRate")
        rate.send_keys(Keys.CONTROL, "a")
        rate.send_keys("3")
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        # the stats table shows both event types per endpoint
        wait_until(lambda: "TTFT" in browser.page_source and "CHAT" in browser.page_source, 30,
              "CHAT and TTFT rows in the stats table")
        # records reach the run directory while the test runs, not only at the end
        wait_until(lambda: records_written(run_dir) > 30, 30, "records written during the run")
        texts = [b.text.strip() for b in browser.find_elements(By.TAG_NAME, "button")]
        stop = [b for b in browser.find_elements(By.TAG_NAME, "button")
                if b.text.strip().lower() == "stop"]
        assert stop, f"no Stop button among {texts}"
        stop[0].click()
        wait_until(lambda: _runner_state(port) == "stopped", 30, "Locust to report 'stopped'")
    finally:
        if browser is not None:
            browser.quit()
        locust.send_signal(signal.SIGINT)
        try:
            locust.wait(timeout=30)
        except subprocess.TimeoutExpired:
            locust.send_signal(signal.SIGABRT)
            try:
                locust.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(locust.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # SIGABRT ended it
            locust.wait()
    log.close()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    table = pd.read_csv(run_dir / "records.csv")
    output = (tmp_path / "locust.out").read_text(errors="replace")[-12000:]
    assert manifest["status"] == "complete" and manifest["mode"] == "manual", (
        f"Locust's exit code after SIGINT: {locust.returncode} (-6 or -9: it did not end "
        f"within 30 s and was aborted); "
        f"its output ends with:\n{output}")
    assert len(table) == manifest["records_written"] == manifest["locust_requests"] > 30
    assert set(table["phase"]) == {"manual"}
    # Stop without --stop-timeout kills the users: their open streams are recorded as such
    failed = table[~table["ok"]]
    assert set(failed["error_category"]) <= {"interrupted"} and len(failed) <= 3, failed
    assert (table["stage_users"] == 3).mean() > 0.8   # tagged with the user count set by hand


def _runner_state(port: int) -> str | None:
    """The runner state Locust's web UI reports ("running", "stopped", ...), None if unknown."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats/requests", timeout=5) as r:
            return json.loads(r.read()).get("state")
    except (OSError, ValueError):
        return None


def _reachable(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0
