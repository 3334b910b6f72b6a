"""Capacity under SLO, the analysis side (analysis.capacity): the paired goodput ratios, their
confidence interval and headline, and the report section, on synthetic capacity data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from analysis.capacity import (CAPACITY_SCHEMA, compare, endpoint_summary, headline, parse_slos,
                               ratio_summary, read_capacity, summarise)
from analysis.errors import AnalysisError

SLOS = parse_slos("ttft_p99<=0.5")


def _search(ep: str, rep: int, goodput: float | None, capacity: float | None = 1.0,
            status: str = "found") -> dict:
    return {"endpoint": ep, "repetition": rep, "status": status, "capacity": capacity,
            "low": capacity, "high": None, "reason": "", "probes": 4, "goodput_per_s": goodput}


def test_ratio_is_paired_by_repetition_with_a_t_interval_on_log_ratios():
    a = [10.0, 12.0, 8.0, 11.0, 9.0]
    b = [11.8, 14.4, 9.2, 13.2, 10.5]          # about +18%, drifting with A
    searches = [_search("A", i + 1, x) for i, x in enumerate(a)] + \
        [_search("B", i + 1, x) for i, x in enumerate(b)]
    (r,) = compare(searches, ["A", "B"], "A")
    logs = np.log(np.array(b) / np.array(a))
    half = sps.t.ppf(0.975, 4) * logs.std(ddof=1) / math.sqrt(5)
    assert r.n == 5 and r.per_repetition[3] == pytest.approx(9.2 / 8.0)
    assert r.ratio == pytest.approx(math.exp(logs.mean()))
    assert (r.ci_low, r.ci_high) == pytest.approx((math.exp(logs.mean() - half),
                                                   math.exp(logs.mean() + half)))
    # pairing removes the drift both share: the interval is far narrower than unpaired spread
    assert r.ci_high / r.ci_low < 1.1
    text = headline(r, SLOS)
    change = (math.exp(logs.mean()) - 1) * 100          # 17.6%
    assert text.startswith(f"B sustains {change:.0f}% more goodput than A at p99 TTFT <= 500 ms")
    assert f"(95% CI +{(r.ci_low - 1) * 100:.0f}% to +{(r.ci_high - 1) * 100:.0f}%, " \
           "5 repetitions)" in text


def test_a_ratio_and_its_inverse_mirror():
    ratios = [1.2, 1.1, 1.3]
    m, lo, hi = ratio_summary(ratios)
    mi, loi, hii = ratio_summary([1 / x for x in ratios])
    assert (m * mi, lo * hii, hi * loi) == pytest.approx((1.0, 1.0, 1.0))


def test_one_repetition_has_no_interval_and_says_so():
    (r,) = compare([_search("A", 1, 4.0), _search("B", 1, 3.0)], ["A", "B"], "A")
    assert r.n == 1 and r.ratio == pytest.approx(0.75) and math.isnan(r.ci_low)
    assert headline(r, SLOS) == ("B sustains 25% less goodput than A at p99 TTFT <= 500 ms "
                                 "(1 repetition: no confidence interval)")


def test_repetitions_without_a_capacity_are_left_out_with_the_reason():
    searches = [_search("A", 1, 4.0), _search("B", 1, 5.0),
                _search("A", 2, None, None, "late"), _search("B", 2, 5.0),
                _search("A", 3, 0.0, 0.0, "none_passed"), _search("B", 3, 1.0)]
    (r,) = compare(searches, ["A", "B"], "A")
    assert r.n == 1 and set(r.left_out) == {2, 3}
    assert "A: no capacity (late)" in r.left_out[2] and "no goodput" in r.left_out[3]
    nothing = compare([_search("A", 1, None, None, "down"), _search("B", 1, 2.0)],
                      ["A", "B"], "A")[0]
    assert nothing.n == 0 and "no comparison" in headline(nothing, SLOS)


def test_endpoint_summary_mean_and_interval():
    searches = [_search("A", i, g, c) for i, (g, c) in enumerate([(3.0, 2), (3.3, 3), (3.6, 3)])]
    s = endpoint_summary(searches, "A")
    assert s["with_capacity"] == 3
    assert s["goodput_per_s"]["mean"] == pytest.approx(3.3)
    half = sps.t.ppf(0.975, 2) * np.std([3.0, 3.3, 3.6], ddof=1) / math.sqrt(3)
    assert s["goodput_per_s"]["ci_high"] - 3.3 == pytest.approx(half)


def _capacity_file(campaign: Path) -> dict:
    data = {"capacity_schema": CAPACITY_SCHEMA, "campaign": campaign.name, "status": "complete",
            "mode": "closed", "level_name": "users",
            "settings": {"mode": "closed", "start": 2.0, "precision": 0.1, "max_probes": 12,
                         "max_level": 2048.0, "min_level": 1.0},
            "slos": [{"metric": "ttft_p99", "limit": 0.5, "text": "ttft_p99<=0.5"}],
            "goodput": "completed requests/s over the steady window of the capacity probe",
            "endpoints": ["A", "B"], "probes": [],
            "searches": [_search("A", 1, 2.0, 2), _search("B", 1, 3.0, 3),
                         _search("A", 2, 2.2, 2), _search("B", 2, 3.1, 3)]}
    data["comparison"] = summarise(data)
    (campaign / "runs" / "r01-A-p01").mkdir(parents=True)
    (campaign / "capacity.json").write_text(json.dumps(data))
    return data


def test_the_report_finds_capacity_json_beside_the_runs(tmp_path):
    data = _capacity_file(tmp_path / "c1")
    found = read_capacity([tmp_path / "c1" / "runs" / "r01-A-p01"])
    assert found["comparison"]["headlines"] == data["comparison"]["headlines"]
    assert found["comparison"]["headlines"][0].startswith(
        f"B sustains {(math.sqrt(3.0 / 2.0 * 3.1 / 2.2) - 1) * 100:.0f}% more goodput")
    assert read_capacity([tmp_path / "elsewhere" / "run"]) is None
    _capacity_file(tmp_path / "c2")
    with pytest.raises(AnalysisError, match="2 capacity campaigns"):
        read_capacity([tmp_path / "c1" / "runs" / "r01-A-p01",
                       tmp_path / "c2" / "runs" / "r01-A-p01"])
    (tmp_path / "c2" / "capacity.json").write_text("{not json")
    with pytest.raises(AnalysisError, match="unreadable"):
        read_capacity([tmp_path / "c2" / "runs" / "r01-A-p01"])


def test_capacity_section_and_summary_key(tmp_path):
    from types import SimpleNamespace

    from analysis.report.sections import capacity_section
    from analysis.report.summary import _capacity

    data = _capacity_file(tmp_path / "c1")
    data["path"] = str(tmp_path / "c1" / "capacity.json")
    result = SimpleNamespace(capacity=data, models={}, endpoints=["A", "B"])
    cx = SimpleNamespace(result=result)
    section = capacity_section(cx)
    kinds = [k for k, _ in section.blocks]
    assert section.title == "Capacity under SLO" and kinds.count("table") == 3
    assert data["comparison"]["headlines"][0] in section.blocks[1][1]
    assert capacity_section(SimpleNamespace(result=SimpleNamespace(capacity=None))) is None
    summary = _capacity(result)
    assert summary["comparison"]["ratios"][0]["n"] == 2 and len(summary["searches"]) == 4


def _probe_run(run_dir: Path, send_lag_s: float) -> Path:
    """One probe run of one stage (4 users, 10 s steady): 200 steady requests of TTFT 100 ms
    that left ``send_lag_s`` after they were due."""
    from support import synth

    stages = synth.stage_rows([4])
    st = stages[0]
    n = 200
    start = st["steady_unix"] + np.arange(n) * (10.0 / n)
    records = [{"run_id": run_dir.name, "endpoint": "A", "model": "model-A", "repetition": 1,
                "stage": 0, "stage_users": 4, "phase": "steady", "start_unix": t,
                "scheduled_unix": t - send_lag_s, "send_lag_s": send_lag_s, "ttft_s": 0.1,
                "e2e_s": 0.5, "ok": True, "output_tokens": 32.0} for t in start]
    config = synth.make_config(["A"], stages=(4,))
    manifest = synth.make_manifest(run_dir.name, config, end_unix=st["end_unix"])
    return synth.write_run(run_dir, manifest=manifest, records=records, stages=stages)


def test_the_lateness_rule_is_the_reports_unless_the_user_loosens_it(tmp_path):
    from analysis.capacity import lateness_note, probe_figures, verdict

    run = _probe_run(tmp_path / "r01-A-p01", send_lag_s=0.030)
    # the report's generator_late rule: the larger of 1% of TTFT p50 (1 ms) and 2 ms
    strict = probe_figures(run, SLOS)
    assert strict.late and "lateness p99 30.0 ms beyond 2.0 ms" in strict.lateness
    assert verdict(strict, SLOS)[0] == "late"
    # the user's explicit tolerance: 50 ms lets the probe count, 10 ms does not
    loose = probe_figures(run, SLOS, max_lateness_s=0.05)
    assert not loose.late and verdict(loose, SLOS) == ("pass", [])
    assert loose.metrics["ttft_p99"] == pytest.approx(0.1)
    tight = probe_figures(run, SLOS, max_lateness_s=0.01)
    assert tight.late and "beyond 10.0 ms" in tight.lateness
    # a punctual generator is never late
    assert not probe_figures(_probe_run(tmp_path / "r01-A-p02", 0.0005), SLOS).late
    # the tolerance is stated with the results, and only when it was given
    assert lateness_note({"settings": {"max_lateness_s": None}}) is None
    note = lateness_note({"settings": {"max_lateness_s": 0.05}})
    assert "50 ms" in note and "lower bounds" in note
