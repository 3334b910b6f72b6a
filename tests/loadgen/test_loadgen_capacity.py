"""Capacity under SLO (locustfiles.capacity): the search against stubs with a known capacity,
the comparison of two, the refusal of late and down probes, and the --slo grammar.

The stub's queueing model (--slots C) sets the answer: with service time S = ttft + (tokens - 1)
x itl, a closed loop of C users never waits (TTFT = ttft), while C + 1 users make some request
wait at least S / C in every period (docs/capacity.md). An SLO between the two, here
ttft_p99 <= 0.9 s with ttft 0.8 s and S / C >= 0.3 s, has capacity exactly C users. (A TTFT
this long also keeps the generator_late limit, 1% of TTFT p50, well above a busy machine's
scheduling noise.)
"""

from __future__ import annotations

import json
import math
import random

import pytest

from analysis.capacity import FAIL, LATE, PASS, SloError, parse_slos
from locustfiles.capacity import (ABOVE_MAX, BUDGET, FOUND, NONE_PASSED, STOPPED_DOWN,
                                  STOPPED_LATE, Probe, SearchSettings, next_step, run_searches)
from support.campaign import run_campaign, write_config

TTFT_MS, ITL_MS, TOKENS = 800.0, 10.0, 16
SERVICE_S = (TTFT_MS + (TOKENS - 1) * ITL_MS) / 1e3      # 0.95 s
TTFT_LIMIT_S = 0.9


def _closed(start: float = 1, precision: float = 0.1, max_probes: int = 12) -> SearchSettings:
    return SearchSettings("closed", float(start), precision, max_probes, start * 1024, 1.0)


def _open(start: float = 1.0, precision: float = 0.1, max_probes: int = 20) -> SearchSettings:
    return SearchSettings("open", start, precision, max_probes, start * 1024, start / 1024)


def _knee(capacity: float, late_at: dict[float, int] | None = None):
    """A probe runner for the pure search: pass up to ``capacity``; ``late_at``: level -> how
    many probes there come back late first."""
    late_at = dict(late_at or {})

    def run(ep: str, rep: int, number: int, level: float) -> Probe:
        if late_at.get(level, 0) > 0:
            late_at[level] -= 1
            return Probe(ep, rep, number, level, LATE, reason="lateness p99 9 ms beyond 2 ms")
        ok = level <= capacity
        return Probe(ep, rep, number, level, PASS if ok else FAIL,
                     {"ttft_p99": 0.1 if ok else 0.9}, goodput_per_s=level)
    return run


SLOS = parse_slos(f"ttft_p99<={TTFT_LIMIT_S}")


# ---- the search, as a pure function of probe results ------------------------------------------
@pytest.mark.parametrize("capacity,start", [(4, 1), (37, 8), (1, 4), (300, 2)])
def test_closed_search_finds_whole_users(capacity, start):
    searches = run_searches(["A"], 1, _closed(start, max_probes=16), _knee(capacity), SLOS,
                            say=lambda _: None)
    (s,) = searches
    assert s.step.status == FOUND
    # the bracket holds the capacity, tight to max(1 user, 10% of the low end)
    assert s.step.low <= capacity < s.step.high
    assert s.step.high - s.step.low <= max(1, math.floor(0.1 * s.step.low))
    if capacity < 10:
        assert s.step.capacity == capacity


@pytest.mark.parametrize("capacity", [0.37, 13.7, 250.0])
def test_open_search_brackets_within_precision(capacity):
    searches = run_searches(["A"], 1, _open(), _knee(capacity), SLOS, say=lambda _: None)
    step = searches[0].step
    assert step.status == FOUND and step.low <= capacity < step.high
    assert step.high / step.low - 1 <= 0.1 + 1e-9


def test_open_search_on_an_m_d_c_queue_finds_the_computed_capacity():
    """The stub's open-loop answer, computed: Poisson arrivals, C slots, deterministic service
    S (an M/D/C queue, FIFO). The probe simulates the p99 TTFT (ttft + wait) of 4000 arrivals;
    the search must land within its precision of the highest rate where it stays <= the SLO
    (found here by a fine scan of the same simulation)."""
    slots, ttft = 4, TTFT_MS / 1e3

    def p99_ttft(rate: float) -> float:
        rng = random.Random(7)
        free = [0.0] * slots
        t, waits = 0.0, []
        for _ in range(4000):
            t += rng.expovariate(rate)
            i = min(range(slots), key=free.__getitem__)
            start = max(t, free[i])
            waits.append(start - t)
            free[i] = start + SERVICE_S
        waits.sort()
        return ttft + waits[int(0.99 * (len(waits) - 1))]

    def run(ep, rep, number, level):
        value = p99_ttft(level)
        return Probe(ep, rep, number, level, PASS if value <= TTFT_LIMIT_S else FAIL,
                     {"ttft_p99": value}, goodput_per_s=level)

    step = run_searches(["A"], 1, _open(start=1.0, precision=0.05), run, SLOS,
                        say=lambda _: None)[0].step
    scan = [r / 100 for r in range(20, 500)]
    truth = max(r for r in scan if p99_ttft(r) <= TTFT_LIMIT_S)
    assert step.status == FOUND
    assert step.low <= truth * 1.01 and truth < step.high * 1.01, (step, truth)
    assert truth < slots / SERVICE_S           # below the saturation rate C / S


def test_budget_above_max_and_nothing_passing():
    step = run_searches(["A"], 1, _closed(1, max_probes=3), _knee(100), SLOS,
                        say=lambda _: None)[0].step
    assert step.status == BUDGET and step.capacity == 4 and step.high is None
    small = SearchSettings("closed", 1.0, 0.1, 12, 8.0, 1.0)
    step = run_searches(["A"], 1, small, _knee(100), SLOS, say=lambda _: None)[0].step
    assert step.status == ABOVE_MAX and step.capacity == 8
    step = run_searches(["A"], 1, _closed(4), _knee(0), SLOS, say=lambda _: None)[0].step
    assert step.status == NONE_PASSED and step.capacity == 0


def test_a_late_probe_is_reprobed_once_and_never_counted():
    lines: list[str] = []
    # late once at 4 users: probed again, and the capacity still found
    s = run_searches(["A"], 1, _closed(1), _knee(4, {4.0: 1}), SLOS, say=lines.append)[0]
    assert [p.level for p in s.probes][:4] == [1, 2, 4, 4]
    assert s.step.status == FOUND and s.step.capacity == 4
    assert any("LATE" in line for line in lines)
    # late twice at one level: the search stops with no capacity, saying why
    s = run_searches(["A"], 1, _closed(1), _knee(4, {4.0: 2}), SLOS, say=lambda _: None)[0]
    assert s.step.status == STOPPED_LATE and s.step.capacity is None
    assert "late" in s.step.reason and "--workers" in s.step.reason
    assert s.as_dict()["capacity"] is None and s.as_dict()["goodput_per_s"] is None


def test_a_late_probe_is_not_read_as_pass_or_fail():
    """The pure step function on injected results: a late probe leaves the bracket alone."""
    s = _closed(1)
    probes = [Probe("A", 1, 1, 1.0, PASS), Probe("A", 1, 2, 2.0, PASS),
              Probe("A", 1, 3, 4.0, LATE, reason="late")]
    assert next_step(s, probes).level == 4.0
    probes.append(Probe("A", 1, 4, 4.0, LATE, reason="late"))
    stop = next_step(s, probes)
    assert stop.done and stop.status == STOPPED_LATE and stop.capacity is None
    assert (stop.low, stop.high) == (2.0, None)


def test_a_down_server_stops_its_searches():
    def run(ep, rep, number, level):
        if ep == "B":
            return Probe(ep, rep, number, level, "down",
                         reason="5 of 5 requests failed to connect (connection_refused)")
        return _knee(4)(ep, rep, number, level)

    lines: list[str] = []
    searches = run_searches(["A", "B"], 2, _closed(1), run, SLOS, say=lines.append)
    by = {(s.endpoint, s.repetition): s for s in searches}
    assert by[("B", 1)].step.status == STOPPED_DOWN and len(by[("B", 1)].probes) == 1
    assert by[("B", 2)].step.status == "skipped" and not by[("B", 2)].probes
    assert by[("A", 2)].step.capacity == 4
    assert any("connection_refused" in line for line in lines)


def test_endpoints_take_turns_probe_by_probe():
    order: list[str] = []

    def run(ep, rep, number, level):
        order.append(ep)
        return _knee(4 if ep == "A" else 6)(ep, rep, number, level)

    run_searches(["A", "B"], 1, _closed(1), run, SLOS, say=lambda _: None)
    # alternating while both search; the longer search finishes alone
    assert order[:8] == ["A", "B"] * 4


# ---- the --slo grammar -------------------------------------------------------------------------
def test_slo_grammar():
    slos = parse_slos("ttft_p99<=0.5, tpot_p90 <= 0.05,error_rate<=0.01")
    assert [(s.metric, s.limit) for s in slos] == [("ttft_p99", 0.5), ("tpot_p90", 0.05),
                                                    ("error_rate", 0.01)]
    assert slos[0].words() == "p99 TTFT <= 500 ms" and slos[2].words() == "error rate <= 1%"
    assert parse_slos(["e2e_p50<=2", "itl_p99<=0.1", "ttfat_p95<=1"])[1].metric == "itl_p99"


@pytest.mark.parametrize("text,says", [
    ("", "--slo is empty"),
    ("ttft<=0.5", "unknown metric 'ttft'"),
    ("ttft_p99=0.5", "METRIC<=VALUE"),
    ("ttft_p99<=500ms", "in seconds"),
    ("ttft_p99<=5000", "did you mean milliseconds"),
    ("ttft_ms<=500", "in seconds under the percentile's name"),
    ("error_rate<=5", "share of requests"),
    ("ttft_p99<=0", "> 0"),
    ("ttft_p99<=0.5,ttft_p99<=0.4", "given twice"),
])
def test_slo_errors_say_what_to_write(text, says):
    with pytest.raises(SloError) as err:
        parse_slos(text)
    assert says in str(err.value)


def test_campaign_refuses_bad_capacity_flags(tmp_path):
    cfg = write_config(tmp_path / "c.json", [{"label": "A", "base_url": "http://127.0.0.1:9/v1",
                                              "model": "m"}])
    base = ["--endpoints-file", str(cfg), "--results-dir", str(tmp_path / "res"),
            "--no-preflight"]
    for extra, says in ((["--slo", "ttft_p99<=0.5"], "add --capacity"),
                        (["--capacity"], "--capacity needs --slo"),
                        (["--capacity", "--slo", "ttft_p99<=x"], "not a number"),
                        (["--capacity", "--slo", "ttft_p99<=1", "--capacity-precision", "2"],
                         "between 0 and 1"),
                        (["--capacity-max-lateness-s", "0.05"], "add --capacity"),
                        (["--capacity", "--slo", "ttft_p99<=1", "--capacity-max-lateness-s",
                          "0"], "give seconds > 0"),
                        (["--capacity", "--slo", "ttft_p99<=1", "--mode", "trace",
                          "--trace-file", str(cfg)], None)):
        result = run_campaign(base + extra, timeout=60)
        assert result.returncode == 2, result.stdout + result.stderr
        if says:
            assert says in result.stderr
    assert not (tmp_path / "res").exists() or not any((tmp_path / "res").iterdir())


# ---- against stubs with a known capacity -------------------------------------------------------
def test_search_finds_each_stubs_capacity_and_compares_them(stub, tmp_path):
    """Two stubs, 2 and 3 slots: closed-loop capacities 2 and 3 users, exactly; B's goodput
    about 3/2 of A's (both serve their slots at the same service time); the report gets its
    section and summary.json its capacity key."""
    a = stub(ttft_ms=TTFT_MS, itl_ms=ITL_MS, tokens=TOKENS, slots=2)
    b = stub(ttft_ms=TTFT_MS, itl_ms=ITL_MS, tokens=TOKENS, slots=3)
    cfg = write_config(tmp_path / "c.json",
                       [{"label": "A", "base_url": a, "model": "stub-model"},
                        {"label": "B", "base_url": b, "model": "stub-model"}],
                       load={"ramp_s": 0.5, "warmup_s": 1.0, "steady_s": 3.0, "drain_s": 0.5,
                             "start_spread_s": 0.5},
                       request={"max_tokens": TOKENS})
    result = run_campaign(["--endpoints-file", str(cfg), "--results-dir", str(tmp_path / "res"),
                           "--no-preflight", "--stop-timeout", "3", "--capacity",
                           "--slo", f"ttft_p99<={TTFT_LIMIT_S},error_rate<=0.01",
                           "--capacity-start", "2",
                           # a wait for a slot is a whole service time (0.96 s): a generator up
                           # to 0.1 s late cannot hide it, so the answer stays exact; a stricter
                           # bound would only measure this machine's scheduling stalls
                           "--capacity-max-lateness-s", "0.1"], timeout=400)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    campaign = next((tmp_path / "res").iterdir())
    data = json.loads((campaign / "capacity.json").read_text())
    caps = {x["endpoint"]: x for x in data["searches"]}
    assert caps["A"]["status"] == caps["B"]["status"] == "found", out
    assert (caps["A"]["capacity"], caps["A"]["high"]) == (2, 3), out
    assert (caps["B"]["capacity"], caps["B"]["high"]) == (3, 4), out
    # every probe is a normal run directory, named for its search and number
    for p in data["probes"]:
        assert (campaign / p["run_dir"] / "manifest.json").is_file()
        assert p["verdict"] in ("pass", "fail", "late")   # late: probed again
    # progress: a line per probe with its metrics against the limits, and the final table
    assert "capacity [A rep 1] probe 1: 2 users:" in out and f"<= {TTFT_LIMIT_S}" in out
    assert "bracket [" in out and "capacity under SLO" in out
    (ratio,) = data["comparison"]["ratios"]
    assert 1.3 < ratio["ratio"] < 1.7, ratio
    assert "B sustains" in out and "more goodput than A at p99 TTFT <= 900 ms" in out
    assert "1 repetition: no confidence interval" in out
    assert "lateness p99 of 100 ms (--capacity-max-lateness-s)" in out   # the bound is stated
    summary = json.loads((campaign / "report" / "summary.json").read_text())
    assert summary["capacity"]["comparison"]["headlines"] == data["comparison"]["headlines"]
    assert "Capacity under SLO" in (campaign / "report" / "report.md").read_text()


def test_a_server_that_is_down_stops_the_search_with_a_clear_message(tmp_path):
    """Nothing listens: every request is refused. That is no SLO verdict but a stop, and no
    capacity is reported."""
    import socket

    with socket.socket() as s:       # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = write_config(tmp_path / "c.json", [{"label": "A", "model": "m",
                                              "base_url": f"http://127.0.0.1:{port}/v1"}],
                       load={"ramp_s": 0.2, "warmup_s": 0.3, "steady_s": 1.0, "drain_s": 0.2,
                             "start_spread_s": 0.1, "repetitions": 2})
    result = run_campaign(["--endpoints-file", str(cfg), "--results-dir", str(tmp_path / "res"),
                           "--no-preflight", "--no-report", "--stop-timeout", "1", "--capacity",
                           "--slo", "ttft_p99<=1"], timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    data = json.loads((next((tmp_path / "res").iterdir()) / "capacity.json").read_text())
    assert [p["verdict"] for p in data["probes"]] == ["down"], out
    assert [x["status"] for x in data["searches"]] == ["down", "skipped"]
    assert all(x["capacity"] is None for x in data["searches"])
    assert "connection_refused" in out and "the server is down or unreachable" in out
    assert "found no capacity" in out
