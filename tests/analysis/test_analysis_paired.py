"""Paired A/B (analysis.paired): the same requests on two endpoints, joined on request_key.

The data have a KNOWN paired effect: endpoint B's TTFT is A's for the same key times 1.2, times
lognormal per-request noise, with a per-request difficulty both arms share (what makes pairing
powerful: it cancels out of each pair's ratio) and a per-repetition random effect.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from support import synth
from analysis.build import Options, analyse
from analysis.paired import (SCOPE_REQUESTS, SCOPE_RUNS, RunRequests, analyse_paired,
                             pair_runs, paired_compare, paired_metrics, run_requests)
from analysis.report import write_report

EFFECT = 1.2          # B's TTFT / A's on the same request
STAGES = (1, 4)
N_PAIRED = 120        # keys both arms complete, per repetition and stage
EXTRA_A = 15          # A is faster in closed loop: it sends more; these have no partner in B


def _pairs(rng, n, effect=EFFECT, run_sd=0.01, difficulty_sd=0.8, noise_sd=0.25):
    """In memory: (a, b) TTFTs of n pairs of one repetition (seconds)."""
    u = rng.normal(0.0, run_sd)                       # the repetition's random effect
    d = rng.lognormal(0.0, difficulty_sd, n)          # per-request difficulty, shared
    a = 0.05 * d * rng.lognormal(0.0, noise_sd, n)
    b = 0.05 * d * effect * math.exp(u) * rng.lognormal(0.0, noise_sd, n)
    return a, b


def _records(arm: str, rep: int, stages: list[dict], ttft: dict, *, keys=True) -> list[dict]:
    rows = []
    for st in stages:
        stage = st["stage"]
        vals = ttft[stage]
        n = len(vals)
        t = np.linspace(st["steady_unix"] + 0.1, st["drain_unix"] - 0.1, n)
        for i, v in enumerate(vals):
            rows.append({"run_id": f"r{rep:02d}-{arm}", "endpoint": arm, "model": f"m-{arm}",
                         "repetition": rep, "stage": stage, "stage_users": STAGES[stage],
                         "phase": "steady", "start_unix": float(t[i]),
                         "request_key": f"{stage}/0-{i % 4 + 1}/{i // 4 + 1}" if keys else "",
                         "ttft_s": v, "ttfat_s": v, "tpot_s": 0.01, "e2e_s": v + 0.01 * 31,
                         "output_tokens": 32.0, "reasoning_tokens": 0.0, "answer_tokens": 32.0,
                         "tokens_from_usage": True, "itl_mean_s": 0.01, "itl_max_s": 0.02,
                         "http_status": 200, "ok": True})
        # not steady, or failed: never paired even with a matching key
        rows.append(dict(rows[-1], phase="warmup", start_unix=st["warmup_unix"] + 0.1,
                         request_key=f"{stage}/0-9/1" if keys else ""))
        rows.append(dict(rows[-1], phase="steady", ok=False, ttft_s=math.nan, e2e_s=0.01,
                         error_category="http_5xx", http_status=500,
                         start_unix=st["steady_unix"] + 0.05,
                         request_key=f"{stage}/0-9/2" if keys else ""))
    rows.sort(key=lambda r: r["start_unix"])
    return rows


def write_campaign(base, *, reps=3, seed=1, keys=True, arms=("A", "B")) -> dict:
    """Campaign run dirs r01-A, r01-B, ...: one endpoint per run, repetition in the manifest.
    Returns the TTFTs written: {(rep, stage): (a, b)} of the paired keys."""
    rng = np.random.default_rng(seed)
    config = synth.make_config(arms, stages=STAGES, metrics=False)
    truth = {}
    for rep in range(1, reps + 1):
        ttft = {arm: {} for arm in arms}
        for stage in range(len(STAGES)):
            a, b = _pairs(rng, N_PAIRED)
            truth[(rep, stage)] = (a, b)
            ttft["A"][stage] = list(a) + list(0.05 * rng.lognormal(0, 0.8, EXTRA_A))
            if "B" in ttft:
                ttft["B"][stage] = list(b)
        for j, arm in enumerate(arms):
            start = synth.T0 + 1000 * rep + 400 * j
            stages = synth.stage_rows(STAGES, start=start, ramp_s=1, warmup_s=2, steady_s=10,
                                      drain_s=1)
            run_id = f"r{rep:02d}-{arm}"
            manifest = synth.make_manifest(run_id, config, endpoints=[arm], repetition=rep,
                                           start_unix=start, end_unix=stages[-1]["end_unix"],
                                           campaign="paired")
            synth.write_run(base / run_id, manifest=manifest,
                            records=_records(arm, rep, stages, ttft[arm], keys=keys),
                            stages=stages)
    return truth


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    base = tmp_path_factory.mktemp("paired")
    truth = write_campaign(base)
    res = analyse([base], Options(seed=0, n_boot=1000))
    out = tmp_path_factory.mktemp("paired-report")
    return res, write_report(res, out), out, truth


def _est(res, metric="ttft_p50", level=None):
    return [e for e in res.paired.estimates if e.metric == metric and
            (level is None or e.level == level)]


def test_the_injected_effect_is_found_and_covered(campaign):
    res, _, _, truth = campaign
    ests = _est(res)
    assert [e.level for e in ests] == [1.0, 4.0]
    for e in ests:
        s = e.stat
        assert s.n_pairs == 3 * N_PAIRED and s.n_reps == 3 and s.scope == SCOPE_RUNS
        assert 14.0 < s.change_pct < 26.0, s
        assert s.ci_low_pct <= 20.0 <= s.ci_high_pct, s
        assert s.ci_low_pct > 0 and s.real is True
        # the mean paired difference, ms, is the data's
        a = np.concatenate([truth[(r, e.stage)][0] for r in (1, 2, 3)])
        b = np.concatenate([truth[(r, e.stage)][1] for r in (1, 2, 3)])
        assert s.mean_diff_ms == pytest.approx(float((b - a).mean() * 1000), rel=1e-9)
        assert s.mean_diff_ci_low_ms < s.mean_diff_ms < s.mean_diff_ci_high_ms
        assert e.verdict.startswith(f"On the same {3 * N_PAIRED} requests, B's TTFT is ")
        assert "% higher than A's (paired, 95% CI " in e.verdict
        assert e.verdict.endswith(": real difference (worse)")
    # every paired latency figure is there, named by the catalogue
    assert {e.metric for e in res.paired.estimates} == set(paired_metrics())
    assert {e.name for e in res.paired.estimates} == {"TTFT", "TTFAT", "TPOT", "E2E"}


def test_pairs_and_unpaired_counts(campaign):
    res, *_ = campaign
    counts = res.paired.counts
    assert len(counts) == 3 * len(STAGES)
    for c in counts:
        assert (c.baseline, c.endpoint) == ("A", "B")
        assert c.pairs == N_PAIRED
        assert c.unpaired_baseline == EXTRA_A and c.unpaired_endpoint == 0
        assert c.blank_baseline == c.blank_endpoint == 0
        assert c.runs == f"r0{c.repetition[-1]}-A, r0{c.repetition[-1]}-B"


def test_the_report_has_the_paired_section(campaign):
    res, paths, out, _ = campaign
    md = paths["md"].read_text()
    assert "## Paired A/B (same requests)" in md
    section = md.split("## Paired A/B (same requests)")[1].split("\n## ")[0]
    assert "### Paired A/B: the same requests on both endpoints" in section
    assert "### Paired A/B: pairs per repetition and stage" in section
    assert "the faster endpoint sends more requests" in section
    e = _est(res, level=1.0)[0]
    assert e.verdict.replace("&", "&amp;") in section
    html = paths["html"].read_text()
    assert '<section id="paired"><h2>Paired A/B (same requests)</h2>' in html
    assert 'id="table-paired"' in html and 'id="table-paired_counts"' in html
    summary = json.loads((out / "summary.json").read_text())
    assert summary["paired"]["reason"] == ""
    rows = [r for r in summary["paired"]["estimates"]
            if r["metric"] == "ttft_p50" and r["level"] == 1.0]
    assert len(rows) == 1
    assert rows[0]["pairs"] == e.stat.n_pairs
    assert rows[0]["change_pct"] == pytest.approx(e.stat.change_pct)
    assert rows[0]["ci_low_pct"] == pytest.approx(e.stat.ci_low_pct)
    assert rows[0]["verdict"] == e.verdict
    assert len(summary["paired"]["counts"]) == 3 * len(STAGES)
    table = pd.read_csv(out / "tables" / "paired.csv")
    assert set(table["metric"]) == set(paired_metrics())
    assert (out / "tables" / "paired_counts.csv").is_file()
    json.loads((out / "tables" / "paired.json").read_text())


def test_runs_without_keys_say_why(tmp_path):
    write_campaign(tmp_path / "runs", reps=1, keys=False)
    res = analyse([tmp_path / "runs"], Options(n_boot=200))
    assert not res.paired.estimates and "No request_key" in res.paired.reason
    paths = write_report(res, tmp_path / "report")
    section = paths["md"].read_text().split("## Paired A/B (same requests)")[1].split("\n## ")[0]
    assert section.strip().startswith("No request_key in these runs' records")
    summary = json.loads(paths["summary"].read_text())
    assert summary["paired"]["estimates"] == [] and "No request_key" in summary["paired"]["reason"]


def test_one_endpoint_says_why(tmp_path):
    write_campaign(tmp_path / "runs", reps=1, arms=("A",))
    res = analyse([tmp_path / "runs"], Options(n_boot=200))
    assert res.paired.reason == "One endpoint only: nothing to pair."


def test_one_repetition_covers_request_noise_only(tmp_path):
    write_campaign(tmp_path / "runs", reps=1)
    res = analyse([tmp_path / "runs"], Options(n_boot=300))
    e = _est(res, level=1.0)[0]
    assert e.stat.n_reps == 1 and e.stat.scope == SCOPE_REQUESTS
    paths = write_report(res, tmp_path / "report")
    assert "the CI covers request-level noise only" in paths["md"].read_text()


# ---------------------------------------------------------------------------------------------
# Pairing rules, on hand-made frames

def _rr(run, ep, rep, rows, *, campaign="c", blank=None):
    keyed = pd.DataFrame(rows, columns=["stage", "request_key", "ttft_s"])
    keyed.insert(0, "endpoint", ep)
    keyed.insert(2, "level", keyed["stage"].map({0: 1.0, 1: 4.0}).astype(float))
    for c in paired_metrics().values():
        if c not in keyed:
            keyed[c] = 0.1
    return RunRequests(run, campaign, rep, "closed", keyed, blank or {})


def test_keys_that_do_not_pair_are_not_paired():
    a = _rr("r01-A", "A", 1, [(0, "0/0-1/1", 0.10), (0, "0/0-1/2", 0.10),
                               (1, "0/0-1/3", 0.10),     # same key text, another stage
                               (0, "0/0-1/4", 0.10),     # A only
                               (0, "0/0-1/1", 0.50)],    # a duplicate: first kept
            blank={("A", 0): 7})
    b = _rr("r01-B", "B", 1, [(0, "0/0-1/1", 0.12), (0, "0/0-1/2", 0.12),
                               (0, "0/0-1/3", 0.12), (0, "0/0-1/9", 0.12)],
            blank={("B", 0): 2})
    b_other_rep = _rr("r02-B", "B", 2, [(0, "0/0-1/4", 0.12)])   # A's key, another repetition
    stages = pair_runs([a, b, b_other_rep], ["A", "B"], "A")
    by = {(s.repetition, s.stage): s for s in stages}
    s = by[("rep 1", 0)]
    assert sorted(s.pairs["request_key"]) == ["0/0-1/1", "0/0-1/2"]
    assert s.pairs.set_index("request_key").loc["0/0-1/1", "ttft_s_a"] == 0.10
    assert s.unpaired_baseline == 2 and s.unpaired_endpoint == 2   # A: /4 + duplicate; B: /3, /9
    assert (s.blank_baseline, s.blank_endpoint) == (7, 2)
    assert by[("rep 1", 1)].n_pairs == 0 and by[("rep 1", 1)].unpaired_baseline == 1
    assert by[("rep 2", 0)].n_pairs == 0 and by[("rep 2", 0)].unpaired_endpoint == 1
    res = analyse_paired([a, b, b_other_rep], ["A", "B"], "A", n_boot=100)
    assert [e.stat.n_pairs for e in res.estimates if e.metric == "ttft_p50"] == [2]
    assert "cannot judge" in res.estimates[0].verdict
    nothing = analyse_paired([_rr("r01-A", "A", 1, [(0, "k1", 0.1)]),
                              _rr("r01-B", "B", 1, [(0, "k2", 0.1)])], ["A", "B"], "A")
    assert not nothing.estimates and "no completed steady request of B" in nothing.reason


def test_run_requests_selects_steady_ok_records_and_changes_nothing():
    recs = synth.records_frame([
        {"endpoint": "A", "stage": 0, "phase": "steady", "ok": True, "request_key": "0/0-1/1",
         "ttft_s": 0.1},
        {"endpoint": "A", "stage": 0, "phase": "warmup", "ok": True, "request_key": "0/0-1/2",
         "ttft_s": 0.1},
        {"endpoint": "A", "stage": 0, "phase": "steady", "ok": False, "request_key": "0/0-1/3"},
        {"endpoint": "A", "stage": 0, "phase": "steady", "ok": True, "request_key": "",
         "ttft_s": 0.1},
        {"endpoint": "A", "stage": 0, "phase": "steady", "ok": True, "request_key": None,
         "ttft_s": 0.1},                                  # a missing key reads as blank
        {"endpoint": "A", "stage": 5, "phase": "steady", "ok": True, "request_key": "5/0-1/1",
         "ttft_s": 0.1},                                  # a stage without a window
    ])
    windows = pd.DataFrame({"stage": [0], "level": [1.0]})
    before = recs.copy()
    rr = run_requests(recs, windows, run="r", campaign="c", repetition=1)
    pd.testing.assert_frame_equal(recs, before)
    assert list(rr.keyed["request_key"]) == ["0/0-1/1"] and rr.blank == {("A", 0): 2}


# ---------------------------------------------------------------------------------------------
# The statistic's calibration, on in-memory data (the pure function, no run directories)

def test_coverage_of_the_95_ci_is_nominal():
    """200 seeds, 3 repetitions of 300 pairs each, a small per-repetition random effect (log sd
    0.01) beside request noise (log sd 0.25 per arm). 200 bootstrap resamples per CI instead of
    1000, for speed (the percentile ends are a little noisier, which does not bias coverage).
    Binomial reasoning: with true coverage 0.95, the count over 200 independent seeds has sd
    sqrt(0.95 x 0.05 / 200) = 0.015; [0.90, 0.99] is about -3.2 sd to +2.6 sd, so a correctly
    calibrated interval fails this less than 1% of the time, while one at 0.85 or 1.00 fails it.
    (The seeds are fixed, so the figure is deterministic: measured 0.955.)"""
    hits = 0
    seeds = 200
    for seed in range(seeds):
        rng = np.random.default_rng(10_000 + seed)
        reps = [_pairs(rng, 300) for _ in range(3)]
        s = paired_compare(reps, n_boot=200, seed=seed)
        hits += s.ci_low_pct <= (EFFECT - 1) * 100 <= s.ci_high_pct
    coverage = hits / seeds
    assert 0.90 <= coverage <= 0.99, coverage


def test_no_effect_gives_no_clear_difference_in_most_seeds():
    """Null: B = A in distribution, pair by pair. A 95% CI excludes 0% in about 5% of seeds."""
    from analysis.paired import paired_verdict
    clear = 0
    seeds = 100
    for seed in range(seeds):
        rng = np.random.default_rng(20_000 + seed)
        reps = [_pairs(rng, 200, effect=1.0) for _ in range(3)]
        s = paired_compare(reps, n_boot=200, seed=seed)
        words = paired_verdict("B", "TTFT", s, True, "A")
        assert words.endswith(": no clear difference") == (s.real is False)
        clear += s.real is False
    assert clear >= 88, clear


def test_pairing_beats_independent_comparison():
    """The same data, its pairs broken (B shuffled against A): the paired CI is far narrower,
    because the per-request difficulty both arms share cancels out of each pair's ratio. One
    repetition, so that both CIs hold request-level noise only."""
    rng = np.random.default_rng(3)
    reps = [_pairs(rng, 900)]
    paired = paired_compare(reps, n_boot=300, seed=1)
    shuffled = [(a, rng.permutation(b)) for a, b in reps]
    broken = paired_compare(shuffled, n_boot=300, seed=1)
    assert paired.ci_low_pct <= 20 <= paired.ci_high_pct
    assert (paired.ci_high_pct - paired.ci_low_pct) * 2 < (broken.ci_high_pct - broken.ci_low_pct)


def test_the_terminal_summary_ends_with_the_paired_verdicts(campaign):
    from analysis.report.summary import paired_terminal_verdicts, summary_text

    res, *_ = campaign
    text = summary_text(res)
    heading = next(line for line in text.splitlines() if line.startswith("Paired A/B at "))
    level = float(res.at_level) if res.at_level is not None else 4.0
    assert heading.startswith(f"Paired A/B at {level:g} users")
    block = text.split(heading)[1].split("\n\n")[0].strip().splitlines()
    wanted = [v for _, v in paired_terminal_verdicts(res)]
    assert [line.strip() for line in block] == wanted
    # every paired metric at that level, each the estimate's own verdict, TTFT first
    at_level = [e for e in res.paired.estimates if e.level == level]
    assert sorted(wanted) == sorted(e.verdict for e in at_level) and len(wanted) == 4
    summary = json.loads((campaign[2] / "summary.json").read_text())["paired"]
    assert summary["headline"] == wanted and summary["headline_level"] == level
    assert wanted[0].startswith(f"On the same {3 * N_PAIRED} requests, B's TTFT is ")
