"""report.html's interactive figures (plotly, inlined): the right traces and values, nothing
fetched from a network, and in Chromium: drawn, hover shows the table's value, zoom works.

``SAVE_SCREENSHOTS=1`` makes the browser test save docs/img/report-interactive.png.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from support import synth
from support.browser import chromium
from analysis.build import Options, analyse
from analysis.report import write_report
from analysis.report.model import Lookup

ROOT = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
INTERACTIVE = ("latency", "throughput", "utilization", "timeseries-A", "timeseries-B")
LATENCY_METRICS = ("ttft_p50", "ttft_p99", "e2e_mean", "e2e_p99")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    for rep in (1, 2):
        spec = synth.SynthSpec(stages=(1, 4, 16), ramp_s=1.0, warmup_s=1.0, steady_s=8.0,
                               drain_s=1.0, repetition=rep, seed=rep,
                               start_unix=synth.T0 + 100 * rep)
        spec.profiles["A"].error_rate = 0.05
        synth.synth_run(base / f"rep{rep}", spec)
    res = analyse([base], Options(n_boot=200, slos={"ttft_ms": 80}))
    out = tmp_path_factory.mktemp("report")
    return res, write_report(res, out), out


def plots(html: str) -> dict[str, tuple[list, dict, dict]]:
    """Every Plotly.newPlot(id, data, layout, config) call of the page, decoded."""
    dec = json.JSONDecoder()
    found = {}
    for m in re.finditer(r"Plotly\.newPlot\(", html):
        args, i = [], m.end()
        for _ in range(4):
            while html[i] in " \n\t,":
                i += 1
            value, i = dec.raw_decode(html, i)
            args.append(value)
        found[args[0]] = tuple(args[1:])
    return found


def test_interactive_figures_have_the_table_values(report):
    res, paths, out = report
    html = paths["html"].read_text()
    found = plots(html)
    assert sorted(found) == sorted(f"plot-{f}" for f in INTERACTIVE)
    lk = Lookup(res)
    names = {f"{ep} ({res.models[ep]})": ep for ep in res.endpoints}
    data, layout, config = found["plot-latency"]
    assert config["displaylogo"] is False and config["responsive"] is True
    assert "Latency vs concurrency" in layout["title"]["text"]
    assert layout["xaxis"]["title"]["text"] == "concurrency (users)"
    assert layout["yaxis"]["title"]["text"] == "ms"
    assert len(data) == len(res.endpoints) * len(LATENCY_METRICS)     # 4 lines per endpoint
    groups = {t["legendgroup"] for t in data}
    assert groups == set(names)                                       # one group per endpoint
    assert sum(t["showlegend"] for t in data) == len(res.endpoints)  # one legend entry each
    per_panel = 2 * len(res.endpoints)    # panel 1: TTFT p50, p99 per endpoint; 2: E2E mean, p99
    for k, t in enumerate(data):
        ep = names[t["legendgroup"]]
        metric = LATENCY_METRICS[2 * (k // per_panel) + k % 2]
        assert t["x"] == [1.0, 4.0, 16.0]
        for x, y, text in zip(t["x"], t["y"], t["customdata"]):
            row = lk.get(ep, x, metric)
            assert y == pytest.approx(row.mean)
            assert text == lk.cell(ep, x, metric)     # the hover shows the table's text
        assert "%{customdata}" in t["hovertemplate"]
    # the At-16 table and the hover agree
    cell = lk.cell("A", 16, "ttft_p50")
    assert f"<td>{cell}</td>" in html
    data, layout, _ = found["plot-throughput"]
    assert [t["name"] for t in data if t["showlegend"]] == list(names)
    assert {layout["yaxis"]["title"]["text"], layout["yaxis2"]["title"]["text"]} == {
        "req/s", "tokens/s"}
    for t in data:
        assert len(t["x"]) == 3 and len(t["error_y"]["array"]) == 3
    # time series: users, completed, failed (A has errors), TTFT, a metric; one x zoom
    data, layout, _ = found["plot-timeseries-A"]
    assert [t["name"] for t in data][:4] == ["users", "completed", "failed", "TTFT p50"]
    ts = res.timeseries["A"]
    assert len(data[1]["x"]) == len(ts.t) and data[1]["y"] == [float(v) for v in ts.completed]
    panels = len([k for k in layout if k.startswith("xaxis")])
    assert panels == 4 and all(layout[f"xaxis{i}"]["matches"] == "x" for i in range(2, 5))
    assert len([s for s in layout["shapes"] if s["xref"] == "x"]) == len(ts.bands)


def test_report_html_is_self_contained(report):
    res, paths, out = report
    html = paths["html"].read_text()
    assert html.count("plotly.js v") == 1                    # the library, inlined once
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", html, re.S)
    assert sum("plotly.js v" in s for s in scripts) == 1
    for s in scripts:                     # the figures' scripts name no URL (the library's
        if "plotly.js v" not in s:        # strings hold links, for charts not drawn here)
            assert not re.search(r"https?:|//[a-z]", s, re.I), s[:200]
    html = re.sub(r"(<script[^>]*>).*?(</script>)", r"\1\2", html, flags=re.S)
    assert not re.search(r"<script[^>]*\ssrc\s*=", html, re.I)
    assert not re.search(r"<link\b", html, re.I)
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html, re.I)
    assert not re.search(r"@import|url\(\s*['\"]?https?:", html, re.I)
    assert html.count("<noscript><img") == len(INTERACTIVE)  # the static figure without scripts


def test_report_md_keeps_the_pngs(report):
    res, paths, out = report
    md = paths["md"].read_text()
    pngs = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", md)
    assert sorted(pngs) == sorted(f"figures/{f}.png" for f in (*INTERACTIVE, "distribution"))
    for p in pngs:
        assert (out / p).read_bytes().startswith(PNG_SIGNATURE)
    assert "<script" not in md and "plotly" not in md.lower()
    assert "(interactive in [report.html](report.html#fig-latency))" in md


def test_scrub_leaves_plotly_js_alone():
    from plotly.offline import get_plotlyjs

    from core import secrets
    js = get_plotlyjs()
    t0 = time.perf_counter()
    assert secrets.scrub(js) == js
    assert time.perf_counter() - t0 < 5.0


def _browser():
    return chromium(window="1200,800")


_HOVER = """
const gd = document.getElementById(arguments[0]);
Plotly.Fx.hover(gd, [{curveNumber: arguments[1], pointNumber: arguments[2]}]);
const layer = gd.querySelector('.hoverlayer');
return layer ? layer.textContent : '';
"""
_ZOOM = """
const gd = document.getElementById(arguments[0]), done = arguments[arguments.length - 1];
const before = gd._fullLayout.xaxis.range.slice();
Plotly.relayout(gd, {'xaxis.range': [arguments[1], arguments[2]]}).then(
    () => done([before, gd._fullLayout.xaxis.range.slice(),
                gd._fullLayout.xaxis2 ? gd._fullLayout.xaxis2.range.slice() : null]));
"""


@pytest.mark.slow
def test_report_in_chromium_offline(report):
    from selenium.webdriver.support.ui import WebDriverWait

    res, paths, out = report
    lk = Lookup(res)
    browser = _browser()
    try:
        browser.execute_cdp_cmd("Network.enable", {})
        browser.execute_cdp_cmd("Network.emulateNetworkConditions", {
            "offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
        browser.set_page_load_timeout(60)
        browser.get(paths["html"].resolve().as_uri())
        ids = [f"plot-{f}" for f in INTERACTIVE]
        WebDriverWait(browser, 60).until(lambda b: b.execute_script(
            "return arguments[0].every(id => document.querySelector("
            "'#' + id + '.js-plotly-plot .main-svg'))", ids))
        # nothing but the file itself (and data: URIs) was loaded
        urls = browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)")
        assert not [u for u in urls if not u.startswith(("file:", "data:"))], urls
        # every trace drawn: one legend entry per endpoint on the latency figure
        legend = browser.execute_script(
            "return [...document.querySelectorAll('#plot-latency .legend .traces')]"
            ".map(e => e.textContent)")
        assert legend == [f"{ep} ({res.models[ep]})" for ep in res.endpoints]
        # hover: trace 0 is A's TTFT p50, point 2 the level 16
        text = browser.execute_script(_HOVER, "plot-latency", 0, 2)
        assert lk.cell("A", 16, "ttft_p50") in text and "TTFT p50" in text, text
        text = browser.execute_script(_HOVER, "plot-throughput", 0, 1)
        assert lk.cell("A", 4, "req_per_s") in text, text
        if os.environ.get("SAVE_SCREENSHOTS") == "1":
            browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": 1200, "height": 800, "deviceScaleFactor": 1, "mobile": False})
            browser.execute_script(
                "const f = document.getElementById('fig-latency');"
                "window.scrollTo(0, f.getBoundingClientRect().top + window.scrollY - 10);"
                "Plotly.Fx.hover('plot-latency', [{curveNumber: 0, pointNumber: 2}]);")
            time.sleep(0.5)
            target = ROOT / "docs" / "img" / "report-interactive.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(browser.get_screenshot_as_png())
        # zoom: the x range follows; the time series' stacked panels zoom together
        before, after, _ = browser.execute_async_script(_ZOOM, "plot-latency", 0.1, 0.9)
        assert before != after and after == pytest.approx([0.1, 0.9])
        before, after, second = browser.execute_async_script(_ZOOM, "plot-timeseries-A", 5, 15)
        assert after == pytest.approx([5, 15]) and second == pytest.approx([5, 15])
        # a click on a legend entry hides that endpoint's lines (in both panels)
        browser.execute_script("Plotly.relayout('plot-latency', {'xaxis.autorange': true})")
        browser.find_elements("css selector", "#plot-latency .legend .traces .legendtoggle")[0]\
            .click()
        visible = WebDriverWait(browser, 10).until(lambda b: b.execute_script(   # plotly waits
            "const v = document.getElementById('plot-latency').data.map(t => t.visible);"
            "return v.includes('legendonly') ? v : null"))       # for a double click first
        groups = browser.execute_script(
            "return document.getElementById('plot-latency').data.map(t => t.legendgroup)")
        assert {g for g, v in zip(groups, visible) if v == "legendonly"} == {groups[0]}
        assert all(v != "legendonly" for g, v in zip(groups, visible) if g != groups[0])
        browser.execute_script("Plotly.restyle('plot-latency', {visible: true})")
        try:
            logs = browser.get_log("browser")
        except Exception:     # a driver without the log endpoint
            logs = []
        errors = [x for x in logs if x.get("level") == "SEVERE"]
        assert not errors, errors
    finally:
        browser.quit()
