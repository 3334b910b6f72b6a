"""The report directory: files, study-shaped tables, inline PNG plots, escaping, reproducibility."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from support import synth
from analysis.build import Options, analyse
from analysis.report import summary_text, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HOSTILE_MODEL = "<script>alert('model')</script>"
HOSTILE_ERROR = "<img src=x onerror=alert('err')>"


def _spec(rep: int, **kw) -> synth.SynthSpec:
    spec = synth.SynthSpec(stages=(1, 4, 16), ramp_s=1.0, warmup_s=1.0, steady_s=8.0,
                           drain_s=1.0, repetition=rep, seed=rep, start_unix=synth.T0 + 100 * rep,
                           **kw)
    return spec


@pytest.fixture(scope="module")
def two_endpoint_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    for rep in (1, 2):
        spec = _spec(rep)
        spec.profiles["A"].error_rate = 0.05
        synth.synth_run(base / f"rep{rep}", spec)
    return base


@pytest.fixture(scope="module")
def report(two_endpoint_runs, tmp_path_factory):
    res = analyse([two_endpoint_runs], Options(n_boot=200, slos={"ttft_ms": 80}))
    out = tmp_path_factory.mktemp("report")
    return res, write_report(res, out), out


def test_report_files(report):
    res, paths, out = report
    for name in ("report.html", "report.md", "summary.json"):
        assert (out / name).is_file()
    for name in ("at_16", "gpu_utilization", "gpu_memory", "latency", "throughput", "tokens",
                 "server", "errors", "comparisons", "per_run", "runs", "combined"):
        assert (out / "tables" / f"{name}.csv").is_file(), name
        json.loads((out / "tables" / f"{name}.json").read_text())
    summary = json.loads((out / "summary.json").read_text())   # strict JSON: no NaN
    assert summary["endpoints"] == ["A", "B"] and summary["at_level"] == 16.0
    assert summary["at"]["req_per_s"]["B"]["vs_baseline"]["real"] in ("yes", "no", "n/a")
    per_run = pd.read_csv(out / "tables" / "per_run.csv")
    assert len(per_run) == 2 * 2 * 3


def test_markdown_has_the_study_tables(report):
    res, paths, out = report
    md = paths["md"].read_text()
    for heading in ("## GPU utilization by concurrency", "## GPU memory",
                    "## At 16 concurrent requests", "### Token-level figures by concurrency",
                    "## Definitions", "## Test setup", "## Warnings"):
        assert heading in md, heading
    at = md.split("## At 16 concurrent requests")[1].split("\n\n")[1]
    assert at.splitlines()[0] == "| metric | A (qwen2.5) | B (qwen3) | change | real? |"
    assert "| throughput (req/s) |" in at and "| mean response time (ms) |" in at
    assert "TTFT: request sent -> first streamed token" in md       # core definitions printed
    assert "Completed req/s: number of completed (ok)" in md       # computed definitions
    assert "linear interpolation" in md


def test_html_has_valid_inline_pngs(report):
    res, paths, out = report
    html = paths["html"].read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) >= 5   # latency, throughput, utilization, distribution, time series
    for b64 in images:
        data = base64.b64decode(b64, validate=True)
        assert data.startswith(PNG_SIGNATURE)
        assert data[12:16] == b"IHDR"
    # scripts: plotly.js once, then one per interactive figure (tests/analysis/
    # test_report_interactive.py); the PNGs of interactive figures sit in <noscript>
    n_plots = html.count("Plotly.newPlot(")
    assert n_plots >= 4 and html.lower().count("<script") == 2 + n_plots


def test_summary_text(report):
    res, paths, out = report
    text = summary_text(res, paths)
    assert "At 16 users" in text and "throughput (req/s)" in text
    assert "Report:" in text
    assert len(text.splitlines()) < 40


def test_reproducible(two_endpoint_runs, report):
    res, _, _ = report
    again = analyse([two_endpoint_runs], Options(n_boot=200, slos={"ttft_ms": 80}))
    pd.testing.assert_frame_equal(res.comparisons, again.comparisons)
    pd.testing.assert_frame_equal(res.combined, again.combined)


def test_hostile_strings_are_escaped(tmp_path):
    spec = _spec(1)
    spec.profiles = {"A": synth.Profile(model=HOSTILE_MODEL, error_rate=0.2),
                     "B": synth.Profile(model="b$x$", error_rate=0.0)}
    synth.synth_run(tmp_path / "run", spec)
    rec = pd.read_csv(tmp_path / "run" / "records.csv", keep_default_na=False)
    rec.loc[rec["ok"].astype(str) == "False", "error_message"] = HOSTILE_ERROR
    rec.to_csv(tmp_path / "run" / "records.csv", index=False)
    res = analyse([tmp_path / "run"], Options(n_boot=200))
    paths = write_report(res, tmp_path / "report")
    html = paths["html"].read_text()
    assert HOSTILE_MODEL not in html and HOSTILE_ERROR not in html
    assert "&lt;script&gt;alert(&#x27;model&#x27;)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(&#x27;err&#x27;)&gt;" in html
    assert "<img src=x" not in html
    assert html.lower().count("<script") == 2 + html.count("Plotly.newPlot(")   # only ours
    # in the figures' data (plotly labels read HTML) the name is escaped, then JSON-escaped
    assert "&lt;script&gt;alert('model')&lt;\\u002fscript&gt;" in html
    md = paths["md"].read_text()
    assert HOSTILE_MODEL not in md and HOSTILE_ERROR not in md
    assert "&lt;script>" in md and "<script" not in md
