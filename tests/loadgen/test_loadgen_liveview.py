"""The live view: the master's Prometheus metrics and the web UI's LLM tab.

Fast tests feed ``LiveFigures`` known records and read the exposition back with
prometheus_client's own parser. The slow test runs a real distributed Locust (master, two
worker processes, the stub) driven from Chromium: the LLM tab must show the figures that the
run's records.csv gives, and one scrape of the master must count every record of both workers.
"""

from __future__ import annotations

import http.server
import json
import math
import os
import signal
import subprocess
import sys
import threading
import urllib.request

import numpy as np
import pandas as pd
import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from core.rundir import series
from core.rundir.records import RECORD_FIELDS, RequestRecord
from locustfiles import livemetrics, webtab
from locustfiles.livemetrics import (HEALTH_WINDOW_S, LATENCY_BUCKETS_S, LiveCollector,
                                     LiveFigures, LiveStatus, registry_for)
from locustfiles.messages import RecordBatch
from support import ROOT, free_port, records_written, start_locust, wait_until, write_config
from support.browser import chromium


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _row(**values) -> list:
    record = RequestRecord(**{"run_id": "r1", "endpoint": "A", "model": "m", "stage": 0,
                              "stage_users": 2, "phase": "steady", **values})
    return [getattr(record, name) for name in RECORD_FIELDS]


def _status(**changes) -> LiveStatus:
    base = dict(run_id="r1", repetition=1, campaign="c", mode="shape", load_mode="closed",
                users=2, stage=0, stage_users=2, phase="steady", target_rate=0.0,
                endpoints=("A",))
    return LiveStatus(**{**base, **changes})


def _scrape(figures: LiveFigures, status: LiveStatus) -> dict[str, list]:
    text = generate_latest(registry_for(LiveCollector(figures, lambda: status))).decode()
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def _value(samples, name: str, **labels) -> float:
    hits = [s.value for s in samples.get(name, [])
            if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(hits) == 1, f"{name} {labels}: {len(hits)} series"
    return hits[0]


def test_histograms_counters_and_gauges_count_exactly_what_the_batches_carried():
    rng = np.random.default_rng(7)
    ttfts = rng.uniform(0.004, 3.0, 200)
    rows = [_row(start_unix=990.0, ttft_s=t, ttfat_s=t + 0.05, e2e_s=t + 1.0, tpot_s=0.02,
                 itl_mean_s=0.02, answer_chunks=9, reasoning_chunks=3, output_tokens=12.0,
                 reasoning_tokens=3.0, prompt_tokens=50.0, send_lag_s=0.001, ok=True)
            for t in ttfts]
    rows += [_row(start_unix=990.0, e2e_s=0.5, ok=False, error_category="http_5xx")] * 3
    rows += [_row(start_unix=990.0, e2e_s=0.1, ok=False, error_category="read_timeout",
                  stage=1, stage_users=4, send_lag_s=0.4)]
    clock = Clock()
    figures = LiveFigures(clock)
    figures.add_batch(RecordBatch("w1", rows=rows[:100], in_flight={"A": 2},
                                  loop_lag_worst_s=0.003))
    figures.add_batch(RecordBatch("w2", rows=rows[100:], in_flight={"A": 3},
                                  loop_lag_worst_s=0.25))
    samples = _scrape(figures, _status())

    for bound in LATENCY_BUCKETS_S:
        assert _value(samples, f"{series.CLIENT_TTFT}_bucket", stage="0", le=str(bound)) == \
            np.sum(ttfts <= bound)
    assert _value(samples, f"{series.CLIENT_TTFT}_bucket", stage="0", le="+Inf") == 200
    assert math.isclose(_value(samples, f"{series.CLIENT_TTFT}_sum", stage="0"), ttfts.sum())
    # every gap of a request counts: 9 + 3 chunks are 11 gaps
    assert _value(samples, f"{series.CLIENT_ITL}_count", stage="0") == 200 * 11
    assert _value(samples, series.CLIENT_REQUESTS, stage="0", outcome="ok",
                  error_category="") == 200
    assert _value(samples, series.CLIENT_REQUESTS, outcome="failed",
                  error_category="http_5xx") == 3
    assert _value(samples, series.CLIENT_REQUESTS, stage="1", error_category="read_timeout") == 1
    assert _value(samples, series.CLIENT_OUTPUT_TOKENS) == 2400
    assert _value(samples, series.CLIENT_REASONING_TOKENS) == 600
    assert _value(samples, series.CLIENT_PROMPT_TOKENS) == 10000
    assert _value(samples, series.CLIENT_IN_FLIGHT, endpoint="A") == 5   # both workers
    assert _value(samples, series.CLIENT_LOOP_LAG, worker="w2") == 0.25
    assert _value(samples, series.CLIENT_SEND_LAG, endpoint="A") == 0.4
    assert _value(samples, series.CLIENT_PHASE, phase="steady") == 1
    assert _value(samples, series.CLIENT_PHASE, phase="ramp") == 0
    assert _value(samples, series.CLIENT_RUN_INFO, run="r1", campaign="c") == 1
    assert series.CLIENT_TARGET_RATE not in samples   # closed loop: no target rate

    # the health gauges show the worst of the last few seconds only
    clock.now += HEALTH_WINDOW_S + 1
    figures.add_batch(RecordBatch("w2", in_flight={"A": 0}, loop_lag_worst_s=0.002))
    later = _scrape(figures, _status(load_mode="open", target_rate=3.5))
    assert _value(later, series.CLIENT_LOOP_LAG, worker="w2") == 0.002
    assert _value(later, series.CLIENT_SEND_LAG, endpoint="A") == 0.0
    assert _value(later, series.CLIENT_IN_FLIGHT, endpoint="A") == 2
    assert _value(later, series.CLIENT_TARGET_RATE, endpoint="A") == 3.5
    assert _value(later, series.CLIENT_RECORDS_BEHIND, worker="w1") == HEALTH_WINDOW_S + 1


def test_every_live_metric_name_is_spelled_in_series():
    figures = LiveFigures(Clock())
    figures.add_batch(RecordBatch("w", rows=[_row(start_unix=1.0, ttft_s=0.1, ttfat_s=0.1,
                                                  e2e_s=0.2, tpot_s=0.01, itl_mean_s=0.01,
                                                  answer_chunks=3, send_lag_s=0.0, ok=True,
                                                  prompt_tokens=1.0, output_tokens=3.0,
                                                  reasoning_tokens=0.0)]))
    names = {name for name in _scrape(figures, _status(load_mode="open", target_rate=1.0))}
    spelled = {v for k, v in vars(series).items() if k.startswith("CLIENT_") and isinstance(v, str)}
    base = {n.removesuffix(suffix) for n in names
            for suffix in ("_bucket", "_count", "_sum", "") if n.endswith(suffix)} & spelled
    assert spelled - {series.CLIENT_PREFIX} == base, "a series name not in core.rundir.series"


def test_a_broken_status_never_breaks_the_scrape(caplog):
    def broken() -> LiveStatus:
        raise RuntimeError("boom")

    text = generate_latest(registry_for(LiveCollector(LiveFigures(), broken))).decode()
    assert text == "" and "could not render the live metrics" in caplog.text


def test_the_tab_takes_the_newest_stage_and_the_capture():
    rows = [_row(start_unix=100.0 + i, e2e_s=1.0, ttft_s=0.01 * (i + 1), ttfat_s=0.02,
                 tpot_s=0.005, output_tokens=10.0, reasoning_tokens=4.0, ok=True, stage=0)
            for i in range(10)]
    rows += [_row(start_unix=120.0 + i, e2e_s=1.0, ttft_s=0.1 * (i + 1), ttfat_s=0.2,
                  tpot_s=0.005, output_tokens=10.0, reasoning_tokens=0.0, ok=True, stage=1)
             for i in range(5)]
    rows += [_row(start_unix=126.0, e2e_s=0.5, ok=False, error_category="http_4xx", stage=1)]
    figures = LiveFigures(Clock(200.0))
    figures.add_batch(RecordBatch("w", rows=rows))
    capture = {("A", series.SERVER): [
        {"metric": series.VLLM_RUNNING, "value": 3.0}, {"metric": series.VLLM_WAITING, "value": 1.0},
        {"metric": series.VLLM_KV_CACHE_USAGE, "value": 0.25}],
        ("A", series.EXPORTER): [{"metric": series.GPU_UTILIZATION, "value": 0.5},
                                 {"metric": series.GPU_UTILIZATION, "value": 0.7},
                                 {"metric": series.GPU_MEMORY_USED, "value": 2 * 2**30}]}
    (row,) = webtab.tab_rows(figures.recent_requests(), capture, ["A"])
    expected = np.percentile([0.1, 0.2, 0.3, 0.4, 0.5], [50, 99]) * 1e3
    assert row["window"].startswith("stage 2") and row["requests"] == 6
    assert (row["ttft_p50_ms"], row["ttft_p99_ms"]) == tuple(round(v, 1) for v in expected)
    assert row["errors"] == "http_4xx: 1" and row["reasoning_share"] == 0.0
    assert row["output_tokens_per_s"] == round(50 / (126.5 - 121.0), 1)
    assert (row["vllm_running"], row["vllm_waiting"], row["kv_cache_percent"],
            row["gpu_util_percent"], row["gpu_memory_gib"]) == (3.0, 1.0, 25.0, 60.0, 2.0)
    (empty,) = webtab.tab_rows([], {}, ["B"])
    assert empty["requests"] == 0 and empty["ttft_p50_ms"] == webtab.NOT_AVAILABLE


def test_the_metrics_port_flag_refuses_what_is_not_a_port():
    proc = subprocess.run([sys.executable, "-m", "locustfiles.campaign", "--llm-metrics-port",
                           "99999", "--no-preflight"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "not a port" in proc.stderr


# ---- the real thing: a distributed run driven from Chromium ----

FIXED_SERVER_METRICS = (f'{series.VLLM_RUNNING}{{model_name="m"}} 3\n'
                        f'{series.VLLM_WAITING}{{model_name="m"}} 1\n'
                        f'{series.VLLM_KV_CACHE_USAGE}{{model_name="m"}} 0.25\n')
FIXED_EXPORTER_METRICS = (f'{series.GPU_UTILIZATION}{{gpu="0",UUID="GPU-1"}} 0.5\n'
                          f'{series.GPU_MEMORY_USED}{{gpu="0",UUID="GPU-1"}} 2147483648\n')


class _FixedMetrics(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = (FIXED_SERVER_METRICS if self.path == "/server" else FIXED_EXPORTER_METRICS).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _tab_table(browser) -> list[dict[str, str]]:
    """The LLM tab's rows as {column title: cell text} ([] while the page is loading)."""
    from selenium.common.exceptions import JavascriptException

    try:
        text = browser.execute_script("""
        for (const table of document.querySelectorAll('table')) {
          const heads = [...table.querySelectorAll('thead th')].map(th => th.innerText.trim());
          if (!heads.includes('TTFT p50 ms')) continue;
          return JSON.stringify([...table.querySelectorAll('tbody tr')].map(tr => {
            const cells = [...tr.querySelectorAll('td')].map(td => td.innerText.trim());
            return Object.fromEntries(heads.map((h, i) => [h, cells[i]]));
          }));
        }
        return '[]';""")
    except JavascriptException:   # the page is being replaced (navigation)
        return []
    return json.loads(text)


def _expected_tab(records: pd.DataFrame) -> dict[str, str]:
    """What the tab must show, from records.csv by the tab's own rule."""
    end = records["start_unix"] + records["e2e_s"]
    newest = records.loc[end.idxmax()]
    chosen = records[(records["stage_users"] == newest["stage_users"])
                     & (end >= end.max() - livemetrics.RECENT_WINDOW_S)]
    ok = chosen[chosen["ok"]]
    p50, p99 = np.percentile(ok["ttft_s"], [50, 99]) * 1e3
    e50, e99 = np.percentile(ok["e2e_s"], [50, 99])
    return {"Requests": str(len(chosen)), "TTFT p50 ms": f"{round(p50, 1):g}",
            "TTFT p99 ms": f"{round(p99, 1):g}", "E2E p50 s": f"{round(e50, 3):g}",
            "E2E p99 s": f"{round(e99, 3):g}"}


def _shown(row: dict[str, str], keys) -> dict[str, str]:
    out = {}
    for key in keys:
        text = row.get(key, "")
        try:
            out[key] = f"{float(text):g}"
        except ValueError:
            out[key] = text
    return out


@pytest.mark.slow
def test_the_llm_tab_and_the_master_metrics_match_the_records_of_a_distributed_run(stub,
                                                                                   tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    metrics_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FixedMetrics)
    threading.Thread(target=metrics_server.serve_forever, daemon=True).start()
    fixed = f"http://127.0.0.1:{metrics_server.server_address[1]}"
    url = stub(ttft_ms=15, itl_ms=3, reasoning_tokens=4)
    cfg = write_config(tmp_path / "ep.json", [{
        "label": "A", "base_url": url, "model": "stub-model",
        "metrics_url": f"{fixed}/server", "exporter_url": f"{fixed}/exporter"}])
    run_dir = tmp_path / "run"
    web_port, metrics_port, master_port = free_port(), free_port(), free_port()
    out = open(tmp_path / "locust.out", "wb")
    master = start_locust(cfg, run_dir, "--master", "--master-bind-host", "127.0.0.1",
                          "--master-bind-port", str(master_port), "--web-host", "127.0.0.1",
                          "--web-port", str(web_port), "--llm-metrics-port", str(metrics_port),
                          "--stop-timeout", "5", stdout=out, stderr=subprocess.STDOUT)
    workers = [subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "users.py"),
         "--endpoints-file", str(cfg), "--worker", "--master-host", "127.0.0.1",
         "--master-port", str(master_port)], cwd=ROOT, start_new_session=True, stdout=out,
        stderr=subprocess.STDOUT) for _ in range(2)]
    browser = None
    try:
        base = f"http://127.0.0.1:{web_port}"
        wait_until(lambda: _get_json(f"{base}/stats/requests").get("worker_count") == 2, 60,
                   "two workers connected", retry_on=(OSError, ValueError))
        browser = chromium(window="2100,560")   # the whole table in the README's screenshot
        browser.set_page_load_timeout(30)
        browser.get(base + "/")
        wait_until(lambda: browser.find_elements(By.NAME, "userCount"), 20, "the start form")
        for name in ("userCount", "spawnRate"):
            field = browser.find_element(By.NAME, name)
            field.send_keys(Keys.CONTROL, "a")
            field.send_keys("4")
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_until(lambda: records_written(run_dir) > 80, 60, "records from the workers")
        # the tab updates while the test runs
        browser.get(base + "/?tab=llm")
        wait_until(lambda: any(r.get("Requests", "0") not in ("", "0")
                               for r in _tab_table(browser)), 30, "live rows in the LLM tab")
        if os.environ.get("SAVE_SCREENSHOTS"):   # the README's picture, taken while it runs
            browser.save_screenshot(str(ROOT / "docs" / "img" / "llm-tab.png"))
        stop = [b for b in browser.find_elements(By.TAG_NAME, "button")
                if b.text.strip().lower() == "stop"]
        assert stop, "no Stop button"
        stop[0].click()
        wait_until(lambda: _get_json(f"{base}/stats/requests").get("state") == "stopped", 30,
                   "Locust to stop", retry_on=(OSError, ValueError))
        counted = lambda: sum(e["num_requests"] for e in _get_json(f"{base}/stats/requests")
                              ["stats"] if e["method"] == "CHAT")
        wait_until(lambda: records_written(run_dir) - 1 == counted() > 80, 30,
                   "every request in records.csv")
        records = pd.read_csv(run_dir / "records.csv")
        expected = _expected_tab(records)
        fixed_figures = {"vLLM running": "3", "vLLM waiting": "1", "KV cache %": "25",
                         "GPU util %": "50", "GPU mem GiB": "2", "Reasoning %": "25"}
        keys = [*expected, *fixed_figures]
        want = {**expected, **fixed_figures}
        try:
            wait_until(lambda: [_shown(r, keys) for r in _tab_table(browser)] == [want], 20,
                       "the LLM tab to show the records' figures")
        except Exception:
            raise AssertionError(f"tab {_tab_table(browser)} != records {want}") from None
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                      timeout=5).read().decode()
        samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples.setdefault(s.name, []).append(s)
        total = sum(s.value for s in samples[series.CLIENT_REQUESTS])
        assert total == len(records), "the master's counter and records.csv disagree"
        ok = records[records["ok"]]
        infinite = sum(s.value for s in samples[f"{series.CLIENT_TTFT}_bucket"]
                       if s.labels["le"] == "+Inf")
        assert infinite == ok["ttft_s"].notna().sum()
        below = sum(s.value for s in samples[f"{series.CLIENT_TTFT}_bucket"]
                    if s.labels["le"] == "0.05")
        assert below == (ok["ttft_s"] <= 0.05).sum()
        lag_workers = {s.labels["worker"] for s in samples[series.CLIENT_LOOP_LAG]}
        assert lag_workers == set(records["worker"]) and len(lag_workers) == 2
    finally:
        if browser is not None:
            browser.quit()
        for proc in (master, *workers):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in (master, *workers):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        out.close()
        metrics_server.shutdown()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete", (tmp_path / "locust.out").read_text()[-5000:]
    assert manifest["records_written"] == manifest["locust_requests"]
